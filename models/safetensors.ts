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
 * Decodes safetensors bytes; `file` names the source in errors. Supports F32 and I64 (the dtypes
 * of our checkpoints); other dtypes, truncated data or a malformed header raise a `TypeError`
 * naming the file and what is wrong.
 *
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "@modern-cnn/webgpu/models";
 * const m = decodeSafetensors(encodeSafetensors(new Map([["w", { dtype: "F32", shape: [1], data: new Float32Array([3]) }]])));
 * m.get("w")!.data; // Float32Array [3]
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  options: { file?: string } = {},
): { tensors: HostStateDict; metadata: Record<string, string> } {
  const file = options.file ?? "<bytes>";
  const fail = (what: string): never => {
    throw new TypeError(`safetensors file ${file}: ${what}`);
  };
  if (bytes.byteLength < 8) fail(`only ${bytes.byteLength} bytes, too short for a header`);
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (8 + n > bytes.byteLength) {
    fail(`header length ${n} runs past the end (${bytes.byteLength} bytes)`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  } catch (err) {
    return fail(`the JSON header does not parse (${(err as Error).message})`);
  }
  const dataStart = 8 + n;
  const dataLen = bytes.byteLength - dataStart;
  const tensors: HostStateDict = new Map();
  let metadata: Record<string, string> = {};
  const entries = Object.entries(header).sort((a, b) => {
    const ao = (a[1] as { data_offsets?: number[] })?.data_offsets?.[0] ?? -1;
    const bo = (b[1] as { data_offsets?: number[] })?.data_offsets?.[0] ?? -1;
    return ao - bo;
  });
  for (const [name, value] of entries) {
    if (name === "__metadata__") {
      metadata = value as Record<string, string>;
      continue;
    }
    const v = value as { dtype?: string; shape?: number[]; data_offsets?: [number, number] };
    if (
      !v || typeof v.dtype !== "string" || !Array.isArray(v.shape) || !Array.isArray(v.data_offsets)
    ) {
      fail(`entry '${name}' lacks dtype, shape or data_offsets`);
    }
    const width = DTYPE_BYTES[v.dtype!];
    if (!width) fail(`entry '${name}' has dtype ${v.dtype}; only F32 and I64 are supported`);
    const [begin, end] = v.data_offsets!;
    const count = v.shape!.reduce((a, b) => a * b, 1);
    if (end - begin !== count * width) {
      fail(
        `entry '${name}' spans ${end - begin} bytes but shape [${v.shape}] of ${v.dtype} needs ${
          count * width
        }`,
      );
    }
    if (begin < 0 || end > dataLen) {
      fail(
        `entry '${name}' (bytes ${begin}..${end}) runs past the end of the data (${dataLen} bytes): truncated file?`,
      );
    }
    const raw = bytes.slice(dataStart + begin, dataStart + end); // copy: aligned
    const data = v.dtype === "F32" ? new Float32Array(raw.buffer) : new BigInt64Array(raw.buffer);
    tensors.set(name, { dtype: v.dtype as "F32" | "I64", shape: v.shape!, data });
  }
  return { tensors, metadata };
}
