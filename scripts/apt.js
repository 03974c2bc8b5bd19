// Debian packages the project needs at setup or test time, installed with apt-get when we
// may (root on a Debian-like system). Shared by setup.js (libtorch) and ensure-chromium.js.
"use strict";
const { spawnSync } = require("node:child_process");

function aptUsable() {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  return isRoot && spawnSync("apt-get", ["--version"]).status === 0;
}

/**
 * apt-get update, then install `packages` without their recommended packages (libtorch-dev's
 * pull in GTK, Qt, GStreamer, VA drivers and more that nothing here uses); throws naming the
 * command that failed.
 */
function aptInstall(packages) {
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = ["install", "-y", "-qq", "--no-install-recommends", ...packages];
  for (const args of [["update", "-qq"], install]) {
    const r = spawnSync("apt-get", args, { stdio: "inherit", env });
    if (r.status !== 0) throw new Error(`'apt-get ${args.join(" ")}' failed (exit ${r.status}).`);
  }
}

module.exports = { aptUsable, aptInstall };
