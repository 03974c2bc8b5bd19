/**
 * Matrices (docs/methods.md §7): `pmatrix`, `bmatrix`, `Bmatrix`, `vmatrix`, `Vmatrix`, `smallmatrix`,
 * `matrix` and `array` all read alike (the brackets are typography); two matrices are equal when they
 * have the same shape and equal entries, each entry compared by its own kind (`\dfrac{1}{2}` = `0.5`).
 */
import { allOf, type Answer, type Comparer, type Reader, type Verdict } from "../answer";
import { splitTopLevel } from "../latex";

type Matrix = Extract<Answer, { kind: "matrix" }>;

const MATRIX = /^\\begin\{([pbBvV]?matrix|smallmatrix|array)\}(?:\{[^}]*\})?([\s\S]*)\\end\{\1\}$/;

/** The answer read as a matrix, rows split at `\\`, entries at `&`; undefined when it is not one environment. */
export function readMatrix(s: string, read: Reader): Matrix | undefined {
  const matrix = MATRIX.exec(s);
  if (!matrix) return undefined;
  const rows = splitTopLevel(matrix[2], ["\\\\"]).filter((r) => r !== "");
  return { kind: "matrix", rows: rows.map((r) => splitTopLevel(r, ["&"]).map(read)) };
}

export function matricesEqual(g: Matrix, p: Matrix, compare: Comparer): Verdict {
  const shape = (m: Matrix) => `${m.rows.length}×${m.rows[0]?.length ?? 0}`;
  if (p.rows.length !== g.rows.length || g.rows.some((row, i) => row.length !== p.rows[i].length)) {
    return { equal: false, why: `shapes differ: ${shape(g)} vs ${shape(p)}` };
  }
  const entries = g.rows.flatMap((row, i) => row.map((cell, j) => ({ i, j, verdict: compare.answers(cell, p.rows[i][j]) })));
  const failed = entries.find((e) => !e.verdict.equal);
  if (failed) return { equal: false, why: `entry (${failed.i + 1}, ${failed.j + 1}) differs: ${failed.verdict.why}` };
  return allOf(
    entries.map((e) => e.verdict),
    `same shape ${shape(g)}, equal entries`,
  );
}
