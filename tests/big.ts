// Helpers of the tests that run kernels beyond the device limits: tensors larger than one storage
// binding (128 MiB on llvmpipe) and loops longer than llvmpipe's silent cap of 65535 iterations
// per invocation. Big inputs are filled with a fast LCG (the seeded Rng of the harness is too slow
// for tens of millions of values); big outputs are compared on samples of whole units (planes,
// samples, rows) that always include the first and last units and those around every range
// boundary the kernels split at.
import type { ArrayFor, Gpu, Tensor } from "../gpu/mod.ts";
import { bindingLimit, maxBindingElements, setBindingLimitForTests } from "../kernels/_binding.ts";
import type { Rng } from "./harness.ts";

/** `n` pseudo-random f32 values uniform in [lo, hi) from a 32-bit LCG seeded with `seed`. */
export function fastFill(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  const scale = (hi - lo) / 16777216;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = lo + (s >>> 8) * scale;
  }
  return a;
}

/** llvmpipe's binding limit in f32 elements (128 MiB less one alignment unit and 16 bytes). */
const LLVMPIPE_LIMIT = Math.floor((128 * 2 ** 20 - 256 - 16) / 4);

/**
 * The binding limit in f32 elements the big tests run at: the device's, but at most llvmpipe's
 * (see {@linkcode atDeviceLimit}), so that the tests split their tensors on every device.
 */
export function deviceLimit(gpu: Gpu): number {
  return Math.min(maxBindingElements(gpu), LLVMPIPE_LIMIT);
}

/**
 * Runs `fn` with the kernels' binding limit at {@linkcode deviceLimit}: a no-op on llvmpipe, and
 * llvmpipe's 128 MiB on devices with larger bindings.
 */
export function atDeviceLimit<T>(gpu: Gpu, fn: () => T | Promise<T>): Promise<T> {
  return withBindingLimit(deviceLimit(gpu), fn);
}

/**
 * Indices of units to check among `units` units of `perUnit` elements, split by the kernels into
 * ranges of `floor(limit / perUnit)` units: the first and last units, the two units around each
 * range boundary, and `random` more.
 */
export function sampleUnits(
  gpu: Gpu,
  units: number,
  perUnit: number,
  random: number,
  rng: Rng,
): number[] {
  const per = Math.max(1, Math.floor(bindingLimit(gpu) / perUnit));
  const set = new Set<number>([0, units - 1]);
  for (let b = per; b < units; b += per) {
    set.add(b - 1);
    set.add(b);
  }
  for (let i = 0; i < random; i++) set.add(rng.int(units));
  return [...set].filter((u) => u >= 0 && u < units).sort((a, b) => a - b);
}

/** Runs `fn` with the kernels' binding limit lowered to `elements` (see `_binding.ts`). */
export async function withBindingLimit<T>(
  elements: number,
  fn: () => T | Promise<T>,
): Promise<T> {
  setBindingLimitForTests(elements);
  try {
    return await fn();
  } finally {
    setBindingLimitForTests(undefined);
  }
}

/** Asserts that `got[i] == want[i]` exactly (f32 values), naming the first mismatch. */
export function assertExact(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  if (got.length !== want.length) {
    throw new Error(`${what}: length ${got.length}, expected ${want.length}`);
  }
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i]) && !(got[i] === want[i])) {
      throw new Error(`${what}: element ${i} is ${got[i]}, expected ${want[i]}`);
    }
  }
}

/**
 * Reads `len` elements of a 4-byte tensor at each of `starts` (clamped into the tensor) with one
 * readback: the slices are copied into one small tensor first (reading a 150 MB tensor back
 * takes seconds on llvmpipe). Returns the clamped starts and the slices (typed as the tensor).
 */
export async function readSlices<D extends "f32" | "i32" | "u32">(
  gpu: Gpu,
  t: Tensor<D>,
  starts: readonly number[],
  len: number,
): Promise<{ starts: number[]; slices: ArrayFor<D>[] }> {
  const n = Math.min(len, t.size);
  const at = starts.map((s) => Math.max(0, Math.min(s, t.size - n)));
  const dst = gpu.empty<D>([at.length * n], { dtype: t.dtype });
  at.forEach((s, k) => gpu.copy(t, dst, { srcOffset: s * 4, dstOffset: k * n * 4, bytes: n * 4 }));
  const all = await dst.toArray();
  dst.dispose();
  return {
    starts: at,
    slices: at.map((_, k) => all.subarray(k * n, (k + 1) * n) as ArrayFor<D>),
  };
}
