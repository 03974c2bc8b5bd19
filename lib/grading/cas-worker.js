/**
 * The CAS worker (docs/methods.md §7), run by cas.ts in a worker thread so that a runaway
 * computation can be cut off at the budget. Plain CommonJS: Node runs it as it is, under ts-jest and
 * compiled alike (tsc copies it next to cas.js).
 *
 * The Compute Engine's UMD bundle is evaluated as CommonJS with `vm`: its package.json says
 * `"type": "module"`, so a plain `require` of the bundle makes Node load it as an ES module that
 * exports nothing.
 *
 * Protocol: a message `{pairs: [[a, b, relation], …]}` is answered on `workerData.port` with
 * `{results: [CasVerdict, …]}` (cas.ts), then `flag[0] = 1` wakes the waiting thread. `relation` is
 * "equal" (a = b), "multiple" (b = k·a for a constant k ≠ 0: equivalent equations) or
 * "positive multiple" (k > 0: equivalent inequalities).
 */
"use strict";
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
const vm = require("node:vm");

const flag = new Int32Array(workerData.flag);
const port = workerData.port;
const REL_TOL = workerData.relTol;
const ABS_TOL = workerData.absTol;
// fixed sample points for the identity test: irrational-looking, both signs
const POINTS = [0.5772156649, 1.4142135623, -0.7390851332, 2.7182818284, -1.6180339887, 0.3183098862];

function reply(message) {
  port.postMessage(message);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
}

let ComputeEngine;
let ce;
function newEngine() {
  ce = new ComputeEngine();
  ce.precision = "machine"; // doubles: fast, and 10^(10^10) becomes Infinity instead of a bignum
}

// two overflowed values (10^{400} and 10^{401} are both Infinity) are not thereby equal
function close(a, b) {
  if (!Number.isFinite(a) || !Number.isFinite(b)) return false;
  const d = Math.abs(a - b);
  return d <= REL_TOL * Math.max(Math.abs(a), Math.abs(b)) || d <= ABS_TOL;
}

// the numeric value {re, im} of an expression, or null when it has none (symbols left, booleans, sets)
function valueOf(expr) {
  const n = expr.N();
  const re = n.re;
  const im = n.im;
  if (typeof re !== "number" || typeof im !== "number" || Number.isNaN(re) || Number.isNaN(im)) return null;
  return { re, im };
}

function sameValue(x, y) {
  return close(x.re, y.re) && close(x.im, y.im);
}

// both sides parsed as written and canonicalised, or a verdict saying which one the CAS cannot read
function parsePair(a, b) {
  // the written form keeps every number as it was typed
  const writtenA = ce.parse(a, { canonical: false });
  const writtenB = ce.parse(b, { canonical: false });
  const A = writtenA.canonical;
  const B = writtenB.canonical;
  if (!A.isValid) return { verdict: { eq: false, error: "the CAS cannot parse " + JSON.stringify(a) } };
  if (!B.isValid) return { verdict: { eq: false, error: "the CAS cannot parse " + JSON.stringify(b) } };
  if (A.isNaN === true || B.isNaN === true) return { verdict: { eq: false, error: "undefined value (NaN)" } };
  return { writtenA, writtenB, A, B, vars: Array.from(new Set(A.unknowns.concat(B.unknowns))) };
}

// the substitution of the k-th sample point for every free variable
function samplePoint(vars, k) {
  const sub = {};
  vars.forEach((v, j) => {
    sub[v] = POINTS[(k + 2 * j) % POINTS.length] * (1 + 0.37 * j);
  });
  return sub;
}

function compare(a, b) {
  const parsed = parsePair(a, b);
  if (parsed.verdict) return parsed.verdict;
  const { writtenA, writtenB, A, B, vars } = parsed;
  if (vars.length === 0) {
    // constants: the other thread redoes the comparison exactly where both are numbers (canonical
    // forms round: \frac{1}{10^{400}} and \frac{1}{10^{401}} both become 0)
    const read = [writtenA.json, writtenB.json];
    if (A.isSame(B)) return { eq: true, same: true, read };
    const x = valueOf(A);
    const y = valueOf(B);
    if (x === null || y === null) return { eq: false, read };
    if (![x.re, x.im, y.re, y.im].every(Number.isFinite)) return { eq: false, error: "a value overflows double precision: not compared by value", read };
    return { eq: sameValue(x, y), read };
  }
  if (A.isSame(B)) return { eq: true, same: true };
  if (vars.length > 8) return { eq: false, error: "too many free variables for the identity test" };
  for (let k = 0; k < 4; k++) {
    const sub = samplePoint(vars, k);
    const x = valueOf(A.subs(sub));
    const y = valueOf(B.subs(sub));
    if (x === null || y === null) return { eq: false }; // not numbers (booleans, sets): isSame already said no
    if (!sameValue(x, y)) return { eq: false };
  }
  return { eq: true };
}

// b = k·a for one real constant k ≠ 0 (k > 0 when `positive`), by the ratio b/a at the sample points
function multiple(a, b, positive) {
  const parsed = parsePair(a, b);
  if (parsed.verdict) return parsed.verdict;
  const { A, B, vars } = parsed;
  if (vars.length > 8) return { eq: false, error: "too many free variables for the identity test" };
  let ratio = null;
  for (let k = 0; k < 4; k++) {
    const sub = samplePoint(vars, k);
    const x = valueOf(A.subs(sub));
    const y = valueOf(B.subs(sub));
    if (x === null || y === null || !close(x.im, 0) || !close(y.im, 0) || x.re === 0) return { eq: false };
    const r = y.re / x.re;
    if (!Number.isFinite(r) || r === 0 || (ratio !== null && !close(r, ratio))) return { eq: false };
    ratio = r;
  }
  return { eq: !positive || ratio > 0 };
}

// The engine's first parse, simplification and evaluation compile its rule tables (~50-100 ms idle,
// seconds on a loaded machine): pay that during start-up, which is outside the per-call budget,
// so a fresh worker's first comparison is as fast as any other.
function warmUp() {
  for (const [a, b] of [["\\sqrt{8}", "2\\sqrt{2}"], ["\\frac{x^2-1}{x-1}", "x+1"], ["\\pi r^2", "r^2\\pi"]]) {
    ce.pushScope();
    try {
      compare(a, b);
    } catch (e) {
      // warming only: a real call reports its own errors
    } finally {
      ce.popScope();
    }
  }
}

try {
  const mod = { exports: {} };
  const source = fs.readFileSync(workerData.cePath, "utf8");
  vm.runInThisContext("(function (exports, module) {" + source + "\n})", { filename: workerData.cePath })(mod.exports, mod);
  ComputeEngine = mod.exports.ComputeEngine;
  newEngine();
  warmUp();
  reply({ ready: true });
} catch (e) {
  reply({ ready: false, error: String((e && e.message) || e) });
}

parentPort.on("message", (request) => {
  const results = [];
  for (const [a, b, relation] of request.pairs) {
    try {
      ce.pushScope(); // symbols auto-declared while parsing die with the scope
      try {
        results.push(relation === "equal" ? compare(a, b) : multiple(a, b, relation === "positive multiple"));
      } finally {
        ce.popScope();
      }
    } catch (e) {
      results.push({ eq: false, error: "CAS error: " + String((e && e.message) || e) });
      newEngine();
    }
  }
  reply({ results });
});
