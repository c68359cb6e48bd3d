/**
 * Test harness: tolerance checks that report the max error, a finite-difference gradient
 * checker, a seeded RNG, and the shared GPU for tests.
 *
 * CPU references in tests are written in plain TypeScript over Float64Array (see `cpu_ref.ts`).
 *
 * One file of about 560 lines on purpose: the one module every test imports its checks, RNG,
 * GPU and dtype helpers from (CONTRIBUTING.md lists them under this name).
 *
 * @module
 */

import { AssertionError } from "./_assert.ts";
import { getGpu, type Gpu, type Shape, Tensor } from "../gpu/mod.ts";
import { POOL_USAGE } from "../gpu/pool.ts";
import { storageBytes } from "../gpu/tensor.ts";
import type { FloatDType } from "../kernels/_dtype.ts";

/** Any numeric array. */
export type Numeric = ArrayLike<number>;

/** Tolerances of {@linkcode assertClose}: passes where `|a - e| <= atol + rtol * |e|`. */
export interface CloseOptions {
  /** Relative tolerance; default 1e-5. */
  readonly rtol?: number;
  /** Absolute tolerance; default 1e-6. */
  readonly atol?: number;
  /** A label for the message (e.g. `conv2d dx`). */
  readonly what?: string;
}

/** The outcome of comparing two arrays. */
export interface CloseReport {
  /** Largest |actual - expected|. */
  readonly maxAbs: number;
  /** Largest |actual - expected| / max(|expected|, tiny). */
  readonly maxRel: number;
  /** First index outside the tolerance, or -1. */
  readonly firstBad: number;
  /** How many elements are outside the tolerance. */
  readonly bad: number;
}

/**
 * Compares element by element without throwing.
 *
 * @example
 * ```ts
 * import { compareClose } from "./harness.ts";
 * compareClose([1, 2], [1, 2.1], { atol: 0.01 }).firstBad; // 1
 * ```
 */
export function compareClose(
  actual: Numeric,
  expected: Numeric,
  options: CloseOptions = {},
): CloseReport {
  const rtol = options.rtol ?? 1e-5;
  const atol = options.atol ?? 1e-6;
  let maxAbs = 0, maxRel = 0, firstBad = -1, bad = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    const d = Math.abs(a - e);
    const ok = d <= atol + rtol * Math.abs(e) || (Number.isNaN(a) && Number.isNaN(e)) ||
      (a === e);
    const dd = Number.isNaN(d) ? Infinity : d;
    if (dd > maxAbs) maxAbs = dd;
    const rel = dd / Math.max(Math.abs(e), 1e-30);
    if (rel > maxRel && dd > 0) maxRel = rel;
    if (!ok) {
      bad++;
      if (firstBad < 0) firstBad = i;
    }
  }
  return { maxAbs, maxRel, firstBad, bad };
}

/**
 * Throws an `AssertionError` unless `actual` matches `expected` within tolerance; the message
 * gives the max abs and rel error, how many elements fail and the first failing index.
 *
 * @example
 * ```ts
 * import { assertClose } from "./harness.ts";
 * assertClose(new Float32Array([1, 2]), [1, 2.0000001]);
 * ```
 */
export function assertClose(actual: Numeric, expected: Numeric, options: CloseOptions = {}): void {
  const what = options.what ? `${options.what}: ` : "";
  if (actual.length !== expected.length) {
    throw new AssertionError({
      message: `${what}length ${actual.length} differs from expected ${expected.length}`,
    });
  }
  const r = compareClose(actual, expected, options);
  if (r.firstBad >= 0) {
    const i = r.firstBad;
    throw new AssertionError({
      message: `${what}${r.bad} of ${expected.length} elements differ: ` +
        `max abs error ${r.maxAbs.toExponential(3)}, max rel error ${r.maxRel.toExponential(3)} ` +
        `(rtol ${options.rtol ?? 1e-5}, atol ${options.atol ?? 1e-6}); first at index ${i}: ` +
        `actual ${actual[i]}, expected ${expected[i]}`,
    });
  }
}

/**
 * Central finite differences of a scalar function `f` at `x` (Float64): the numerical gradient.
 * `x` is restored after each probe.
 *
 * @example
 * ```ts
 * import { numericalGradient } from "./harness.ts";
 * const g = numericalGradient((x) => x[0] * x[0], new Float64Array([3])); // ~[6]
 * ```
 */
export function numericalGradient(
  f: (x: Float64Array) => number,
  x: Float64Array,
  options: { eps?: number } = {},
): Float64Array {
  const eps = options.eps ?? 1e-6;
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + eps;
    const fp = f(x);
    x[i] = v - eps;
    const fm = f(x);
    x[i] = v;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

/**
 * Checks an analytic gradient against finite differences of `f` at `x`.
 *
 * @example
 * ```ts
 * import { checkGradient } from "./harness.ts";
 * const x = new Float64Array([1, 2]);
 * checkGradient((v) => v[0] * v[1], x, [2, 1]);
 * ```
 */
export function checkGradient(
  f: (x: Float64Array) => number,
  x: Float64Array,
  analytic: Numeric,
  options: CloseOptions & { eps?: number } = {},
): void {
  const numeric = numericalGradient(f, x, options);
  assertClose(analytic, numeric, {
    rtol: options.rtol ?? 1e-4,
    atol: options.atol ?? 1e-6,
    what: options.what ?? "gradient vs finite differences",
  });
}

/**
 * A seeded RNG (SplitMix32-style hash of a counter): reproducible streams for tests.
 *
 * @example
 * ```ts
 * import { Rng } from "./harness.ts";
 * const rng = new Rng(42);
 * const x = rng.normalArray(16); // Float64Array
 * ```
 */
export class Rng {
  #state: number;
  /**
   * Creates a generator from a seed.
   *
   * @example
   * ```ts
   * import { Rng } from "./harness.ts";
   * new Rng(1).next();
   * ```
   */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /**
   * A uniform float in [0, 1).
   *
   * @example
   * ```ts
   * import { Rng } from "./harness.ts";
   * new Rng(1).next() < 1; // true
   * ```
   */
  next(): number {
    let z = (this.#state = (this.#state + 0x9e3779b9) >>> 0);
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 4294967296;
  }
  /**
   * A uniform float in [lo, hi).
   *
   * @example
   * ```ts
   * import { Rng } from "./harness.ts";
   * new Rng(1).uniform(-1, 1);
   * ```
   */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  /**
   * An integer in [0, n).
   *
   * @example
   * ```ts
   * import { Rng } from "./harness.ts";
   * new Rng(1).int(10);
   * ```
   */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /**
   * A standard normal sample (Box-Muller).
   *
   * @example
   * ```ts
   * import { Rng } from "./harness.ts";
   * new Rng(1).normal();
   * ```
   */
  normal(): number {
    const u = Math.max(this.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  /**
   * `n` uniform samples in [lo, hi) as Float64.
   *
   * @example
   * ```ts
   * import { Rng } from "./harness.ts";
   * new Rng(1).uniformArray(8, -1, 1);
   * ```
   */
  uniformArray(n: number, lo = -1, hi = 1): Float64Array {
    const a = new Float64Array(n);
    for (let i = 0; i < n; i++) a[i] = this.uniform(lo, hi);
    return a;
  }
  /**
   * `n` standard normal samples as Float64.
   *
   * @example
   * ```ts
   * import { Rng } from "./harness.ts";
   * new Rng(1).normalArray(8);
   * ```
   */
  normalArray(n: number): Float64Array {
    const a = new Float64Array(n);
    for (let i = 0; i < n; i++) a[i] = this.normal();
    return a;
  }
}

/**
 * The shared runtime for tests (one device per test process).
 *
 * @example
 * ```ts
 * import { testGpu } from "./harness.ts";
 * const gpu = await testGpu();
 * ```
 */
export async function testGpu(): Promise<Gpu> {
  if (!unloadHooked) {
    unloadHooked = true;
    // Release the device when the file's tests are done: `deno test` dispatches `unload` after
    // the last one, and a handler cannot await, so this is the synchronous `destroy` (pooled
    // buffers, arena, device), with no work in flight since every test awaited its results. (The
    // crash at exit that this once aimed at came from Deno's OpenGL backend; requestGpu now
    // leaves it out, see gpu/device.ts.)
    globalThis.addEventListener("unload", () => shared?.destroy());
  }
  shared = await getGpu();
  return shared;
}

let unloadHooked = false;
let shared: Gpu | undefined;

/** Options for GPU tests: WebGPU keeps device resources alive across tests by design. */
export const GPU_TEST = { sanitizeResources: false, sanitizeOps: false } as const;

/** Whether the shared test device has `shader-f16` (false when there is no device at all). */
const hasF16 = await testGpu().then((gpu) => gpu.features.f16, () => false);

/**
 * Options for GPU tests that need f16 kernels: {@linkcode GPU_TEST}, and ignored (reported as
 * such) when the shared test device lacks the `shader-f16` feature.
 *
 * @example
 * ```ts
 * import { F16_TEST, testGpu } from "./harness.ts";
 * Deno.test("an f16 kernel", F16_TEST, async () => {
 *   const gpu = await testGpu();
 *   gpu.zeros([4], { dtype: "f16" });
 * });
 * ```
 */
export const F16_TEST = { ...GPU_TEST, ignore: !hasF16 } as const;

/**
 * Float32 copy of a Float64 array (what is uploaded to the GPU).
 *
 * @example
 * ```ts
 * import { f32 } from "./harness.ts";
 * f32([1, 2]); // Float32Array [1, 2]
 * ```
 */
export function f32(a: Numeric): Float32Array {
  return Float32Array.from(a as ArrayLike<number>);
}

/**
 * Float64 copy of a numeric array (CPU references compute in Float64).
 *
 * @example
 * ```ts
 * import { f64 } from "./harness.ts";
 * f64(new Float32Array([1])); // Float64Array [1]
 * ```
 */
export function f64(a: Numeric): Float64Array {
  return Float64Array.from(a as ArrayLike<number>);
}

/**
 * Float16 copy of a numeric array (what an f16 tensor holds; rounds to nearest even).
 *
 * @example
 * ```ts
 * import { f16 } from "./harness.ts";
 * f16([1, 1.0001]); // Float16Array [1, 1]
 * ```
 */
export function f16(a: Numeric): Float16Array {
  return Float16Array.from(a as ArrayLike<number>);
}

/**
 * Float64 copy of `a` with every element rounded to f16 (inputs of an f16 CPU reference).
 *
 * @example
 * ```ts
 * import { roundF16 } from "./harness.ts";
 * roundF16([0.1]); // Float64Array [0.0999755859375]
 * ```
 */
export function roundF16(a: Numeric): Float64Array {
  return Float64Array.from(a as ArrayLike<number>, (v) => Math.f16round(v));
}

/**
 * Tolerances for an f16 output computed in f32 from f16 inputs: the output's own rounding (half
 * an f16 ulp, 2^-11 relative) plus `extra` relative headroom, with `atol` scaled to the data's
 * largest magnitude `scale` (sums of mixed signs cancel, so relative error alone is not fair).
 *
 * @example
 * ```ts
 * import { assertClose, f16Tolerance } from "./harness.ts";
 * assertClose([1.0004], [1], f16Tolerance(1));
 * ```
 */
export function f16Tolerance(scale: number, extra = 0): CloseOptions {
  const eps = 2 ** -11;
  return { rtol: eps * (1 + extra), atol: 4 * eps * Math.max(scale, 1e-3) * (1 + extra) };
}

/**
 * The largest magnitude in `a` (0 when empty): the `scale` of {@linkcode f16Tolerance}.
 *
 * @example
 * ```ts
 * import { maxAbs } from "./harness.ts";
 * maxAbs([1, -3, 2]); // 3
 * ```
 */
export function maxAbs(a: Numeric): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/**
 * The values `data` holds once stored in a tensor of `dtype` (f16: rounded to f16, else to
 * f32), in Float64: what a CPU reference must be fed.
 *
 * @example
 * ```ts
 * import { stored } from "./harness.ts";
 * stored([0.1], "f16"); // Float64Array [0.0999755859375]
 * stored([0.1], "f32"); // Float64Array [0.10000000149011612]
 * ```
 */
export function stored(data: Numeric, dtype: FloatDType | undefined): Float64Array {
  return dtype === "f16" ? roundF16(data) : f64(f32(data));
}

/**
 * A tensor of `dtype` (default f32) and `shape` holding `data` (rounded to its type, as
 * {@linkcode stored} gives it).
 *
 * @example
 * ```ts
 * import { tensorOf, testGpu } from "./harness.ts";
 * const gpu = await testGpu();
 * const x = tensorOf(gpu, [1, 2, 3, 4], { dtype: "f16", shape: [2, 2] });
 * ```
 */
export function tensorOf(
  gpu: Gpu,
  data: Numeric,
  options: { readonly dtype?: FloatDType | undefined; readonly shape: Shape },
): Tensor {
  const { dtype, shape } = options;
  return dtype === "f16" ? gpu.tensor(f16(data), { shape }) : gpu.tensor(f32(data), { shape });
}

/**
 * {@linkcode tensorOf} and {@linkcode stored} at once: the tensor `t` holding `data`, and `held`,
 * the Float64 values it holds (the CPU reference's inputs).
 *
 * @example
 * ```ts
 * import { testGpu, upload } from "./harness.ts";
 * const gpu = await testGpu();
 * const x = upload(gpu, [0.1, 0.2], { dtype: "f16", shape: [2] }); // x.t, x.held
 * ```
 */
export function upload(
  gpu: Gpu,
  data: Numeric,
  options: { readonly dtype?: FloatDType | undefined; readonly shape: Shape },
): { t: Tensor; held: Float64Array } {
  return { t: tensorOf(gpu, data, options), held: stored(data, options.dtype) };
}

/**
 * A label of a dtype mix for test messages: `{ x: "f16", y: "f32" }` → `"x f16, y f32"`.
 *
 * @example
 * ```ts
 * import { dtLabel } from "./harness.ts";
 * dtLabel({ x: "f16", y: "f32" }); // "x f16, y f32"
 * ```
 */
export function dtLabel<T extends { readonly [K in keyof T]: FloatDType | undefined }>(
  dtypes: T,
): string {
  return Object.entries(dtypes).map(([k, v]) => `${k} ${v}`).join(", ");
}

/**
 * The tolerance of a kernel output stored as `dtype` whose Float64 reference is `ref`: for f16,
 * {@linkcode f16Tolerance}`(maxAbs(ref), extra)` (`extra` default 0, justified by the caller);
 * for f32, the f32 tests' own tolerance `f32`. `what` labels the message.
 *
 * @example
 * ```ts
 * import { assertClose, outTol } from "./harness.ts";
 * const ref = [1, 2];
 * assertClose([1.0004, 2], ref, outTol("f16", ref, { f32: { rtol: 1e-5 }, what: "y" }));
 * ```
 */
export function outTol(
  dtype: FloatDType | undefined,
  ref: Numeric,
  options: { readonly extra?: number; readonly f32: CloseOptions; readonly what?: string },
): CloseOptions {
  const tol = dtype === "f16" ? f16Tolerance(maxAbs(ref), options.extra ?? 0) : options.f32;
  return options.what === undefined ? tol : { ...tol, what: options.what };
}

/**
 * The channel slice `[offset, offset + cOut)` of an output `got` of `n` images of `channels`
 * channels of `pixels` values each (an output written into part of a wider, concatenated
 * tensor), gathered densely as `[n, cOut, pixels]` in a Float32Array. Throws an
 * `AssertionError` where a value outside the slice is no longer `sentinel` (the value the
 * tensor was filled with before the kernel ran); `what` labels the message.
 *
 * @example
 * ```ts
 * import { channelSlice } from "./harness.ts";
 * // 1 image of 3 channels of 2 pixels, the middle channel written:
 * const got = [-1, -1, 5, 6, -1, -1];
 * const opts = { n: 1, channels: 3, offset: 1, cOut: 1, pixels: 2, sentinel: -1 };
 * channelSlice(got, opts); // Float32Array [5, 6]
 * ```
 */
export function channelSlice(
  got: Numeric,
  options: {
    readonly n: number;
    readonly channels: number;
    readonly offset: number;
    readonly cOut: number;
    readonly pixels: number;
    readonly sentinel: number;
    readonly what?: string;
  },
): Float32Array {
  const { n, channels: C, offset: off, cOut, pixels: P, sentinel } = options;
  const what = options.what ? `${options.what}: ` : "";
  const slice = new Float32Array(n * cOut * P);
  for (let img = 0; img < n; img++) {
    for (let c = 0; c < C; c++) {
      const base = (img * C + c) * P;
      const inSlice = c >= off && c < off + cOut;
      for (let i = 0; i < P; i++) {
        if (inSlice) slice[(img * cOut + c - off) * P + i] = got[base + i];
        else if (got[base + i] !== sentinel) {
          throw new AssertionError({
            message: `${what}channel ${c} of image ${img} outside the slice was written ` +
              `(pixel ${i}: ${got[base + i]}, sentinel ${sentinel})`,
          });
        }
      }
    }
  }
  return slice;
}

/**
 * A tensor of `data` (f16 for a Float16Array, else f32; 1-D unless `shape` says otherwise) on a
 * buffer of exactly its storage bytes: no slack past the last element, so the kernels take their
 * scalar path for sizes that are not a multiple of the vector width (and an overrun would fault,
 * not pass).
 *
 * @example
 * ```ts
 * import { exactTensor, testGpu } from "./harness.ts";
 * const gpu = await testGpu();
 * const x = exactTensor(gpu, new Float16Array([1, 2, 3])); // f16, 8 bytes
 * ```
 */
export function exactTensor(
  gpu: Gpu,
  data: Float32Array | Float16Array,
  options: { readonly shape?: Shape } = {},
): Tensor {
  const dtype = data instanceof Float16Array ? "f16" : "f32";
  const buffer = gpu.device.createBuffer({
    size: storageBytes(data.length, dtype),
    usage: POOL_USAGE,
  });
  const t = new Tensor(gpu, buffer, { shape: options.shape ?? [data.length], dtype });
  gpu.write(t, data);
  return t;
}
