/**
 * A `Gpu` that records instead of running: {@linkcode dryGpu} builds a runtime over an adapter
 * that exists only as a limits record (any GPU we do not have: WebGPU's defaults, a large NVIDIA
 * GPU under Chrome), on which the library's real code (models, layers, the planners, the kernel
 * descriptors) runs unchanged, but every tensor is a size without memory and every dispatch is
 * kept as a {@linkcode DryDispatch}: the kernel's WGSL, its grid and the byte size of each
 * binding. Tests then check every dispatch of a whole training step against the adapter's limits
 * (`tests/limits_test.ts`) at shapes far too large to run on llvmpipe.
 *
 * Only small uploads keep their data, and copies of it (readbacks of the watches and loss scales
 * a trainer reads back); everything else reads as zeros.
 *
 * @module
 */

import type { BufferPool } from "../gpu/pool.ts";
import {
  type DispatchOptions,
  type Gpu,
  type GpuStats,
  type KernelSpec,
  type Shape,
  Tensor,
} from "../gpu/mod.ts";
import { storageBytes } from "../gpu/tensor.ts";
import type { AdapterProfile } from "../kernels/_adapter.ts";

/** One recorded dispatch. */
export interface DryDispatch {
  /** The kernel (its name and WGSL). */
  readonly kernel: KernelSpec;
  /** Workgroups per dimension. */
  readonly workgroups: readonly [number, number, number];
  /** Bytes of each storage binding, in binding order. */
  readonly bindingBytes: readonly number[];
  /** Bytes of the `Params` uniform (0 without one). */
  readonly paramBytes: number;
  /** The `Params` values by field name, decoded with the WGSL struct's field types. */
  readonly params: Readonly<Record<string, number>>;
}

/** A recording runtime: a `Gpu` plus what it recorded. */
export interface DryGpu extends Gpu {
  /** Every dispatch so far, in order. */
  readonly dispatches: DryDispatch[];
  /** The largest buffer any tensor asked for, bytes. */
  largestBuffer: number;
  /** Live bytes now and at the peak (every tensor its own buffer, as with an empty pool). */
  readonly memory: { live: number; peak: number };
}

/** Uploads up to this size keep their bytes (watches, loss scales, counters). */
const KEPT_UPLOAD = 4096;

/** WebGPU's default limits (the spec's "Limits" table), as a `GPUSupportedLimits` record. */
const SPEC_DEFAULTS: Record<string, number> = {
  maxBindGroups: 4,
  maxBindingsPerBindGroup: 1000,
  maxStorageBuffersPerShaderStage: 8,
  maxUniformBuffersPerShaderStage: 12,
  maxUniformBufferBindingSize: 65536,
  maxStorageBufferBindingSize: 134217728,
  minUniformBufferOffsetAlignment: 256,
  minStorageBufferOffsetAlignment: 256,
  maxBufferSize: 268435456,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupSizeZ: 64,
  maxComputeWorkgroupsPerDimension: 65535,
};

/**
 * A recording runtime for `profile` (its description, kind, f16 and the six limits the planners
 * read; `extra` sets any other `GPUSupportedLimits` entry, e.g. the workgroup size per dimension).
 *
 * @example
 * ```ts
 * const gpu = dryGpu(WEBGPU_DEFAULT_PROFILE);
 * const y = gpu.empty([4]);
 * activationForward({ y, x: gpu.zeros([4]) }, { kind: "relu" });
 * gpu.dispatches.length; // 1
 * ```
 */
export function dryGpu(profile: AdapterProfile, extra: Record<string, number> = {}): DryGpu {
  const limits = { ...SPEC_DEFAULTS, ...profile.limits, ...extra } as unknown as GPUSupportedLimits;
  const kept = new WeakMap<GPUBuffer, Uint8Array>();
  const stats: GpuStats = {
    submits: 0,
    dispatches: 0,
    clears: 0,
    readbacks: 0,
    uploads: 0,
    pipelines: 0,
  } as GpuStats;
  const memory = { live: 0, peak: 0 };
  const pool = {
    acquire(bytes: number): GPUBuffer {
      const size = Math.max(16, Math.ceil(bytes / 16) * 16);
      memory.live += size;
      memory.peak = Math.max(memory.peak, memory.live);
      gpu.largestBuffer = Math.max(gpu.largestBuffer, size);
      return { size } as GPUBuffer;
    },
    release(buf: GPUBuffer): void {
      memory.live -= buf.size;
    },
    resetPeak(): void {
      memory.peak = memory.live;
    },
    trim(): void {},
    stats: { liveBytes: 0, peakBytes: 0 },
  } as unknown as BufferPool;
  const refuse = (what: string) => () => {
    throw new TypeError(`dryGpu: ${what} is not available on a recording runtime`);
  };
  const gpu: DryGpu = {
    adapter: null as unknown as GPUAdapter,
    device: null as unknown as GPUDevice,
    description: profile.description,
    isCpu: profile.isCpu,
    features: { f16: profile.f16, timestamps: false },
    limits,
    pool,
    stats,
    dispatches: [],
    largestBuffer: 0,
    memory,
    pipeline: refuse("pipeline()") as Gpu["pipeline"],
    compile: () => Promise.resolve(),
    dispatch(kernel: KernelSpec, options: DispatchOptions): void {
      const w = typeof options.workgroups === "number"
        ? [options.workgroups, 1, 1] as const
        : [options.workgroups[0], options.workgroups[1] ?? 1, options.workgroups[2] ?? 1] as const;
      if (w[0] * w[1] * w[2] === 0) return;
      const bindingBytes = options.bindings.map((b) => {
        if (b instanceof Tensor) return b.byteLength;
        if ("buffer" in b) return b.size ?? b.buffer.size - (b.offset ?? 0);
        return b.size;
      });
      const raw = options.params;
      const bytes = raw === undefined
        ? new ArrayBuffer(0)
        : raw instanceof ArrayBuffer
        ? raw
        : raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength) as ArrayBuffer;
      gpu.dispatches.push({
        kernel,
        workgroups: w,
        bindingBytes,
        paramBytes: bytes.byteLength,
        params: decodeParams(kernel.code, bytes),
      });
      stats.dispatches++;
    },
    // Copies keep what uploads kept (a trainer copies its watch and loss scale into one
    // readback); a copy from a buffer without kept data leaves zeros.
    copy(src, dst, options = {}): void {
      const bytes = options.bytes ?? src.byteLength;
      const from = src.byteOffset + (options.srcOffset ?? 0);
      const to = dst.byteOffset + (options.dstOffset ?? 0);
      let d = kept.get(dst.buffer);
      if (!d) {
        if (dst.buffer.size > KEPT_UPLOAD) return;
        d = new Uint8Array(dst.buffer.size);
        kept.set(dst.buffer, d);
      }
      const k = kept.get(src.buffer);
      d.set(k ? k.subarray(from, from + bytes) : new Uint8Array(bytes), to);
    },
    clear(): void {
      stats.clears++;
    },
    flush(): void {},
    sync: () => Promise.resolve(),
    checkErrors(): void {},
    tensor(data, options) {
      const dtype = dtypeOfArray(data);
      const t = gpu.empty(options.shape, { dtype }) as Tensor;
      gpu.write(t, data);
      return t as never;
    },
    empty(shape: Shape, options: { dtype?: string } = {}) {
      const dtype = (options.dtype ?? "f32") as "f32";
      const n = shape.reduce((a, b) => a * b, 1);
      return new Tensor(gpu, pool.acquire(storageBytes(n, dtype)), { shape, dtype }) as never;
    },
    zeros(shape: Shape, options: { dtype?: string } = {}) {
      return gpu.empty(shape, options as { dtype?: "f32" }) as never;
    },
    write(t, data): void {
      stats.uploads++;
      if (t.byteOffset === 0 && data.byteLength <= KEPT_UPLOAD) {
        const bytes = new Uint8Array(t.buffer.size);
        bytes.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        kept.set(t.buffer, bytes);
      }
    },
    read(t) {
      stats.readbacks++;
      const bytes = new Uint8Array(t.byteLength);
      const k = kept.get(t.buffer);
      if (k) bytes.set(k.subarray(t.byteOffset, t.byteOffset + t.byteLength));
      const views = {
        f32: Float32Array,
        f16: Float16Array,
        i32: Int32Array,
        u32: Uint32Array,
        u8: Uint8Array,
      };
      return Promise.resolve(new views[t.dtype](bytes.buffer, 0, t.size) as never);
    },
    scope: <T>(fn: () => T): T => fn(),
    trimPool(): void {},
    close: () => Promise.resolve(),
    destroy(): void {},
    _track(): void {},
    _untrack(): void {},
  };
  return gpu;
}

function dtypeOfArray(data: ArrayBufferView): "f32" | "f16" | "i32" | "u32" | "u8" {
  if (data instanceof Float32Array) return "f32";
  if (data instanceof Float16Array) return "f16";
  if (data instanceof Int32Array) return "i32";
  if (data instanceof Uint32Array) return "u32";
  return "u8";
}

/** The values of a `Params` struct of 4-byte fields (u32, i32, f32), by field name. */
function decodeParams(code: string, bytes: ArrayBuffer): Record<string, number> {
  const out: Record<string, number> = {};
  const m = code.match(/struct\s+Params\s*\{([^}]*)\}/);
  if (!m || bytes.byteLength === 0) return out;
  const view = new DataView(bytes);
  m[1].split(",").map((f) => f.trim()).filter((f) => f !== "").forEach((f, i) => {
    const [name, type] = f.split(":").map((s) => s.trim());
    if (4 * i + 4 > bytes.byteLength) return;
    out[name] = type === "f32"
      ? view.getFloat32(4 * i, true)
      : type === "i32"
      ? view.getInt32(4 * i, true)
      : view.getUint32(4 * i, true);
  });
  return out;
}

/** The constants a WGSL module declares (`const WG = 256u;`, `const BK: u32 = 16;`). */
function wgslConstants(code: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of code.matchAll(/\bconst\s+(\w+)\s*(?::\s*\w+\s*)?=\s*(\d+)[ui]?\s*;/g)) {
    out.set(m[1], Number(m[2]));
  }
  return out;
}

/** A WGSL size expression: a number, a constant, or a product of those. */
function evalSize(expr: string, consts: Map<string, number>): number {
  return expr.split("*").map((t) => t.trim().replace(/[ui]$/, "")).reduce((p, t) => {
    const v = /^\d+$/.test(t) ? Number(t) : consts.get(t);
    if (v === undefined) throw new TypeError(`WGSL size '${expr}': unknown term '${t}'`);
    return p * v;
  }, 1);
}

/** Bytes of a WGSL type (scalars, vectors, atomics, fixed-size arrays). */
function typeBytes(type: string, consts: Map<string, number>): number {
  const t = type.replace(/\s+/g, "");
  const scalar: Record<string, number> = { f32: 4, u32: 4, i32: 4, f16: 2, bool: 4 };
  if (t in scalar) return scalar[t];
  let m = t.match(/^atomic<(\w+)>$/);
  if (m) return scalar[m[1]];
  m = t.match(/^vec([234])([fhiu])$/);
  if (m) {
    const n = Number(m[1]) === 3 ? 4 : Number(m[1]);
    return n * (m[2] === "h" ? 2 : 4);
  }
  m = t.match(/^vec([234])<(\w+)>$/);
  if (m) return (Number(m[1]) === 3 ? 4 : Number(m[1])) * scalar[m[2]];
  m = t.match(/^array<(.+),([^,<>]+)>$/);
  if (m) return typeBytes(m[1], consts) * evalSize(m[2], consts);
  throw new TypeError(`unknown WGSL type '${type}'`);
}

/**
 * Bytes of the `var<workgroup>` declarations of a kernel's WGSL (array sizes may name the
 * module's constants).
 *
 * @example
 * ```ts
 * workgroupStorageBytes("const WG = 64u;\nvar<workgroup> red: array<vec2f, WG>;"); // 512
 * ```
 */
export function workgroupStorageBytes(code: string): number {
  const consts = wgslConstants(code);
  let total = 0;
  for (const m of code.matchAll(/var<workgroup>\s+\w+\s*:\s*([^;]+);/g)) {
    total += typeBytes(m[1], consts);
  }
  return total;
}

/**
 * A kernel's `@workgroup_size` (x, y, z), sizes that name constants resolved.
 *
 * @example
 * ```ts
 * workgroupSize("const WG = 64u;\n@compute @workgroup_size(WG) fn main() {}"); // [64, 1, 1]
 * ```
 */
export function workgroupSize(code: string): [number, number, number] {
  const consts = wgslConstants(code);
  const m = code.match(/@workgroup_size\(([^)]*)\)/);
  if (!m) throw new TypeError("WGSL without @workgroup_size");
  const dims = m[1].split(",").map((s) => s.trim()).filter((s) => s !== "");
  const [x, y = "1", z = "1"] = dims;
  return [evalSize(x, consts), evalSize(y, consts), evalSize(z, consts)];
}
