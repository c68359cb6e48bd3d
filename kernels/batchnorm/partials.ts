/**
 * Per-channel partial statistics gathered by the kernel that produces a batch normalization's
 * input (the GEMM store of a convolution or linear layer: `gemm/stats.ts`), which the training
 * forward merges instead of reducing the whole input again: `partials` holds `[channel, tile, 4]`
 * f32 quadruples `(count, mean, mean correction, M2)` (the tile's mean is the sum of the two f32
 * values, which keeps the low bits of a mean far from zero; M2: the sum of squared deviations
 * from it), `tiles` per channel, merged with Chan's parallel formula ({@linkcode statsMerge}).
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import { defineKernel } from "../_kernel.ts";
import { statsFinish, statsOutputs } from "./forward.ts";
import { WG } from "./passes.ts";

/** A producer's partial statistics of its output, per channel and tile. */
export interface ChannelPartials {
  /**
   * `[c * tiles * 4]` f32: `(count, mean, mean correction, M2)` of tile t of channel ch at
   * `(ch * tiles + t) * 4`.
   */
  readonly partials: Tensor;
  /** Tiles per channel. */
  readonly tiles: number;
}

/**
 * The most tiles per channel a producer gathers: the merge walks them with one workgroup of 64
 * threads per channel (beyond 256 tiles), two passes of at most 2^14 tiles per thread, below
 * llvmpipe's 65535 loop iterations per invocation (a ResNet stem at batch 256 and 224x224 in the
 * shared-memory GEMM writes ~50,000); more: the producer does not gather, and the batch norm
 * reduces its input itself. (The partials must also fit one binding: the planners check.)
 */
export const MAX_PARTIAL_TILES = 2 ** 20;

/**
 * The training forward's statistics from a producer's partial statistics: the channel's tiles'
 * `(count, mean, correction, M2)` merged with Chan's parallel formula for many groups (the mean
 * shifted by the first non-empty tile's, then `M2 = Σ M2_t + n_t (mean_t - mean)²`: no `E[x²] - E[x]²`
 * cancellation), then finished as the reduction does (the same text, with the merged mean as the
 * shift and the sums `(0, M2)`).
 */
export const statsMerge = defineKernel({
  name: "batchnorm_stats_tiles",
  doc: "Batch norm training forward from partial statistics: the (count, mean, mean correction, " +
    "M2) of each channel's tiles (vec4s) merged with Chan's formula, in the frame shifted by the " +
    "first non-empty tile's mean K (small numbers; a tile's mean is hi + lo): first sh = sum n_t d_t / N " +
    "with d_t = mean_t - K, then M2 = sum M2_t + n_t (d_t - sh)^2; mean = K + sh. By one thread " +
    "per channel in tile order, or (variant wg, many tiles) one workgroup per channel, thread i " +
    "taking tiles i, i + WG, ... and lane 0 adding the threads' sums in order; then saveMean, " +
    "saveInvStd, the running statistics and coef[ch] = (mean, weight * invstd).",
  params: { c: "u32", tiles: "u32", count: "u32", eps: "f32", momentum: "f32" },
  bindings: {
    partials: { type: "float", access: "read", vec4: true },
    ...statsOutputs(undefined),
  },
  variants: ["", "wg"],
  workgroupSize: WG,
  body: ({ dtypes: d, load, variant }) => {
    const loop = (t0: string, step: string, body: string) =>
      `  for (var t = ${t0}; t < p.tiles; t += ${step}) {
    let q = partials[base + t];
    let dev = (q.y - K) + q.z;
    ${body}
  }`;
    const first = (t0: string, step: string) =>
      `  let base = ch * p.tiles;
  // The shift: the first non-empty tile's mean (of the first 64; producers' first is never
  // empty: a tile of a thread past C's edge, count 0, writes a mean of 0).
  var t0 = 0u;
  while (t0 + 1u < min(p.tiles, 64u) && partials[base + t0].x == 0.0) { t0++; }
  let K = partials[base + t0].y;
  var s = vec2f(0.0);
${loop(t0, step, "s += vec2f(q.x, q.x * dev);")}`;
    const second = (t0: string, step: string) =>
      `  var m2 = 0.0;
${loop(t0, step, "let e = dev - sh;\n    m2 += fma(q.x * e, e, q.w);")}`;
    // The statistics: statsFinish's shifted sums r = (0, M2) around the mean.
    const finish = statsFinish(d, (n, e) => load(n, e), "K + sh");
    if (variant === "") {
      return `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
${first("0u", "1u")}
  let sh = s.y / f32(p.count); // the exact count (an f32 sum of counts is exact only to 2^24)
${second("0u", "1u")}
  let r = vec2f(0.0, m2);
${finish}
}
`;
    }
    return `
var<workgroup> sW: array<vec2f, WG>;
var<workgroup> sM: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let ch = wid.x;
${first("li", "WG")}
  sW[li] = s;
  workgroupBarrier();
  var a = vec2f(0.0);
  for (var q = 0u; q < WG; q++) { a += sW[q]; }
  let sh = a.y / f32(p.count);
${second("li", "WG")}
  sM[li] = m2;
  workgroupBarrier();
  if (li == 0u) {
    var m2t = 0.0;
    for (var q = 0u; q < WG; q++) { m2t += sM[q]; }
    let r = vec2f(0.0, m2t);
${finish.replaceAll("\n  ", "\n    ")}
  }
}
`;
  },
});
