/**
 * safetensors headers: parse and validate (reading), build (writing). docs/methods.md §2.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON, then the data section.
 * The JSON maps tensor names to {dtype, shape, data_offsets: [begin, end]} (offsets relative
 * to the data section) plus an optional "__metadata__" map of strings. The native engine
 * only moves bytes at the offsets validated here (native/core/safetensors.cpp).
 */
import fs from "node:fs";

import type { TensorRecord } from "../native";
import { openRegularFile } from "../util/files";

export class SafetensorsError extends Error {
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.name = "SafetensorsError";
  }
}

/** Bytes per element of every dtype the format defines that we read. */
export const DTYPE_BYTES: Readonly<Record<string, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Header size cap, as in the reference implementation: a larger one is corrupt or hostile. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafetensorsFile {
  file: string;
  /** tensors in data order; offsets are absolute positions in the file */
  tensors: TensorRecord[];
  metadata: Record<string, string>;
  fileSize: number;
}

/** A short rendering of a header value for an error message (values can be hostile: deep, huge). */
function brief(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? "a deeply nested array" : "a deeply nested value";
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function isNonNegativeInteger(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Validates a header. `prefix` holds at least the first 8 + N bytes of the file.
 * Everything is checked: offsets in range, ascending, contiguous, no overlap, the data
 * section fully covered, byte length = numel × itemsize, known dtypes, the header cap.
 */
export function parseSafetensorsHeader(prefix: Uint8Array, fileSize: number, file: string): SafetensorsFile {
  const fail = (message: string): never => {
    throw new SafetensorsError(file, `${message} (not a valid safetensors file: re-download or re-save it)`);
  };
  if (fileSize < 8 || prefix.length < 8) fail(`only ${fileSize} bytes, too short for the 8-byte header length`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  const headerLength64 = view.getBigUint64(0, true);
  if (headerLength64 > BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLength64} exceeds the ${MAX_HEADER_BYTES}-byte cap`);
  const headerLength = Number(headerLength64);
  if (headerLength < 2) fail(`header length ${headerLength} is too small for a JSON object`);
  if (8 + headerLength > fileSize) fail(`header length ${headerLength} runs past the end of the ${fileSize}-byte file (truncated?)`);
  if (prefix.length < 8 + headerLength) fail(`only ${prefix.length} header bytes available`);

  let json: unknown;
  try {
    const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(prefix.subarray(8, 8 + headerLength));
    if (!text.startsWith("{")) fail("header does not start with '{'");
    json = JSON.parse(text);
  } catch (error) {
    if (error instanceof SafetensorsError) throw error;
    fail(`header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) fail("header is not a JSON object");

  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;
  // No prototype: a "__proto__" metadata key must stay an ordinary key.
  const metadata: Record<string, string> = Object.create(null);
  const tensors: (TensorRecord & { begin: number; end: number })[] = [];
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) fail("__metadata__ is not an object");
      for (const [key, value] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof value !== "string") fail(`__metadata__.${key} is not a string`);
        metadata[key] = value as string;
      }
      continue;
    }
    const where = `tensor '${name}'`;
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) fail(`${where} is not an object`);
    const { dtype, shape, data_offsets: offsets, ...rest } = entry as Record<string, unknown>;
    const extra = Object.keys(rest);
    if (extra.length > 0) fail(`${where} has unknown field(s) ${extra.join(", ")}`);
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) fail(`${where} has unsupported dtype ${brief(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) fail(`${where} has an invalid shape ${brief(shape)}`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger))
      fail(`${where} has invalid data_offsets ${brief(offsets)}`);
    const [begin, end] = offsets as number[];
    if (begin > end) fail(`${where} has data_offsets [${begin}, ${end}] that run backwards`);
    if (end > dataSize) fail(`${where} ends at byte ${end} of the data section, but the file holds only ${dataSize} data bytes (truncated?)`);
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    const expected = numel * DTYPE_BYTES[dtype as string];
    if (!Number.isSafeInteger(expected) || expected !== end - begin)
      fail(`${where} has ${end - begin} bytes but shape [${shape}] of ${dtype} needs ${expected}`);
    tensors.push({ name, file, dtype: dtype as string, shape: shape as number[], offset: dataStart + begin, byteLength: end - begin, begin, end });
  }

  // The data section must be tiled exactly: each tensor starts where the previous ended.
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const t of tensors) {
    if (t.begin < cursor) fail(`tensor '${t.name}' overlaps the previous tensor (starts at ${t.begin}, previous ends at ${cursor})`);
    if (t.begin > cursor) fail(`there is a gap of ${t.begin - cursor} bytes before tensor '${t.name}'`);
    cursor = t.end;
  }
  if (cursor !== dataSize) fail(`${dataSize - cursor} bytes after the last tensor belong to no tensor`);
  return { file, metadata, fileSize, tensors: tensors.map(({ begin, end, ...record }) => record) };
}

/** Reads and validates the header of a .safetensors file. */
export function readSafetensorsHeader(file: string): SafetensorsFile {
  let fd: number;
  try {
    fd = openRegularFile(file);
  } catch (error) {
    throw new SafetensorsError(file, `cannot open (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  try {
    const fileSize = fs.fstatSync(fd).size;
    const lengthBytes = Buffer.alloc(8);
    fs.readSync(fd, lengthBytes, 0, Math.min(8, fileSize), 0);
    const declared = fileSize >= 8 ? lengthBytes.readBigUInt64LE(0) : 0n;
    // Read no more than the file holds and the cap allows; the parser reports what is wrong.
    const headerLength = Number(declared > BigInt(MAX_HEADER_BYTES) ? 0n : declared);
    const prefix = Buffer.alloc(Math.min(8 + headerLength, fileSize));
    fs.readSync(fd, prefix, 0, prefix.length, 0);
    if (prefix.length < 8 + headerLength || declared > BigInt(MAX_HEADER_BYTES)) {
      // Hand the parser the declared length so its message names the real problem.
      const stub = Buffer.concat([lengthBytes, prefix.subarray(Math.min(8, prefix.length))]);
      return parseSafetensorsHeader(stub, fileSize, file);
    }
    return parseSafetensorsHeader(prefix, fileSize, file);
  } catch (error) {
    if (error instanceof SafetensorsError) throw error;
    throw new SafetensorsError(file, `cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  } finally {
    fs.closeSync(fd);
  }
}

export interface TensorToWrite {
  name: string;
  dtype: string;
  shape: number[];
}

/**
 * The full prefix of a safetensors file (length + JSON padded with spaces to 8 bytes) for
 * tensors written back to back in the given order.
 */
export function buildSafetensorsHeader(tensors: TensorToWrite[], metadata: Record<string, string> = { format: "pt" }): Buffer {
  const json: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const itemBytes = DTYPE_BYTES[t.dtype];
    if (itemBytes === undefined) throw new Error(`cannot write tensor '${t.name}': unsupported dtype ${t.dtype}`);
    const byteLength = t.shape.reduce((a, b) => a * b, 1) * itemBytes;
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + byteLength] };
    offset += byteLength;
  }
  let text = JSON.stringify(json);
  text += " ".repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  const body = Buffer.from(text, "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(body.length), 0);
  return Buffer.concat([prefix, body]);
}
