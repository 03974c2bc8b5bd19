/**
 * Run configuration (docs/methods.md §9): one zod schema gives validation, defaults and the
 * documentation of every key. YAML recipes live in configs/; `--set a.b=c` overrides.
 * Unknown keys and wrong types are errors that name the key.
 */
import YAML from "yaml";
import { z } from "zod";

import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import { SCORE_INSTRUCTION } from "../methods/score/score";
import { DEFAULT_COLLAPSE_ALARM } from "../methods/srt/srt";
import { THINKING_JUDGE_PROMPT } from "../methods/trust-grpo/judge/thinking-judge";
import { DEFAULT_TRUST } from "../methods/trust-grpo/trust-grpo";
import { LOGPROB_CHUNK_SIZE } from "../native";
import { readRegularFile } from "../util/files";

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

const positiveInt = z.number().int().positive();
/** the Hugging Face projection modules a LoRA adapter can target */
const LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
const probability = z.number().min(0).max(1);
const notALearningRate = (issue: { input?: unknown }) => `must be a finite number > 0, not ${String(issue.input)}`;

const datasetSchema = z.strictObject({
  /** .jsonl / .json / .parquet file */
  path: z.string().min(1),
  /** row layout: gsm8k, math (problem/answer), verl, or auto-detect */
  adapter: z.enum(["gsm8k", "math", "verl", "auto"]).default("auto"),
  /** use only the first N rows */
  limit: positiveInt.optional(),
});

export const configSchema = z.strictObject({
  run: z
    .strictObject({
      /** output directory: resolved config, metrics.jsonl, checkpoints, summary.json */
      dir: z.string().default("runs/train"),
      seed: z.number().int().min(0).default(0),
      /** RL optimizer steps */
      steps: positiveInt.default(50),
      /** checkpoint every N steps (0 = only at the end) */
      saveEvery: z.number().int().min(0).default(0),
      /** evaluate on data.eval every N steps (0 = only before and after) */
      evalEvery: z.number().int().min(0).default(0),
      /** stop after this many skipped (NaN/Inf) steps */
      maxSkippedSteps: positiveInt.default(5),
    })
    .prefault({}),
  model: z
    .strictObject({
      /** Hugging Face model directory, or "demo" for the built-in model */
      path: z.string().default("demo"),
      device: z.string().default("auto"),
      dtype: z.enum(["auto", "float32", "bfloat16", "float16"]).default("auto"),
    })
    .prefault({}),
  data: z
    .strictObject({
      train: datasetSchema.optional(),
      eval: datasetSchema.optional(),
      /** the user message; {problem} is replaced by the problem text */
      promptTemplate: z.string().default("{problem}\nPlease reason step by step, and put your final answer within \\boxed{}."),
      /** wrap the prompt in the tokenizer's chat template */
      chat: z.boolean().default(true),
      /** extra variables for the chat template, e.g. {enable_thinking: false} */
      chatTemplateVariables: z.record(z.string(), z.unknown()).default({}),
    })
    .prefault({}),
  rollout: z
    .strictObject({
      /** prompts per RL step */
      promptsPerStep: positiveInt.default(8),
      /** samples generated per prompt (n) */
      samplesPerPrompt: positiveInt.default(8),
      maxNewTokens: positiveInt.default(256),
      temperature: z.number().min(0).default(1.0),
      topP: z.number().gt(0).max(1).default(1.0),
      topK: z.number().int().min(0).default(0),
      minP: probability.default(0),
    })
    .prefault({}),
  advantage: z
    .strictObject({
      estimator: z.enum(["grpo", "rloo", "reinforce_baseline"]).default("grpo"),
      /** divide by the group std (false = Dr.GRPO) */
      normStd: z.boolean().default(true),
      /** DAPO dynamic sampling: drop groups whose rewards are all equal */
      dynamicSampling: z.boolean().default(false),
      /** DAPO overlong shaping: soft penalty over the last `overlongCache` tokens (0 = off) */
      overlongCache: z.number().int().min(0).default(0),
    })
    .prefault({}),
  loss: z
    .strictObject({
      ratioLevel: z.enum(["token", "sequence"]).default("token"),
      clipLow: z.number().min(0).default(0.2),
      clipHigh: z.number().min(0).default(0.2),
      dualClip: z.number().min(0).default(0),
      klEstimator: z.enum(["k1", "k2", "k3"]).default("k3"),
      /** β of the KL to the reference on the KL mask (0 = no reference model) */
      klCoef: z.number().min(0).default(0),
      entropyCoef: z.number().min(0).default(0),
      aggregation: z.enum(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]).default("token-mean"),
    })
    .prefault({}),
  optimizer: z
    .strictObject({
      /** peak learning rate */
      lr: z.number({ error: notALearningRate }).positive({ error: notALearningRate }).default(1e-6),
      weightDecay: z.number().min(0).default(0.01),
      warmupSteps: z.number().int().min(0).default(0),
      schedule: z.enum(["constant", "cosine"]).default("constant"),
      minLrRatio: probability.default(0),
      maxGradNorm: z.number().min(0).default(1.0),
      beta1: z.number().min(0).lt(1).default(0.9),
      beta2: z.number().min(0).lt(1).default(0.999),
      eps: z.number().positive().default(1e-8),
    })
    .prefault({}),
  training: z
    .strictObject({
      /** sequences per micro-batch (memory only: the update does not depend on it) */
      microBatchSize: positiveInt.default(8),
      /** optimizer updates per RL step (the rollout batch split into this many mini-batches) */
      miniBatches: positiveInt.default(1),
      activationCheckpointing: z.boolean().default(false),
      /** tokens per chunk of the log-prob op; 0: as many as its memory budget allows (docs/methods.md §4) */
      logprobChunkSize: z.number().int().nonnegative().default(LOGPROB_CHUNK_SIZE),
    })
    .prefault({}),
  /** data-parallel training (docs/methods.md §13), used when started with --nproc or torchrun's variables */
  distributed: z
    .strictObject({
      /** seconds the start-up rendezvous and every collective wait for the other ranks before the run stops with an error (a rank died or hangs) */
      timeoutSeconds: z.number().positive().default(600),
      /** c10d backend: auto = nccl on CUDA, gloo on CPU */
      backend: z.enum(["auto", "gloo", "nccl"]).default("auto"),
      /** gradient all-reduce bucket size, MiB of fp32 (PyTorch DDP's default: 25) */
      bucketMegabytes: z.number().positive().default(25),
      /** start each bucket's all-reduce from the last backward as soon as its gradients are final */
      overlapBackward: z.boolean().default(true),
      /**
       * ddp: every rank holds everything; zero2: each rank keeps 1/W of the fp32 master weights,
       * Adam states and gradients; fsdp: the parameters are sharded too (docs/methods.md §13)
       */
      strategy: z.enum(["ddp", "zero2", "fsdp"]).default("ddp"),
    })
    .prefault({}),
  /** low-rank adapters on a frozen base (docs/methods.md §14); absent: full fine-tuning */
  lora: z
    .strictObject({
      rank: positiveInt,
      /** the adapter's output is scaled by alpha / rank */
      alpha: z.number().positive().default(16),
      dropout: probability.default(0),
      targetModules: z.array(z.enum(LORA_MODULES)).nonempty().default([...LORA_MODULES]),
    })
    .optional(),
  method: z
    .strictObject({
      /**
       * grpo (docs/methods.md §5), octopus (§6.1), score (§6.2), trust-grpo (§6.3), srt (§6.4), and
       * octopus-srt: Octopus with o1/o2 judged against the group's majority answer (no labels).
       */
      name: z.enum(["grpo", "octopus", "score", "trust-grpo", "srt", "octopus-srt"]).default("grpo"),
      octopus: z
        .strictObject({
          separator: z.string().default(DEFAULT_SEPARATOR),
          /** 1: learn pure correction (o1 fixed, KL on o1); 2: co-evolve */
          stage: z.union([z.literal(1), z.literal(2)]).default(1),
          /** β of the o1-only KL in Stage I */
          o1KlCoef: z.number().min(0).default(0.01),
          /** add n paired (o1, o2) samples to the n originals */
          augment: z.boolean().default(true),
        })
        .prefault({}),
      /** SCoRe (docs/methods.md §6.2): two attempts; the KL comes from beta1/beta2 here, loss.klCoef is unused */
      score: z
        .strictObject({
          /** 1: reward on turn 2, strong KL on turn 1; 2: both turns rewarded, bonus on turn 2 */
          stage: z.union([z.literal(1), z.literal(2)]).default(1),
          /** the turn-2 instruction: hints at a possible error without revealing correctness */
          instruction: z.string().default(SCORE_INSTRUCTION),
          /**
           * text appended after turn 1 (its tokens as sampled, EOS included) to open turn 2;
           * {instruction} is replaced. Chat models: close turn 1 and open a user turn, e.g. for
           * ChatML "\n<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n".
           */
          turn2Template: z.string().default("\n\n{instruction}\n\n"),
          /** stop strings of turn 1 (removed from turn 1 before the instruction) */
          turn1Stop: z.array(z.string().min(1)).default([]),
          /** β1: the default KL on every generated token */
          beta1: z.number().min(0).default(0.01),
          /** β2: Stage I's KL on the turn-1 tokens (0.1; 0.25 for code) */
          beta2: z.number().min(0).default(0.1),
          /** α of the Stage II bonus α·(r(y2) − r(y1)) */
          alpha: z.number().min(0).default(10),
          /** discount of turn 2's reward in turn 1's return (SCoRe: 0) */
          gamma: z.number().min(0).max(1).default(0),
        })
        .prefault({}),
      /** Trust-GRPO with a thinking reward (docs/methods.md §6.3): R = R_out + γ·α·exp(−t/T)·R_think */
      trustGrpo: z
        .strictObject({
          alpha: z.number().min(0).default(DEFAULT_TRUST.alpha),
          /** T of the annealing, in steps (0 = run.steps; DEFAULT_TRUST's 100 is the pure functions' default) */
          annealSteps: z.number().min(0).default(0),
          /** correct (for γ) when the outcome reward is ≥ this */
          correctAbove: probability.default(DEFAULT_TRUST.correctAbove),
          /** saturated groups (all outcomes ≥ high, or all ≤ low) skip the judge */
          saturatedHigh: probability.default(DEFAULT_TRUST.saturatedHigh),
          saturatedLow: probability.default(DEFAULT_TRUST.saturatedLow),
          /** responses with an outcome below this get R_think = 0 without a judge call */
          skipBelowOutcome: probability.default(DEFAULT_TRUST.skipBelowOutcome),
          judge: z
            .strictObject({
              /** engine: a Hugging Face model on our engine; http: an OpenAI-compatible endpoint */
              backend: z.enum(["engine", "http"]).default("engine"),
              /** engine: the judge's model directory ("policy" = the run's starting model: a smoke test) */
              modelPath: z.string().optional(),
              /** engine: wrap the judge prompt in the judge tokenizer's chat template */
              chat: z.boolean().default(true),
              /** http: base URL, e.g. http://localhost:8000/v1 (POST {url}/chat/completions) */
              url: z.string().optional(),
              /** http: the `model` field of the request */
              model: z.string().default("judge"),
              /** http: name of the environment variable holding the API key (never the key itself) */
              apiKeyEnv: z.string().optional(),
              /** {problem} and {response} are replaced; the reply must hold `Score: s` */
              promptTemplate: z.string().default(THINKING_JUDGE_PROMPT),
              maxNewTokens: positiveInt.default(256),
              /** http: per attempt */
              timeoutMs: positiveInt.default(60000),
              retries: z.number().int().min(0).default(3),
              backoffMs: z.number().int().min(0).default(500),
              concurrency: positiveInt.default(8),
              /** thinking reward of a judge text with no parseable score (counted in the metrics) */
              fallbackScore: probability.default(0),
            })
            .prefault({}),
        })
        .prefault({}),
      /** SRT (docs/methods.md §6.4): majority-vote pseudo-labels; also the labelling of octopus-srt */
      srt: z
        .strictObject({
          /** hard: 1 for the majority answer; soft: the answer's vote share */
          reward: z.enum(["hard", "soft"]).default("hard"),
          /** prompts whose majority share (votes / rollouts) is below this do not train */
          majorityThreshold: probability.default(0.6),
          /** label each prompt once, from the base model's rollouts, instead of every step */
          fixedLabels: z.boolean().default(false),
          /** early stopping on a small labelled split (data.eval): greedy final-answer accuracy */
          earlyStopping: z
            .strictObject({
              /** evaluate every N steps (0 = off) */
              every: z.number().int().min(0).default(0),
              /** labelled examples used (the first N of data.eval) */
              examples: positiveInt.default(64),
              /** stop after this many evaluations without a new best */
              patience: positiveInt.default(3),
            })
            .prefault({}),
          /** collapse alarm: pseudo-reward near 1 with a KL spike and one dominant answer across prompts */
          collapse: z
            .strictObject({
              rewardAbove: probability.default(DEFAULT_COLLAPSE_ALARM.rewardAbove),
              klSpikeFactor: z.number().positive().default(DEFAULT_COLLAPSE_ALARM.klSpikeFactor),
              klMin: z.number().min(0).default(DEFAULT_COLLAPSE_ALARM.klMin),
              window: positiveInt.default(DEFAULT_COLLAPSE_ALARM.window),
              dominantShareAbove: probability.default(DEFAULT_COLLAPSE_ALARM.dominantShareAbove),
              /** end the run (with a checkpoint) when the alarm fires */
              stop: z.boolean().default(false),
            })
            .prefault({}),
        })
        .prefault({}),
    })
    .prefault({}),
});

export type RunConfig = z.infer<typeof configSchema>;

/**
 * Keys that reach Object.prototype when an object is walked or filled by them ('__proto__' is the
 * prototype itself, 'constructor.prototype' the same object), so never config keys: refused
 * wherever a key comes from input, before any object is touched.
 */
const RESERVED_KEYS = new Set(["__proto__", "constructor", "prototype"]);

/** The dotted path of the first reserved key in a parsed tree (YAML makes a '__proto__' key an own property). */
function reservedKeyPath(value: unknown, at: string[] = [], seen = new WeakSet<object>()): string | undefined {
  if (value === null || typeof value !== "object" || seen.has(value)) return undefined;
  seen.add(value); // YAML aliases may share (or nest) a node
  for (const [key, child] of Object.entries(value)) {
    if (RESERVED_KEYS.has(key)) return [...at, key].join(".");
    const found = reservedKeyPath(child, [...at, key], seen);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** Validates a parsed config; errors name the key. `source` names the file. */
export function parseConfig(raw: unknown, source = "config"): RunConfig {
  // zod refuses these in its strict sections, but a free-form map (chatTemplateVariables) keeps its values as given.
  const reserved = reservedKeyPath(raw);
  if (reserved !== undefined) throw new ConfigError(`${source}: key '${reserved}' is not a config key (it leads to Object.prototype); remove it`);
  const result = configSchema.safeParse(raw ?? {});
  if (!result.success) {
    const lines = result.error.issues.map((issue) => {
      const key = issue.path.join(".") || "(root)";
      if (issue.code === "unrecognized_keys") return `unknown key(s) ${issue.keys.map((k) => `'${[...issue.path, k].join(".")}'`).join(", ")}`;
      return `key '${key}': ${issue.message}`;
    });
    throw new ConfigError(`${source}: ${lines.join("; ")}`);
  }
  return result.data;
}

/** Applies `a.b=c` overrides; values are parsed as YAML scalars (numbers, booleans, strings). */
export function applyOverrides(raw: Record<string, unknown>, overrides: string[]): Record<string, unknown> {
  const out = structuredClone(raw);
  for (const override of overrides) {
    const eq = override.indexOf("=");
    if (eq <= 0) throw new ConfigError(`--set '${override}': expected key.path=value`);
    const keys = override.slice(0, eq).split(".");
    const reserved = keys.find((key) => RESERVED_KEYS.has(key));
    if (reserved !== undefined)
      throw new ConfigError(`--set '${override}': '${reserved}' is not a config key (it leads to Object.prototype); use a key of the schema in lib/rl/config.ts`);
    let value: unknown;
    try {
      value = YAML.parse(override.slice(eq + 1));
    } catch (error) {
      throw new ConfigError(
        `--set '${override}': the value is not valid YAML (${(error as Error).message.split("\n")[0]}); ` +
          `quote a string that starts with [ { or a quote, e.g. --set 'key="[1,2"'`,
      );
    }
    let node: Record<string, unknown> = out;
    for (const key of keys.slice(0, -1)) {
      // Sections made here have no prototype: nothing inherited can answer for a key.
      if (!Object.hasOwn(node, key)) node[key] = Object.create(null);
      if (typeof node[key] !== "object" || node[key] === null || Array.isArray(node[key]))
        throw new ConfigError(`--set '${override}': '${key}' is not a section`);
      node = node[key] as Record<string, unknown>;
    }
    node[keys[keys.length - 1]] = value;
  }
  return out;
}

/** Reads a YAML recipe, applies overrides and validates. */
export function loadConfig(file: string | undefined, overrides: string[] = []): RunConfig {
  let raw: unknown = {};
  if (file) {
    let text: string;
    try {
      text = readRegularFile(file, "utf8");
    } catch (error) {
      throw new ConfigError(`cannot read config '${file}' (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
    }
    try {
      raw = YAML.parse(text) ?? {};
    } catch (error) {
      throw new ConfigError(`${file}: malformed YAML (${(error as Error).message.split("\n")[0]})`);
    }
    if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(`${file}: the top level must be a mapping of sections`);
  }
  return parseConfig(applyOverrides(raw as Record<string, unknown>, overrides), file ?? "config");
}
