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

/** Throws a RangeError naming the field when `schedule` could give a NaN, infinite or negative learning rate. */
export function checkSchedule(schedule: LrSchedule): void {
  const { lr, warmupSteps, minLrRatio } = schedule;
  if (!(Number.isFinite(lr) && lr > 0)) throw new RangeError(`schedule.lr must be a finite number > 0, not ${lr}`);
  if (!(Number.isInteger(warmupSteps) && warmupSteps >= 0)) throw new RangeError(`schedule.warmupSteps must be an integer >= 0, not ${warmupSteps}`);
  if (minLrRatio !== undefined && !(minLrRatio >= 0 && minLrRatio <= 1)) throw new RangeError(`schedule.minLrRatio must be in [0, 1], not ${minLrRatio}`);
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
