/**
 * The safetensors format, written and read by hand (it is small): an 8-byte little-endian header
 * length, a JSON header mapping each name to `{ dtype, shape, data_offsets }`, then the raw
 * little-endian tensor bytes. Files we write load with the `safetensors` Python package into the
 * reference module trees, and theirs load here.
 *
 * @module
 */

/** A tensor of a checkpoint on the CPU. */
export interface HostTensor {
  /** `F32` for parameters and running stats, `I64` for `num_batches_tracked`. */
  readonly dtype: "F32" | "I64";
  /** Shape (`[]` for a scalar). */
  readonly shape: readonly number[];
  /** Elements. */
  readonly data: Float32Array | BigInt64Array;
}

/** Named tensors, in order. */
export type HostStateDict = Map<string, HostTensor>;

const DTYPE_BYTES: Record<string, number> = { F32: 4, I64: 8 };

/**
 * Encodes tensors (and optional string metadata) as safetensors bytes.
 *
 * @example
 * ```ts
 * import { encodeSafetensors } from "@modern-cnn/webgpu/models";
 * const bytes = encodeSafetensors(new Map([["w", { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) }]]));
 * ```
 */
export function encodeSafetensors(
  tensors: HostStateDict,
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = t.data.byteLength;
    const expected = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    if (bytes !== expected) {
      throw new TypeError(
        `safetensors: '${name}' has ${bytes} bytes, shape [${t.shape}] needs ${expected}`,
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + json.length) % 8)) % 8); // align the data to 8 bytes
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const t of tensors.values()) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * A file that is not a valid safetensors file: a malformed header, offsets that overlap or leave
 * bytes uncovered, an unsupported dtype, a truncated file, or a PyTorch `.pt` file (the message
 * then shows the Python that converts it). The message names the file and the entry, and says
 * how to fix it.
 *
 * @example
 * ```ts
 * import { decodeSafetensors, SafetensorsError } from "@modern-cnn/webgpu/models";
 * try {
 *   decodeSafetensors(new Uint8Array(3), { file: "w.safetensors" });
 * } catch (e) {
 *   console.log(e instanceof SafetensorsError, (e as SafetensorsError).file); // true "w.safetensors"
 * }
 * ```
 */
export class SafetensorsError extends TypeError {
  /** The file (or label) that failed to decode. */
  readonly file: string;
  /** The header entry at fault, when one is. */
  readonly entry?: string;
  /**
   * Creates the error; the message is `file: problem`.
   *
   * @example
   * ```ts
   * import { SafetensorsError } from "@modern-cnn/webgpu/models";
   * const e = new SafetensorsError("w.safetensors", "entry 'fc.weight' has no dtype", "fc.weight");
   * console.log(e.entry); // "fc.weight"
   * ```
   */
  constructor(file: string, problem: string, entry?: string) {
    super(`${file}: ${problem}`);
    this.name = "SafetensorsError";
    this.file = file;
    if (entry !== undefined) this.entry = entry;
  }
}

/** The largest JSON header accepted, as huggingface/safetensors (100 MB). */
const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;

/** The most dimensions a tensor's shape may have here. */
const MAX_RANK = 64;

const REWRITE = "corrupt, or not written by a safetensors writer: write it again";

/** A string cut to `max` characters, with an ellipsis and the full length when cut. */
function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}... (${s.length} characters)`;
}

/** A header name for a message: quoted, cut to a readable length. */
function q(name: string): string {
  return `'${clip(name, 60)}'`;
}

/** A JSON value for a message, cut to a readable length. */
function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return clip(s, 40);
}

/** A shape for a message: the first dimensions, and how many there are when cut. */
function showShape(shape: readonly unknown[]): string {
  if (shape.length <= 8) return `[${shape.map(show).join(", ")}]`;
  return `[${shape.slice(0, 4).map(show).join(", ")}, ...] (${shape.length} dimensions)`;
}

/** Which PyTorch container the bytes are, if any: a zip (torch.save) or a legacy pickle. */
function pytorchKind(b: Uint8Array): "zip" | "pickle" | null {
  if (b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04) {
    return "zip";
  }
  if (b.length >= 2 && b[0] === 0x80 && b[1] >= 2 && b[1] <= 5) return "pickle";
  return null;
}

/** The message for a PyTorch file: one summary line, then the three lines of Python. */
function pytorchMessage(kind: "zip" | "pickle", file: string): string {
  const base = file.split(/[\\/]/).pop()!;
  const stem = base.replace(/\.(pt|pth|bin|ckpt|pkl|pickle)$/i, "");
  const dir = file.slice(0, file.length - base.length);
  const out = `${dir}${stem}.safetensors`;
  return `is a PyTorch ${
    kind === "zip" ? "torch.save (zip)" : "legacy pickle"
  } file, not safetensors; convert a state_dict with this Python (for a whole model, add ` +
    "weights_only=False to torch.load(...) and take its .state_dict()):\n" +
    "  import torch\n" +
    "  from safetensors.torch import save_file\n" +
    `  save_file(torch.load(${JSON.stringify(file)}, map_location="cpu"), ${JSON.stringify(out)})`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

interface Entry {
  name: string;
  dtype: "F32" | "I64";
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Decodes safetensors bytes; `file` names the source in errors. Supports F32 and I64 (the dtypes
 * of our checkpoints). The reader is strict, as the format's reference implementation
 * (huggingface/safetensors): the header is at most 100 MB of UTF-8 JSON, an object whose
 * `__metadata__` (optional) maps strings to strings and whose other entries are objects
 * `{ dtype, shape, data_offsets }` with non-negative integer dimensions and offsets; the tensors'
 * byte ranges, sorted, must tile the data exactly (no overlap, no gap, no bytes after the last).
 *
 * @throws {SafetensorsError} naming the file and the entry: a malformed header, overlapping or
 * uncovered bytes, an unsupported dtype, a truncated file, or a PyTorch `.pt` file (the message
 * shows the Python that converts it).
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "@modern-cnn/webgpu/models";
 * const m = decodeSafetensors(encodeSafetensors(new Map([["w", { dtype: "F32", shape: [1], data: new Float32Array([3]) }]])));
 * m.tensors.get("w")!.data; // Float32Array [3]
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  options: { file?: string } = {},
): { tensors: HostStateDict; metadata: Record<string, string> } {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`decodeSafetensors: bytes must be a Uint8Array, got ${typeof bytes}`);
  }
  const file = options.file ?? "<bytes>";
  const fail = (what: string, entry?: string): never => {
    throw new SafetensorsError(file, what, entry);
  };
  const torch = pytorchKind(bytes);
  if (torch) fail(pytorchMessage(torch, file));
  if (bytes.byteLength < 8) {
    fail(`only ${bytes.byteLength} bytes, too short for a safetensors header (truncated or empty)`);
  }
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(SAFETENSORS_MAX_HEADER_BYTES)) {
    fail(
      `the header length field says ${n64} bytes, more than the format's limit of ` +
        `${SAFETENSORS_MAX_HEADER_BYTES} (${REWRITE})`,
    );
  }
  const n = Number(n64);
  if (8 + n > bytes.byteLength) {
    fail(`header length ${n} runs past the end (${bytes.byteLength} bytes): truncated file?`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    return fail(`the header is not valid UTF-8 (${REWRITE})`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    return fail(`the JSON header does not parse (${clip((err as Error).message, 100)})`);
  }
  if (!isObject(header)) {
    fail(
      `the header is ${
        header === null ? "null" : Array.isArray(header) ? "an array" : typeof header
      }, not a JSON object of tensors (${REWRITE})`,
    );
  }
  const dataStart = 8 + n;
  const dataLen = bytes.byteLength - dataStart;
  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (!isObject(value)) {
        fail(
          `__metadata__ is ${value === null ? "null" : show(value)}, not an object of strings ` +
            `(${REWRITE})`,
          name,
        );
      }
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") {
          fail(`__metadata__ entry ${q(k)} is ${show(v)}, not a string (${REWRITE})`, name);
        }
      }
      metadata = value as Record<string, string>;
      continue;
    }
    const e = q(name);
    if (!isObject(value)) {
      fail(`entry ${e} is ${show(value)}, not an object {dtype, shape, data_offsets}`, name);
    }
    const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof v.dtype !== "string" || !Array.isArray(v.shape) || !Array.isArray(v.data_offsets)) {
      const lacks = [
        typeof v.dtype !== "string" ? "a string dtype" : "",
        !Array.isArray(v.shape) ? "a shape array" : "",
        !Array.isArray(v.data_offsets) ? "a data_offsets array" : "",
      ].filter((s) => s).join(", ");
      fail(`entry ${e} lacks ${lacks} (${REWRITE})`, name);
    }
    const dtype = v.dtype as string;
    const shape = v.shape as unknown[];
    const offsets = v.data_offsets as unknown[];
    const width = DTYPE_BYTES[dtype];
    if (!width) {
      fail(
        `entry ${e} has dtype ${clip(dtype, 20)}; only F32 and I64 are supported (convert the ` +
          "tensors to float32 before saving)",
        name,
      );
    }
    if (shape.length > MAX_RANK) {
      fail(
        `entry ${e} has a shape of ${shape.length} dimensions, at most ${MAX_RANK} are supported ` +
          `(${REWRITE})`,
        name,
      );
    }
    const badDim = shape.findIndex((d) => !isCount(d));
    if (badDim >= 0) {
      fail(
        `entry ${e} has shape ${showShape(shape)}: dimension ${badDim} (${
          show(shape[badDim])
        }) is not a non-negative integer (${REWRITE})`,
        name,
      );
    }
    if (offsets.length !== 2 || !offsets.every(isCount)) {
      fail(
        `entry ${e} has data_offsets ${
          showShape(offsets)
        }; expected two non-negative integers [begin, end] (${REWRITE})`,
        name,
      );
    }
    const [begin, end] = offsets as number[];
    if (end < begin) {
      fail(`entry ${e} has data_offsets [${begin}, ${end}] that end before they begin`, name);
    }
    let count = 1;
    for (const d of shape as number[]) count *= d;
    const needs = count * width;
    if (!Number.isSafeInteger(needs) || end - begin !== needs) {
      fail(
        `entry ${e} spans ${end - begin} bytes but shape ${showShape(shape)} of ${dtype} needs ` +
          `${Number.isSafeInteger(needs) ? needs : "too many"} (${REWRITE})`,
        name,
      );
    }
    if (end > dataLen) {
      fail(
        `entry ${e} (bytes ${begin}..${end}) runs past the end of the data (${dataLen} bytes): ` +
          "truncated file? copy or download it again",
        name,
      );
    }
    entries.push({ name, dtype: dtype as "F32" | "I64", shape: shape as number[], begin, end });
  }
  // The byte ranges, sorted, must tile the data: each begins where the previous ended.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (let i = 0; i < entries.length; i++) {
    const t = entries[i];
    const prev = entries[i - 1];
    if (t.begin < at) {
      const same = prev.begin === t.begin && prev.end === t.end;
      fail(
        `entry ${q(t.name)} (bytes ${t.begin}..${t.end}) ${
          same ? "has the same data_offsets as" : "overlaps"
        } entry ${q(prev.name)} (bytes ${prev.begin}..${prev.end}) (${REWRITE})`,
        t.name,
      );
    }
    if (t.begin > at) {
      fail(
        `bytes ${at}..${t.begin} of the data, before entry ${q(t.name)}, belong to no tensor ` +
          `(the format requires the tensors to cover the data exactly; ${REWRITE})`,
        t.name,
      );
    }
    at = t.end;
  }
  if (at !== dataLen) {
    const last = entries.at(-1);
    fail(
      `${dataLen - at} bytes after ${last ? `the last tensor ${q(last.name)}` : "the header"} ` +
        `belong to no tensor (the format requires the tensors to cover the data exactly; ${REWRITE})`,
      last?.name,
    );
  }
  const tensors: HostStateDict = new Map();
  for (const t of entries) {
    const raw = bytes.slice(dataStart + t.begin, dataStart + t.end); // copy: aligned
    const data = t.dtype === "F32" ? new Float32Array(raw.buffer) : new BigInt64Array(raw.buffer);
    tensors.set(t.name, { dtype: t.dtype, shape: t.shape, data });
  }
  return { tensors, metadata };
}
