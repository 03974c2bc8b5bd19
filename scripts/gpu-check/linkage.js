// Which libraries the built addon loads, and from where (scripts/gpu-check.sh, step build, after
// `node scripts/setup.js`): its RPATH/RUNPATH and NEEDED entries (readelf -d) and what the loader
// resolves (ldd), for libtorch, libtorch_cuda, libc10(_cuda), libcudart and libnccl: each with its
// path and whether it lies in the torch wheel's site-packages (the build is meant to use the
// wheel's own copies, not a system CUDA). failed: a library "not found", or --expect-cuda and no
// libtorch_cuda (a CPU-only build against a CUDA wheel).
"use strict";
const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const { repoRoot, runStep } = require("./step");

const WATCHED = ["libtorch.so", "libtorch_cpu", "libtorch_cuda", "libc10.so", "libc10_cuda", "libcudart", "libnccl"];

function run(command, args) {
  const r = spawnSync(command, args, { encoding: "utf8" });
  if (r.error) return { ok: false, text: `${command}: ${r.error.message}` };
  return { ok: r.status === 0, text: (r.stdout || "") + (r.stderr || "") };
}

/** ldd lines `name => path (addr)` / `name => not found` as {name: path | "not found"}. */
function parseLdd(text) {
  const resolved = {};
  for (const line of text.split("\n")) {
    const m = line.trim().match(/^(\S+)\s+=>\s+(not found|\S+)/);
    if (m) resolved[m[1]] = m[2];
  }
  return resolved;
}

runStep(
  {
    addon: { type: "string", default: path.join(repoRoot, "build", "Release", "octo_native.node") },
    "site-packages": { type: "string", default: "" },
    "expect-cuda": { type: "boolean", default: false },
  },
  async ({ addon, "site-packages": sitePackages, "expect-cuda": expectCuda }) => {
    if (!fs.existsSync(addon)) return { status: "failed", error: `${addon} does not exist: the build did not produce the addon` };
    const dynamic = run("readelf", ["-d", addon]);
    const entries = dynamic.text.split("\n").filter((l) => /\((RPATH|RUNPATH|NEEDED)\)/.test(l));
    const pick = (tag) => entries.filter((l) => l.includes(`(${tag})`)).map((l) => l.replace(/^.*\[(.*)\]\s*$/, "$1"));
    const ldd = run("ldd", [addon]);
    const resolved = parseLdd(ldd.text);
    const wheelRoot = sitePackages && fs.existsSync(sitePackages) ? fs.realpathSync(sitePackages) : null;
    const libraries = {};
    for (const want of WATCHED) {
      const name = Object.keys(resolved).find((n) => n.startsWith(want));
      if (!name) continue;
      const where = resolved[name];
      const real = where !== "not found" && fs.existsSync(where) ? fs.realpathSync(where) : where;
      libraries[name] = { path: where, realPath: real, fromWheel: wheelRoot ? real.startsWith(wheelRoot + path.sep) : null };
    }
    const notFound = Object.entries(resolved).filter(([, p]) => p === "not found").map(([n]) => n);
    const hasTorchCuda = Object.keys(libraries).some((n) => n.startsWith("libtorch_cuda"));
    const problems = [
      ...(dynamic.ok ? [] : [`readelf failed: ${dynamic.text.slice(0, 300)}`]),
      ...(ldd.ok ? [] : [`ldd failed: ${ldd.text.slice(0, 300)}`]),
      ...notFound.map((n) => `${n} not found by the loader`),
      ...(expectCuda && !hasTorchCuda ? ["no libtorch_cuda among the addon's libraries: a CPU-only build"] : []),
    ];
    return {
      status: problems.length === 0 ? "ok" : "failed",
      ...(problems.length ? { problems } : {}),
      addon: path.relative(repoRoot, addon),
      addonBytes: fs.statSync(addon).size,
      rpath: pick("RPATH"),
      runpath: pick("RUNPATH"),
      needed: pick("NEEDED"),
      sitePackages: wheelRoot,
      libraries,
      allFromWheel: wheelRoot ? Object.values(libraries).every((l) => l.fromWheel) : null,
    };
  },
);
