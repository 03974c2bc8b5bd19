/**
 * The method recipes at demo scale: each configs/ recipe with the embedded demo's model,
 * prompt and budgets laid over it, so every method runs on a 2-core CPU in minutes through the
 * same runTraining a real run uses. What changes per method, and why:
 *  - SCoRe: the demo model learned the self-correction marker in its SFT cold start, so the
 *    marker is its turn-2 instruction — turn 1 stops at the marker, and turn 2 continues from
 *    prompt + turn 1 + marker (with chat off that is token for token the prefix a single-pass
 *    correction continues from, so the usual Acc@t1/Acc@t2 evaluation measures SCoRe's turns);
 *  - Trust-GRPO: the judge is the demo model itself on our engine (it cannot judge reasoning:
 *    a smoke test of the path; its "score" is whatever number it boxes, clipped to [0, 1]);
 *    tests use the HTTP judge against a loopback stub instead.
 */
import fs from "node:fs";

import YAML from "yaml";

import { DEFAULT_SEPARATOR } from "../methods/octopus/octopus";
import { parseConfig, type RunConfig } from "../rl/config";
import { shippedRecipe } from "../util/package-root";

/** Recipes (configs/*.yaml) by short name. */
export const METHOD_RECIPES = {
  grpo: "grpo.yaml",
  "score-stage1": "score-stage1.yaml",
  "score-stage2": "score-stage2.yaml",
  "trust-grpo": "trust-grpo.yaml",
  srt: "srt.yaml",
  "octopus-srt": "octopus-srt.yaml",
} as const;

export type MethodRecipe = keyof typeof METHOD_RECIPES;

type Tree = { [key: string]: unknown };

/** `over` laid onto `base`: objects merge key by key, anything else replaces; undefined deletes. */
function overlay(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [key, value] of Object.entries(over)) {
    if (value === undefined) delete out[key];
    else if (value && typeof value === "object" && !Array.isArray(value) && out[key] && typeof out[key] === "object" && !Array.isArray(out[key]))
      out[key] = overlay(out[key] as Tree, value as Tree);
    else out[key] = value;
  }
  return out;
}

/** The demo settings every method shares (configs/demo.yaml's scale). */
function demoScale(modelPath: string, runDir: string, steps: number): Tree {
  return {
    run: { dir: runDir, steps, saveEvery: 0, seed: 0 },
    model: { path: modelPath, device: "cpu", dtype: "auto" },
    data: { train: undefined, eval: undefined, promptTemplate: "{problem}=", chat: false },
    rollout: { promptsPerStep: 8, samplesPerPrompt: 8, maxNewTokens: 112, temperature: 1.0 },
    optimizer: { lr: 5e-5, warmupSteps: 2 },
    training: { microBatchSize: 64, miniBatches: 1, activationCheckpointing: false },
  };
}

const METHOD_DEMO: Record<MethodRecipe, Tree> = {
  grpo: {},
  "score-stage1": { method: { score: { turn1Stop: [DEFAULT_SEPARATOR], instruction: DEFAULT_SEPARATOR, turn2Template: "{instruction}" } } },
  "score-stage2": { method: { score: { turn1Stop: [DEFAULT_SEPARATOR], instruction: DEFAULT_SEPARATOR, turn2Template: "{instruction}" } } },
  "trust-grpo": { method: { trustGrpo: { judge: { backend: "engine", modelPath: "policy", url: undefined, apiKeyEnv: undefined, chat: false, promptTemplate: "{problem}=", maxNewTokens: 40 } } } },
  srt: { method: { srt: { earlyStopping: { every: 0 } } } },
  "octopus-srt": {},
};

/**
 * A recipe at demo scale. `modelPath`: a demo-model directory after SFT (runs/demo/sft, or the
 * quick demo's sft/). `extra` is laid over last (tests shrink budgets with it).
 */
export function demoMethodConfig(recipe: MethodRecipe, options: { modelPath: string; runDir: string; steps: number; extra?: Tree }): RunConfig {
  const file = shippedRecipe(METHOD_RECIPES[recipe]);
  const raw = (YAML.parse(fs.readFileSync(file, "utf8")) ?? {}) as Tree;
  const merged = overlay(overlay(overlay(raw, demoScale(options.modelPath, options.runDir, options.steps)), METHOD_DEMO[recipe]), options.extra ?? {});
  return parseConfig(merged, `${file} (demo scale)`);
}
