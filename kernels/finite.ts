/**
 * Watching tensors for Inf and NaN on the GPU, without a readback per step: a check kernel reads
 * a tensor's raw bits and, where any element is not finite, lowers a word of a small u32 "watch"
 * tensor to the step number it was given (`atomicMin`), so the watch holds the first step at
 * which each watched quantity went bad. The trainer checks the loss every step and the
 * parameters at the end of an epoch, and reads the watch with the epoch's metrics.
 *
 * The same check, with another action (set a flag), is the loss scaler's overflow check
 * (`kernels/loss_scale.ts`). The kernel is described once with `defineKernel` (kernels/_kernel.ts),
 * which generates its declarations, packing and cache key.
 *
 * WGSL has no `isnan` / `isinf` (and a compiler may assume that floats are finite), so the
 * kernel tests the exponent bits of the stored words: all ones means Inf or NaN.
 *
 * @module
 */

import { formatShape, grid1d, type Tensor } from "../gpu/mod.ts";
import type { Gpu } from "../gpu/mod.ts";
import { unitRanges } from "./_binding.ts";
import { floatBytes, floatDType } from "./_dtype.ts";
import { defineKernel, flatMain } from "./_kernel.ts";

/** The value of a watch word that has seen no Inf or NaN. */
export const FINITE = 0xffffffff;

/** Threads per workgroup of the check kernel; each thread checks 4 consecutive words. */
const WG = 256;

/**
 * The check: `x`'s storage read as raw words, each tested for an exponent of all ones; the
 * variant says what a thread that found one does to `state`: `min` lowers word `slot` to `mark`
 * (the watch), `flag` sets word `slot` to 1 (the loss scaler's found flag).
 */
const check = defineKernel(
  {
    name: "nonfinite_check",
    doc: "thread i = gid.x + gid.y * nwg.x * WG (grid1d) tests the 4 words 4i .. 4i + 3 of x's " +
      "storage (one f32, or two f16, per word) for an exponent of all ones (Inf or NaN)",
    params: { count: "u32", words: "u32", mark: "u32", slot: "u32" },
    bindings: {
      state: { type: "atomic<u32>", access: "read_write" },
      x: { type: "float-bits", access: "read" },
    },
    variants: ["min", "flag"],
    workgroupSize: WG,
    body: ({ dtypes, variant }) => {
      // f32: a word is one element, non-finite when its 8 exponent bits are all ones. f16: a word
      // holds elements 2w (low half) and 2w + 1 (high half), 5 exponent bits each; the high half
      // of the last word of an odd count is padding (it may hold anything) and is not checked.
      const test = dtypes.x === "f32"
        ? `return (v & 0x7f800000u) == 0x7f800000u;`
        : `let lo = (v & 0x7c00u) == 0x7c00u;
  let hi = ((v >> 16u) & 0x7c00u) == 0x7c00u && 2u * w + 1u < p.count;
  return lo || hi;`;
      const action = variant === "min"
        ? "atomicMin(&state[p.slot], p.mark);"
        : "atomicMax(&state[p.slot], 1u);";
      const main = flatMain(
        "i",
        null,
        `  let w = 4u * i;
  if (w >= p.words) { return; }
  if (nonFinite(w) || nonFinite(w + 1u) || nonFinite(w + 2u) || nonFinite(w + 3u)) {
    ${action}
  }`,
      );
      return `fn nonFinite(w: u32) -> bool {
  if (w >= p.words) { return false; }
  let v = x[w];
  ${test}
}
${main}`;
    },
  },
);

/**
 * Records the check over `x` (f32 or f16), in ranges that fit one binding each: where `x` holds
 * Inf or NaN, `min` lowers `state[slot]` to `mark`, `flag` sets it to 1. Internal: shared by
 * {@linkcode finiteCheck} and the loss scaler's `lossScaleCheck`; `names` name the two operands
 * in errors.
 */
export function _recordNonFiniteCheck(
  op: string,
  io: { state: Tensor; x: Tensor },
  params: { variant: "min" | "flag"; mark: number; slot: number },
  names: { x: string; state: string },
): void {
  const dtype = floatDType(op, names.x, io.x);
  if (io.x.overlaps(io.state)) {
    throw new TypeError(`${op}: ${names.x} ${io.x} shares a buffer with ${names.state}`);
  }
  const n = io.x.size;
  if (n === 0) return;
  const gpu = io.x.gpu;
  const bytes = floatBytes(dtype);
  // Ranges start at multiples of the binding offset alignment, in bytes (so every range starts
  // at word 0 of its binding) and of 2 elements (whole words of f16).
  const quantum = Math.max(2, gpu.limits.minStorageBufferOffsetAlignment / bytes);
  for (const [e0, e1] of unitRanges(op, gpu, n, 1, quantum)) {
    const count = e1 - e0;
    const words = Math.ceil((count * bytes) / 4);
    check.dispatch({
      op,
      variant: params.variant,
      params: { count, words, mark: params.mark, slot: params.slot },
      bindings: { state: io.state, x: { tensor: io.x, offset: e0 * bytes, size: words * 4 } },
      workgroups: grid1d(Math.ceil(words / 4), WG),
    });
  }
}

/**
 * Creates a watch of `slots` words (u32), each {@linkcode FINITE} ("nothing seen yet"). Its one
 * upload; {@linkcode finiteCheck} writes it on the GPU and {@linkcode readFiniteWatch} reads it.
 *
 * @returns The watch tensor, u32 `[slots]`.
 * @throws {RangeError} when `slots` is not an integer in [1, 64].
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createFiniteWatch, readFiniteWatch } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * console.log(await readFiniteWatch(createFiniteWatch(gpu, 2))); // [null, null]
 * ```
 */
export function createFiniteWatch(gpu: Gpu, slots = 1): Tensor<"u32"> {
  if (!Number.isInteger(slots) || slots < 1 || slots > 64) {
    throw new RangeError(`createFiniteWatch: slots must be an integer in [1, 64], got ${slots}`);
  }
  return gpu.tensor(new Uint32Array(slots).fill(FINITE), { shape: [slots] });
}

/**
 * Records a check of `x` (f32 or f16, any shape) for Inf and NaN: when it holds any, word `slot`
 * of `watch` becomes `min(watch[slot], mark)` (a step number, say, so the word keeps the first
 * bad step). `x` is read, never written; the watch is only ever lowered.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} when `x` is not f32 or f16, `watch` is not u32, or the two share a buffer.
 * @throws {RangeError} when `slot` is outside the watch or `mark` is not an integer in
 * [0, 2^32 - 1).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createFiniteWatch, finiteCheck, readFiniteWatch } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const watch = createFiniteWatch(gpu);
 * finiteCheck({ watch, x: gpu.tensor(new Float32Array([1, 2]), { shape: [2] }) }, { mark: 3 });
 * finiteCheck({ watch, x: gpu.tensor(new Float32Array([1, NaN]), { shape: [2] }) }, { mark: 7 });
 * console.log(await readFiniteWatch(watch)); // [7]
 * ```
 */
export function finiteCheck(
  io: { watch: Tensor; x: Tensor },
  params: { mark: number; slot?: number },
): void {
  const op = "finiteCheck";
  const slot = params.slot ?? 0;
  if (io.watch.dtype !== "u32" || io.watch.shape.length !== 1) {
    throw new TypeError(
      `${op}: watch has shape ${formatShape(io.watch.shape)} (${io.watch.dtype}), expected u32 ` +
        "[slots] (createFiniteWatch)",
    );
  }
  if (!Number.isInteger(slot) || slot < 0 || slot >= io.watch.size) {
    throw new RangeError(`${op}: slot ${slot} is outside the watch of ${io.watch.size} words`);
  }
  if (!Number.isInteger(params.mark) || params.mark < 0 || params.mark >= FINITE) {
    throw new RangeError(`${op}: mark must be an integer in [0, 2^32 - 1), got ${params.mark}`);
  }
  _recordNonFiniteCheck(
    op,
    { state: io.watch, x: io.x },
    { variant: "min", mark: params.mark, slot },
    { x: "x", state: "watch" },
  );
}

/**
 * Reads a watch back (one readback): per word, the smallest mark of a check that found Inf or
 * NaN, or `null` where none did.
 *
 * @returns One entry per word of the watch.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createFiniteWatch, readFiniteWatch } from "@modern-cnn/webgpu/kernels";
 * console.log(await readFiniteWatch(createFiniteWatch(await getGpu()))); // [null]
 * ```
 */
export async function readFiniteWatch(watch: Tensor): Promise<(number | null)[]> {
  const words = await watch.toArray() as Uint32Array;
  return [...words].map((w) => (w === FINITE ? null : w));
}
