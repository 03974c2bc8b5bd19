/** Where the package's own files are (build/, configs/, package.json), from source or from dist/. */
import fs from "node:fs";
import path from "node:path";

function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, "package.json")) && fs.existsSync(path.join(dir, "CMakeLists.txt"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`octo-native: cannot find the package root above ${from}`);
  }
}

export const packageRoot = findPackageRoot(__dirname);

/** A recipe shipped in configs/. */
export function shippedRecipe(name: string): string {
  return path.join(packageRoot, "configs", name);
}
