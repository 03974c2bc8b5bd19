/** Benches of the model engine: checkpoint loading and the forward pass. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { Model } from "../lib/engine/model";
import { QWEN3_LAYOUT } from "../lib/engine/model-config";
import { native, type ModelSpec } from "../lib/native";
import { benchEnvironment, medianSeconds, type Bench } from "./harness";

/** ~54M parameters (Qwen3 layout): 12 layers of width 512 and a tied 32k vocabulary. */
export function benchModelSpec(quick: boolean): ModelSpec {
  return {
    ...QWEN3_LAYOUT,
    vocabSize: quick ? 8192 : 32000,
    hiddenSize: 512,
    intermediateSize: 1536,
    numLayers: quick ? 2 : 12,
    numHeads: 8,
    numKvHeads: 4,
    headDim: 64,
    rmsNormEps: 1e-6,
    ropeTheta: 1e6,
    tieWordEmbeddings: true,
  };
}

function parameterCount(spec: ModelSpec): number {
  return native().expectedParameters(spec).reduce((sum, p) => sum + p.shape.reduce((a, b) => a * b, 1), 0);
}

export const safetensorsLoadBench: Bench = {
  description: "load a ~50M-parameter checkpoint vs a raw read of the same bytes (page cache warm)",
  async run({ device, quick }) {
    const spec = benchModelSpec(quick);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "octo-bench-load-"));
    try {
      const created = await Model.create(spec, 0, { device: "cpu" });
      await created.save(dir);
      created.dispose();
      const file = path.join(dir, "model.safetensors");
      const bytes = fs.statSync(file).size;
      const repeats = quick ? 3 : 5;
      // Baseline: pread of the same bytes into fresh memory, in C++ like the loader itself.
      const rawTimes: number[] = [];
      for (let i = 0; i <= repeats; i++) rawTimes.push(await native().timeFileRead(file));
      const rawSeconds = rawTimes.slice(1).sort((a, b) => a - b)[Math.floor(repeats / 2)];
      const loadSeconds = await medianSeconds(repeats, async () => (await Model.load(dir, { device })).dispose());
      return {
        bench: "safetensors-load",
        ratioMeaning: "load time / raw read time of the same bytes (1.0 = as fast as reading the file; lower is better)",
        ratio: loadSeconds / rawSeconds,
        parameters: parameterCount(spec),
        bytes,
        loadSeconds,
        rawReadSeconds: rawSeconds,
        loadGBps: bytes / loadSeconds / 1e9,
        rawReadGBps: bytes / rawSeconds / 1e9,
        device,
        environment: benchEnvironment(),
      };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
};

export const forwardBench: Bench = {
  description: "forward tokens/s of a ~50M-parameter model vs the GEMM rate of its largest matmul",
  async run({ device, quick }) {
    const spec = benchModelSpec(quick);
    const batch = 4, length = quick ? 64 : 256, tokens = batch * length;
    const model = await Model.create(spec, 0, { device });
    try {
      const ids = Int32Array.from({ length: tokens }, (_, i) => (i * 7919) % spec.vocabSize);
      const seconds = await medianSeconds(quick ? 2 : 5, () => model.forward(ids, batch, length));
      const params = parameterCount(spec);
      // 2 FLOPs per parameter per token for the matmuls, plus attention's QK^T and PV.
      const attentionFlops = 4 * batch * length * length * spec.numHeads * spec.headDim * spec.numLayers;
      const flops = 2 * params * tokens + attentionFlops;
      const gemmSeconds = await native().timeMatmul(tokens, spec.hiddenSize, spec.intermediateSize, quick ? 3 : 10, { device });
      const gemmFlopsPerSecond = (2 * tokens * spec.hiddenSize * spec.intermediateSize) / gemmSeconds;
      const forwardFlopsPerSecond = flops / seconds;
      return {
        bench: "forward",
        ratioMeaning: "forward FLOP/s / FLOP/s of a plain [tokens x hidden] x [hidden x mlp] GEMM in the same run (higher is better, ~1 is the ceiling)",
        ratio: forwardFlopsPerSecond / gemmFlopsPerSecond,
        parameters: params,
        batch,
        length,
        tokensPerSecond: tokens / seconds,
        forwardSeconds: seconds,
        forwardGflops: forwardFlopsPerSecond / 1e9,
        gemmGflops: gemmFlopsPerSecond / 1e9,
        device: model.device,
        dtype: model.handle.dtype,
        environment: benchEnvironment(),
      };
    } finally {
      model.dispose();
    }
  },
};
