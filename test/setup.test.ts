// scripts/setup.js: the CUDA toolkit version rule and the reconfigure-on-switch rule, on fake
// toolkits and build directories (no build runs).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const SETUP = path.join(__dirname, "..", "scripts", "setup.js");
// eslint-disable-next-line @typescript-eslint/no-require-imports
const setup = require(SETUP) as {
  cudaToolkitFor(found: { source: string; python?: { cuda: string; cudaHome?: string } }): { nvcc: string; root: string; version: string };
  forgetOtherLibtorch(buildDir: string, torchDir: string): void;
};

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "octo-setup-test-"));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A toolkit root whose bin/nvcc reports `version`, as NVIDIA's does. */
function fakeToolkit(version: string): string {
  const root = path.join(tmp, `cuda-${version}`);
  fs.mkdirSync(path.join(root, "bin"), { recursive: true });
  fs.mkdirSync(path.join(root, "include"), { recursive: true });
  fs.writeFileSync(path.join(root, "include", "cuda_runtime.h"), "");
  const nvcc = path.join(root, "bin", "nvcc");
  fs.writeFileSync(nvcc, `#!/bin/sh\necho "nvcc: NVIDIA (R) Cuda compiler driver"\necho "Cuda compilation tools, release ${version}, V${version}.1"\n`);
  fs.chmodSync(nvcc, 0o755);
  return root;
}

describe("the CUDA toolkit a CUDA wheel builds with", () => {
  // Versions no real toolkit on a test machine has, so whatever nvcc is installed never matches.
  test("same major, minor at least the wheel's: the toolkit named by CUDA_HOME or by torch is taken", () => {
    const older = fakeToolkit("7.1"), newer = fakeToolkit("7.4");
    const saved = { ...process.env };
    try {
      process.env.CUDA_HOME = older;
      delete process.env.CUDACXX;
      delete process.env.CUDA_PATH;
      const toolkit = setup.cudaToolkitFor({ source: "test torch", python: { cuda: "7.2", cudaHome: newer } });
      expect(toolkit).toEqual({ nvcc: fs.realpathSync(path.join(newer, "bin", "nvcc")), root: fs.realpathSync(newer), version: "7.4" });
    } finally {
      process.env = saved;
    }
  });

  test("a wrapper script is not a toolkit root; none fits: setup fails naming the wheel's version, what it found, and how to install one", () => {
    const other = fakeToolkit("6.9");
    const wrapperDir = path.join(tmp, "wrapper", "bin");
    fs.mkdirSync(wrapperDir, { recursive: true });
    fs.writeFileSync(path.join(wrapperDir, "nvcc"), `#!/bin/sh\nexec ${path.join(fakeToolkit("7.3"), "bin", "nvcc")} "$@"\n`);
    fs.chmodSync(path.join(wrapperDir, "nvcc"), 0o755);
    const script = `require(${JSON.stringify(SETUP)}).cudaToolkitFor({ source: "test torch", python: { cuda: "7.2" } })`;
    const wrapper = path.join(wrapperDir, "nvcc");
    // The wrapper runs a 7.3 nvcc (which would fit), but its folder holds no toolkit.
    const r = spawnSync(process.execPath, ["-e", script], { encoding: "utf8", env: { ...process.env, CUDA_HOME: other, CUDACXX: wrapper } });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${fs.realpathSync(wrapper)} (no include/cuda_runtime.h beside it: not a toolkit root)`);
    expect(r.stderr).toMatch(/CUDA 7\.x toolkit, 7\.2 or newer/);
    expect(r.stderr).toContain(`${fs.realpathSync(path.join(other, "bin", "nvcc"))} (CUDA 6.9)`);
    expect(r.stderr).toMatch(/conda install -c nvidia cuda-toolkit=7\.2/);
    expect(r.stderr).toMatch(/export CUDA_HOME=/);
  });
});

describe("switching libtorch", () => {
  function buildDirFor(torchDir: string): string {
    const dir = fs.mkdtempSync(path.join(tmp, "build-"));
    fs.writeFileSync(path.join(dir, "CMakeCache.txt"), `CMAKE_BUILD_TYPE:STRING=Release\nTorch_DIR:UNINITIALIZED=${torchDir}\n`);
    return dir;
  }

  test("a build configured against another libtorch is wiped; the same one is kept", () => {
    const debian = fs.mkdtempSync(path.join(tmp, "debian-torch-")), wheel = fs.mkdtempSync(path.join(tmp, "wheel-torch-"));
    const same = buildDirFor(debian);
    setup.forgetOtherLibtorch(same, debian);
    expect(fs.existsSync(path.join(same, "CMakeCache.txt"))).toBe(true);
    const other = buildDirFor(debian);
    const log = jest.spyOn(console, "log").mockImplementation(() => {});
    setup.forgetOtherLibtorch(other, wheel);
    expect(fs.existsSync(other)).toBe(false);
    expect(log.mock.calls[0][0]).toMatch(/reconfiguring from scratch/);
    log.mockRestore();
  });
});
