/**
 * Dropout (`nn.Dropout`, training mode) with a counter-based RNG: element `i` is kept iff
 * `hash(seed, i) >= floor(p * 2^32)`, where `hash` is two rounds of the PCG output permutation
 * (`dropoutHash`). The mask therefore depends only on the seed and the element index, never on
 * the dispatch layout, and is reproducible on the CPU. Kept elements are scaled by
 * `1 / (1 - p)`.
 *
 * The mask is a bit set: u32 word `w`, bit `b` (`(mask[w] >> b) & 1`) is element `32 w + b`,
 * 1 = kept; the bits past `n` in the last word are 0.
 *
 * The data tensors (`x`, `y`, `dy`, `dx`) are f32 or f16, each independently; the mask is u32.
 * The scaling is computed in f32 and rounded once to the output's type.
 *
 * Tensors larger than one storage binding are processed in ranges of whole mask words (one
 * dispatch per range, the hash still taking the global element index), so every tensor size up
 * to `maxBufferSize` works. Each thread loops over at most 32 elements.
 *
 * @module
 */

import { formatShape, grid1d, type Tensor } from "../gpu/mod.ts";
import { bindingRange, unitRanges } from "./_binding.ts";
import { floatDType, storageType, vec4Bytes } from "./_dtype.ts";
import { type BoundTensor, defineKernel, flatMain, variantProduct } from "./_kernel.ts";

/** Threads per workgroup. */
const WG = 256;

/**
 * u32 words of the bit mask of `n` elements: `ceil(n / 32)`.
 *
 * @returns The number of u32 words.
 * @throws {RangeError} unless `n` is an integer >= 0.
 * @example
 * ```ts
 * import { dropoutMaskWords } from "@modern-cnn/webgpu/kernels";
 * dropoutMaskWords(100); // 4
 * ```
 */
export function dropoutMaskWords(n: number): number {
  if (!Number.isInteger(n) || n < 0) {
    throw new RangeError(`dropoutMaskWords: n must be an integer >= 0, got ${n}`);
  }
  return Math.ceil(n / 32);
}

/** One round of the PCG output permutation on u32 (as in the WGSL). */
function pcg(v: number): number {
  const s = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const w = Math.imul(((s >>> ((s >>> 28) + 4)) ^ s) >>> 0, 277803737) >>> 0;
  return ((w >>> 22) ^ w) >>> 0;
}

/**
 * The dropout RNG on the CPU: the u32 hash of element `index` under `seed`
 * (`pcg(pcg(index) ^ pcg(seed))`); element `index` is kept iff the hash is
 * `>= dropoutThreshold(p)`. The kernels compute exactly this.
 *
 * @returns A u32.
 * @example
 * ```ts
 * import { dropoutHash, dropoutThreshold } from "./dropout.ts";
 * const kept = dropoutHash(42, 7) >= dropoutThreshold(0.5);
 * ```
 */
export function dropoutHash(seed: number, index: number): number {
  return pcg(pcg(index) ^ pcg(seed));
}

/**
 * The u32 threshold of drop probability `p`: `floor(p * 2^32)` (an element is dropped iff its
 * hash is below it, so exactly with probability `p` up to 2^-32).
 *
 * @returns A u32 in [0, 2^32).
 * @throws {RangeError} unless 0 <= p < 1.
 * @example
 * ```ts
 * import { dropoutThreshold } from "./dropout.ts";
 * dropoutThreshold(0.5); // 2147483648
 * ```
 */
export function dropoutThreshold(p: number): number {
  checkP("dropoutThreshold", p);
  return Math.floor(p * 4294967296);
}

function checkP(op: string, p: number): void {
  if (typeof p !== "number" || !(p >= 0 && p < 1)) {
    throw new RangeError(`${op}: p must be in [0, 1), got ${p}`);
  }
}

/** Params of {@linkcode dropoutForward}. */
export interface DropoutParams {
  /** Probability of dropping an element, in [0, 1). */
  readonly p: number;
  /** RNG seed: an integer in [0, 2^32). Use a new seed per step and per layer. */
  readonly seed: number;
}

const PCG_WGSL = `fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}
// Kept iff the hash of (seed, element) is at or above the threshold floor(p * 2^32).
fn keep(e: u32) -> bool { return pcg(pcg(p.eOff + e) ^ p.key) >= p.threshold; }`;

/** `t` whole: as vec4s (its buffer has room for the last, partial one) or as elements. */
function whole(t: Tensor, vec: boolean): BoundTensor {
  return vec ? { tensor: t, offset: 0, size: vec4Bytes(t) } : t;
}

/** Elements `[e0, e0 + n)` of `t` in one binding (`e0` a multiple of the offset alignment). */
function range(t: Tensor, e0: number, n: number): BoundTensor {
  return bindingRange(t, e0, n);
}

/**
 * The layouts of both kernels: `v4` (one thread per vec4, or per mask word of 8 vec4s; every
 * data buffer has room for the last, partial vector) or `s` (scalars), and `inplace` (the output
 * is the input: one data binding).
 */
const LAYOUTS = variantProduct(["v4", "s"], ["", "inplace"]);
type Layout = typeof LAYOUTS[number];
const layout = (vec: boolean, inPlace: boolean) =>
  `${vec ? "v4" : "s"}${inPlace ? "_inplace" : ""}` as Layout;
const isVec = (variant: string) => variant.split("_").includes("v4");
const notInPlace = (variant: string) => !variant.split("_").includes("inplace");

/** The forward: the mask bits of one word per thread, and the elements they keep or drop. */
const forward = defineKernel({
  name: "dropout_forward",
  doc: "one thread per mask word w (elements 32w .. 32w+31: 8 vec4s with v4, else 32 scalars); " +
    "flat index w = gid.x + gid.y * nwg.x * WG over p.words (grid1d). Bits past n stay 0. All " +
    "indices are local to one range of the tensors; p.eOff is the range's first element (the " +
    "hash takes the global index p.eOff + e). x * scale is computed in f32, rounded once to y's " +
    "type (inplace: x is y).",
  params: { n: "u32", words: "u32", key: "u32", threshold: "u32", scale: "f32", eOff: "u32" },
  bindings: {
    y: { type: "float", access: "read_write", vec4: isVec },
    mask: { type: "u32", access: "read_write" },
    x: { type: "float", access: "read", vec4: isVec, variants: LAYOUTS.filter(notInPlace) },
  },
  variants: LAYOUTS,
  workgroupSize: WG,
  body: ({ dtypes, variant }) => {
    const vec = isVec(variant);
    const Y = storageType(dtypes.y, vec);
    const xs = notInPlace(variant) ? "x" : "y";
    const loop = vec
      ? `for (var k = 0u; k < 8u; k++) {
    let v = w * 8u + k;
    if (v * 4u >= p.n) { break; }
    let e = v * 4u;
    let kv = vec4<bool>(keep(e), keep(e + 1u) && e + 1u < p.n, keep(e + 2u) && e + 2u < p.n,
                        keep(e + 3u) && e + 3u < p.n);
    y[v] = ${Y}(select(vec4<f32>(0.0), vec4<f32>(${xs}[v]) * p.scale, kv));
    bits |= (select(0u, 1u, kv.x) | select(0u, 2u, kv.y) | select(0u, 4u, kv.z) |
             select(0u, 8u, kv.w)) << (k * 4u);
  }`
      : `for (var k = 0u; k < 32u; k++) {
    let e = w * 32u + k;
    if (e >= p.n) { break; }
    let kk = keep(e);
    y[e] = ${Y}(select(0.0, f32(${xs}[e]) * p.scale, kk));
    bits |= select(0u, 1u, kk) << k;
  }`;
    const main = flatMain(
      "w",
      "p.words",
      `  var bits = 0u;
  ${loop}
  mask[w] = bits;`,
    );
    return `${PCG_WGSL}
${main}`;
  },
});

/** The backward: one element (or vec4) per thread, kept or dropped by its mask bit(s). */
const backward = defineKernel({
  name: "dropout_backward",
  doc: "one thread per vec4 (mask bits 4i .. 4i+3) with v4, else per element; flat index i = " +
    "gid.x + gid.y * nwg.x * WG over p.count (grid1d), local to one range of the tensors (ranges " +
    "start at a multiple of 32 elements: mask word i >> 3 or i >> 5 of the range). dy * scale is " +
    "computed in f32, rounded once to dx's type (inplace: dy is dx).",
  params: { count: "u32", scale: "f32" },
  bindings: {
    dx: { type: "float", access: "read_write", vec4: isVec },
    mask: { type: "u32", access: "read" },
    dy: { type: "float", access: "read", vec4: isVec, variants: LAYOUTS.filter(notInPlace) },
  },
  variants: LAYOUTS,
  workgroupSize: WG,
  body: ({ dtypes, variant }) => {
    const vec = isVec(variant);
    const DX = storageType(dtypes.dx, vec);
    const dys = notInPlace(variant) ? "dy" : "dx";
    const body = vec
      ? `let b = mask[i >> 3u] >> ((i & 7u) * 4u);
  let kv = vec4<bool>((b & 1u) != 0u, (b & 2u) != 0u, (b & 4u) != 0u, (b & 8u) != 0u);
  dx[i] = ${DX}(select(vec4<f32>(0.0), vec4<f32>(${dys}[i]) * p.scale, kv));`
      : `let kk = ((mask[i >> 5u] >> (i & 31u)) & 1u) != 0u;
  dx[i] = ${DX}(select(0.0, f32(${dys}[i]) * p.scale, kk));`;
    return flatMain("i", "p.count", `  ${body}`);
  },
});

function checkIo(
  op: string,
  out: [string, Tensor],
  inp: [string, Tensor],
  mask: Tensor,
): void {
  const dt = { out: floatDType(op, out[0], out[1]), in: floatDType(op, inp[0], inp[1]) };
  if (out[1].size !== inp[1].size) {
    throw new TypeError(
      `${op}: ${out[0]} has shape ${formatShape(out[1].shape)}, ${inp[0]} has shape ` +
        `${formatShape(inp[1].shape)}`,
    );
  }
  const words = dropoutMaskWords(inp[1].size);
  if (mask.dtype !== "u32" || mask.size !== words) {
    throw new TypeError(
      `${op}: mask has shape ${formatShape(mask.shape)} (${mask.dtype}), expected u32 [${words}] ` +
        `for ${inp[0]} of shape ${formatShape(inp[1].shape)}`,
    );
  }
  if (mask.overlaps(out[1]) || mask.overlaps(inp[1])) {
    throw new TypeError(`${op}: mask shares a buffer with ${out[0]} or ${inp[0]}`);
  }
  if (out[1].overlaps(inp[1]) && !out[1].sameStart(inp[1])) {
    throw new TypeError(`${op}: ${out[0]} overlaps ${inp[0]} without being the same tensor`);
  }
  if (out[1].sameStart(inp[1]) && dt.out !== dt.in) {
    throw new TypeError(
      `${op}: ${out[0]} (${dt.out}) shares a buffer with ${inp[0]} (${dt.in}): in place needs ` +
        "one dtype",
    );
  }
}

/**
 * Dropout in training mode: `y = x * keep / (1 - p)` with `keep` drawn per element from the
 * counter-based RNG, and the keep bits written to `mask` (u32 `[dropoutMaskWords(n)]`, bit = keep).
 * `y` and `mask` are overwritten; `y` may be the same tensor as `x`. `x` and `y` are f32 or f16
 * (each independently; the product is f32, rounded once to `y`'s type). With `p = 0`, `y = x`
 * (when `y` can hold `x`'s values) and the mask is all ones. Same seed, same mask.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} for mismatched sizes or dtypes.
 * @throws {RangeError} unless 0 <= p < 1 and the seed is an integer in [0, 2^32).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { dropoutForward, dropoutMaskWords } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.tensor(new Float32Array(100).fill(1), { shape: [4, 25] });
 * const y = gpu.empty([4, 25]);
 * const mask = gpu.empty([dropoutMaskWords(100)], { dtype: "u32" });
 * dropoutForward({ y, mask, x }, { p: 0.5, seed: 1234 });
 * console.log(await y.toArray()); // 0s and 2s
 * ```
 */
export function dropoutForward(
  io: { y: Tensor; mask: Tensor; x: Tensor },
  p: DropoutParams,
): void {
  checkP("dropoutForward", p.p);
  if (!Number.isInteger(p.seed) || p.seed < 0 || p.seed > 0xffffffff) {
    throw new RangeError(`dropoutForward: seed must be an integer in [0, 2^32), got ${p.seed}`);
  }
  const { y, mask, x } = io;
  checkIo("dropoutForward", ["y", y], ["x", x], mask);
  const n = x.size;
  if (n === 0) return;
  const inPlace = x.sameStart(y);
  const vec = y.capacity >= vec4Bytes(y) && x.capacity >= vec4Bytes(x);
  const variant = layout(vec, inPlace);
  for (const [w0, w1] of wordRanges("dropoutForward", x, mask)) {
    const e0 = w0 * 32;
    const ne = Math.min(n, w1 * 32) - e0;
    const words = w1 - w0;
    const all = words === mask.size;
    forward.dispatch({
      op: "dropoutForward",
      variant,
      params: {
        n: ne,
        words,
        key: pcg(p.seed),
        threshold: dropoutThreshold(p.p),
        scale: 1 / (1 - p.p),
        eOff: e0,
      },
      bindings: {
        y: all ? whole(y, vec) : range(y, e0, ne),
        mask: all ? mask : range(mask, w0, words),
        x: inPlace ? undefined : all ? whole(x, vec) : range(x, e0, ne),
      },
      workgroups: grid1d(words, WG),
    });
  }
}

/**
 * Ranges `[w0, w1)` of mask words whose elements fit one binding; each starts at a multiple of
 * the binding offset alignment in both the mask and the data (so every binding of a range starts
 * at its element 0).
 */
function wordRanges(op: string, data: Tensor, mask: Tensor): [number, number][] {
  const align = data.gpu.limits.minStorageBufferOffsetAlignment / 4;
  return unitRanges(op, data.gpu, mask.size, 32, Math.max(4, align));
}

/** Params of {@linkcode dropoutBackward}. */
export interface DropoutBackwardParams {
  /** The forward's drop probability, in [0, 1). */
  readonly p: number;
}

/**
 * The backward of {@linkcode dropoutForward}: `dx = dy * keep / (1 - p)` with the forward's
 * mask. `dx` is overwritten and may be the same tensor as `dy`. `dy` and `dx` are f32 or f16
 * (each independently; the product is f32, rounded once to `dx`'s type).
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} for mismatched sizes or dtypes.
 * @throws {RangeError} unless 0 <= p < 1.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { dropoutBackward, dropoutForward, dropoutMaskWords } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const x = gpu.tensor(new Float32Array(8).fill(1), { shape: [8] });
 * const mask = gpu.empty([dropoutMaskWords(8)], { dtype: "u32" });
 * dropoutForward({ y: x, mask, x }, { p: 0.25, seed: 7 });
 * const dy = gpu.tensor(new Float32Array(8).fill(3), { shape: [8] });
 * dropoutBackward({ dx: dy, dy, mask }, { p: 0.25 }); // 0 or 4 per element
 * ```
 */
export function dropoutBackward(
  io: { dx: Tensor; dy: Tensor; mask: Tensor },
  p: DropoutBackwardParams,
): void {
  checkP("dropoutBackward", p.p);
  const { dx, dy, mask } = io;
  checkIo("dropoutBackward", ["dx", dx], ["dy", dy], mask);
  const n = dy.size;
  if (n === 0) return;
  const inPlace = dx.sameStart(dy);
  const vec = dx.capacity >= vec4Bytes(dx) && dy.capacity >= vec4Bytes(dy);
  const variant = layout(vec, inPlace);
  for (const [w0, w1] of wordRanges("dropoutBackward", dy, mask)) {
    const e0 = w0 * 32;
    const ne = Math.min(n, w1 * 32) - e0;
    const all = w1 - w0 === mask.size;
    const count = vec ? Math.ceil(ne / 4) : ne;
    backward.dispatch({
      op: "dropoutBackward",
      variant,
      params: { count, scale: 1 / (1 - p.p) },
      bindings: {
        dx: all ? whole(dx, vec) : range(dx, e0, ne),
        mask: all ? mask : range(mask, w0, w1 - w0),
        dy: inPlace ? undefined : all ? whole(dy, vec) : range(dy, e0, ne),
      },
      workgroups: grid1d(count, WG),
    });
  }
}
