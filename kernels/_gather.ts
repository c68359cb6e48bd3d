/**
 * Backward passes as gathers over blocks aligned to the stride, shared by pooling
 * (`pool/window.ts`) and the strided depthwise input gradient (`depthwise/input_grad.ts`): one
 * thread per block of `sh x sw` inputs, for which the covering outputs (and the taps through
 * which they reach each input) are known at compile time, so that each input's sum is written
 * once, by one thread, without atomics.
 *
 * This module holds what those kernels share: which outputs reach a block-local input
 * ({@linkcode blockTaps}) and a whole block ({@linkcode blockCover}, with the WGSL that locates
 * them), and the entry point with the thread's block index ({@linkcode blockMain}). Private to `kernels/`.
 *
 * @module
 */

import type { Window2d } from "./_geometry.ts";
import { flatMain } from "./_kernel.ts";

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

/** The distinct output offsets `a` of the `[a, t]` pairs of every block-local coordinate. */
function blockOffsets(taps: readonly (readonly [number, number])[][]): number[] {
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
 * WGSL: the entry point of a kernel with `Params` fields `total` (blocks of the range), `hb` and
 * `wb` (blocks per plane column and row), launched by `grid1d`: defines `idx`, `plane` (local to
 * the range) and the block's coordinates `by`, `bx`, then runs `body` (statements indented by two
 * spaces).
 *
 * @returns The entry point.
 * @example
 * ```ts
 * import { blockMain } from "./_gather.ts";
 * const main = blockMain("  let iy0 = by * 2u;");
 * ```
 */
export function blockMain(body: string): string {
  return flatMain(
    "idx",
    "p.total",
    `  let blocks = p.hb * p.wb;
  let plane = idx / blocks;
  let r = idx - plane * blocks;
  let by = r / p.wb;
  let bx = r - by * p.wb;
${body}`,
  );
}

/** What a block's thread reaches (see {@linkcode blockCover}). */
export interface BlockCover {
  /** Per block-local row `u` (`0 <= u < sh`), its `[a, tap]` pairs (see {@linkcode blockTaps}). */
  readonly rows: [number, number][][];
  /** Per block-local column `v` (`0 <= v < sw`), its `[b, tap]` pairs. */
  readonly cols: [number, number][][];
  /** The distinct row offsets `a` of the outputs the block reaches, ascending. */
  readonly as: number[];
  /** The distinct column offsets `b`, ascending. */
  readonly bs: number[];
  /**
   * WGSL lines (inside {@linkcode blockMain}'s entry point, `Params` fields `oh`, `ow`): the
   * coordinates `oyA` / `oxB` of the outputs `(by + a, bx + b)` the block reaches, and whether
   * each lies inside the output plane (`okYA`, `okXB`), named with {@linkcode offsetId}.
   */
  readonly lines: string[];
}

/**
 * The outputs a block of `sh x sw` inputs aligned to the stride reaches through `win`, and the
 * WGSL that locates them.
 *
 * @returns The block's taps, offsets and lines.
 * @example
 * ```ts
 * import { blockCover } from "./_gather.ts";
 * const c = blockCover({ kh: 3, kw: 3, sh: 2, sw: 2, ph: 0, pw: 0, dh: 1, dw: 1 });
 * console.log(c.as, c.lines[0]); // [ -1, 0 ] "  let oym1 = i32(by) + -1;"
 * ```
 */
export function blockCover(win: Window2d): BlockCover {
  const { kh, kw, sh, sw, ph, pw, dh, dw } = win;
  const rows = Array.from({ length: sh }, (_, u) => blockTaps(u, sh, ph, kh, dh));
  const cols = Array.from({ length: sw }, (_, v) => blockTaps(v, sw, pw, kw, dw));
  const as = blockOffsets(rows), bs = blockOffsets(cols);
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
  return { rows, cols, as, bs, lines };
}
