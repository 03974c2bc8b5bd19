/**
 * The wall-clock budget of one gradeAnswer call (docs/methods.md §7): answer extraction,
 * normalisation, the CAS and the exact arithmetic all count against it.
 */

export class Budget {
  private deadline: number;

  constructor(readonly ms: number) {
    this.deadline = performance.now() + ms;
  }

  remainingMs(): number {
    return this.deadline - performance.now();
  }

  /** Time that does not count against the budget (a CAS worker's start-up). */
  exclude(ms: number): void {
    this.deadline += ms;
  }

  /** Throws OverBudget, naming `stage`, once the budget is spent. */
  check(stage: string): void {
    if (this.remainingMs() < 0) throw new OverBudget(this.ms, stage);
  }
}

/** A gradeAnswer call ran past its budget: the answer is judged incorrect. */
export class OverBudget extends Error {
  constructor(ms: number, stage: string) {
    super(`grading exceeded its ${ms} ms budget (${stage}); judged incorrect (a larger timeoutMs allows more)`);
  }
}
