/**
 * lib/engine/safetensors.ts (header parse / validate / build) and the native reader's re-check of
 * the file size (native/core/safetensors.cpp).
 *
 * Every malformed file must be rejected with a SafetensorsError that names the file (and the
 * tensor concerned); no input may make the parser throw anything else.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { inspectCheckpoint, Model } from "../lib/engine/model";
import {
  buildSafetensorsHeader,
  DTYPE_BYTES,
  MAX_HEADER_BYTES,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  SafetensorsError,
  type SafetensorsFile,
} from "../lib/engine/safetensors";
import { native, type ModelSpec } from "../lib/native";
import { TINY_TIED_QWEN3 } from "./helpers/tiny-models";

// ---------------------------------------------------------------------------------------------
// helpers

/** Tiny seeded PRNG (mulberry32): uniform in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randInt(rand: () => number, lo: number, hiInclusive: number): number {
  return lo + Math.floor(rand() * (hiInclusive - lo + 1));
}

let root: string;
let fileCounter = 0;

beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "octo-safetensors-test-"));
});

afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

function tmpFile(name = "file"): string {
  fileCounter += 1;
  return path.join(root, `${fileCounter}-${name}.safetensors`);
}

/** u64 LE length prefix + raw header bytes + data bytes, with nothing checked or padded. */
function rawFile(header: string | Buffer, data: number | Buffer = 0, declaredLength?: bigint): Buffer {
  const body = typeof header === "string" ? Buffer.from(header, "utf8") : header;
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declaredLength ?? BigInt(body.length), 0);
  return Buffer.concat([prefix, body, typeof data === "number" ? Buffer.alloc(data) : data]);
}

function writeTmp(bytes: Buffer, name?: string): string {
  const file = tmpFile(name);
  fs.writeFileSync(file, bytes);
  return file;
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error("expected the call to throw, but it returned");
}

/** Asserts `fn` throws a SafetensorsError whose message contains every fragment. */
function expectSafetensorsError(fn: () => unknown, fragments: string[], pattern?: RegExp): SafetensorsError {
  const error = catchError(fn);
  expect(error).toBeInstanceOf(SafetensorsError);
  const message = (error as Error).message;
  for (const fragment of fragments) expect(message).toContain(fragment);
  if (pattern) expect(message).toMatch(pattern);
  return error as SafetensorsError;
}

/** Runs the parser; returns the result or null on SafetensorsError; rethrows anything else. */
function parseOrNull(fn: () => SafetensorsFile): SafetensorsFile | null {
  try {
    return fn();
  } catch (error) {
    if (error instanceof SafetensorsError) return null;
    throw error;
  }
}

/** Invariants every accepted file must satisfy (checked on fuzz results that parse). */
function checkAccepted(result: SafetensorsFile, fileSize: number, headerEnd: number): void {
  expect(result.fileSize).toBe(fileSize);
  let cursor = headerEnd;
  for (const t of result.tensors) {
    expect(DTYPE_BYTES[t.dtype]).toBeDefined();
    expect(t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)).toBe(true);
    expect(t.byteLength).toBe(t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype]);
    expect(t.offset).toBe(cursor); // tiled, in data order
    cursor += t.byteLength;
  }
  expect(cursor).toBe(fileSize);
  for (const value of Object.values(result.metadata)) expect(typeof value).toBe("string");
}

// ---------------------------------------------------------------------------------------------
// a valid file with several dtypes, written byte by byte here

interface ValidTensor {
  name: string;
  dtype: string;
  shape: number[];
  write(view: DataView, at: number): void;
}

const F32_VALUES = [1.5, -2, 0.25, 3, -0.5, 1024];
const BF16_VALUES = [1, -1.5, 0.125, 65536];
const I64_VALUES = [0n, -1n, 9007199254740993n /* 2^53 + 1 */];
const U8_VALUES = [0, 1, 127, 128, 255];
const BOOL_VALUES = [1, 0, 0, 1];
const SCALAR_VALUE = -7.25;

function bf16Bits(value: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setFloat32(0, value, true);
  return view.getUint32(0, true) >>> 16; // exact for the values above
}

const VALID_TENSORS: ValidTensor[] = [
  { name: "layer.weight", dtype: "F32", shape: [2, 3], write: (v, at) => F32_VALUES.forEach((x, i) => v.setFloat32(at + 4 * i, x, true)) },
  { name: "layer.bf16", dtype: "BF16", shape: [4], write: (v, at) => BF16_VALUES.forEach((x, i) => v.setUint16(at + 2 * i, bf16Bits(x), true)) },
  { name: "empty", dtype: "F32", shape: [0, 3], write: () => undefined },
  { name: "counts", dtype: "I64", shape: [3], write: (v, at) => I64_VALUES.forEach((x, i) => v.setBigInt64(at + 8 * i, x, true)) },
  { name: "bytes", dtype: "U8", shape: [5], write: (v, at) => U8_VALUES.forEach((x, i) => v.setUint8(at + i, x)) },
  { name: "mask", dtype: "BOOL", shape: [2, 2], write: (v, at) => BOOL_VALUES.forEach((x, i) => v.setUint8(at + i, x)) },
  { name: "scale", dtype: "F32", shape: [], write: (v, at) => v.setFloat32(at, SCALAR_VALUE, true) },
];
const VALID_METADATA = { format: "pt", note: "héllo ✓ \"quoted\"" };

function byteLengthOf(t: { dtype: string; shape: number[] }): number {
  return t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
}

function buildValidFile(): { bytes: Buffer; headerEnd: number } {
  const header = buildSafetensorsHeader(VALID_TENSORS, VALID_METADATA);
  const dataSize = VALID_TENSORS.reduce((sum, t) => sum + byteLengthOf(t), 0);
  const data = new ArrayBuffer(dataSize);
  const view = new DataView(data);
  let at = 0;
  for (const t of VALID_TENSORS) {
    t.write(view, at);
    at += byteLengthOf(t);
  }
  return { bytes: Buffer.concat([header, Buffer.from(data)]), headerEnd: header.length };
}

describe("valid files", () => {
  const { bytes, headerEnd } = buildValidFile();

  test("buildSafetensorsHeader writes the u64 length of a space-padded JSON object", () => {
    const header = buildSafetensorsHeader(VALID_TENSORS, VALID_METADATA);
    const length = Number(header.readBigUInt64LE(0));
    expect(length).toBe(header.length - 8);
    expect(length % 8).toBe(0);
    const json = JSON.parse(header.subarray(8).toString("utf8"));
    expect(json.__metadata__).toEqual(VALID_METADATA);
    expect(json["layer.weight"]).toEqual({ dtype: "F32", shape: [2, 3], data_offsets: [0, 24] });
    expect(json["layer.bf16"]).toEqual({ dtype: "BF16", shape: [4], data_offsets: [24, 32] });
    expect(json.empty).toEqual({ dtype: "F32", shape: [0, 3], data_offsets: [32, 32] });
    expect(json.scale).toEqual({ dtype: "F32", shape: [], data_offsets: [65, 69] });
    expect(() => buildSafetensorsHeader([{ name: "q", dtype: "Q4", shape: [1] }])).toThrow(/'q'.*Q4/);
  });

  test("readSafetensorsHeader returns absolute offsets, lengths, shapes, dtypes and the metadata", () => {
    const file = writeTmp(bytes, "valid");
    const result = readSafetensorsHeader(file);
    expect(result.file).toBe(file);
    expect(result.fileSize).toBe(bytes.length);
    expect(result.metadata).toEqual(VALID_METADATA);

    let offset = headerEnd;
    const expected = VALID_TENSORS.map((t) => {
      const record = { name: t.name, file, dtype: t.dtype, shape: t.shape, offset, byteLength: byteLengthOf(t) };
      offset += record.byteLength;
      return record;
    });
    expect(result.tensors).toEqual(expected);
    expect(offset).toBe(bytes.length);
    expect(result.tensors.find((t) => t.name === "scale")).toMatchObject({ shape: [], byteLength: 4 });
    expect(result.tensors.find((t) => t.name === "empty")).toMatchObject({ shape: [0, 3], byteLength: 0 });

    // The offsets point at the right bytes: decode every tensor back from the file.
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const at = (name: string) => result.tensors.find((t) => t.name === name)!.offset;
    expect(F32_VALUES.map((_, i) => view.getFloat32(at("layer.weight") + 4 * i, true))).toEqual(F32_VALUES);
    expect(BF16_VALUES.map((_, i) => view.getUint16(at("layer.bf16") + 2 * i, true))).toEqual(BF16_VALUES.map(bf16Bits));
    expect(I64_VALUES.map((_, i) => view.getBigInt64(at("counts") + 8 * i, true))).toEqual(I64_VALUES);
    expect(U8_VALUES.map((_, i) => view.getUint8(at("bytes") + i))).toEqual(U8_VALUES);
    expect(BOOL_VALUES.map((_, i) => view.getUint8(at("mask") + i))).toEqual(BOOL_VALUES);
    expect(view.getFloat32(at("scale"), true)).toBe(SCALAR_VALUE);

    // parseSafetensorsHeader on the bytes agrees with reading the file.
    expect(parseSafetensorsHeader(bytes, bytes.length, file)).toEqual(result);
  });

  test("tensors listed out of data order come back in data order; no metadata gives {}", () => {
    const json = JSON.stringify({
      c: { dtype: "U8", shape: [2], data_offsets: [6, 8] },
      a: { dtype: "I32", shape: [1], data_offsets: [0, 4] },
      z: { dtype: "U8", shape: [0], data_offsets: [4, 4] },
      b: { dtype: "F16", shape: [1], data_offsets: [4, 6] },
    });
    const bytes = rawFile(json, 8);
    const result = readSafetensorsHeader(writeTmp(bytes, "unordered"));
    expect(result.tensors.map((t) => t.name)).toEqual(["a", "z", "b", "c"]);
    expect(result.tensors.map((t) => t.offset - (8 + Buffer.byteLength(json)))).toEqual([0, 4, 4, 6]);
    expect(result.metadata).toEqual({});
  });

  test("an empty header object {} with no data is a valid, empty file", () => {
    const result = readSafetensorsHeader(writeTmp(rawFile("{}"), "emptyobj"));
    expect(result.tensors).toEqual([]);
    expect(result.fileSize).toBe(10);
  });
});

// ---------------------------------------------------------------------------------------------
// lying files

/** A tensor entry for hand-written headers. */
const entry = (dtype: string, shape: unknown, offsets: unknown, extra: Record<string, unknown> = {}) => ({
  dtype,
  shape,
  data_offsets: offsets,
  ...extra,
});

interface LyingCase {
  title: string;
  bytes: () => Buffer;
  /** tensor (or key) the message must name; the file path is always required */
  names?: string[];
  pattern: RegExp;
}

const LYING: LyingCase[] = [
  {
    title: "header length larger than the file",
    bytes: () => rawFile(JSON.stringify({ w: entry("F32", [1], [0, 4]) }), 4, 1000n),
    pattern: /header length 1000 runs past the end/,
  },
  {
    title: "header length 2^63 (over the 100 MiB cap)",
    bytes: () => rawFile(JSON.stringify({ w: entry("F32", [1], [0, 4]) }), 4, 2n ** 63n),
    pattern: new RegExp(`header length ${2n ** 63n} exceeds the ${MAX_HEADER_BYTES}-byte cap`),
  },
  {
    title: "header length just over the 100 MiB cap",
    bytes: () => rawFile("{}", 0, BigInt(MAX_HEADER_BYTES) + 1n),
    pattern: /exceeds the .*cap/,
  },
  { title: "file shorter than 8 bytes", bytes: () => Buffer.from([2, 0, 0, 0, 0]), pattern: /only 5 bytes, too short/ },
  { title: "empty file", bytes: () => Buffer.alloc(0), pattern: /only 0 bytes, too short/ },
  { title: "header length 0", bytes: () => rawFile(""), pattern: /header length 0 is too small/ },
  { title: "header that is not JSON", bytes: () => rawFile("{not json}"), pattern: /not valid UTF-8 JSON/ },
  { title: "header that is a JSON array", bytes: () => rawFile("[1, 2, 3]"), pattern: /does not start with '\{'|not a JSON object/ },
  { title: "header that is JSON null", bytes: () => rawFile("null"), pattern: /does not start with '\{'|not a JSON object/ },
  {
    title: "header with invalid UTF-8",
    bytes: () => rawFile(Buffer.concat([Buffer.from('{"w'), Buffer.from([0xff, 0xfe]), Buffer.from('": {}}')])),
    pattern: /not valid UTF-8 JSON/,
  },
  {
    title: "unknown dtype",
    bytes: () => rawFile(JSON.stringify({ "q.weight": entry("Q4_K", [2], [0, 1]) }), 1),
    names: ["q.weight"],
    pattern: /unsupported dtype "Q4_K"/,
  },
  {
    title: "negative data_offsets",
    bytes: () => rawFile(JSON.stringify({ neg: entry("F32", [1], [-4, 0]) }), 4),
    names: ["neg"],
    pattern: /invalid data_offsets \[-4,0\]/,
  },
  {
    title: "non-integer data_offsets",
    bytes: () => rawFile(JSON.stringify({ frac: entry("U8", [1], [0, 0.5]) }), 1),
    names: ["frac"],
    pattern: /invalid data_offsets/,
  },
  {
    title: "data_offsets that are strings",
    bytes: () => rawFile(JSON.stringify({ str: entry("U8", [1], ["0", "1"]) }), 1),
    names: ["str"],
    pattern: /invalid data_offsets/,
  },
  {
    title: "data_offsets with three entries",
    bytes: () => rawFile(JSON.stringify({ three: entry("U8", [1], [0, 1, 2]) }), 1),
    names: ["three"],
    pattern: /invalid data_offsets/,
  },
  {
    title: "backwards data_offsets",
    bytes: () => rawFile(JSON.stringify({ back: entry("F32", [1], [4, 0]) }), 4),
    names: ["back"],
    pattern: /\[4, 0\] that run backwards/,
  },
  {
    title: "offsets past the data section",
    bytes: () => rawFile(JSON.stringify({ a: entry("F32", [2], [0, 8]), past: entry("F32", [2], [8, 16]) }), 12),
    names: ["past"],
    pattern: /ends at byte 16 .* only 12 data bytes/,
  },
  {
    title: "byte length not numel * itemsize",
    bytes: () => rawFile(JSON.stringify({ short: entry("F32", [3], [0, 8]) }), 8),
    names: ["short"],
    pattern: /has 8 bytes but shape \[3\] of F32 needs 12/,
  },
  {
    title: "byte length of a 0-d scalar that is not one item",
    bytes: () => rawFile(JSON.stringify({ scalar: entry("I64", [], [0, 4]) }), 4),
    names: ["scalar"],
    pattern: /needs 8/,
  },
  {
    title: "two tensors overlapping",
    bytes: () => rawFile(JSON.stringify({ first: entry("F32", [2], [0, 8]), second: entry("F32", [1], [4, 8]) }), 8),
    names: ["second"],
    pattern: /overlaps the previous tensor/,
  },
  {
    title: "two tensors at the same offsets",
    bytes: () => rawFile(JSON.stringify({ one: entry("F32", [1], [0, 4]), two: entry("I32", [1], [0, 4]) }), 4),
    names: ["two"],
    pattern: /overlaps/,
  },
  {
    title: "a gap between tensors",
    bytes: () => rawFile(JSON.stringify({ first: entry("F32", [2], [0, 8]), after_gap: entry("F32", [1], [12, 16]) }), 16),
    names: ["after_gap"],
    pattern: /gap of 4 bytes before tensor 'after_gap'/,
  },
  {
    title: "a gap before the first tensor",
    bytes: () => rawFile(JSON.stringify({ late: entry("U8", [2], [2, 4]) }), 4),
    names: ["late"],
    pattern: /gap of 2 bytes/,
  },
  {
    title: "trailing bytes after the last tensor",
    bytes: () => rawFile(JSON.stringify({ w: entry("F32", [2], [0, 8]) }), 11),
    pattern: /3 bytes after the last tensor belong to no tensor/,
  },
  {
    title: "data bytes but no tensor at all",
    bytes: () => rawFile(JSON.stringify({ __metadata__: { format: "pt" } }), 5),
    pattern: /5 bytes after the last tensor/,
  },
  {
    title: "__metadata__ with a non-string value",
    bytes: () => rawFile(JSON.stringify({ __metadata__: { format: "pt", total_size: 8 }, w: entry("F32", [2], [0, 8]) }), 8),
    names: ["__metadata__.total_size"],
    pattern: /is not a string/,
  },
  {
    title: "__metadata__ that is an array",
    bytes: () => rawFile(JSON.stringify({ __metadata__: ["pt"] }), 0),
    names: ["__metadata__"],
    pattern: /__metadata__ is not an object/,
  },
  {
    title: "an unknown field in a tensor entry",
    bytes: () => rawFile(JSON.stringify({ odd: entry("F32", [2], [0, 8], { offset: 0 }) }), 8),
    names: ["odd"],
    pattern: /unknown field\(s\) offset/,
  },
  {
    title: "a tensor entry that is not an object",
    bytes: () => rawFile(JSON.stringify({ scalar_entry: 3 }), 0),
    names: ["scalar_entry"],
    pattern: /is not an object/,
  },
  {
    title: "shape with a negative entry",
    bytes: () => rawFile(JSON.stringify({ negshape: entry("F32", [-2, -1], [0, 8]) }), 8),
    names: ["negshape"],
    pattern: /invalid shape \[-2,-1\]/,
  },
  {
    title: "shape with a non-integer entry",
    bytes: () => rawFile(JSON.stringify({ fracshape: entry("U8", [1.5, 2], [0, 3]) }), 3),
    names: ["fracshape"],
    pattern: /invalid shape/,
  },
  {
    title: "shape that is not an array",
    bytes: () => rawFile(JSON.stringify({ noshape: entry("U8", 4, [0, 4]) }), 4),
    names: ["noshape"],
    pattern: /invalid shape/,
  },
  {
    title: "shape whose numel overflows the safe integer range",
    bytes: () => rawFile(JSON.stringify({ huge: entry("F32", [2 ** 30, 2 ** 30, 2 ** 30], [0, 4]) }), 4),
    names: ["huge"],
    pattern: /needs/,
  },
];

describe("lying files are rejected with a SafetensorsError naming the file (and tensor)", () => {
  test.each(LYING.map((c) => [c.title, c] as const))("%s", (_title, c) => {
    const bytes = c.bytes();
    const file = writeTmp(bytes, "lying");
    const fragments = [file, ...(c.names ?? []).map((n) => (n.startsWith("__metadata__") ? n : `'${n}'`))];
    const fromFile = expectSafetensorsError(() => readSafetensorsHeader(file), fragments, c.pattern);
    expect(fromFile.name).toBe("SafetensorsError");
    expect(fromFile.message).toMatch(/not a valid safetensors file/);
    // The in-memory parser says the same about the same bytes.
    expectSafetensorsError(() => parseSafetensorsHeader(bytes, bytes.length, file), fragments, c.pattern);
  });

  test("a file that does not exist is a SafetensorsError naming it", () => {
    const file = path.join(root, "missing.safetensors");
    expectSafetensorsError(() => readSafetensorsHeader(file), [file, "ENOENT"]);
  });

  test("parseSafetensorsHeader given fewer header bytes than the header length says so", () => {
    const bytes = rawFile(JSON.stringify({ w: entry("U8", [4], [0, 4]) }), 4);
    expectSafetensorsError(() => parseSafetensorsHeader(bytes.subarray(0, 20), bytes.length, "prefix.st"), ["prefix.st"], /header bytes available/);
  });
});

// ---------------------------------------------------------------------------------------------
// fuzz

/**
 * Parses `buf` in memory and as a file: both agree, and an accepted header is consistent.
 * Returns whether it was accepted.
 */
function parseBothWays(buf: Buffer, file: string): boolean {
  const parsed = parseOrNull(() => parseSafetensorsHeader(buf, buf.length, file));
  fs.writeFileSync(file, buf);
  const read = parseOrNull(() => readSafetensorsHeader(file));
  expect(read === null).toBe(parsed === null);
  if (parsed) checkAccepted(parsed, buf.length, 8 + Number(buf.readBigUInt64LE(0)));
  return parsed !== null;
}

describe("fuzz: the parser returns or throws SafetensorsError, never anything else", () => {
  const { bytes: valid, headerEnd } = buildValidFile();

  test("(a) 2000 buffers of random bytes", () => {
    const rand = mulberry32(0x5eed0001);
    const file = tmpFile("random");
    let accepted = 0;
    for (let i = 0; i < 2000; i++) {
      const length = randInt(rand, 0, 160);
      const buf = Buffer.alloc(length);
      for (let j = 0; j < length; j++) buf[j] = randInt(rand, 0, 255);
      // Half of them get a plausible header length so the JSON path is reached.
      if (length >= 8 && rand() < 0.5) {
        buf.writeBigUInt64LE(BigInt(randInt(rand, 0, length - 8 + 4)), 0);
        if (length > 8 && rand() < 0.5) buf[8] = 0x7b; // '{'
      }
      if (parseBothWays(buf, file)) accepted += 1;
    }
    // Random bytes are (almost) never a valid file.
    expect(accepted).toBeLessThan(20);
  });

  test("(b) every strict truncation of a valid file is rejected", () => {
    const file = tmpFile("truncated");
    fs.writeFileSync(file, valid);
    expect(readSafetensorsHeader(file).tensors).toHaveLength(VALID_TENSORS.length);
    let rejected = 0;
    for (let length = valid.length - 1; length >= 0; length--) {
      const prefix = valid.subarray(0, length);
      expectSafetensorsError(() => parseSafetensorsHeader(prefix, length, file), [file]);
      fs.truncateSync(file, length);
      expect(fs.statSync(file).size).toBe(length);
      expectSafetensorsError(() => readSafetensorsHeader(file), [file]);
      rejected += 1;
    }
    expect(rejected).toBe(valid.length);
  });

  test("(c) 2000 random single- and multi-byte mutations of a valid file", () => {
    const rand = mulberry32(0x5eed0002);
    const interesting = Buffer.from('{}[]",:-.0123456789eE \\u\x00\xff');
    const file = tmpFile("mutated");
    let accepted = 0;
    let rejected = 0;
    for (let i = 0; i < 2000; i++) {
      const buf = Buffer.from(valid);
      const edits = i % 2 === 0 ? 1 : randInt(rand, 2, 8);
      for (let k = 0; k < edits; k++) {
        // A fifth of the edits hit the length prefix, the rest the header and data.
        const pos = rand() < 0.2 ? randInt(rand, 0, 7) : randInt(rand, 0, buf.length - 1);
        buf[pos] = rand() < 0.5 ? randInt(rand, 0, 255) : interesting[randInt(rand, 0, interesting.length - 1)];
      }
      if (parseBothWays(buf, file)) accepted += 1;
      else rejected += 1;
    }
    // Mutating only data bytes keeps the file valid, so both outcomes must occur.
    expect(accepted).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(100);
    expect(accepted + rejected).toBe(2000);
    expect(headerEnd).toBeLessThan(valid.length);
  });

  test("(d) 1000 random structured headers: accepted exactly when an independent check says valid", () => {
    const rand = mulberry32(0x5eed0003);
    const dtypes = [...Object.keys(DTYPE_BYTES), "Q4", "F8_E4M3", "f32"];
    let accepted = 0;
    let rejected = 0;
    for (let i = 0; i < 1000; i++) {
      const count = randInt(rand, 0, 4);
      const json: Record<string, unknown> = {};
      const intervals: { begin: number; end: number; ok: boolean }[] = [];
      let offset = 0;
      let entriesOk = true;
      if (rand() < 0.3) {
        const good = rand() < 0.8;
        json.__metadata__ = good ? { format: "pt" } : { format: randInt(rand, 0, 9) };
        entriesOk &&= good;
      }
      for (let t = 0; t < count; t++) {
        const dtype = rand() < 0.9 ? dtypes[randInt(rand, 0, 9)] : dtypes[randInt(rand, 10, dtypes.length - 1)];
        const shape = Array.from({ length: randInt(rand, 0, 3) }, () => randInt(rand, 0, 4));
        if (rand() < 0.05) shape.push(-1);
        const itemBytes = DTYPE_BYTES[dtype] ?? 1;
        let bytes = Math.max(0, shape.reduce((a, b) => a * b, 1)) * itemBytes;
        if (rand() < 0.1) bytes += randInt(rand, 1, 3); // wrong length
        let begin = offset;
        if (rand() < 0.1) begin += randInt(rand, -4, 4); // gap or overlap
        if (begin < 0) begin = 0;
        const end = begin + bytes;
        offset = end;
        const order = rand() < 0.05 ? [end, begin] : [begin, end];
        json[`t${t}`] = { dtype, shape, data_offsets: order };
        const ok = dtype in DTYPE_BYTES && shape.every((d) => d >= 0) && order[0] <= order[1] &&
          order[1] - order[0] === shape.reduce((a, b) => a * b, 1) * itemBytes;
        entriesOk &&= ok;
        intervals.push({ begin: order[0], end: order[1], ok });
      }
      let dataSize = offset;
      if (rand() < 0.1) dataSize = Math.max(0, dataSize + randInt(rand, -3, 3));

      // Independent formulation: the non-empty intervals cover [0, dataSize] exactly (lengths
      // sum to dataSize, pairwise disjoint, in range); empty ones lie in [0, dataSize] and not
      // strictly inside a non-empty one.
      const nonEmpty = intervals.filter((r) => r.end > r.begin);
      const empty = intervals.filter((r) => r.end === r.begin);
      const inRange = intervals.every((r) => r.begin >= 0 && r.end <= dataSize);
      const disjoint = nonEmpty.every((a, x) => nonEmpty.every((b, y) => x === y || a.end <= b.begin || b.end <= a.begin));
      const covered = nonEmpty.reduce((s, r) => s + (r.end - r.begin), 0) === dataSize;
      const emptiesOk = empty.every((e) => nonEmpty.every((r) => !(r.begin < e.begin && e.begin < r.end)));
      const valid = entriesOk && inRange && disjoint && covered && emptiesOk;

      const header = Buffer.from(JSON.stringify(json), "utf8");
      const buf = rawFile(header, dataSize);
      const parsed = parseOrNull(() => parseSafetensorsHeader(buf, buf.length, `structured-${i}`));
      expect({ i, json, dataSize, accepted: parsed !== null }).toEqual({ i, json, dataSize, accepted: valid });
      if (parsed) {
        accepted += 1;
        checkAccepted(parsed, buf.length, 8 + header.length);
        expect(parsed.tensors).toHaveLength(count);
      } else rejected += 1;
    }
    expect(accepted).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(100);
  });
});

// ---------------------------------------------------------------------------------------------
// the native reader re-checks the file size

const TINY_SPEC: ModelSpec = TINY_TIED_QWEN3;

/** Awaits a rejection; the addon's Error comes from Node's realm, not jest's, so no instanceof. */
async function nativeRejection(promise: Promise<unknown>): Promise<Error> {
  let error: unknown;
  try {
    const value = await promise;
    (value as { dispose?: () => void })?.dispose?.();
  } catch (e) {
    error = e;
  }
  expect(error).toBeDefined();
  expect(Object.prototype.toString.call(error)).toBe("[object Error]");
  expect(typeof (error as Error).message).toBe("string");
  return error as Error;
}

describe("native reader on a file truncated after its header was validated", () => {
  let dir: string;
  let weights: string;

  beforeAll(async () => {
    dir = path.join(root, "tiny-model");
    const model = await Model.create(TINY_SPEC, 7, { device: "cpu" });
    await model.save(dir);
    model.dispose();
    weights = path.join(dir, "model.safetensors");
  });

  test("the untouched checkpoint loads (control)", async () => {
    const { records, spec } = inspectCheckpoint(dir);
    expect(spec).toEqual(TINY_SPEC);
    const handle = await native().loadModel(spec, records, { device: "cpu" });
    expect(handle.parameters().map((p) => p.name)).toEqual(records.map((r) => r.name));
    handle.dispose();
  });

  const truncations: [string, (size: number, headerEnd: number) => number][] = [
    ["by a few bytes (last tensor cut)", (size) => size - 10],
    ["to the end of the header (every tensor cut)", (_size, headerEnd) => headerEnd],
    ["to 100 bytes (inside the header)", () => 100],
    ["to 0 bytes", () => 0],
  ];
  test.each(truncations)("truncated %s: loadModel rejects with an Error naming the file", async (_title, newSize) => {
    const { records, spec } = inspectCheckpoint(dir); // validated against the intact file
    const original = fs.readFileSync(weights);
    const headerEnd = Math.min(...records.map((r) => r.offset));
    const size = newSize(original.length, headerEnd);
    try {
      fs.truncateSync(weights, size);
      const error = await nativeRejection(native().loadModel(spec, records, { device: "cpu" }));
      expect(error.message).toContain(weights);
      expect(error.message).toMatch(/truncated/);
      expect(error.message).toContain(`the file has ${size} bytes`);
      // Which tensor: the first record whose range no longer fits.
      const first = records.find((r) => r.offset + r.byteLength > size)!;
      expect(error.message).toContain(`'${first.name}'`);
      // And the TS side now rejects the file before any read.
      expect(() => inspectCheckpoint(dir)).toThrow(SafetensorsError);
    } finally {
      fs.writeFileSync(weights, original);
    }
    // The process is alive and the restored file loads again.
    const restored = await native().loadModel(spec, inspectCheckpoint(dir).records, { device: "cpu" });
    restored.dispose();
  });

  test("a weights file deleted after validation: loadModel rejects naming the file", async () => {
    const { records, spec } = inspectCheckpoint(dir);
    const original = fs.readFileSync(weights);
    try {
      fs.rmSync(weights);
      const error = await nativeRejection(native().loadModel(spec, records, { device: "cpu" }));
      expect(error.message).toContain(weights);
      expect(error.message).toMatch(/cannot open/);
    } finally {
      fs.writeFileSync(weights, original);
    }
  });
});

describe("hostile headers found by fuzzing stay SafetensorsErrors", () => {
  test("deeply nested JSON in shape, dtype and data_offsets", () => {
    const deep = "[".repeat(10000) + "]".repeat(10000);
    for (const field of ["shape", "dtype", "data_offsets"]) {
      const entry: Record<string, string> = { dtype: '"F32"', shape: "[]", data_offsets: "[0,4]" };
      entry[field] = deep;
      const json = `{"t":{${Object.entries(entry).map(([k, v]) => `"${k}":${v}`).join(",")}}}`;
      const file = writeTmp(rawFile(json, 4), `deep-${field}`);
      expectSafetensorsError(() => readSafetensorsHeader(file), [file, "'t'"]);
    }
  });

  test("a directory where a file is expected", () => {
    expectSafetensorsError(() => readSafetensorsHeader(root), [root, "not a regular file"]);
  });

  test("a UTF-8 byte-order mark before the JSON is rejected, as the format has none", () => {
    const file = writeTmp(rawFile(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("{}")])), "bom");
    expectSafetensorsError(() => readSafetensorsHeader(file), [file, "'{'"]);
  });

  test("a '__proto__' metadata key is kept as an ordinary key", () => {
    const file = writeTmp(rawFile('{"__metadata__":{"__proto__":"x","format":"pt"}}'), "proto");
    const { metadata } = readSafetensorsHeader(file);
    expect(Object.keys(metadata).sort()).toEqual(["__proto__", "format"]);
    expect(metadata["__proto__"]).toBe("x");
  });
});
