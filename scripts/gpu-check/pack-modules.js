// The node_modules a box without Node or network needs (scripts/gpu-check.sh --prepare): the
// closure of package.json's `dependencies` (cmake-js, node-addon-api and node-api-headers for
// the build; the CLI's runtime packages), no devDependencies (jest, typescript, playwright, ...),
// packed as one tar.xz of their directories in node_modules' own layout.
//
//   node pack-modules.js OUT.tar.xz
//
// Each dependency is looked up the way require() finds it: in the dependent's own node_modules,
// then in those of its parent folders. Optional dependencies count when they are installed.
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const { repoRoot } = require("./step");

const modulesRoot = path.join(repoRoot, "node_modules");

/** The installed directory of `name` as required from `fromDir` (a package directory), or null. */
function resolvePackage(name, fromDir) {
  for (let dir = fromDir; dir.startsWith(repoRoot); dir = path.dirname(dir)) {
    const candidate = path.join(dir, "node_modules", name);
    if (fs.existsSync(path.join(candidate, "package.json"))) return candidate;
    if (dir === repoRoot) break;
  }
  return null;
}

function productionClosure() {
  const seen = new Set();
  const pending = [repoRoot];
  while (pending.length > 0) {
    const dir = pending.pop();
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
    const required = Object.keys(pkg.dependencies ?? {});
    const optional = Object.keys(pkg.optionalDependencies ?? {});
    for (const name of [...required, ...optional]) {
      const found = resolvePackage(name, dir);
      if (!found) {
        if (required.includes(name)) throw new Error(`${name} (needed by ${path.relative(repoRoot, dir) || "the package"}) is not installed: run npm ci first`);
        continue;
      }
      if (!seen.has(found)) {
        seen.add(found);
        pending.push(found);
      }
    }
  }
  // A package nested in another's node_modules travels inside that one's directory.
  const dirs = [...seen].map((dir) => path.relative(repoRoot, dir)).sort();
  return dirs.filter((dir) => !dirs.some((other) => dir.startsWith(other + path.sep)));
}

function main() {
  const out = process.argv[2];
  if (!out) throw new Error("usage: node pack-modules.js OUT.tar.xz");
  if (!fs.existsSync(modulesRoot)) throw new Error(`${modulesRoot} is missing: run npm ci first`);
  const packages = productionClosure();
  // npm installs no devDependencies of dependencies, so what is nested in a package's own
  // node_modules is that package's production closure: it travels with it.
  const list = `${out}.list`;
  fs.writeFileSync(list, packages.join("\n") + "\n");
  execFileSync("tar", ["-cJf", out, "-C", repoRoot, "-T", list], { stdio: "inherit", env: { ...process.env, XZ_OPT: "-6 -T0" } });
  fs.rmSync(list);
  console.log(`${packages.length} packages -> ${out} (${(fs.statSync(out).size / 2 ** 20).toFixed(1)} MiB)`);
}

main();
