// scripts/gpu-check.sh --dry-run: the GPU acceptance script walks every step on a CPU machine
// (each GPU step's helper loads and parses its options; nothing is measured) and writes its JSON.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const STEPS = ["environment", "build", "info", "hf-parity-fp32", "hf-parity-bf16", "sampler-graphs", "decode-throughput", "loss-memory", "train-mfu", "train-run"];

test("the dry run records every step in order, none failed, the GPU ones skipped for lack of a GPU", () => {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "octo-gpu-check-"));
  try {
    const r = spawnSync("bash", [path.join(__dirname, "..", "scripts", "gpu-check.sh"), "--dry-run", "--out", out], { encoding: "utf8", timeout: 110_000 });
    expect(r.status).toBe(0);
    const report = JSON.parse(fs.readFileSync(path.join(out, "gpu-check.json"), "utf8"));
    expect(report.mode).toBe("dry-run");
    expect(Object.keys(report.steps)).toEqual(STEPS);
    expect(report.summary.failed).toBe(0);
    for (const name of STEPS.filter((s) => s !== "environment" && s !== "info")) {
      expect(report.steps[name].status).toBe("skipped");
      expect(report.steps[name].reason).toMatch(/dry run \(no GPU\)/);
    }
    expect(fs.readFileSync(path.join(out, "gpu-check.log"), "utf8")).toContain("=== train-run");
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
});
