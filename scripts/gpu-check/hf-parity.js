// Logit parity with Hugging Face transformers on a device (scripts/gpu-check.sh, steps hf-parity-fp32
// and hf-parity-bf16): the committed fixtures of test/fixtures/hf-parity/{llama3,qwen2,qwen3}, loaded
// as test/hf-parity.test.ts loads them, on --device instead of the CPU.
//
//   fp32: ours against the fixture's fp32 logits (transformers on CPU), max |Δlogit| <= 1e-4
//         where attention_mask is 1, as the CPU test.
//   bf16: ours in bf16 against transformers in bf16 on the same device and inputs (--reference, from
//         hf_bf16_logits.py), within BF16_RELATIVE_TOLERANCE below; both sides' distance to the fp32
//         fixture is reported too, so the gap between us reads against each one's own rounding.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const { dist, repoRoot, runStep } = require("./step");
const { Model } = dist("lib/engine/model");

const FIXTURES = path.join(repoRoot, "test", "fixtures", "hf-parity");
const FAMILIES = ["llama3", "qwen2", "qwen3"];
const FP32_TOLERANCE = 1e-4;
// bf16 keeps 8 significant bits: its rounding step relative to a value is 2^-8 (0.0039). Two bf16
// implementations round differently at every op (RMSNorm, RoPE tables, attention kernel,
// accumulation order), each drifting a few steps from the fp32 result: on CPU ours drifted
// 0.014-0.025 from the fixture and transformers 0.012-0.025 (|logit| up to 1.6-2.0), and ours minus
// theirs measured 0.013-0.018 at most, mean 0.0025. The bound is 8 steps of the family's largest
// |logit| (max|logit| / 32: 0.049-0.064 here): above both drifts summed, below every real fault the fp32
// test catches (a dropped position gap moves these logits by 0.12 to 1.0).
const BF16_RELATIVE_TOLERANCE = 8 * 2 ** -8;

/** Max and mean |a - b| over the positions where the case's attention mask is 1. */
function logitDelta(ours, reference, c, vocab) {
  const batch = c.input_ids.length, length = c.input_ids[0].length;
  let maxAbsDelta = 0, sum = 0, compared = 0;
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < length; t++) {
      if (c.attention_mask && c.attention_mask[b][t] === 0) continue;
      const row = reference[b][t];
      for (let v = 0; v < vocab; v++) {
        const delta = Math.abs(ours[(b * length + t) * vocab + v] - (row[v] ?? NaN)); // null: a non-finite reference
        maxAbsDelta = Math.max(maxAbsDelta, delta); // NaN stays NaN, and fails the bound
        sum += delta;
        compared++;
      }
    }
  return { maxAbsDelta, meanAbsDelta: sum / compared, compared };
}

function maxAbsLogit(c) {
  let max = 0;
  for (const row of c.logits) for (const position of row) for (const x of position) max = Math.max(max, Math.abs(x));
  return max;
}

async function oursOnCase(model, c) {
  const batch = c.input_ids.length, length = c.input_ids[0].length;
  return model.forward(Int32Array.from(c.input_ids.flat()), batch, length, {
    positions: c.position_ids ? Int32Array.from(c.position_ids.flat()) : undefined,
    attentionMask: c.attention_mask ? Uint8Array.from(c.attention_mask.flat()) : undefined,
  });
}

runStep(
  { device: { type: "string", default: "cuda" }, dtype: { type: "string", default: "float32" }, reference: { type: "string" } },
  async ({ device, dtype, reference }) => {
    if (dtype !== "float32" && dtype !== "bfloat16") throw new Error(`--dtype must be float32 or bfloat16, not ${dtype}`);
    if (dtype === "bfloat16" && !reference) throw new Error("--dtype bfloat16 needs --reference (hf_bf16_logits.py's output)");
    const hf = reference ? JSON.parse(fs.readFileSync(reference, "utf8")) : undefined;
    const families = {};
    let pass = true;
    for (const family of FAMILIES) {
      const dir = path.join(FIXTURES, family);
      const expected = JSON.parse(fs.readFileSync(path.join(dir, "expected.json"), "utf8"));
      const model = await Model.load(dir, { device, dtype });
      try {
        const vocab = model.spec.vocabSize;
        const scale = Math.max(...expected.cases.map(maxAbsLogit));
        const tolerance = dtype === "float32" ? FP32_TOLERANCE : BF16_RELATIVE_TOLERANCE * scale;
        const cases = {};
        for (const c of expected.cases) {
          const ours = await oursOnCase(model, c);
          if (dtype === "float32") cases[c.name] = logitDelta(ours, c.logits, c, vocab);
          else {
            const theirs = hf.families[family].cases.find((x) => x.name === c.name);
            if (!theirs) throw new Error(`${reference} has no case ${c.name} for ${family}`);
            cases[c.name] = {
              ...logitDelta(ours, theirs.logits, c, vocab),
              oursToFp32: logitDelta(ours, c.logits, c, vocab).maxAbsDelta,
              transformersToFp32: logitDelta(Float32Array.from(theirs.logits.flat(2), (x) => x ?? NaN), c.logits, c, vocab).maxAbsDelta,
              // transformers in fp32 on this device against the CPU-made fixture: the floor under the fp32 step's 1e-4
              transformersFp32OnDevice: theirs.fp32MaxAbsDeltaToFixture,
            };
          }
        }
        const maxAbsDelta = Math.max(...Object.values(cases).map((x) => x.maxAbsDelta));
        pass &&= maxAbsDelta <= tolerance;
        families[family] = { device: model.device, dtype: model.handle.dtype, maxAbsLogit: scale, tolerance, maxAbsDelta, withinTolerance: maxAbsDelta <= tolerance, cases };
      } finally {
        model.dispose();
      }
    }
    return {
      status: pass ? "ok" : "failed",
      against: dtype === "float32" ? "committed fp32 fixtures (transformers on CPU)" : `transformers ${hf.transformers} in bf16 on ${hf.device} (torch ${hf.torch})`,
      tolerance: dtype === "float32" ? `max |Δlogit| <= ${FP32_TOLERANCE}` : `max |Δlogit| <= ${BF16_RELATIVE_TOLERANCE} x the family's largest |logit| (8 bf16 rounding steps)`,
      maxAbsDelta: Math.max(...Object.values(families).map((f) => f.maxAbsDelta)),
      families,
    };
  },
);
