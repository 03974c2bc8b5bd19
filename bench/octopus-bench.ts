/**
 * Octopus's cost claim (docs/methods.md §6.1, §11): generating n samples and training on 2n (n paired
 * from them) against generating all 2n, measured in the same run on the same model.
 * Published: 958 s vs 1323 s per step (0.72x).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { arithmeticProblems } from "../lib/demo/arithmetic";
import { ensureDemoModel } from "../lib/demo/model";
import { loadConfig } from "../lib/rl/config";
import { runTraining } from "../lib/rl/run";
import { shippedRecipe } from "../lib/util/package-root";
import { benchEnvironment, type Bench } from "./harness";

const recipe = shippedRecipe("demo.yaml");

export const octopusStepBench: Bench = {
  description: "Octopus step (generate n, train 2n) vs generating 2n, on the built-in model",
  async run({ device, quick }) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "octo-bench-octopus-"));
    try {
      const modelDir = await ensureDemoModel(path.join(dir, "model"), 1);
      const n = 8, steps = quick ? 2 : 4;
      const examples = arithmeticProblems(256, 3);
      const common = [`model.path=${modelDir}`, `model.device=${device === "auto" ? "auto" : device}`, `run.steps=${steps}`, "rollout.promptsPerStep=8", "rollout.maxNewTokens=96"];
      const measure = async (name: string, overrides: string[]) => {
        const runDir = path.join(dir, name);
        await runTraining(loadConfig(recipe, [...common, `run.dir=${runDir}`, ...overrides]), { examples, quiet: true });
        const lines = fs.readFileSync(path.join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
        const mean = (f: (m: { seconds: Record<string, number> }) => number) => lines.slice(1).reduce((a, m) => a + f(m), 0) / (lines.length - 1);
        return {
          stepSeconds: mean((m) => m.seconds.total),
          generationSeconds: mean((m) => m.seconds.generation),
          trainingSeconds: mean((m) => m.seconds.training + m.seconds.logprobs),
          trainedSequences: lines[0].trainedSequences as number,
        };
      };
      // Both train 2n sequences per prompt; only the way they are obtained differs.
      const octopus = await measure("octopus", [`rollout.samplesPerPrompt=${n}`, "method.octopus.augment=true"]);
      const generate2n = await measure("generate-2n", [`rollout.samplesPerPrompt=${2 * n}`, "method.octopus.augment=false"]);
      return {
        bench: "octopus-step",
        ratioMeaning: "Octopus step time (generate n, train 2n) / step time generating 2n (published 0.72; lower is better)",
        ratio: octopus.stepSeconds / generate2n.stepSeconds,
        generationRatio: octopus.generationSeconds / generate2n.generationSeconds,
        n,
        stepsAveraged: steps - 1,
        octopus,
        generate2n,
        note: "random-weight built-in model: every sample runs to maxNewTokens, so generation cost per sample is the same in both",
        environment: benchEnvironment(),
      };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};
