#!/usr/bin/env node
// Finds libtorch and builds the native addon with cmake-js. Runs as the package's install step.
//
// Discovery order (the first that exists wins):
//   1. LIBTORCH (a libtorch root) or Torch_DIR (a folder holding TorchConfig.cmake)
//   2. the libtorch inside a Python `torch` wheel (CUDA builds: the GPU path)
//   3. Debian's libtorch-dev (CPU, 1.13)
// When none is found and apt-get is usable (root), Debian's libtorch-dev is installed (with
// OpenBLAS); otherwise it prints what to do. Nothing is downloaded by the build itself.
//
//   node scripts/setup.js            find (install if missing) + build
//   node scripts/setup.js --find     print the libtorch that would be used, as JSON
"use strict";
const { execFileSync, spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const { aptUsable, aptInstall: installDebianPackages } = require("./apt");

const root = path.resolve(__dirname, "..");

function torchConfigIn(dir) {
  return dir && fs.existsSync(path.join(dir, "TorchConfig.cmake")) ? dir : null;
}

function fromEnvironment() {
  if (process.env.Torch_DIR) {
    const dir = torchConfigIn(process.env.Torch_DIR);
    if (!dir) fail(`Torch_DIR=${process.env.Torch_DIR} holds no TorchConfig.cmake. Point it at <libtorch>/share/cmake/Torch.`);
    return { source: "Torch_DIR", torchDir: dir };
  }
  if (process.env.LIBTORCH) {
    const dir = torchConfigIn(path.join(process.env.LIBTORCH, "share", "cmake", "Torch"));
    if (!dir) fail(`LIBTORCH=${process.env.LIBTORCH} has no share/cmake/Torch/TorchConfig.cmake. Point it at an unpacked libtorch root.`);
    return { source: "LIBTORCH", torchDir: dir };
  }
  return null;
}

function fromPythonWheel() {
  for (const python of [process.env.PYTHON, "python3", "python"].filter(Boolean)) {
    const probe = spawnSync(python, ["-c", "import torch; print(torch.utils.cmake_prefix_path); print(torch.__version__)"], { encoding: "utf8" });
    if (probe.status !== 0) continue;
    const [prefix, version] = probe.stdout.trim().split("\n");
    const dir = torchConfigIn(path.join(prefix, "Torch"));
    if (dir) return { source: `python torch ${version} (${python})`, torchDir: dir };
  }
  return null;
}

function fromDebian() {
  for (const lib of ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"]) {
    const dir = torchConfigIn(path.join(lib, "cmake", "Torch"));
    if (dir) return { source: "Debian libtorch-dev", torchDir: dir };
  }
  return null;
}

function findLibtorch() {
  return fromEnvironment() || fromPythonWheel() || fromDebian();
}

function aptInstall(packages) {
  try {
    installDebianPackages(packages);
  } catch (error) {
    fail(error.message);
  }
}

// Debian's libtorch calls whatever libblas.so.3 the alternatives system points at; the
// default is the netlib reference BLAS, ~20x slower at matmul than OpenBLAS on the same CPU.
const OPENBLAS_PACKAGE = "libopenblas0-openmp"; // OpenMP flavour: shares libtorch's thread pool

function usesReferenceBlas() {
  for (const lib of ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]) {
    const blas = path.join(lib, "libblas.so.3");
    if (fs.existsSync(blas)) return fs.realpathSync(blas).includes(`${path.sep}blas${path.sep}`);
  }
  return false;
}

function ensureFastBlas() {
  if (!usesReferenceBlas()) return;
  if (aptUsable()) {
    console.log(`octo-native: libblas.so.3 is the slow reference BLAS; installing ${OPENBLAS_PACKAGE} …`);
    aptInstall([OPENBLAS_PACKAGE]);
  } else {
    console.warn(`octo-native: warning: libtorch will use the reference BLAS (slow matmuls). Run: sudo apt-get install ${OPENBLAS_PACKAGE}`);
  }
}

// Data-parallel training on CPU uses libtorch's ProcessGroupGloo, whose header includes Gloo's
// own headers; Debian ships those apart from libtorch-dev.
const GLOO_HEADERS_PACKAGE = "libgloo-dev";

function ensureGlooHeaders() {
  if (fs.existsSync("/usr/include/gloo/config.h")) return;
  if (aptUsable()) {
    console.log(`octo-native: installing ${GLOO_HEADERS_PACKAGE} (Gloo headers, for data-parallel training on CPU) …`);
    aptInstall([GLOO_HEADERS_PACKAGE]);
  } else {
    console.warn(`octo-native: warning: no Gloo headers: data-parallel training on CPU will be off. Run: sudo apt-get install ${GLOO_HEADERS_PACKAGE}`);
  }
}

function fail(message) {
  console.error(`octo-native setup: ${message}`);
  process.exit(1);
}

const HOW_TO_GET_LIBTORCH = `no libtorch was found, and apt-get cannot be used here (not root, or not Debian).
Do one of:
  - Debian/Ubuntu (CPU):   sudo apt-get install libtorch-dev      then: npm rebuild octo-native
  - CUDA (GPU):            pip install torch                      (its wheel ships libtorch; then rebuild)
  - any unpacked libtorch: export LIBTORCH=/path/to/libtorch       (or Torch_DIR=<it>/share/cmake/Torch)`;

function build(found) {
  const cmakeJs = require.resolve("cmake-js/bin/cmake-js", { paths: [root] });
  const jobs = String(process.env.CMAKE_BUILD_PARALLEL_LEVEL || require("node:os").availableParallelism());
  const args = [cmakeJs, "compile", `--CDTorch_DIR=${found.torchDir}`];
  if (process.env.OCTO_NATIVE_DEBUG) args.push("--debug");
  console.log(`octo-native: building the addon against ${found.source} (${found.torchDir}) with ${jobs} jobs`);
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit", env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs } });
  if (r.status !== 0) fail(`the native build failed (exit ${r.status}); the compiler output above says why.`);
}

function main() {
  let found = findLibtorch();
  if (process.argv.includes("--find")) {
    console.log(JSON.stringify(found));
    return;
  }
  if (!found) {
    if (!aptUsable()) fail(HOW_TO_GET_LIBTORCH);
    console.log("octo-native: no libtorch found; installing Debian's libtorch-dev with apt-get …");
    aptInstall(["libtorch-dev", OPENBLAS_PACKAGE, GLOO_HEADERS_PACKAGE]);
    found = findLibtorch();
    if (!found) fail("libtorch-dev was installed but its TorchConfig.cmake was not found under /usr/lib/*/cmake/Torch.");
  }
  if (found.source === "Debian libtorch-dev") {
    ensureFastBlas();
    ensureGlooHeaders();
  }
  build(found);
}

main();
