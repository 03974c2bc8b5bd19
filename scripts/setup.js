#!/usr/bin/env node
// Finds libtorch and builds the native addon with cmake-js. Runs as the package's install step.
//
// Discovery order (the first that exists wins):
//   1. LIBTORCH (a libtorch root) or Torch_DIR (a folder holding TorchConfig.cmake)
//   2. the libtorch inside a Python `torch` wheel (CUDA builds: the GPU path)
//   3. Debian's libtorch-dev (CPU, 1.13)
// When none is found and apt-get is usable (root), Debian's libtorch-dev is installed (with
// OpenBLAS) — never on a box where nvidia-smi sees a GPU, which must use a CUDA libtorch;
// otherwise it prints what to do. A CUDA libtorch also needs a CUDA toolkit of a matching
// version (checked before CMake runs). Nothing is downloaded by the build itself.
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

// What the Python `torch` knows about itself, as JSON (stdout lines of a module import can
// carry warnings; the JSON is the last line).
const TORCH_PROBE = `
import json, sys
import torch
info = {"executable": sys.executable, "version": torch.__version__, "cmakePrefix": torch.utils.cmake_prefix_path,
        "cuda": torch.version.cuda}
if torch.version.cuda:
    try:
        info["nccl"] = ".".join(str(v) for v in torch.cuda.nccl.version())
    except Exception:
        pass
    try:
        from torch.utils import cpp_extension
        info["cudaHome"] = cpp_extension.CUDA_HOME
    except Exception:
        pass
print(json.dumps(info))
`;

function fromPythonWheel() {
  for (const python of [process.env.PYTHON, "python3", "python"].filter(Boolean)) {
    const probe = spawnSync(python, ["-c", TORCH_PROBE], { encoding: "utf8" });
    if (probe.status !== 0) continue;
    const torch = JSON.parse(probe.stdout.trim().split("\n").pop());
    const dir = torchConfigIn(path.join(torch.cmakePrefix, "Torch"));
    if (!dir) continue;
    const flavour = torch.cuda ? `CUDA ${torch.cuda}` : "CPU only";
    return { source: `python torch ${torch.version}, ${flavour} (${torch.executable})`, torchDir: dir, python: torch };
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

function gpuPresent() {
  const smi = spawnSync("nvidia-smi", ["-L"], { encoding: "utf8" });
  return smi.status === 0 && /GPU \d/.test(smi.stdout);
}

// A libtorch root (the folder holding lib/ and share/) from its TorchConfig.cmake folder.
function torchRoot(torchDir) {
  const wheelOrUnpacked = path.resolve(torchDir, "..", "..", "..");
  return fs.existsSync(path.join(wheelOrUnpacked, "lib")) ? wheelOrUnpacked : path.resolve(torchDir, "..", "..", "..", "..");
}

function isCudaLibtorch(found) {
  if (found.python) return Boolean(found.python.cuda);
  return fs.existsSync(path.join(torchRoot(found.torchDir), "lib", "libtorch_cuda.so"));
}

// A CUDA libtorch's CMake config needs the CUDA toolkit (nvcc and its headers): one whose major
// version is the wheel's and whose minor is at least the wheel's (nvcc is backward compatible
// within a major release; torch's own extension builds apply the same rule).
function cudaToolkitFor(found) {
  const wanted = found.python && found.python.cuda;
  const candidates = [
    process.env.CUDACXX,
    ...[process.env.CUDA_HOME, process.env.CUDA_PATH, found.python && found.python.cudaHome].filter(Boolean).map((home) => path.join(home, "bin", "nvcc")),
    spawnSync("sh", ["-c", "command -v nvcc"], { encoding: "utf8" }).stdout.trim(),
    "/usr/local/cuda/bin/nvcc",
  ].filter(Boolean);
  const seen = [];
  const visited = new Set();
  for (const candidate of candidates) {
    if (!fs.existsSync(candidate)) continue;
    const nvcc = fs.realpathSync(candidate);  // /usr/local/bin/nvcc is often a link into the toolkit
    if (visited.has(nvcc)) continue;
    visited.add(nvcc);
    const root = path.resolve(path.dirname(nvcc), "..");
    // A wrapper script elsewhere (or torch's CUDA_HOME guessed from one) is not a toolkit root:
    // CMake's CUDA search needs the headers beside bin/nvcc.
    if (!fs.existsSync(path.join(root, "include", "cuda_runtime.h"))) {
      seen.push(`${nvcc} (no include/cuda_runtime.h beside it: not a toolkit root)`);
      continue;
    }
    const release = /release (\d+)\.(\d+)/.exec(spawnSync(nvcc, ["--version"], { encoding: "utf8" }).stdout || "");
    if (!release) continue;
    const version = `${release[1]}.${release[2]}`;
    seen.push(`${nvcc} (CUDA ${version})`);
    if (wanted) {
      const [major, minor] = wanted.split(".").map(Number);
      if (Number(release[1]) !== major || Number(release[2]) < minor) continue;
    }
    return { nvcc, root, version };
  }
  const need = wanted ? `a CUDA ${wanted.split(".")[0]}.x toolkit, ${wanted} or newer (this torch was built with CUDA ${wanted})` : "a CUDA toolkit";
  fail(`${found.source} is a CUDA build: its CMake config needs ${need}, with nvcc.
Found: ${seen.length ? seen.join(", ") : "no nvcc"}.
Install one, then rebuild (npm rebuild octo-native):
  - conda:  conda install -c nvidia cuda-toolkit=${wanted || "<version>"}
  - pip:    pip install "nvidia-cuda-nvcc-cu${wanted ? wanted.split(".")[0] : "<major>"}" and point CUDA_HOME at it
  - system: NVIDIA's CUDA ${wanted || ""} toolkit (e.g. /usr/local/cuda-${wanted || "<version>"})
and export CUDA_HOME=<toolkit root> (the folder holding bin/nvcc) if it is not on PATH.`);
}

// cmake-js configures only when build/CMakeCache.txt is missing: a build made against another
// libtorch is wiped, or its cached paths (TorchConfig's find_library results among them) would
// mix two libtorches.
function forgetOtherLibtorch(buildDir, torchDir) {
  const cache = path.join(buildDir, "CMakeCache.txt");
  if (!fs.existsSync(cache)) return;
  const line = fs.readFileSync(cache, "utf8").split("\n").find((l) => l.startsWith("Torch_DIR:"));
  const cached = line ? line.slice(line.indexOf("=") + 1) : "";
  if (cached && fs.existsSync(cached) && fs.realpathSync(cached) === fs.realpathSync(torchDir)) return;
  console.log(`octo-native: the build was configured against ${cached || "another libtorch"}; reconfiguring from scratch for ${torchDir}`);
  fs.rmSync(buildDir, { recursive: true, force: true });
}

function build(found) {
  const cmakeJs = require.resolve("cmake-js/bin/cmake-js", { paths: [root] });
  const jobs = String(process.env.CMAKE_BUILD_PARALLEL_LEVEL || require("node:os").availableParallelism());
  const args = [cmakeJs, "compile", `--CDTorch_DIR=${found.torchDir}`];
  if (isCudaLibtorch(found)) {
    const toolkit = cudaToolkitFor(found);
    console.log(`octo-native: CUDA toolkit ${toolkit.version} at ${toolkit.root}`);
    // CUDAToolkit_ROOT for CMake's FindCUDAToolkit, CUDA_TOOLKIT_ROOT_DIR for the older FindCUDA
    // that Caffe2Config.cmake still calls.
    args.push(`--CDCMAKE_CUDA_COMPILER=${toolkit.nvcc}`, `--CDCUDAToolkit_ROOT=${toolkit.root}`, `--CDCUDA_TOOLKIT_ROOT_DIR=${toolkit.root}`);
  }
  if (found.python) args.push(`--CDPython_EXECUTABLE=${found.python.executable}`);
  if (found.python && found.python.nccl) args.push(`--CDOCTO_TORCH_NCCL_VERSION=${found.python.nccl}`);
  if (process.env.OCTO_NATIVE_DEBUG) args.push("--debug");
  forgetOtherLibtorch(path.join(root, "build"), found.torchDir);
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
  const gpu = gpuPresent();
  if (!found) {
    // On a GPU box the CPU-only Debian libtorch is never what the user wants.
    if (gpu) fail(`nvidia-smi sees a GPU but no CUDA libtorch was found. ${HOW_TO_GET_LIBTORCH.split("\n").slice(1).join("\n")}
  (with a virtual environment: activate it first, or set PYTHON=/path/to/its/python)`);
    if (!aptUsable()) fail(HOW_TO_GET_LIBTORCH);
    console.log("octo-native: no libtorch found; installing Debian's libtorch-dev with apt-get …");
    aptInstall(["libtorch-dev", OPENBLAS_PACKAGE, GLOO_HEADERS_PACKAGE]);
    found = findLibtorch();
    if (!found) fail("libtorch-dev was installed but its TorchConfig.cmake was not found under /usr/lib/*/cmake/Torch.");
  }
  if (gpu && !isCudaLibtorch(found) && process.env.OCTO_NATIVE_ALLOW_CPU_TORCH !== "1")
    fail(`nvidia-smi sees a GPU, but the libtorch found is CPU-only: ${found.source} (${found.torchDir}).
A non-activated virtual environment, sudo (another python), or a CPU wheel found first are the usual causes.
Set PYTHON=/path/to/the/python/whose/torch/has/CUDA (check: python -c "import torch; print(torch.version.cuda)"),
or Torch_DIR / LIBTORCH; or OCTO_NATIVE_ALLOW_CPU_TORCH=1 to build for CPU anyway.`);
  if (found.source === "Debian libtorch-dev") {
    ensureFastBlas();
    ensureGlooHeaders();
  }
  build(found);
}

if (require.main === module) main();
else module.exports = { cudaToolkitFor, forgetOtherLibtorch };  // for test/setup.test.ts
