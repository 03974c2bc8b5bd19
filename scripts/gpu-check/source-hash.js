// A hash of the TypeScript sources that dist/ is compiled from (lib/, bench/, tsconfig.json):
// --prepare records it beside the compiled dist/, and the check compares it on the box, so a dist/
// older than its sources is reported instead of silently measured.
//
//   node source-hash.js          prints the hash
"use strict";
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");

const { repoRoot } = require("./step");

function sourceFiles(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(file));
    else if (entry.name.endsWith(".ts")) out.push(file);
  }
  return out;
}

function sourceHash() {
  const files = [...sourceFiles(path.join(repoRoot, "lib")), ...sourceFiles(path.join(repoRoot, "bench")), path.join(repoRoot, "tsconfig.json")].sort();
  const hash = crypto.createHash("sha256");
  for (const file of files) hash.update(path.relative(repoRoot, file)).update("\0").update(fs.readFileSync(file)).update("\0");
  return hash.digest("hex").slice(0, 16);
}

console.log(sourceHash());
