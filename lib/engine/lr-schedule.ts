/**
 * Learning-rate schedule (docs/methods.md §2): linear warm-up from lr/warmupSteps to lr over
 * `warmupSteps` optimizer steps, then constant, or cosine decay to lr·minLrRatio at totalSteps.
 */
export interface LrSchedule {
  /** peak learning rate */
  lr: number;
  warmupSteps: number;
  kind: "constant" | "cosine";
  /** optimizer steps of the whole run (cosine only) */
  totalSteps?: number;
  /** floor of the cosine as a fraction of lr (default 0) */
  minLrRatio?: number;
}

/** The learning rate of optimizer step `step` (0-based). */
export function learningRate(schedule: LrSchedule, step: number): number {
  const { lr, warmupSteps } = schedule;
  if (step < warmupSteps) return (lr * (step + 1)) / warmupSteps;
  if (schedule.kind === "constant") return lr;
  const total = schedule.totalSteps;
  if (total === undefined || total <= warmupSteps) throw new RangeError("a cosine schedule needs totalSteps > warmupSteps");
  const progress = Math.min(1, (step - warmupSteps) / (total - warmupSteps));
  const floor = lr * (schedule.minLrRatio ?? 0);
  return floor + (lr - floor) * 0.5 * (1 + Math.cos(Math.PI * progress));
}
