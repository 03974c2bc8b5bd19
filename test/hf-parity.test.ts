// Logits of our engine vs Hugging Face transformers' own modeling code, on tiny random-weight
// checkpoints in HF layout (test/fixtures/hf-parity/, see make_hf_parity.py for how they were
// made). fp32 on CPU, max |Δlogit| <= 1e-4 wherever attention_mask is 1.
import fs from "node:fs";
import path from "node:path";

import { Model } from "../lib/engine/model";

const FIXTURES = path.join(__dirname, "fixtures", "hf-parity");
const FAMILIES = [
  { dir: "llama3", what: "Llama 3 (GQA, llama3 rope scaling, untied)" },
  { dir: "qwen2", what: "Qwen2.5 (q/k/v bias, tied embeddings)" },
  { dir: "qwen3", what: "Qwen3 (q/k norm, head_dim 32)" },
];
// plain: no mask; left_padded: a uniform position shift (RoPE cannot tell it from none);
// gapped_positions: positions that jump, which an engine ignoring `positions` would get wrong.
const CASES = ["plain", "left_padded", "gapped_positions"];
const TOLERANCE = 1e-4;

interface ParityCase {
  name: string;
  input_ids: number[][];
  attention_mask?: number[][];
  position_ids?: number[][];
  logits: number[][][];
}

/** Max |Δlogit| over the positions the mask keeps (padding logits are unspecified), and how many were compared. */
function maxLogitDelta(ours: Float32Array, c: ParityCase, vocab: number): { maxDelta: number; compared: number } {
  const batch = c.input_ids.length, length = c.input_ids[0].length;
  let maxDelta = 0, compared = 0;
  for (let b = 0; b < batch; b++)
    for (let t = 0; t < length; t++) {
      if (c.attention_mask && c.attention_mask[b][t] === 0) continue;
      for (let v = 0; v < vocab; v++) {
        maxDelta = Math.max(maxDelta, Math.abs(ours[(b * length + t) * vocab + v] - c.logits[b][t][v]));
        compared++;
      }
    }
  return { maxDelta, compared };
}

describe.each(FAMILIES)("logit parity with Hugging Face transformers: $what", ({ dir }) => {
  const familyDir = path.join(FIXTURES, dir);
  const expected = JSON.parse(fs.readFileSync(path.join(familyDir, "expected.json"), "utf8")) as { cases: ParityCase[] };
  let model: Model;
  beforeAll(async () => {
    model = await Model.load(familyDir, { device: "cpu" });
  });
  afterAll(() => model?.dispose());

  test("the fixture holds exactly the three cases", () => {
    expect(expected.cases.map((c) => c.name)).toEqual(CASES);
  });

  test.each(CASES)(`%s: max |Δlogit| <= ${TOLERANCE}`, async (name) => {
    const c = expected.cases.find((x) => x.name === name)!;
    const batch = c.input_ids.length, length = c.input_ids[0].length;
    const logits = await model.forward(Int32Array.from(c.input_ids.flat()), batch, length, {
      positions: c.position_ids ? Int32Array.from(c.position_ids.flat()) : undefined,
      attentionMask: c.attention_mask ? Uint8Array.from(c.attention_mask.flat()) : undefined,
    });
    const { maxDelta, compared } = maxLogitDelta(logits, c, model.spec.vocabSize);
    expect(compared).toBeGreaterThan(0);
    expect(maxDelta).toBeLessThanOrEqual(TOLERANCE);
  });

  test("gapped_positions has teeth: dropping the positions misses transformers by far more than the tolerance", async () => {
    // Measured 0.12 (llama3), 0.17 (qwen2), 1.0 (qwen3): over 1000x the tolerance, a fixed
    // computation on fixed weights (no sampling), so no CPU's rounding comes near the bound.
    const c = expected.cases.find((x) => x.name === "gapped_positions")!;
    const batch = c.input_ids.length, length = c.input_ids[0].length;
    const logits = await model.forward(Int32Array.from(c.input_ids.flat()), batch, length, {
      attentionMask: Uint8Array.from(c.attention_mask!.flat()),
    });
    expect(maxLogitDelta(logits, c, model.spec.vocabSize).maxDelta).toBeGreaterThan(100 * TOLERANCE);
  });
});
