// Debian packages the project needs at setup or test time, installed with apt-get when we
// may (root on a Debian-like system). Shared by setup.js (libtorch) and ensure-chromium.js.
"use strict";
const { spawnSync } = require("node:child_process");

function aptUsable() {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  return isRoot && spawnSync("apt-get", ["--version"]).status === 0;
}

/** apt-get update, then install `packages`; throws naming the command that failed. */
function aptInstall(packages, { noInstallRecommends = false } = {}) {
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = ["install", "-y", "-qq", ...(noInstallRecommends ? ["--no-install-recommends"] : []), ...packages];
  for (const args of [["update", "-qq"], install]) {
    const r = spawnSync("apt-get", args, { stdio: "inherit", env });
    if (r.status !== 0) throw new Error(`'apt-get ${args.join(" ")}' failed (exit ${r.status}).`);
  }
}

module.exports = { aptUsable, aptInstall };
