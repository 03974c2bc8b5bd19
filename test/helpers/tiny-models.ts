// Tiny model specs of each supported family for engine tests.
import type { ModelSpec } from "../../lib/native";

const base = {
  vocabSize: 96,
  hiddenSize: 64,
  intermediateSize: 128,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  rmsNormEps: 1e-6,
  ropeTheta: 10000,
  mlpBias: false,
  rope: { type: "default", factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
} as const;

export const TINY_SPECS: Record<string, ModelSpec> = {
  llama3: {
    ...base,
    architecture: "LlamaForCausalLM",
    tieWordEmbeddings: false,
    attentionBias: true,
    outputBias: true,
    mlpBias: true,
    qkNorm: false,
    ropeTheta: 500000,
    rope: { type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 32 },
  },
  qwen2: { ...base, architecture: "Qwen2ForCausalLM", tieWordEmbeddings: true, attentionBias: true, outputBias: false, qkNorm: false },
  qwen3: { ...base, architecture: "Qwen3ForCausalLM", headDim: 32, tieWordEmbeddings: false, attentionBias: false, outputBias: false, qkNorm: true },
};

/** The smallest useful model: one layer, tied embeddings (loader and safetensors tests). */
export const TINY_TIED_QWEN3: ModelSpec = {
  ...base,
  architecture: "Qwen3ForCausalLM",
  vocabSize: 64,
  hiddenSize: 32,
  intermediateSize: 64,
  numLayers: 1,
  numHeads: 2,
  numKvHeads: 1,
  tieWordEmbeddings: true,
  attentionBias: false,
  outputBias: false,
  qkNorm: true,
};
