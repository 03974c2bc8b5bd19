// `octo-native info --json` as the user runs it (scripts/gpu-check.sh, step info): the CLI in its
// own process, its JSON kept whole. --expect-cuda: failed unless the engine sees a CUDA device.
"use strict";
const { spawnSync } = require("node:child_process");
const path = require("node:path");

const { repoRoot, runStep } = require("./step");

runStep({ "expect-cuda": { type: "boolean", default: false } }, async ({ "expect-cuda": expectCuda }) => {
  const cli = path.join(repoRoot, "dist", "lib", "commands", "cli.js");
  const child = spawnSync(process.execPath, [cli, "info", "--json"], { cwd: repoRoot, encoding: "utf8" });
  if (child.status !== 0) return { status: "failed", error: `info --json exited ${child.status ?? child.signal}`, stderr: (child.stderr ?? "").slice(-3000) };
  const info = JSON.parse(child.stdout);
  const sawCuda = info.cuda?.available === true && info.cuda.deviceCount > 0;
  return {
    status: expectCuda && !sawCuda ? "failed" : "ok",
    ...(expectCuda && !sawCuda ? { error: "the engine sees no CUDA device (a CPU build, or the driver is not reachable)" } : {}),
    info,
  };
});
