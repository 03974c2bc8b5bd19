/**
 * A run's memory plan (lib/engine/memory-plan.ts) from its config: the shapes an RL step of the
 * config's method makes (rollout rows, training sequences, micro-batches), the model's config.json,
 * and the device's memory. `octo-native plan` prints it; `train` refuses, before loading anything,
 * a configuration whose plan does not fit (docs/methods.md §13).
 */
import { execFileSync } from "node:child_process";
import os from "node:os";
import path from "node:path";

import { DEMO_MODEL_SPEC } from "../demo/model";
import {
  formatGiB,
  LORA_MODULES,
  MemoryPlanError,
  planMemory,
  type AttentionKernel,
  type LoraModule,
  type MemoryPlan,
  type MemoryPlanInput,
  type Strategy,
} from "../engine/memory-plan";
import { modelSpecFromConfig } from "../engine/model-config";
import { methodNeedsReference } from "../methods";
import type { ModelSpec } from "../native";
import { readRegularFile } from "../util/files";
import type { RunConfig } from "./config";

/**
 * The longest prompt the plan assumes (tokens) when not told: no config key bounds it. MATH and GSM8K
 * prompts in a chat template are 100–400 tokens; generation pads every row to the longest prompt.
 */
export const DEFAULT_PROMPT_TOKENS = 512;

/** The prompt length train's start-up check assumes: the shortest, as it checks before reading the data. */
export const STARTUP_PROMPT_TOKENS = 1;

/** Tokens of the judge prompt's template (Trust-GRPO, engine backend) beside the problem and response it quotes. */
const JUDGE_TEMPLATE_TOKENS = 512;
/** Prompts per judge generate call (lib/methods/trust-grpo/judge/engine-judge.ts). */
const JUDGE_BATCH = 32;

/** A model directory's config.json as a ModelSpec; errors name the file (or the directory) and the key. */
export function readModelSpec(dir: string): ModelSpec {
  if (dir === "demo") return DEMO_MODEL_SPEC;
  const file = path.join(dir, "config.json");
  let text: string;
  try {
    text = readRegularFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new MemoryPlanError(`${dir} has no config.json; give a Hugging Face model directory (config.json is all the planner reads)`);
    throw new MemoryPlanError(`${file}: cannot read (${code ?? (error as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new MemoryPlanError(`${file}: not valid JSON (${(error as Error).message})`);
  }
  try {
    return modelSpecFromConfig(raw, file);
  } catch (error) {
    throw new MemoryPlanError((error as Error).message);
  }
}

export interface PlanTarget {
  /** what the ranks compute on */
  device: "cuda" | "cpu";
  /** ranks (GPUs) of the run */
  worldSize: number;
  /** memory of one GPU (CPU: the host's share per rank) */
  memoryBytes: number;
  attention: AttentionKernel;
  /** the longest prompt, tokens (default DEFAULT_PROMPT_TOKENS) */
  promptTokens?: number;
}

/** The compute dtype train would use: model.dtype, "auto" meaning bf16 on CUDA and fp32 on CPU. */
function computeDtype(config: RunConfig, device: "cuda" | "cpu"): "bfloat16" | "float32" {
  const dtype = config.model.dtype;
  if (dtype === "float16") throw new MemoryPlanError("model.dtype float16: the trainer refuses it (it needs loss scaling); use bfloat16 or float32");
  if (dtype === "auto") return device === "cuda" ? "bfloat16" : "float32";
  return dtype;
}

/**
 * The planner's input for `config` on `target`: the shapes of one RL step of its method (rows of this
 * rank's rollout, sequences and micro-batches of an optimizer step), read from the config's keys.
 * `judgeSpec` is the engine judge's model (Trust-GRPO), when it has one.
 */
export function planInput(config: RunConfig, spec: ModelSpec, target: PlanTarget, judgeSpec?: ModelSpec): MemoryPlanInput {
  const W = target.worldSize;
  const promptTokens = target.promptTokens ?? DEFAULT_PROMPT_TOKENS;
  if (!(Number.isInteger(promptTokens) && promptTokens >= 1)) throw new MemoryPlanError(`the prompt length must be a positive integer of tokens, not ${promptTokens}`);
  const { rollout, training, method } = config;
  const n = rollout.samplesPerPrompt;
  // Each rank takes every W-th prompt of the step (whole groups): rank 0 the most.
  const promptsPerRank = Math.ceil(rollout.promptsPerStep / W);
  const octopus = method.name === "octopus" || method.name === "octopus-srt";
  const groupSize = octopus && method.octopus.augment ? 2 * n : n;
  // SCoRe's turn 2 follows prompt ⊕ turn 1 ⊕ instruction; its characters bound the instruction's tokens.
  const score = method.name === "score";
  const instructionTokens = score ? method.score.turn2Template.split("{instruction}").join(method.score.instruction).length : 0;
  const responseTokens = score ? 2 * rollout.maxNewTokens + instructionTokens : rollout.maxNewTokens;
  const sequencesPerUpdate = Math.ceil((promptsPerRank * groupSize) / training.miniBatches);
  const judge = method.name === "trust-grpo" && method.trustGrpo.judge.backend === "engine" && judgeSpec
    ? { spec: judgeSpec, rows: Math.min(JUDGE_BATCH, promptsPerRank * n), promptTokens: promptTokens + rollout.maxNewTokens + JUDGE_TEMPLATE_TOKENS, maxNewTokens: method.trustGrpo.judge.maxNewTokens }
    : undefined;
  return {
    spec,
    device: target.device,
    dtype: computeDtype(config, target.device),
    attention: target.attention,
    worldSize: W,
    strategy: config.distributed.strategy,
    lora: config.lora ? { rank: config.lora.rank, targetModules: config.lora.targetModules, dropout: config.lora.dropout } : undefined,
    reference: methodNeedsReference(config),
    rollout: { rows: promptsPerRank * n, samplesPerPrompt: n, promptTokens, maxNewTokens: rollout.maxNewTokens, secondTurnInstructionTokens: score ? instructionTokens : undefined },
    training: {
      microBatchSize: Math.min(training.microBatchSize, Math.max(1, sequencesPerUpdate)),
      sequenceTokens: promptTokens + responseTokens,
      lossTokens: responseTokens,
      microBatchesPerStep: Math.max(1, Math.ceil(sequencesPerUpdate / training.microBatchSize)),
      activationCheckpointing: training.activationCheckpointing,
      logprobChunkSize: training.logprobChunkSize,
      entropy: config.loss.entropyCoef > 0,
    },
    bucketBytes: Math.max(1, Math.round(config.distributed.bucketMegabytes * 2 ** 20)),
    judge,
    memoryBytes: target.memoryBytes,
  };
}

/** `config` with the plan command's overrides: --strategy and --lora r (every projection adapted). */
export function withPlanOverrides(config: RunConfig, overrides: { strategy?: Strategy; loraRank?: number }): RunConfig {
  const out = structuredClone(config);
  if (overrides.strategy) out.distributed.strategy = overrides.strategy;
  if (overrides.loraRank !== undefined) {
    if (!(Number.isInteger(overrides.loraRank) && overrides.loraRank >= 1)) throw new MemoryPlanError(`--lora ${overrides.loraRank}: the rank must be a positive integer`);
    out.lora = { rank: overrides.loraRank, alpha: out.lora?.alpha ?? 16, dropout: out.lora?.dropout ?? 0, targetModules: out.lora?.targetModules ?? [...LORA_MODULES] as [LoraModule, ...LoraModule[]] };
  }
  return out;
}

/**
 * The attention kernel of an engine build from `octo-native info`'s features; a CUDA build planned
 * from elsewhere is assumed to be libtorch ≥ 2.5 (sdpa-gqa).
 */
export function attentionOfFeatures(features: readonly string[]): AttentionKernel {
  return features.includes("sdpa-gqa") ? "sdpa-gqa" : features.includes("sdpa") ? "sdpa" : "explicit";
}

/** What the plan takes as given, in words (printed under its table). */
export function planAssumptions(plan: MemoryPlan): string[] {
  const { input } = plan;
  const notes = [
    input.rollout.promptTokens === STARTUP_PROMPT_TOKENS
      ? "prompts of 1 token: train checks before it reads the data, so it refuses only what cannot fit with any prompts (octo-native plan --prompt-tokens N plans yours)"
      : `prompts of at most ${input.rollout.promptTokens} tokens (--prompt-tokens); generation pads every row to the longest`,
    `attention: ${input.attention === "explicit" ? "explicit scores (libtorch < 2.0)" : input.attention === "sdpa" ? "fused SDPA, keys/values expanded (libtorch 2.0-2.4)" : "fused SDPA with enable_gqa (libtorch >= 2.5)"}`,
  ];
  if (input.strategy !== "ddp")
    notes.push(`${input.strategy}: the layout of docs/methods.md §13 (zero2: full ${input.dtype} weights, 1/W of master/Adam/gradients; fsdp: weights sharded, 2 layers gathered, full weights gathered for the rollout)`);
  if (plan.breakdown.kvCompaction > 0) notes.push("the rollout's KV cache compaction copies the rows still running before the old cache is freed (native/core/sampler.cpp)");
  return notes;
}

/** The largest rollout that fits, in rows per GPU and as rollout.promptsPerStep. */
function rolloutAdvice(plan: MemoryPlan): string {
  const rows = plan.largestRolloutRows, n = plan.input.rollout.samplesPerPrompt ?? 1, W = plan.input.worldSize;
  if (rows === 0) return "none (not even 1 row)";
  const prompts = Math.floor(rows / n) * W;
  return `${rows} rows per GPU` + (plan.input.rollout.samplesPerPrompt ? ` (rollout.promptsPerStep up to ${prompts} at samplesPerPrompt ${n}${prompts === 0 ? ": fewer samples" : ""})` : "");
}

/** The plan as a table in GiB, with the phases, the verdict and the assumptions. */
export function formatMemoryPlan(plan: MemoryPlan): string {
  const { input, breakdown: b } = plan;
  const W = input.worldSize;
  const dtype = input.dtype === "bfloat16" ? "bf16" : "fp32";
  const sharded = input.strategy !== "ddp" ? `, 1/${W}` : "";
  const weightsNote = `${dtype}${input.strategy === "fsdp" ? `, 1/${W}` : ""}${input.lora ? `, base + rank-${input.lora.rank} adapters` : ""}`;
  const billions = (n: number) => `${(n / 1e9).toFixed(2)} B`;
  const t = input.training;
  const rows: [string, number | undefined][] = [
    [`weights (${weightsNote})`, b.weights],
    [`gradients (fp32 main${sharded}, and in flight)`, b.gradients],
    [`fp32 master weights${sharded}`, b.master],
    [`AdamW m and v (fp32${sharded})`, b.optimizer],
    [input.lora ? "reference (the base, adapters off)" : "reference model", b.reference],
    ...(input.judge ? [["judge model", b.judge] as [string, number]] : []),
    [`activations per micro-batch (checkpointing ${t.activationCheckpointing ? "on" : "off"})`, b.activations],
    ["  with activation checkpointing", b.activationsWithCheckpointing],
    ["  without activation checkpointing", b.activationsWithoutCheckpointing],
    ["log-prob op workspace", b.logprobWorkspace],
    [`rollout KV cache (${input.rollout.rows} rows)`, b.kvCache],
    ["  KV cache compaction copy", b.kvCompaction],
    ...(input.strategy === "fsdp" ? [["gathered weights (fsdp)", b.gatheredWeights] as [string, number]] : []),
    ["AdamW step (sqrt v)", b.optimizerStep],
    ...(input.device === "cuda" ? [["CUDA runtime reserve", b.runtimeReserve] as [string, number]] : []),
  ];
  const width = 52;
  const line = (label: string, bytes: number) => `  ${label.padEnd(width)}${(bytes / 2 ** 30).toFixed(2).padStart(9)}`;
  const verdict = plan.fits
    ? `fits: ${formatGiB(plan.bytesPerGpu)} at the peak (${plan.peakPhase}) of ${formatGiB(plan.memoryBytes)}`
    : `does NOT fit: ${formatGiB(plan.bytesPerGpu)} at the peak (${plan.peakPhase}), ${formatGiB(plan.bytesPerGpu - plan.memoryBytes)} over ${formatGiB(plan.memoryBytes)}`;
  return [
    `${input.spec.architecture}: ${billions(plan.parameters.total)} parameters, ${billions(plan.parameters.trainable)} trained, ${input.dtype} on ${input.device}`,
    `${input.strategy} on ${W} ${input.device === "cuda" ? "GPU" : "rank"}${W === 1 ? "" : "s"} of ${formatGiB(plan.memoryBytes)}; micro-batch ${t.microBatchSize} × ${t.sequenceTokens} tokens; rollout ${input.rollout.rows} rows × (${input.rollout.promptTokens} + ${input.rollout.maxNewTokens}) tokens`,
    "",
    `  ${"per GPU".padEnd(width)}${"GiB".padStart(9)}`,
    ...rows.map(([label, bytes]) => line(label, bytes ?? 0)),
    "",
    `  ${"phase peaks".padEnd(width)}`,
    line("rollout", plan.phases.rollout),
    line("old/reference log-probs", plan.phases.logprobs),
    line("training (forward, backward, AdamW step)", plan.phases.training),
    "",
    verdict,
    `largest micro-batch that fits: ${plan.largestMicroBatch === 0 ? "none (not even 1)" : plan.largestMicroBatch}`,
    `largest rollout that fits: ${rolloutAdvice(plan)}`,
    ...planAssumptions(plan).map((note) => `assumes ${note}`),
  ].join("\n");
}

/** What the JSON output of `octo-native plan` holds: `fits` and `bytesPerGpu` first. */
export function memoryPlanJson(plan: MemoryPlan): Record<string, unknown> {
  const { input } = plan;
  return {
    fits: plan.fits,
    bytesPerGpu: plan.bytesPerGpu,
    memoryBytes: plan.memoryBytes,
    peakPhase: plan.peakPhase,
    phases: plan.phases,
    breakdown: plan.breakdown,
    largestMicroBatch: plan.largestMicroBatch,
    largestRolloutRows: plan.largestRolloutRows,
    parameters: plan.parameters,
    model: { architecture: input.spec.architecture, dtype: input.dtype },
    setup: {
      device: input.device, strategy: input.strategy, worldSize: input.worldSize, attention: input.attention,
      lora: input.lora ?? null, reference: input.reference, rollout: input.rollout, training: input.training,
    },
    assumptions: planAssumptions(plan),
  };
}

// ---------------------------------------------------------------------------------------------
// train's start-up check

/** A device's memory as the check compares it: bytes, or why it is unknown. */
export type DeviceMemory = { bytes: number; source: string } | { bytes?: undefined; reason: string };

/**
 * The memory of a rank's device. CUDA: the GPU's total from nvidia-smi (the engine reads no device
 * totals), through CUDA_VISIBLE_DEVICES. CPU: the host's memory (its cgroup limit when lower),
 * shared by the ranks of this host (LOCAL_WORLD_SIZE).
 */
export function deviceMemory(device: string, env: NodeJS.ProcessEnv = process.env): DeviceMemory {
  if (device === "cpu") {
    const limit = process.constrainedMemory();
    const total = limit > 0 && limit < os.totalmem() ? limit : os.totalmem();
    const localRanks = Math.max(1, Number(env.LOCAL_WORLD_SIZE) || 1);
    return { bytes: Math.floor(total / localRanks), source: `host memory${localRanks > 1 ? ` / ${localRanks} local ranks` : ""}` };
  }
  const index = Number(/^cuda(?::(\d+))?$/.exec(device)?.[1] ?? NaN);
  if (!Number.isInteger(index) && device !== "cuda") return { reason: `device ${device} is neither cpu nor cuda[:N]` };
  const visible = env.CUDA_VISIBLE_DEVICES?.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const local = Number.isInteger(index) ? index : 0;
  const id = visible ? visible[local] : String(local);
  if (id === undefined) return { reason: `${device} is not among CUDA_VISIBLE_DEVICES=${env.CUDA_VISIBLE_DEVICES}` };
  try {
    const out = execFileSync("nvidia-smi", ["--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", id], { encoding: "utf8", timeout: 10_000, stdio: ["ignore", "pipe", "ignore"] });
    const mib = Number(out.trim().split("\n")[0]);
    if (!(mib > 0)) return { reason: `nvidia-smi gave no memory total for GPU ${id}` };
    return { bytes: mib * 2 ** 20, source: `nvidia-smi, GPU ${id}` };
  } catch (error) {
    return { reason: `nvidia-smi could not be run (${(error as NodeJS.ErrnoException).code ?? (error as Error).message.split("\n")[0]})` };
  }
}

export interface StartupCheck {
  plan?: MemoryPlan;
  /** why the check did not run (none said: the model's config.json is unreadable, which loading it reports) */
  skipped?: string;
}

/**
 * train's check at start-up, before anything is loaded: the plan of `config` on this rank's device,
 * with prompts of STARTUP_PROMPT_TOKENS (the data is not read yet).
 * Throws, with the plan's table, when it does not fit. Returns without a plan (and why) where it
 * cannot plan: an unreadable config.json is left to the model loader to report in its own words.
 */
export function checkRunMemory(config: RunConfig, target: { device: string; worldSize: number; features: readonly string[] }, env: NodeJS.ProcessEnv = process.env): StartupCheck {
  let spec: ModelSpec;
  try {
    spec = readModelSpec(config.model.path);
  } catch {
    return {}; // Model.load reports it, in the loader's words
  }
  const judgePath = config.method.name === "trust-grpo" && config.method.trustGrpo.judge.backend === "engine" ? config.method.trustGrpo.judge.modelPath : undefined;
  let judgeSpec: ModelSpec | undefined;
  if (judgePath) {
    try {
      judgeSpec = judgePath === "policy" ? spec : readModelSpec(judgePath);
    } catch {
      judgeSpec = undefined; // the judge's loader reports it
    }
  }
  const memory = deviceMemory(target.device, env);
  if (memory.bytes === undefined) return { skipped: `${target.device}'s memory is unknown: ${memory.reason}` };
  const cuda = target.device.startsWith("cuda");
  // The data is not read yet: prompts of 1 token, so that only what cannot fit with any prompts is refused.
  const plan = planMemory(
    planInput(config, spec, { device: cuda ? "cuda" : "cpu", worldSize: target.worldSize, memoryBytes: memory.bytes, attention: attentionOfFeatures(target.features), promptTokens: STARTUP_PROMPT_TOKENS }, judgeSpec),
  );
  if (!plan.fits)
    throw new MemoryPlanError(
      `this configuration does not fit ${target.device} (${formatGiB(memory.bytes)}, ${memory.source}) by the memory plan:\n\n${formatMemoryPlan(plan)}\n\n` +
        "Lower training.microBatchSize (the largest that fits is above), set training.activationCheckpointing: true, shard with distributed.strategy zero2 or fsdp " +
        "on more GPUs, train adapters (lora), or lower rollout.promptsPerStep, samplesPerPrompt or maxNewTokens. " +
        "If the estimate is wrong for your setup, `octo-native train --skip-memory-check` starts anyway (and please report it)",
    );
  return { plan };
}
