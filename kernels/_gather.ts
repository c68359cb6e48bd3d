/**
 * Backward passes as gathers over blocks aligned to the stride, shared by pooling
 * (`pool/window.ts`) and the strided depthwise input gradient (`depthwise/input_grad.ts`): one
 * thread per block of `sh x sw` inputs, for which the covering outputs (and the taps through
 * which they reach each input) are known at compile time, so that each input's sum is written
 * once, by one thread, without atomics.
 *
 * This module holds what those kernels share: which outputs reach a block-local input
 * ({@linkcode blockTaps}, {@linkcode blockOffsets}), and the WGSL of the thread's block index and
 * of the covering outputs' coordinates ({@linkcode BLOCK_MAIN}, {@linkcode coveringOutputs}).
 * A leaf of the kernels' module graph. Private to `kernels/`.
 *
 * @module
 */

/**
 * The outputs reaching a block-local coordinate `u` along one axis (blocks aligned to the stride
 * `s`, padding `pad`, kernel `k`, dilation `d`): input `block * s + u` receives from output
 * `block + a` through tap `t` when `u + pad - a * s = t * d` with `0 <= t < k`. Pairs `[a, t]`,
 * ascending `a` (so that gradients are added in ascending output order, as PyTorch does).
 *
 * @returns The `[a, t]` pairs.
 * @example
 * ```ts
 * import { blockTaps } from "./_gather.ts";
 * // 3/2 window, padding 1: input 2b + 1 reaches output b through tap 2, output b + 1 through tap 0.
 * blockTaps(1, 2, 1, 3); // [[0, 2], [1, 0]]
 * ```
 */
export function blockTaps(u: number, s: number, pad: number, k: number, d = 1): [number, number][] {
  const out: [number, number][] = [];
  const span = (k - 1) * d;
  for (let a = Math.ceil((u + pad - span) / s); a <= Math.floor((u + pad) / s); a++) {
    const t = u + pad - a * s;
    if (t >= 0 && t <= span && t % d === 0) out.push([a, t / d]);
  }
  return out;
}

/**
 * The distinct output offsets `a` of the `[a, t]` pairs of every block-local coordinate
 * (see {@linkcode blockTaps}), ascending: the outputs a block's thread loads.
 *
 * @returns The offsets.
 * @example
 * ```ts
 * import { blockOffsets, blockTaps } from "./_gather.ts";
 * blockOffsets([0, 1].map((u) => blockTaps(u, 2, 0, 3))); // [-1, 0]
 * ```
 */
export function blockOffsets(taps: readonly (readonly [number, number])[][]): number[] {
  return [...new Set(taps.flat().map(([a]) => a))].sort((x, y) => x - y);
}

/**
 * A WGSL identifier suffix for an output offset (`m1` for -1).
 *
 * @returns The suffix.
 * @example
 * ```ts
 * import { offsetId } from "./_gather.ts";
 * offsetId(-1); // "m1"
 * ```
 */
export function offsetId(v: number): string {
  return v < 0 ? `m${-v}` : `${v}`;
}

/**
 * WGSL: the entry point's header and its block index, for kernels with `Params` fields `total`
 * (blocks of the range), `hb` and `wb` (blocks per plane column and row), launched by `grid1d`:
 * defines `idx`, `plane` (local to the range) and the block's coordinates `by`, `bx`.
 *
 * @example
 * ```ts
 * import { BLOCK_MAIN } from "./_gather.ts";
 * const body = `${BLOCK_MAIN}\n  let iy0 = by * 2u;\n}\n`;
 * ```
 */
export const BLOCK_MAIN = `@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= p.total) { return; }
  let blocks = p.hb * p.wb;
  let plane = idx / blocks;
  let r = idx - plane * blocks;
  let by = r / p.wb;
  let bx = r - by * p.wb;`;

/**
 * WGSL lines (inside {@linkcode BLOCK_MAIN}'s entry point, `Params` fields `oh`, `ow`): the
 * coordinates `oyA` / `oxB` of the outputs `(by + a, bx + b)` a block reaches, for each of `as`
 * and `bs`, and whether each lies inside the output plane (`okYA`, `okXB`).
 *
 * @returns The lines, indented.
 * @example
 * ```ts
 * import { coveringOutputs } from "./_gather.ts";
 * coveringOutputs([-1, 0], [0])[0]; // "  let oym1 = i32(by) + -1;"
 * ```
 */
export function coveringOutputs(as: readonly number[], bs: readonly number[]): string[] {
  const id = offsetId;
  const lines: string[] = [];
  for (const a of as) {
    lines.push(`  let oy${id(a)} = i32(by) + ${a};`);
    lines.push(`  let okY${id(a)} = oy${id(a)} >= 0 && oy${id(a)} < i32(p.oh);`);
  }
  for (const b of bs) {
    lines.push(`  let ox${id(b)} = i32(bx) + ${b};`);
    lines.push(`  let okX${id(b)} = ox${id(b)} >= 0 && ox${id(b)} < i32(p.ow);`);
  }
  return lines;
}
