/**
 * Hugging Face `config.json` <-> the engine's ModelSpec: the one place that knows the
 * config keys of the supported families (docs/methods.md §2) and their defaults.
 *
 *   LlamaForCausalLM   Llama 3.x: optional attention/mlp bias, rope_scaling llama3
 *   Qwen2ForCausalLM   Qwen2/2.5: bias on q/k/v (never on o_proj)
 *   Qwen3ForCausalLM   Qwen3: RMSNorm on q and k per head, optional attention bias
 */
import { z } from "zod";

import type { ModelSpec } from "../native";

export class ModelConfigError extends Error {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "ModelConfigError";
  }
}

export const SUPPORTED_ARCHITECTURES = ["LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/**
 * What makes a spec Qwen3-shaped apart from its sizes: q/k RMSNorm, no biases, plain RoPE. Models
 * made from scratch (the demo's, the benches') spread it into their spec.
 */
export const QWEN3_LAYOUT = {
  architecture: "Qwen3ForCausalLM",
  attentionBias: false,
  outputBias: false,
  mlpBias: false,
  qkNorm: true,
  rope: { type: "default", factor: 1, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 },
} as const satisfies Partial<ModelSpec>;

const positiveInt = z.number().int().positive();

const ropeScalingSchema = z.looseObject({
  rope_type: z.string().optional(),
  type: z.string().optional(), // the older spelling of rope_type
  factor: z.number().positive().optional(),
  low_freq_factor: z.number().positive().optional(),
  high_freq_factor: z.number().positive().optional(),
  original_max_position_embeddings: positiveInt.optional(),
  rope_theta: z.number().positive().optional(), // transformers v5 keeps theta here (rope_parameters)
});

/** Keys we read; all other keys of a Hugging Face config are kept but ignored. */
const hfConfigSchema = z.looseObject({
  architectures: z.array(z.string()).min(1),
  vocab_size: positiveInt,
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  rms_norm_eps: z.number().positive().optional(),
  rope_theta: z.number().positive().optional(),
  rope_scaling: ropeScalingSchema.nullish(),
  rope_parameters: ropeScalingSchema.nullish(),
  tie_word_embeddings: z.boolean().optional(),
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().optional(),
  hidden_act: z.string().optional(),
  use_sliding_window: z.boolean().optional(),
  max_position_embeddings: positiveInt.optional(),
});

export type HfConfig = z.infer<typeof hfConfigSchema>;

/** Validates a parsed config.json and maps it to a ModelSpec. `file` names it in errors. */
export function modelSpecFromConfig(raw: unknown, file = "config.json"): ModelSpec {
  const parsed = hfConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ModelConfigError(file, `key '${issue.path.join(".") || "(root)"}': ${issue.message}`);
  }
  const c = parsed.data;
  const architecture = c.architectures[0];
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture))
    throw new ModelConfigError(file, `architecture '${architecture}' is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`);
  if (c.hidden_act !== undefined && c.hidden_act !== "silu")
    throw new ModelConfigError(file, `key 'hidden_act': '${c.hidden_act}' is not supported (only silu)`);
  if (c.use_sliding_window)
    throw new ModelConfigError(file, "key 'use_sliding_window': sliding-window attention is not supported; set it to false");

  const numKvHeads = c.num_key_value_heads ?? c.num_attention_heads;
  if (c.num_attention_heads % numKvHeads !== 0)
    throw new ModelConfigError(file, `key 'num_key_value_heads': ${numKvHeads} does not divide num_attention_heads ${c.num_attention_heads}`);
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0)
    throw new ModelConfigError(file, `key 'head_dim': ${headDim} must be an even integer (hidden_size / num_attention_heads when absent)`);

  const scaling = c.rope_scaling ?? c.rope_parameters ?? undefined;
  const ropeType = scaling?.rope_type ?? scaling?.type ?? "default";
  if (ropeType !== "default" && ropeType !== "linear" && ropeType !== "llama3")
    throw new ModelConfigError(file, `key 'rope_scaling.rope_type': '${ropeType}' is not supported (default, linear, llama3)`);
  const factor = scaling?.factor ?? 1;
  if (ropeType !== "default" && scaling?.factor === undefined)
    throw new ModelConfigError(file, `key 'rope_scaling.factor' is required for rope_type ${ropeType}`);

  const family = architecture as Architecture;
  const attentionBias = family === "Qwen2ForCausalLM" ? true : (c.attention_bias ?? false);
  return {
    architecture: family,
    vocabSize: c.vocab_size,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads,
    numKvHeads,
    headDim,
    rmsNormEps: c.rms_norm_eps ?? 1e-6,
    ropeTheta: c.rope_theta ?? scaling?.rope_theta ?? 10000,
    tieWordEmbeddings: c.tie_word_embeddings ?? false,
    attentionBias,
    // Qwen2 puts bias on q/k/v only; Llama and Qwen3 use attention_bias for o_proj too.
    outputBias: family === "Qwen2ForCausalLM" ? false : attentionBias,
    mlpBias: family === "LlamaForCausalLM" ? (c.mlp_bias ?? false) : false,
    qkNorm: family === "Qwen3ForCausalLM",
    rope: {
      type: ropeType,
      factor,
      lowFreqFactor: scaling?.low_freq_factor ?? 1,
      highFreqFactor: scaling?.high_freq_factor ?? 4,
      originalMaxPositions: scaling?.original_max_position_embeddings ?? 8192,
    },
  };
}

const MODEL_TYPE: Record<Architecture, string> = {
  LlamaForCausalLM: "llama",
  Qwen2ForCausalLM: "qwen2",
  Qwen3ForCausalLM: "qwen3",
};

/** A config.json that transformers loads as this spec (for models we create). */
export function configFromModelSpec(spec: ModelSpec, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const config: Record<string, unknown> = {
    architectures: [spec.architecture],
    model_type: MODEL_TYPE[spec.architecture],
    vocab_size: spec.vocabSize,
    hidden_size: spec.hiddenSize,
    intermediate_size: spec.intermediateSize,
    num_hidden_layers: spec.numLayers,
    num_attention_heads: spec.numHeads,
    num_key_value_heads: spec.numKvHeads,
    head_dim: spec.headDim,
    hidden_act: "silu",
    rms_norm_eps: spec.rmsNormEps,
    rope_theta: spec.ropeTheta,
    tie_word_embeddings: spec.tieWordEmbeddings,
    max_position_embeddings: 4096,
    torch_dtype: "float32",
  };
  if (spec.architecture !== "Qwen2ForCausalLM") config.attention_bias = spec.attentionBias;
  if (spec.architecture === "LlamaForCausalLM") config.mlp_bias = spec.mlpBias;
  if (spec.architecture === "Qwen2ForCausalLM") config.use_sliding_window = false;
  if (spec.rope.type !== "default") {
    config.rope_scaling = {
      rope_type: spec.rope.type,
      factor: spec.rope.factor,
      low_freq_factor: spec.rope.lowFreqFactor,
      high_freq_factor: spec.rope.highFreqFactor,
      original_max_position_embeddings: spec.rope.originalMaxPositions,
    };
  }
  return { ...config, ...extra };
}
