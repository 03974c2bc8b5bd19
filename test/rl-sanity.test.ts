// The RL sanity suite (issue 18): each estimator, through the real step, learns a task a random
// 1-layer model gets right ~10% of the time, and the sign-flipped advantage unlearns it. The effects
// are huge by construction (success ~10% → above 90%, or → ~0), so no machine's rounding can flip
// them. OCTO_SANITY_REPORT=1 prints the curves. Budgets, measured on seeds 1-6 (docs/rl-sanity.md):
//  - the GRPO family first holds ≥ 90% over 3 steps at step 8-12: the budget is 30 steps;
//  - Octopus Stage I at step 16-28: the budget is 60 steps;
//  - sign-flipped, every run is at 0.00-0.01 after 30 steps, from 0.06-0.13.
import { native } from "../lib/native";
import { endsWithDigit, head, sanityConfig, stepReaching, tail, trainOctopusStageOne, trainPlain } from "./helpers/rl-sanity";

// A 1-layer, 32-wide model gains nothing from a second thread, and jest runs other suites beside this one.
beforeAll(() => native().setNumThreads(1));

const report = process.env.OCTO_SANITY_REPORT === "1";
const show = (name: string, curve: number[]) => report && console.log(`${name}: ${curve.map((x) => x.toFixed(2)).join(" ")}`);

/** Each estimator's recipe, as its papers configure it (docs/methods.md §4-§5), over the sanity base (lr 3e-2). */
const ESTIMATORS: Record<string, Record<string, unknown>> = {
  grpo: { advantage: { estimator: "grpo" }, loss: { aggregation: "token-mean" } },
  "Dr.GRPO": { advantage: { estimator: "grpo", normStd: false }, loss: { aggregation: "seq-mean-token-sum-norm" } },
  rloo: { advantage: { estimator: "rloo" } },
  "reinforce++": { advantage: { estimator: "reinforce_baseline" } },
  "DAPO (dynamic sampling, clip-higher)": { advantage: { estimator: "grpo", dynamicSampling: true }, loss: { clipLow: 0.2, clipHigh: 0.28 } },
  // Two mini-batches: the second is off-policy, where the sequence ratio and its 3e-4 clip act.
  "GSPO (sequence ratio)": { loss: { ratioLevel: "sequence", clipLow: 3e-4, clipHigh: 4e-4, aggregation: "seq-mean-token-mean" }, training: { miniBatches: 2 } },
};

const learned = (success: number[]) => stepReaching(success, 0.9, 3);
/** Fell: the last 3 steps' mean is below half of the first step's. */
const fell = (success: number[]) => tail(success, 3) < head(success, 1) / 2;

describe.each(Object.entries(ESTIMATORS))("%s", (name, settings) => {
  const config = sanityConfig(settings);

  test("learns: success from ~10% to ≥ 90% (3-step mean) within 30 steps", async () => {
    const run = await trainPlain(config, 30, { sign: 1, seed: 1 });
    show(`${name} +`, run.success);
    expect(head(run.success, 1)).toBeLessThan(0.3);
    expect(learned(run.success)).toBeDefined();
  });

  test("sign-flipped advantage: success falls", async () => {
    const run = await trainPlain(config, 30, { sign: -1, seed: 1 });
    show(`${name} −`, run.success);
    expect(fell(run.success)).toBe(true);
  });
});

describe("Octopus Stage I: o2 learns to fix o1", () => {
  // lr 5e-3, not the GRPO family's 3e-2: Adam's first step moves every weight by about lr, and at
  // 1e-2 that alone wipes the SFT'd digits out of the boxes (docs/rl-sanity.md).
  const config = sanityConfig({
    method: { name: "octopus", octopus: { stage: 1, separator: "|" } },
    rollout: { maxNewTokens: 12 },
    optimizer: { lr: 5e-3 },
    loss: { ratioLevel: "sequence", clipLow: 3e-4, clipHigh: 4e-4, aggregation: "seq-mean-token-mean" },
  });

  test("learns: the final answer's accuracy from ~10% to ≥ 90% (3-step mean) within 60 steps", async () => {
    const run = await trainOctopusStageOne(config, 60, { sign: 1, seed: 1 });
    show("octopus + final", run.success);
    show("octopus + first", run.firstAttempt);
    expect(head(run.success, 1)).toBeLessThan(0.3);
    expect(learned(run.success)).toBeDefined();
  });

  test("sign-flipped advantage: the final answer's accuracy falls", async () => {
    const run = await trainOctopusStageOne(config, 30, { sign: -1, seed: 1 });
    show("octopus − final", run.success);
    expect(fell(run.success)).toBe(true);
  });
});

test("the helpers' verdicts", () => {
  expect(endsWithDigit("ab7")).toBe(true);
  expect(endsWithDigit("7a")).toBe(false);
  expect(endsWithDigit("")).toBe(false);
  expect(stepReaching([0.1, 0.95, 0.9, 0.9], 0.9, 3)).toBe(4);
  expect(stepReaching([0.1, 0.95, 0.9, 0.5], 0.9, 3)).toBeUndefined();
  expect(stepReaching([0.95, 1], 0.9, 3)).toBe(2); // a DAPO run that saturated after 2 steps
});
