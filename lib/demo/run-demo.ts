/**
 * The embedded demo, the default main job (docs/methods.md §10): a tiny model and tokenizer created
 * from scratch, an SFT cold start into the self-correction format on synthetic arithmetic,
 * then Octopus Stage I and Stage II through the same `runTraining` a real run uses;
 * evaluation before and after, a table, and summary.json.
 */
import path from "node:path";

import { Model } from "../engine/model";
import { TextTokenizer } from "../engine/tokenizer";
import { evaluateModel, resolveEvalSettings, type EvalSettings } from "../eval/evaluate";
import type { EvalMetrics, SelfCorrectionMetrics } from "../eval/metrics";
import { extractAnswer } from "../grading/extract";
import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import { writeReportAfterRun } from "../report";
import { loadConfig, type RunConfig } from "../rl/config";
import { loadDataset, type Example } from "../rl/data";
import { promptOptions } from "../rl/prompts";
import { runTraining } from "../rl/run";
import { runSft } from "../rl/sft";
import { writeFileAtomic } from "../util/atomic-file";
import { makeDirectory } from "../util/files";
import { shippedRecipe } from "../util/package-root";
import { seededRandom } from "../util/random";
import { arithmeticProblems, sampleQuickAnswer, writeSolution, writeSolutionReaching } from "./arithmetic";
import { DEMO_MODEL_SPEC, writeDemoTokenizer } from "./model";

/** How often the SFT data's first attempt is wrong. */
const SFT_FIRST_ATTEMPT_ERROR_RATE = 0.3;
/**
 * How often the SFT data's re-solve keeps a wrong first answer (its last step slips onto it):
 * the confirmation bias of a weak corrector, which RL on correction-specific rollouts (w→c
 * rewarded over w→w) is there to remove.
 */
const SFT_CONFIRMATION_RATE = 0.2; // 0, 0.3 and 0.4 tried: see the issue 5 note

/**
 * Stage I's KL on o1 (β; the paper's recipe and configs/demo.yaml: 0.01). The tiny model's o1 and
 * o2 share every weight, so training o2 moves o1 too; 0.1 holds o1 nearer the SFT model and keeps
 * more of Stage I's gain in the correction (after Stage I on seed 0: Δi→c +2.0 against +1.1 at
 * 0.01; docs/demo-diagnosis.md).
 */
const STAGE1_O1_KL = 0.1;

/** The demo's RL prompts and held-out problems (distinct seeds); compare-methods uses the same. */
export const demoTrainProblems = () => arithmeticProblems(2000, 2);
export const demoEvalProblems = (count: number) => arithmeticProblems(count, 999);

/**
 * How the demo evaluates: sampled at the rollout temperature, several samples per problem — the
 * distribution RL optimises, and far from the ceiling that greedy decoding of this easy task sits near.
 */
export function demoEvalSettings(config: RunConfig): EvalSettings {
  return resolveEvalSettings({
    mode: "octopus", prompt: promptOptions(config), separator: DEFAULT_SEPARATOR,
    maxNewTokens: config.rollout.maxNewTokens, temperature: config.rollout.temperature, samplesPerProblem: 4, rounds: 2, seed: 12345, batch: 64,
  });
}

/** The config keys `octo-native train` without --config accepts (`--set run.seed=N`, `--set run.dir=DIR`). */
export const DEMO_SETTABLE_KEYS = ["run.seed", "run.dir"] as const;

export interface DemoOptions {
  dir: string;
  /**
   * Seeds everything the demo draws: the base model's initial weights, the SFT data's slips and
   * order, and the RL rollouts (run.seed of both stages). The eval set and its sampling seed stay
   * fixed, so the numbers of different seeds are measured on the same problems. Default 0.
   */
  seed?: number;
  /** smaller budgets, for tests */
  quick?: boolean;
  quiet?: boolean;
}

export interface DemoSummary {
  dir: string;
  seed: number;
  seconds: number;
  sftSteps: number;
  stage1Steps: number;
  stage2Steps: number;
  evalProblems: number;
  evaluations: Record<"afterSft" | "afterStage1" | "afterStage2", EvalMetrics>;
  /**
   * How `evaluations` were made, paths relative to the run directory: `octo-native eval --model
   * <dir>/<checkpoint> --data <dir>/<data>` with these settings gives the same numbers.
   */
  evalSetup: { data: string; settings: EvalSettings; checkpoints: Record<"afterSft" | "afterStage1" | "afterStage2", string> };
  improved: { accT2: boolean; deltaIncorrectToCorrect: boolean };
}

export const recipe = shippedRecipe("demo.yaml");

/** The demo's table: percentages, with the per-problem standard error of Acc@t2 (docs/methods.md §8). */
export function formatTable(evaluations: Record<string, SelfCorrectionMetrics>): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`.padStart(7);
  const se = (m: SelfCorrectionMetrics) => (m.standardError ? `±${(100 * m.standardError.accT2).toFixed(1)}` : "").padStart(5);
  const lines = [`${"".padEnd(14)} ${["Acc@t1", "Acc@t2"].map((h) => h.padStart(7)).join(" ")} ${"±SE".padStart(5)} ${["Δ", "Δi→c", "Δc→i", "marker"].map((h) => h.padStart(7)).join(" ")}`];
  for (const [name, m] of Object.entries(evaluations))
    lines.push(`${name.padEnd(14)} ${[m.accT1, m.accT2].map(pct).join(" ")} ${se(m)} ${[m.delta, m.deltaIncorrectToCorrect, m.deltaCorrectToIncorrect, m.markerRate].map(pct).join(" ")}`);
  return lines.join("\n");
}

type Budget = { sft: number; stage1: number; stage2: number; evalProblems: number };
export type Log = (line: string) => void;

export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const started = Date.now();
  const log: Log = (line) => !options.quiet && process.stderr.write(line + "\n");
  const dir = path.resolve(options.dir);
  makeDirectory(dir, "the demo's run directory");
  // Stage I gets 3× the steps of Stage II: it is where o2 learns to fix o1 (Δi→c +1.5 to +2.2 over
  // 36 steps on seeds 0-2), while Stage II mostly turns gains into o1 accuracy (docs/demo-diagnosis.md).
  const budget: Budget = options.quick ? { sft: 60, stage1: 2, stage2: 2, evalProblems: 32 } : { sft: 600, stage1: 36, stage2: 12, evalProblems: 1000 };

  const seed = options.seed ?? 0;
  const { base, tokenizer } = await createBaseModel(path.join(dir, "base"), seed);
  const config = loadConfig(recipe);
  const evalSet = await writeEvalSet(dir, budget.evalProblems);
  const evalSettings = demoEvalSettings(config);
  const evaluate = async (model: Model) => (await evaluateModel(model, tokenizer, evalSet.examples, evalSettings)).metrics;

  const sftDir = path.join(dir, "sft");
  await coldStart(base, tokenizer, config, budget.sft, sftDir, log, started, seed);
  const afterSft = await evaluate(base);
  base.dispose();
  log(`demo: after SFT   acc@t1 ${afterSft.accT1.toFixed(3)} acc@t2 ${afterSft.accT2.toFixed(3)}`);

  // Octopus Stage I, then Stage II from the Stage I checkpoint (the published recipe's order).
  const rlSeed = [`run.seed=${seed}`];
  const stage1 = await octopusStage(dir, 1, sftDir, budget.stage1, options.quiet, log, [...rlSeed, `method.octopus.o1KlCoef=${STAGE1_O1_KL}`]);
  const afterStage1 = await evaluateCheckpoint(stage1, evaluate);
  const stage2 = await octopusStage(dir, 2, stage1, budget.stage2, options.quiet, log, rlSeed);
  const afterStage2 = await evaluateCheckpoint(stage2, evaluate);

  const summary: DemoSummary = {
    dir,
    seed,
    seconds: (Date.now() - started) / 1000,
    sftSteps: budget.sft,
    stage1Steps: budget.stage1,
    stage2Steps: budget.stage2,
    evalProblems: evalSet.examples.length,
    evaluations: { afterSft, afterStage1, afterStage2 },
    evalSetup: {
      data: path.relative(dir, evalSet.file),
      settings: evalSettings,
      checkpoints: { afterSft: path.relative(dir, sftDir), afterStage1: path.relative(dir, stage1), afterStage2: path.relative(dir, stage2) },
    },
    improved: {
      accT2: afterStage2.accT2 > afterSft.accT2,
      deltaIncorrectToCorrect: afterStage2.deltaIncorrectToCorrect > afterSft.deltaIncorrectToCorrect,
    },
  };
  writeFileAtomic(path.join(dir, "summary.json"), JSON.stringify(summary, null, 2) + "\n");
  await writeReportAfterRun(dir, log);
  return summary;
}

/** A model and tokenizer from scratch, saved as an ordinary Hugging Face directory. */
export async function createBaseModel(baseDir: string, seed = 0): Promise<{ base: Model; tokenizer: TextTokenizer }> {
  const base = await Model.create(DEMO_MODEL_SPEC, seed, { device: "cpu" });
  await base.save(baseDir, { overwrite: true }); // the demo's own directory, rewritten on each run
  writeDemoTokenizer(baseDir);
  return { base, tokenizer: TextTokenizer.fromDir(baseDir) };
}

/**
 * The eval set, written to the run directory and read back, so `octo-native eval` can reproduce
 * the numbers from the files alone.
 */
export async function writeEvalSet(dir: string, problems: number): Promise<{ file: string; examples: Example[] }> {
  const file = path.join(dir, "eval.jsonl");
  writeFileAtomic(file, demoEvalProblems(problems).map((e) => JSON.stringify(e) + "\n").join(""));
  return { file, examples: await loadDataset({ path: file }) };
}

/**
 * SFT cold start, saved to `sftDir`: o1 is an answer at a glance (off by 1-2 in 30% of the
 * examples), o2 the careful step-by-step re-solve, which in 20% of the wrong-o1 examples keeps
 * o1's answer (a weak corrector's confirmation bias). Octopus RL rewards w→c over w→w and removes it.
 */
export async function coldStart(
  base: Model, tokenizer: TextTokenizer, config: RunConfig, steps: number, sftDir: string, log: Log, started: number,
  seed = 0, overrides: { errorRate?: number; confirmationRate?: number; lr?: number; batchSize?: number } = {},
): Promise<void> {
  const random = seededRandom(7 + seed);
  const errorRate = overrides.errorRate ?? SFT_FIRST_ATTEMPT_ERROR_RATE, confirmationRate = overrides.confirmationRate ?? SFT_CONFIRMATION_RATE;
  const sftItems = arithmeticProblems(4000, 1).map((example) => {
    const o1 = sampleQuickAnswer(example.problem, errorRate, random);
    const o1Answer = extractAnswer(o1) as string;
    const o2 = o1Answer !== example.answer && random() < confirmationRate ? writeSolutionReaching(example.problem, Number(o1Answer)) : writeSolution(example.problem);
    return { example, o1, o2 };
  });
  log(`demo: SFT cold start, ${steps} steps on ${sftItems.length} examples`);
  await runSft(base, tokenizer, sftItems, {
    prompt: promptOptions(config), separator: DEFAULT_SEPARATOR, steps, batchSize: overrides.batchSize ?? 32, lr: overrides.lr ?? 3e-3, maxResponseTokens: config.rollout.maxNewTokens, seed: 3 + seed,
    onStep: (step, loss) => step % 50 === 0 && log(`  sft step ${step} loss ${loss.toFixed(3)} (${((Date.now() - started) / 1000).toFixed(0)}s)`),
  });
  await base.save(sftDir, { overwrite: true });
  writeDemoTokenizer(sftDir);
}

/** One Octopus stage from checkpoint `from` through runTraining; its final checkpoint. */
export async function octopusStage(dir: string, stage: 1 | 2, from: string, steps: number, quiet: boolean | undefined, log: Log, overrides: string[] = []): Promise<string> {
  const stageConfig = loadConfig(recipe, [`model.path=${from}`, `run.dir=${path.join(dir, `stage${stage}`)}`, `run.steps=${steps}`, `method.octopus.stage=${stage}`, ...overrides]);
  log(`demo: Octopus Stage ${stage}, ${steps} steps`);
  const summary = await runTraining(stageConfig, { examples: demoTrainProblems(), plainProgress: true, quiet });
  return summary.finalCheckpoint;
}

export async function evaluateCheckpoint(checkpoint: string, evaluate: (model: Model) => Promise<EvalMetrics>): Promise<EvalMetrics> {
  const model = await Model.load(checkpoint, { device: "cpu" });
  try {
    return await evaluate(model);
  } finally {
    model.dispose();
  }
}
