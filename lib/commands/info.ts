/** `octo-native info`: what this install runs on (docs/methods.md §9). */
import fs from "node:fs";
import path from "node:path";

import { native } from "../native";
import { packageRoot } from "../util/package-root";
import { printJson } from "./print";

export interface InstallInfo {
  package: { name: string; version: string };
  node: string;
  libtorch: { version: string; torchDir: string | null; scaledDotProductAttention: boolean };
  /** optional engine features this build has (a failed probe leaves one out; see CMakeLists.txt) */
  features: string[];
  cuda: { available: boolean; deviceCount: number };
  devices: string[];
  threads: number;
  build: { type: string | null; cxxFlags: string | null; torchConfig: string };
}

/** A value from the native build's CMakeCache.txt (null when absent). */
function cmakeCacheValue(key: string): string | null {
  const cache = path.join(packageRoot, "build", "CMakeCache.txt");
  if (!fs.existsSync(cache)) return null;
  const line = fs.readFileSync(cache, "utf8").split("\n").find((l) => l.startsWith(`${key}:`));
  return line ? line.slice(line.indexOf("=") + 1) : null;
}

export function installInfo(): InstallInfo {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, "package.json"), "utf8")) as { name: string; version: string };
  const engine = native().info();
  const devices = ["cpu", ...Array.from({ length: engine.cudaDeviceCount }, (_, i) => `cuda:${i}`)];
  return {
    package: { name: pkg.name, version: pkg.version },
    node: process.version,
    libtorch: { version: engine.torchVersion, torchDir: cmakeCacheValue("Torch_DIR"), scaledDotProductAttention: engine.scaledDotProductAttention },
    features: engine.features,
    cuda: { available: engine.cudaAvailable, deviceCount: engine.cudaDeviceCount },
    devices,
    threads: engine.threads,
    build: { type: cmakeCacheValue("CMAKE_BUILD_TYPE"), cxxFlags: cmakeCacheValue("CMAKE_CXX_FLAGS"), torchConfig: engine.buildConfig.trim() },
  };
}

export function formatInstallInfo(info: InstallInfo): string {
  return [
    `${info.package.name} ${info.package.version}`,
    `node        ${info.node}`,
    `libtorch    ${info.libtorch.version}  (${info.libtorch.torchDir ?? "unknown location"})`,
    `attention   ${info.libtorch.scaledDotProductAttention ? "scaled_dot_product_attention" : "manual (libtorch < 2.0)"}`,
    `features    ${info.features.length > 0 ? info.features.join(", ") : "none"}`,
    `cuda        ${info.cuda.available ? `${info.cuda.deviceCount} device(s)` : "not available"}`,
    `devices     ${info.devices.join(", ")}`,
    `threads     ${info.threads}`,
    `build       ${info.build.type ?? "unknown"}`,
  ].join("\n");
}

/** The `info` command: the install's versions and devices, as a table or (--json) JSON. */
export function infoCommand(args: { json: boolean }): void {
  const info = installInfo();
  if (args.json) printJson(info);
  else console.log(formatInstallInfo(info));
}
