/**
 * The CAS of the verifier (docs/methods.md §7): the Compute Engine (`@cortex-js/compute-engine`) in a
 * worker thread (cas-worker.js). The engine is synchronous and can run away (`100000!` takes seconds,
 * a 10^(10^10) at full precision exhausts the heap), so this thread waits on the worker with
 * `Atomics.wait` for what is left of the budget; past it the worker is terminated (a fresh one starts
 * on the next call). The worker also has a 512 MB heap cap. Its start-up (loading and warming the
 * engine, ~0.1–0.5 s, at most CAS_STARTUP_MS) is not counted against the budget.
 */
import * as path from "node:path";
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from "node:worker_threads";

import { type Budget, OverBudget } from "./budget";
import { readArgument } from "./latex";
import { ABS_TOL, REL_TOL } from "./numbers";

/** How long to wait for the CAS worker to load the Compute Engine. */
const CAS_STARTUP_MS = 20000;

/**
 * What a scalar pair is asked: `gold = pred`; `pred = k·gold` for a constant k ≠ 0 (the two sides of
 * equivalent equations, moved to one side); or the same with k > 0 (equivalent inequalities).
 */
export type ScalarRelation = "equal" | "multiple" | "positive multiple";

/** Result of one scalar comparison in the CAS worker. */
export interface CasVerdict {
  eq: boolean;
  /** the two sides are structurally identical (canonical forms), whatever their values */
  same?: boolean;
  error?: string;
  /** "equal" without free variables: both sides as MathJSON, not canonicalised (no number in them is rounded yet), for exact arithmetic here */
  read?: [unknown, unknown];
}

interface CasWorker {
  worker: Worker;
  port: MessagePort;
  flag: Int32Array;
}

let cas: CasWorker | undefined;

function startCas(): CasWorker {
  const cePath = require.resolve("@cortex-js/compute-engine");
  const shared = new SharedArrayBuffer(4);
  const flag = new Int32Array(shared);
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(path.join(__dirname, "cas-worker.js"), {
    workerData: { flag: shared, port: port2, cePath, relTol: REL_TOL, absTol: ABS_TOL },
    transferList: [port2],
    resourceLimits: { maxOldGenerationSizeMb: 512 },
  });
  worker.unref(); // never keeps the process alive
  const self: CasWorker = { worker, port: port1, flag };
  // an 'error' event without a listener would crash the process; a dead worker is replaced instead
  worker.on("error", () => {
    if (cas === self) cas = undefined;
  });
  worker.on("exit", () => {
    if (cas === self) cas = undefined;
  });
  const waited = Atomics.wait(flag, 0, 0, CAS_STARTUP_MS);
  const hello = receiveMessageOnPort(port1)?.message as { ready?: boolean; error?: string } | undefined;
  if (waited === "timed-out" || !hello?.ready) {
    void worker.terminate();
    throw new Error(hello?.error ?? `the CAS worker did not start within ${CAS_STARTUP_MS} ms`);
  }
  return self;
}

/** Terminate the CAS worker (it is unref'd, so this is only needed for tidy shutdowns and tests). */
export async function closeVerifier(): Promise<void> {
  const current = cas;
  cas = undefined;
  if (current) {
    current.port.close();
    await current.worker.terminate();
  }
}

/**
 * Rewrites for notation the Compute Engine 0.27 cannot parse, `\binom{n}{k}` → `\frac{(n)!}{(k)!((n)-(k))!}`,
 * or reads otherwise than we do: it joins digits across a space (`1 2000` = 12000), where kinds/number.ts
 * only accepts thousands groups, which never reach the CAS; the rest is a product.
 */
function forCas(latex: string): string {
  latex = latex.replace(/(\d)\s+(?=\d)/g, "$1\\times ");
  for (let at = latex.search(/\\[dt]?binom(?![a-zA-Z])/); at >= 0; at = latex.search(/\\[dt]?binom(?![a-zA-Z])/)) {
    const command = /^\\[dt]?binom/.exec(latex.slice(at))![0];
    const n = readArgument(latex, at + command.length);
    const k = n && readArgument(latex, n.end);
    if (!n || !k) return latex; // malformed: the CAS reports it
    latex = `${latex.slice(0, at)}\\frac{(${n.text})!}{(${k.text})!((${n.text})-(${k.text}))!}${latex.slice(k.end)}`;
  }
  return latex;
}

/**
 * Compare scalar LaTeX pairs in the CAS worker within what is left of `budget`; on overrun the worker
 * is killed and OverBudget is thrown. A worker's start-up does not count against the budget.
 */
export function casCompare(pairs: [string, string, ScalarRelation][], budget: Budget): { verdicts?: CasVerdict[]; error?: string } {
  if (cas === undefined) {
    const startup = performance.now();
    try {
      cas = startCas();
    } catch (e) {
      return { error: `CAS unavailable: ${(e as Error).message}` };
    } finally {
      budget.exclude(performance.now() - startup);
    }
  }
  const current = cas;
  Atomics.store(current.flag, 0, 0);
  current.worker.postMessage({ pairs: pairs.map(([a, b, relation]) => [forCas(a), forCas(b), relation]) });
  const waited = Atomics.wait(current.flag, 0, 0, Math.max(1, budget.remainingMs()));
  if (waited === "timed-out") {
    cas = undefined;
    current.port.close();
    void current.worker.terminate();
    throw new OverBudget(budget.ms, "in the CAS");
  }
  const answer = receiveMessageOnPort(current.port)?.message as { results?: CasVerdict[] } | undefined;
  if (!answer?.results || answer.results.length !== pairs.length) return { error: "the CAS worker sent no answer" };
  return { verdicts: answer.results };
}
