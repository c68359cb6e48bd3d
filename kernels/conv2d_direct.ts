/**
 * Direct 2-D convolution kernels (no im2col) for CPU adapters such as llvmpipe, used by
 * `conv2dForward` / `conv2dBackward` (`conv2d.ts`) where they are estimated to beat im2col +
 * GEMM: convolutions with few channels (LeNet's 1->6 and 6->16 5x5 ones, the first layer of
 * every model). These functions take resolved shapes and tensor ranges.
 *
 * What they are built around: llvmpipe runs invocations as SIMD lanes and loads storage memory
 * lane by lane (a loop over the lanes with a bounds check each), except for a load whose address
 * is a compile-time constant outside any loop or branch, which it does once for the SIMD group.
 * Per-lane loads, not multiply-adds, set the speed.
 *
 * - **forward** ({@linkcode directConvForward}): a workgroup first stages its block of output
 *   channels' weights in workgroup memory; each thread then computes `TX` adjacent output pixels
 *   of one output row for those `CO` channels, fully unrolled over input channels, taps, channels
 *   and pixels, so every weight read is a constant-address (once per SIMD group) load, and each
 *   input row segment under the block is loaded once (`TX*sw + (kw-1)*dw` values) and reused
 *   for every tap and channel. Input channels are taken `CI` per dispatch (later dispatches add
 *   to the output) to bound the unrolled code: each per-lane load costs llvmpipe compile time.
 *   The last dispatch can apply an activation as it stores, and y's images may have more
 *   channels than the convolution writes (output into a channel slice).
 * - **input gradient** (stride 1): the forward kernel run on `dy` with the kernel flipped and
 *   input/output channels exchanged (`flip`), padding `dilation*(k-1) - padding`.
 * - **weight (and bias) gradient** ({@linkcode directConvWeightGrad}): each thread owns the
 *   `CO x KY x kw` weights of one input channel (and `CO` bias sums) and sums their products
 *   over a split of the images, stepping over output pixels `TX` at a time and, when the rows
 *   advance by as many input rows as the dilation, sliding a window of input rows down the
 *   image (one new row per step). Lanes of a SIMD group differ only in their split of images,
 *   so they share every loop trip count. A second pass (`reduceStrided`) sums the splits into
 *   `dw` and `db` (`+=` when accumulating).
 *
 * Storage: x, w, y, dy and the bias are f32 or f16 each (WGSL element types per binding); loads
 * convert to f32, every sum (workgroup memory included) is f32, and an f16 output is rounded
 * once as it is stored.
 *
 * No kernel returns early (that would turn constant-address loads into per-lane ones), padding
 * is handled by clamped, masked loads, and every invocation's loop trip count stays within
 * llvmpipe's silent cap of 65535 iterations.
 *
 * @module
 */

import { type Gpu, grid1d, type Tensor } from "../gpu/mod.ts";
import { dtypeTag, type FloatDType, floatDTypes, loadF32, storeAs, wgslEnable } from "./_dtype.ts";
import type { Window2d } from "./_geometry.ts";
import { ParamsWriter } from "./_params.ts";
import type { ActivationKind } from "./_activation_wgsl.ts";
import { activationWgsl } from "./_activation_wgsl.ts";
import { bindingRange, LOOP_CAP, maxBindingElements, type TensorRange } from "./_binding.ts";
import { reduceStrided } from "./gemm/index.ts";

/**
 * The convolution a direct kernel computes: the window and every size resolved (see
 * `conv2dGeometry`). The padding may be negative (the flipped input-gradient convolution).
 */
export interface DirectConvShape extends Window2d {
  /** Images. */
  readonly n: number;
  /** Input channels. */
  readonly cIn: number;
  /** Input height. */
  readonly h: number;
  /** Input width. */
  readonly w: number;
  /** Output channels. */
  readonly cOut: number;
  /** Output height. */
  readonly oh: number;
  /** Output width. */
  readonly ow: number;
}

const WG = 64;
/** Widest unrolled tap row. */
const MAX_KW = 16;

function grid(threads: number, z: number): [number, number, number] {
  const [x, y] = grid1d(threads, WG);
  return [x, y, z];
}

/** Balanced blocks of at most `max`: the block size that splits `n` into the fewest blocks. */
function balanced(n: number, max: number): number {
  const blocks = Math.ceil(n / max);
  return Math.ceil(n / blocks);
}

// ------------------------------------------------------------------------- forward ----

const FWD_PARAMS = `struct Params {
  nb: u32, cIn: u32, cOut: u32, h: u32,
  w: u32, oh: u32, ow: u32, sh: u32,
  dh: u32, ph: i32, pw: i32, nbx: u32,
  wsO: u32, wsI: u32, ci0: u32, xOff: u32,
  yOff: u32, acc: u32, bias: u32, yC: u32,
}`;

interface FwdConfig {
  /** Input channels per dispatch. */
  cin: number;
  co: number;
  kh: number;
  kw: number;
  sw: number;
  dw: number;
  tx: number;
  flip: boolean;
  activation: ActivationKind | undefined;
  /** Storage types of the bindings (`x`, `y` are dy, dx when `flip`). */
  dt: FwdDTypes;
  /**
   * Earlier input-channel chunks' f32 sums come from binding `prev` (`[n, cOut, oh, ow]`), not
   * from `y`: the last dispatch into an f16 `y`, whose partial sums must not be rounded to f16.
   */
  prev: boolean;
}

/** Storage types of the direct forward kernel's bindings. */
interface FwdDTypes {
  x: FloatDType;
  w: FloatDType;
  y: FloatDType;
  b: FloatDType;
}

const kernels = new Map<string, { name: string; code: string }>();

function memo(name: string, build: () => string): { name: string; code: string } {
  let spec = kernels.get(name);
  if (!spec) kernels.set(name, spec = { name, code: build() });
  return spec;
}

/** Input offsets (relative to the block's first input column) each (pixel, tap) reads. */
function offsets(c: { tx: number; kw: number; sw: number; dw: number }): number[] {
  const set = new Set<number>();
  for (let px = 0; px < c.tx; px++) {
    for (let kx = 0; kx < c.kw; kx++) set.add(px * c.sw + kx * c.dw);
  }
  return [...set].sort((a, b) => a - b);
}

function forwardKernel(c: FwdConfig): { name: string; code: string } {
  const name =
    `conv2d_direct_fwd_c${c.cin}_co${c.co}_k${c.kh}x${c.kw}_s${c.sw}_d${c.dw}_tx${c.tx}` +
    `${c.flip ? "_flip" : ""}${c.activation ? `_${c.activation}` : ""}${c.prev ? "_prev" : ""}` +
    dtypeTag({ ...c.dt });
  return memo(name, () => {
    const dt = c.dt;
    const offs = offsets(c);
    const kk = c.kh * c.kw;
    const nw = c.co * c.cin * kk; // the block's weights, staged as wS[o][i][tap]
    const L: string[] = [];
    for (let j = 0; j < c.co; j++) {
      for (let px = 0; px < c.tx; px++) L.push(`  var a${j}_${px} = 0.0;`);
    }
    // Fully unrolled over (ci, ky, kx, o, pixel), weights read from workgroup memory at
    // constant indices outside any loop or branch: llvmpipe then loads each once for the SIMD
    // group (in a loop or under a branch it would load it lane by lane). Input loads are per
    // lane.
    for (let ci = 0; ci < c.cin; ci++) {
      L.push(`  let xc${ci} = p.xOff + (img * p.cIn + p.ci0 + ${ci}u) * p.h * p.w;`);
      for (let ky = 0; ky < c.kh; ky++) {
        const r = `${ci}_${ky}`;
        L.push(`  let iy${r} = i32(oy * p.sh + ${ky}u * p.dh) - p.ph;`);
        L.push(`  let ok${r} = iy${r} >= 0 && iy${r} <= hMax;`);
        L.push(`  let row${r} = xc${ci} + u32(clamp(iy${r}, 0, hMax)) * p.w;`);
        for (const d of offs) {
          L.push(
            `  let v${r}_${d} = select(0.0, ${
              loadF32(dt.x, `x[row${r} + u32(clamp(ix0 + ${d}, 0, wMax))]`)
            }, ` +
              `ok${r} && ix0 + ${d} >= 0 && ix0 + ${d} <= wMax);`,
          );
        }
        const tapRow = c.flip ? c.kh - 1 - ky : ky;
        for (let j = 0; j < c.co; j++) {
          for (let kx = 0; kx < c.kw; kx++) {
            const tap = tapRow * c.kw + (c.flip ? c.kw - 1 - kx : kx);
            L.push(`  let w${r}_${j}_${kx} = wS[${(j * c.cin + ci) * kk + tap}u];`);
            for (let px = 0; px < c.tx; px++) {
              L.push(
                `  a${j}_${px} = fma(w${r}_${j}_${kx}, v${r}_${
                  px * c.sw + kx * c.dw
                }, a${j}_${px});`,
              );
            }
          }
        }
      }
    }
    L.push(`  if (live) {`);
    for (let j = 0; j < c.co; j++) {
      L.push(`  if (co0 + ${j}u < p.cOut) {`);
      L.push(`    var b${j} = 0.0;`);
      L.push(`    if (p.bias != 0u) { b${j} = ${loadF32(dt.b, `bias[co0 + ${j}u]`)}; }`);
      L.push(`    let y${j} = p.yOff + ((img * p.yC + co0 + ${j}u) * p.oh + oy) * p.ow + ox0;`);
      if (c.prev) {
        L.push(`    let q${j} = ((img * p.cOut + co0 + ${j}u) * p.oh + oy) * p.ow + ox0;`);
      }
      for (let px = 0; px < c.tx; px++) {
        L.push(`    if (ox0 + ${px}u < p.ow) {`);
        L.push(`      var v = a${j}_${px} + b${j};`);
        const earlier = c.prev ? `prev[q${j} + ${px}u]` : loadF32(dt.y, `y[y${j} + ${px}u]`);
        L.push(`      if (p.acc != 0u) { v += ${earlier}; }`);
        L.push(`      y[y${j} + ${px}u] = ${storeAs(dt.y, c.activation ? "act(v)" : "v")};`);
        L.push(`    }`);
      }
      L.push(`  }`);
    }
    L.push(`  }`);
    return `${wgslEnable(Object.values(dt))}${FWD_PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${dt.x}>;
@group(0) @binding(2) var<storage, read> wgt: array<${dt.w}>;
@group(0) @binding(3) var<storage, read_write> y: array<${dt.y}>;
@group(0) @binding(4) var<storage, read> bias: array<${dt.b}>;${
      c.prev ? "\n@group(0) @binding(5) var<storage, read> prev: array<f32>;" : ""
    }
var<workgroup> wS: array<f32, ${nw}>;
${activationWgsl(c.activation, "f32")}
// Workgroup (X, Y, Z), thread li: t = (X + Y * nwg.x) * ${WG} + li computes output pixels
// ox0 = (t % nbx) * ${c.tx} .. +${c.tx} of row oy = (t / nbx) % oh of image t / (nbx * oh), for
// output channels co0 = Z * ${c.co} .. +${c.co}, over input channels ci0 .. ci0 + ${c.cin} and
// ${c.kh}x${c.kw} taps, writing y (+ bias[o] when p.bias) or adding to it (p.acc${
      c.prev ? ": adding the f32 sums prev[((img * cOut + o) * oh + oy) * ow + ox]" : ""
    })${c.activation ? `, through ${c.activation}` : ""}.
// Output (img, o, oy, ox) is y[yOff + ((img * yC + o) * oh + oy) * ow + ox] (yC channels per
// image). Weight (o, i, ky, kx) is wgt[o * wsO + i * wsI + tap], tap = ky * ${c.kw} + kx${
      c.flip ? " taken from the kernel flipped in both directions" : ""
    }; the workgroup first stages
// its block's weights in wS[o - co0][i - ci0][tap]. No early return: threads past the end
// compute a clamped pixel and store nothing. Every load converts to f32 (wS and all sums are
// f32); each output is rounded once to y's storage type.
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let co0 = wid.z * ${c.co}u;
  for (var e = li; e < ${nw}u; e += ${WG}u) {
    let tap = e % ${kk}u;
    let i = p.ci0 + (e / ${kk}u) % ${c.cin}u;
    let o = min(co0 + e / ${kk * c.cin}u, p.cOut - 1u);
    wS[e] = ${loadF32(dt.w, "wgt[o * p.wsO + i * p.wsI + tap]")};
  }
  workgroupBarrier();
  let total = p.nb * p.oh * p.nbx;
  let tRaw = (wid.x + wid.y * nwg.x) * ${WG}u + li;
  let live = tRaw < total;
  let t = min(tRaw, total - 1u);
  let ox0 = (t % p.nbx) * ${c.tx}u;
  let r = t / p.nbx;
  let oy = r % p.oh;
  let img = r / p.oh;
  let ix0 = i32(ox0 * ${c.sw}u) - p.pw;
  let wMax = i32(p.w) - 1;
  let hMax = i32(p.h) - 1;
${L.join("\n")}
}`;
  });
}

/** Blocking of the direct forward kernel. */
export interface DirectConvTile {
  /** Output pixels per thread along a row. */
  readonly tx: number;
  /** Output channels per thread (one workgroup's channel block). */
  readonly co: number;
  /** Input channels per dispatch (later dispatches add to the output). */
  readonly ci: number;
}

/**
 * Most multiply-adds one unrolled forward thread may hold: bounds the code llvmpipe compiles.
 */
const MAX_UNROLLED_FMAS = 4800;
/**
 * Most per-lane input loads one unrolled forward thread may hold: each becomes a loop over the
 * SIMD lanes in llvmpipe's code, which dominates its compile time (superlinear: about 0.2 s for
 * 100 loads, 1.6 s for 400).
 */
const MAX_UNROLLED_LOADS = 256;

/**
 * Most weights one workgroup stages (`CO x CI x kh x kw` f32s): 16 KiB, WebGPU's default
 * `maxComputeWorkgroupStorageSize`.
 */
const MAX_STAGED_WEIGHTS = 4096;

/** A forward direct convolution that fits the kernel, with its estimated cost. */
export interface DirectConvPlan {
  /** The blocking. */
  readonly tile: DirectConvTile;
  /** Estimated memory operations (per-lane loads and stores) per output element. */
  readonly cost: number;
}

function divisorsLike(n: number, max: number): number[] {
  const out: number[] = [];
  for (let v = 1; v <= Math.min(n, max); v++) if (balanced(n, v) === v) out.push(v);
  return out;
}

/**
 * Plans a direct forward convolution: the blocking (input channels per dispatch, output
 * channels and pixels per thread) with the fewest estimated memory operations per output
 * within the unrolling budgets, or `undefined` when none fits (kernel rows wider than 16 taps,
 * or even one input channel and one output per thread over budget).
 *
 * @example
 * ```ts
 * import { planDirectConv } from "./conv2d_direct.ts";
 * planDirectConv({ n: 256, cIn: 6, h: 14, w: 14, cOut: 16, oh: 10, ow: 10, kh: 5, kw: 5,
 *   sh: 1, sw: 1, ph: 0, pw: 0, dh: 1, dw: 1 }); // { tile: { tx: 2, co: 16, ci: 6 }, cost: ... }
 * ```
 */
export function planDirectConv(s: DirectConvShape): DirectConvPlan | undefined {
  // The search depends on these only; layers call it every step: memoize.
  const key = `${s.cIn},${s.cOut},${s.ow},${s.kh},${s.kw},${s.sw},${s.dw}`;
  if (plans.has(key)) return plans.get(key);
  const plan = searchPlan(s);
  plans.set(key, plan);
  return plan;
}

const plans = new Map<string, DirectConvPlan | undefined>();

function searchPlan(s: DirectConvShape): DirectConvPlan | undefined {
  if (s.kw > MAX_KW) return undefined;
  let best: DirectConvPlan | undefined;
  // Input channels per dispatch divide cIn: every dispatch then runs the same kernel.
  const chunkSizes = [];
  for (let v = 1; v <= Math.min(s.cIn, 64); v++) if (s.cIn % v === 0) chunkSizes.push(v);
  for (const ci of chunkSizes) {
    const chunks = Math.ceil(s.cIn / ci);
    const taps = ci * s.kh * s.kw;
    const budget = Math.floor(MAX_UNROLLED_FMAS / taps);
    const staged = Math.floor(MAX_STAGED_WEIGHTS / taps);
    for (const co of divisorsLike(s.cOut, Math.min(32, budget, staged))) {
      for (const tx of divisorsLike(s.ow, Math.min(32, Math.floor(budget / co)))) {
        const loads = ci * s.kh * offsets({ tx, kw: s.kw, sw: s.sw, dw: s.dw }).length;
        if (loads > MAX_UNROLLED_LOADS) continue;
        // Per useful output: input loads, stores (and reloads of y after the first chunk), a
        // fixed cost per thread and its share of staging the weights; plus a little per
        // multiply-add held (register pressure).
        const blocks = Math.ceil(s.ow / tx) * Math.ceil(s.cOut / co);
        const perThread = loads + tx * co * (chunks > 1 ? 2 : 1) + 20 + (taps * co) / WG;
        const cost = (chunks * blocks * perThread) / (s.ow * s.cOut) + 0.0003 * taps * co * tx;
        if (!best || cost < best.cost) best = { tile: { tx, co, ci }, cost };
      }
    }
  }
  return best;
}

/**
 * Records a direct convolution `y = conv(x, w) (+ b)` over images `[0, s.n)` of the given ranges
 * (`y` overwritten). `w` and `b` are whole tensors. Weight `(o, i, ky, kx)` is `w[o, i, ky, kx]`
 * (OIHW), or with `flip` `w[i, o, kh-1-ky, kw-1-kx]`: the input gradient of a stride-1
 * convolution is the direct convolution of `dy` with `flip` (channels exchanged, padding
 * `dilation*(k-1) - padding`). Input channels are taken `tile.ci` per dispatch, later dispatches
 * adding to `y`.
 *
 * `x`, `w`, `b` and `y` are f32 or f16, each on its own; sums are f32 and `y` is rounded once.
 * An f16 `y` over several input-channel dispatches: the earlier ones sum into an f32 scratch
 * `[n, cOut, oh, ow]` (one binding), which the last one adds as it stores.
 *
 * Options: `activation` applies `f` to every output in the last dispatch's store
 * (`y = f(conv(x, w) + b)`, bit for bit `activationForward`'s; that dispatch runs a kernel
 * specialized for it). `yChannels` (default `s.cOut`) is the channel count of y's images:
 * output `(img, o, oy, ox)` is element `((img * yChannels + o) * oh + oy) * ow + ox` of the `y`
 * range, so the convolution can fill a channel slice of a wider tensor (the range starting at
 * the slice's first channel).
 *
 * @throws {RangeError} when no blocking fits the kernel's budgets (see
 * {@linkcode planDirectConv}), `yChannels < s.cOut`, or the f32 scratch exceeds one binding.
 * @throws {TypeError} when a tensor is not f32/f16 (or f16 without `shader-f16`).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "./_binding.ts";
 * import { directConvForward } from "./conv2d_direct.ts";
 * const gpu = await getGpu();
 * const x = gpu.zeros([2, 1, 8, 8]), w = gpu.zeros([3, 1, 3, 3]), y = gpu.empty([2, 3, 8, 8]);
 * const s = { n: 2, cIn: 1, h: 8, w: 8, cOut: 3, oh: 8, ow: 8, kh: 3, kw: 3, sh: 1, sw: 1,
 *   ph: 1, pw: 1, dh: 1, dw: 1 };
 * directConvForward(gpu, s, { y: bindingRange(y, 0, y.size), x: bindingRange(x, 0, x.size), w });
 * ```
 */
export function directConvForward(
  gpu: Gpu,
  s: DirectConvShape,
  io: { y: TensorRange; x: TensorRange; w: Tensor; b?: Tensor },
  o: {
    flip?: boolean;
    tile?: DirectConvTile;
    activation?: ActivationKind | undefined;
    yChannels?: number;
  } = {},
): void {
  const yC = o.yChannels ?? s.cOut;
  if (!Number.isInteger(yC) || yC < s.cOut) {
    throw new RangeError(`conv2d: yChannels ${o.yChannels} must be an integer >= cOut ${s.cOut}`);
  }
  const tile = o.tile ?? planDirectConv(s)?.tile;
  if (!tile) {
    throw new RangeError(
      `conv2d: a direct convolution over ${s.cIn}x${s.kh}x${s.kw} taps exceeds the unrolling budget`,
    );
  }
  const nbx = Math.ceil(s.ow / tile.tx);
  const kk = s.kh * s.kw;
  // Weight strides per output and input channel of this convolution.
  const wsO = o.flip ? kk : s.cIn * kk;
  const wsI = o.flip ? s.cOut * kk : kk;
  if (s.cIn % tile.ci !== 0) {
    throw new RangeError(`conv2d: input channels per dispatch ${tile.ci} must divide ${s.cIn}`);
  }
  if (tile.co * tile.ci * s.kh * s.kw > MAX_STAGED_WEIGHTS) {
    throw new RangeError(
      `conv2d: a direct blocking of ${tile.co}x${tile.ci}x${s.kh}x${s.kw} weights exceeds the ` +
        `${MAX_STAGED_WEIGHTS} one workgroup stages`,
    );
  }
  const dt = floatDTypes("conv2d", { x: io.x.tensor, w: io.w, y: io.y.tensor, b: io.b });
  // An f16 y split over several input-channel chunks: the earlier chunks sum into an f32
  // scratch [n, cOut, oh, ow], which the last one adds as it stores to y (rounded once).
  const scratch = dt.y === "f16" && tile.ci < s.cIn
    ? gpu.empty([s.n * s.cOut * s.oh * s.ow])
    : undefined;
  if (scratch && scratch.size > maxBindingElements(gpu)) {
    scratch.dispose();
    throw new RangeError(
      `conv2d: the f32 partial sums of ${s.n} images (${s.n * s.cOut * s.oh * s.ow} elements) ` +
        "exceed one binding: split the images",
    );
  }
  // Without a bias, any buffer fills the (unread) bias binding.
  const bindings = [io.x.binding, io.w, io.y.binding, io.b ?? io.w];
  const workgroups = grid(s.n * s.oh * nbx, Math.ceil(s.cOut / tile.co));
  const config: FwdConfig = {
    cin: tile.ci,
    co: tile.co,
    kh: s.kh,
    kw: s.kw,
    sw: s.sw,
    dw: s.dw,
    tx: tile.tx,
    flip: o.flip ?? false,
    activation: undefined,
    dt,
    prev: false,
  };
  // The activation goes into the last dispatch's kernel only, a specialization of its own: the
  // earlier dispatches run the plain kernel (no per-store flag to test in every dispatch).
  const plain = forwardKernel(scratch ? { ...config, dt: { ...dt, y: "f32" } } : config);
  const last = o.activation || scratch
    ? forwardKernel({ ...config, activation: o.activation, prev: !!scratch })
    : plain;
  for (let ci0 = 0; ci0 < s.cIn; ci0 += tile.ci) {
    const isLast = ci0 + tile.ci >= s.cIn;
    // With the scratch, the earlier chunks write it as a plain [n, cOut, oh, ow] y.
    const toScratch = scratch !== undefined && !isLast;
    const params = new ParamsWriter()
      .u32(s.n).u32(s.cIn).u32(s.cOut).u32(s.h)
      .u32(s.w).u32(s.oh).u32(s.ow).u32(s.sh)
      .u32(s.dh).i32(s.ph).i32(s.pw).u32(nbx)
      .u32(wsO).u32(wsI).u32(ci0).u32(io.x.base)
      .u32(toScratch ? 0 : io.y.base).u32(ci0 > 0 ? 1 : 0).u32(ci0 === 0 && io.b ? 1 : 0)
      .u32(toScratch ? s.cOut : yC)
      .bytes();
    let b = bindings;
    if (toScratch) b = [io.x.binding, io.w, scratch, io.b ?? io.w];
    else if (scratch) b = [...bindings, scratch];
    gpu.dispatch(isLast ? last : plain, { params, bindings: b, workgroups });
  }
  scratch?.dispose();
}

// ----------------------------------------------------------------- weight gradient ----

const DW_PARAMS = `struct Params {
  nb: u32, cIn: u32, h: u32, w: u32,
  cOut: u32, oh: u32, ow: u32, kh: u32,
  sh: u32, dh: u32, ph: i32, pw: i32,
  splits: u32, ips: u32, nbx: u32, coBlocks: u32,
  kyBlocks: u32, xOff: u32, dyOff: u32, dbOff: u32,
}`;

/** Register blocking of the weight-gradient kernel. */
export interface DirectWeightGradTile {
  /** Output pixels per step along a row. */
  readonly tx: number;
  /** Output channels per thread. */
  readonly co: number;
  /** Kernel rows per thread. */
  readonly ky: number;
}

interface DwConfig extends DirectWeightGradTile {
  kw: number;
  sw: number;
  dw: number;
  db: boolean;
  /** Slide a window of input rows down the output rows (needs sh == dh). */
  slide: boolean;
  /** Storage types of x and dy (the partial sums are f32). */
  dt: { x: FloatDType; dy: FloatDType };
}

function weightGradKernel(c: DwConfig): { name: string; code: string } {
  const name = `conv2d_direct_dw_k${c.kw}_s${c.sw}_d${c.dw}_tx${c.tx}_co${c.co}_ky${c.ky}` +
    `${c.db ? "_db" : ""}${c.slide ? "_slide" : ""}${dtypeTag(c.dt)}`;
  return memo(name, () => {
    const offs = offsets(c);
    const init: string[] = [];
    for (let j = 0; j < c.co; j++) {
      for (let q = 0; q < c.ky; q++) {
        for (let kx = 0; kx < c.kw; kx++) init.push(`  var a${j}_${q}_${kx} = 0.0;`);
      }
      if (c.db) init.push(`  var s${j} = 0.0;`);
    }
    // Loads of kernel row q's input values at output row `oy` into v{q}_{d}. Rows past the
    // kernel (a partial last block of rows) load real input too: their sums are never stored,
    // and sliding needs them as they are.
    const loadRow = (q: number, oy: string, decl: string, ind: string): string[] => {
      const out = [
        `${ind}let iy${q} = i32(${oy} * p.sh + (ky0 + ${q}u) * p.dh) - p.ph;`,
        `${ind}let rv${q} = iy${q} >= 0 && iy${q} <= hMax;`,
        `${ind}let row${q} = xImg + u32(clamp(iy${q}, 0, hMax)) * p.w;`,
      ];
      for (const d of offs) {
        out.push(
          `${ind}${decl}v${q}_${d} = select(0.0, ${
            loadF32(c.dt.x, `x[row${q} + u32(clamp(ix0 + ${d}, 0, wMax))]`)
          }, rv${q} && ix0 + ${d} >= 0 && ix0 + ${d} <= wMax);`,
        );
      }
      return out;
    };
    // dy loads and the multiply-adds of one step (output row oy, pixels ox0 .. +tx).
    const step = (ind: string): string[] => {
      const out: string[] = [];
      for (let j = 0; j < c.co; j++) {
        out.push(
          `${ind}let dr${j} = dyImg + (min(co0 + ${j}u, p.cOut - 1u) * p.oh + oy) * p.ow;`,
        );
        for (let px = 0; px < c.tx; px++) {
          out.push(
            `${ind}let d${j}_${px} = select(0.0, ${
              loadF32(c.dt.dy, `dy[dr${j} + q${px}]`)
            }, pv${px});`,
          );
        }
        if (c.db) {
          const sum = Array.from({ length: c.tx }, (_, px) => `d${j}_${px}`).join(" + ");
          out.push(`${ind}s${j} += ${sum};`);
        }
      }
      for (let q = 0; q < c.ky; q++) {
        for (let j = 0; j < c.co; j++) {
          for (let kx = 0; kx < c.kw; kx++) {
            let e = `a${j}_${q}_${kx}`;
            for (let px = 0; px < c.tx; px++) {
              e = `fma(d${j}_${px}, v${q}_${px * c.sw + kx * c.dw}, ${e})`;
            }
            out.push(`${ind}a${j}_${q}_${kx} = ${e};`);
          }
        }
      }
      return out;
    };
    const pixels = (ind: string): string[] => {
      const out = [`${ind}let ox0 = bx * ${c.tx}u;`, `${ind}let ix0 = i32(ox0 * ${c.sw}u) - p.pw;`];
      for (let px = 0; px < c.tx; px++) {
        out.push(`${ind}let pv${px} = ox0 + ${px}u < p.ow;`);
        out.push(`${ind}let q${px} = min(ox0 + ${px}u, p.ow - 1u);`);
      }
      return out;
    };
    const loops: string[] = [];
    if (c.slide) {
      // Output rows advance by sh = dh input rows: kernel row q at oy + 1 reads what row q + 1
      // read at oy, so each step loads one new input row and shifts the others.
      loops.push(`    for (var bx = 0u; bx < p.nbx; bx++) {`);
      loops.push(...pixels("      "));
      for (let q = 0; q < c.ky - 1; q++) loops.push(...loadRow(q, "0u", "var ", "      "));
      for (const d of offs) loops.push(`      var v${c.ky - 1}_${d} = 0.0;`);
      loops.push(`      for (var oy = 0u; oy < p.oh; oy++) {`);
      loops.push(...loadRow(c.ky - 1, "oy", "", "        "));
      loops.push(...step("        "));
      for (let q = 0; q < c.ky - 1; q++) {
        for (const d of offs) loops.push(`        v${q}_${d} = v${q + 1}_${d};`);
      }
      loops.push(`      }`);
      loops.push(`    }`);
    } else {
      loops.push(`    for (var oy = 0u; oy < p.oh; oy++) {`);
      loops.push(`      for (var bx = 0u; bx < p.nbx; bx++) {`);
      loops.push(...pixels("        "));
      for (let q = 0; q < c.ky; q++) loops.push(...loadRow(q, "oy", "let ", "        "));
      loops.push(...step("        "));
      loops.push(`      }`);
      loops.push(`    }`);
    }
    const store: string[] = [];
    store.push(`  if (live) {`);
    for (let j = 0; j < c.co; j++) {
      store.push(`  if (co0 + ${j}u < p.cOut) {`);
      for (let q = 0; q < c.ky; q++) {
        store.push(`    if (ky0 + ${q}u < p.kh) {`);
        store.push(
          `      let o = ((s * p.cOut + co0 + ${j}u) * p.cIn + ci) * kk + (ky0 + ${q}u) * ${c.kw}u;`,
        );
        for (let kx = 0; kx < c.kw; kx++) store.push(`      part[o + ${kx}u] = a${j}_${q}_${kx};`);
        store.push(`    }`);
      }
      if (c.db) {
        store.push(
          `    if (ci == 0u && ky0 == 0u) { part[p.dbOff + s * p.cOut + co0 + ${j}u] = s${j}; }`,
        );
      }
      store.push(`  }`);
    }
    store.push(`  }`);
    return `${wgslEnable(Object.values(c.dt))}${DW_PARAMS}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${c.dt.x}>;
@group(0) @binding(2) var<storage, read> dy: array<${c.dt.dy}>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;
// Thread t = s + splits * (ci + cIn * (kyBlock + kyBlocks * coBlock)): split s (images s*ips ..
// +ips), input channel ci, kernel rows ky0 = kyBlock*${c.ky} .. +${c.ky}, output channels
// co0 = coBlock*${c.co} .. +${c.co}. It sums dy[img, o, oy, ox] * x[img, ci, iy, ix] over its
// images and all output pixels (in steps of ${c.tx} along a row) into the ${c.co}x${c.ky}x${c.kw}
// weights (o, ci, ky, kx), written to part[s, o, ci, ky, kx]${
      c.db
        ? "; threads with ci = 0 and ky0 = 0 also write the sums of dy to part[dbOff + s*cOut + o]"
        : ""
    }.
// Lanes of a SIMD group differ in s only: they share every loop trip count. Loads convert to
// f32; every sum and part are f32.
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let total = p.splits * p.cIn * p.kyBlocks * p.coBlocks;
  let tRaw = gid.x + gid.y * nwg.x * ${WG}u;
  let live = tRaw < total;
  let t = min(tRaw, total - 1u);
  let s = t % p.splits;
  let ci = (t / p.splits) % p.cIn;
  let kb = (t / (p.splits * p.cIn)) % p.kyBlocks;
  let ky0 = kb * ${c.ky}u;
  let co0 = (t / (p.splits * p.cIn * p.kyBlocks)) * ${c.co}u;
  let kk = p.kh * ${c.kw}u;
  let wMax = i32(p.w) - 1;
  let hMax = i32(p.h) - 1;
${init.join("\n")}
  let imgEnd = min(s * p.ips + p.ips, p.nb);
  for (var img = s * p.ips; img < imgEnd; img++) {
    let xImg = p.xOff + (img * p.cIn + ci) * p.h * p.w;
    let dyImg = p.dyOff + img * p.cOut * p.oh * p.ow;
${loops.join("\n")}
  }
${store.join("\n")}
}`;
  });
}

/** Most accumulators per thread of the weight-gradient kernel. */
const DW_MAX_ACC = 200;

/**
 * The default blocking of the weight-gradient kernel: 4 to 6 output pixels per step (the least
 * waste at the row's end), and the most output channels and kernel rows per thread whose
 * accumulators fit the budget (each loaded value then feeds more multiply-adds).
 *
 * @example
 * ```ts
 * import { directWeightGradTile } from "./conv2d_direct.ts";
 * directWeightGradTile({ cOut: 16, kh: 5, kw: 5, ow: 10 }); // { tx: 5, co: 8, ky: 5 }
 * ```
 */
export function directWeightGradTile(
  s: { readonly cOut: number; readonly kh: number; readonly kw: number; readonly ow: number },
): DirectWeightGradTile {
  let tx = Math.min(4, s.ow);
  for (const t of [5, 6]) {
    if (t <= s.ow && Math.ceil(s.ow / t) * t < Math.ceil(s.ow / tx) * tx) tx = t;
  }
  const perCo = s.kw * s.kh;
  if (perCo * Math.min(s.cOut, 4) <= DW_MAX_ACC) {
    return { tx, co: balanced(s.cOut, Math.floor(DW_MAX_ACC / perCo)), ky: s.kh };
  }
  const co = balanced(s.cOut, Math.max(1, Math.min(8, Math.floor(DW_MAX_ACC / s.kw))));
  return { tx, co, ky: balanced(s.kh, Math.max(1, Math.floor(DW_MAX_ACC / (co * s.kw)))) };
}

/** A weight-gradient direct convolution that fits the kernel, with its estimated cost. */
export interface DirectWeightGradPlan {
  /** The blocking. */
  readonly tile: DirectWeightGradTile;
  /** Estimated per-lane loads per multiply-add. */
  readonly cost: number;
}

/**
 * Plans the direct weight gradient: `undefined` when the kernel cannot run it (a kernel row wider
 * than 16 taps, or one image's output rows exceeding the loop budget), else the blocking and its
 * estimated loads per multiply-add (to compare with im2col + GEMM).
 *
 * @example
 * ```ts
 * import { planDirectWeightGrad } from "./conv2d_direct.ts";
 * planDirectWeightGrad({ n: 256, cIn: 1, h: 28, w: 28, cOut: 6, oh: 28, ow: 28, kh: 5, kw: 5,
 *   sh: 1, sw: 1, ph: 2, pw: 2, dh: 1, dw: 1 }); // { tile: { tx: 4, co: 6, ky: 5 }, cost: ... }
 * ```
 */
export function planDirectWeightGrad(s: DirectConvShape): DirectWeightGradPlan | undefined {
  if (s.kw > MAX_KW) return undefined;
  const tile = directWeightGradTile(s);
  const nbx = Math.ceil(s.ow / tile.tx);
  const slide = s.sh === s.dh && tile.ky > 1;
  if ((slide ? nbx * (s.oh + 1) : s.oh * (nbx + 1)) + 1 > LOOP_CAP) return undefined;
  // Per step: dy loads, and one new input row (sliding) or every kernel row's.
  const loads = tile.co * tile.tx +
    (slide ? 1 : tile.ky) * offsets({ tx: tile.tx, kw: s.kw, sw: s.sw, dw: s.dw }).length;
  return { tile, cost: loads / (tile.co * tile.ky * s.kw * tile.tx) };
}

/** Threads the weight-gradient kernel aims for (enough SIMD groups for every core). */
const DW_TARGET_THREADS = 2048;

/**
 * Records the weight (and bias) gradient of a direct convolution: `dw (+)= sum over images and
 * output pixels of dy ⊗ x`, `db (+)= sum of dy` (`[cOut, cIn, kh, kw]` and `[cOut]`: overwritten,
 * or accumulated when `accumulate`). Partial sums over splits of the images go to a scratch
 * buffer, then `reduceStrided` adds them up.
 *
 * `x`, `dy`, `dw` and `db` are f32 or f16, each on its own (training: f16 `x` and `dy`, f32
 * `dw` and `db`); the partial sums are f32.
 *
 * @throws {TypeError} when a tensor is not f32/f16 (or f16 without `shader-f16`).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "./_binding.ts";
 * import { directConvWeightGrad } from "./conv2d_direct.ts";
 * const gpu = await getGpu();
 * const x = gpu.zeros([2, 1, 8, 8]), dy = gpu.zeros([2, 3, 8, 8]), dw = gpu.zeros([3, 1, 3, 3]);
 * const s = { n: 2, cIn: 1, h: 8, w: 8, cOut: 3, oh: 8, ow: 8, kh: 3, kw: 3, sh: 1, sw: 1,
 *   ph: 1, pw: 1, dh: 1, dw: 1 };
 * directConvWeightGrad(gpu, s, {
 *   dw, x: bindingRange(x, 0, x.size), dy: bindingRange(dy, 0, dy.size),
 * }, { accumulate: true });
 * ```
 */
export function directConvWeightGrad(
  gpu: Gpu,
  s: DirectConvShape,
  io: { dw?: Tensor; db?: Tensor; x: TensorRange; dy: TensorRange },
  o: { accumulate: boolean; tile?: DirectWeightGradTile; splits?: number },
): void {
  if (!io.dw && !io.db) return;
  const tile = o.tile ?? directWeightGradTile(s);
  const nbx = Math.ceil(s.ow / tile.tx);
  const coBlocks = Math.ceil(s.cOut / tile.co);
  const kyBlocks = Math.ceil(s.kh / tile.ky);
  const slide = s.sh === s.dh && tile.ky > 1;
  // Loop iterations per image.
  const perImage = slide ? nbx * (s.oh + 1) + 1 : s.oh * (nbx + 1) + 1;
  const maxIps = Math.max(1, Math.floor(LOOP_CAP / perImage));
  const rowThreads = s.cIn * kyBlocks * coBlocks;
  const kk = s.cOut * s.cIn * s.kh * s.kw;
  const limit = maxBindingElements(gpu);
  let splits = o.splits ?? Math.ceil(DW_TARGET_THREADS / rowThreads);
  splits = Math.max(1, Math.min(splits, s.n, Math.floor(limit / (kk + s.cOut))));
  let ips = Math.ceil(s.n / splits);
  if (ips > maxIps) ips = maxIps;
  splits = Math.ceil(s.n / ips);
  if (splits * (kk + s.cOut) > limit) {
    throw new RangeError(
      `conv2d: weight gradient of ${kk} weights over ${s.n} images needs ${splits} partial ` +
        "sums, more than one binding holds",
    );
  }
  const db = io.db !== undefined;
  const part = gpu.empty([splits * (kk + (db ? s.cOut : 0))]);
  const dt = floatDTypes("conv2d", { x: io.x.tensor, dy: io.dy.tensor });
  floatDTypes("conv2d", { dw: io.dw, db: io.db }); // f32 or f16 (reduceStrided stores them)
  const spec = weightGradKernel({ ...tile, kw: s.kw, sw: s.sw, dw: s.dw, db, slide, dt });
  const params = new ParamsWriter()
    .u32(s.n).u32(s.cIn).u32(s.h).u32(s.w)
    .u32(s.cOut).u32(s.oh).u32(s.ow).u32(s.kh)
    .u32(s.sh).u32(s.dh).i32(s.ph).i32(s.pw)
    .u32(splits).u32(ips).u32(nbx).u32(coBlocks)
    .u32(kyBlocks).u32(io.x.base).u32(io.dy.base).u32(splits * kk)
    .bytes();
  gpu.dispatch(spec, {
    params,
    bindings: [io.x.binding, io.dy.binding, part],
    workgroups: grid(splits * rowThreads, 1),
  });
  if (io.dw) {
    reduceStrided(gpu, {
      y: bindingRange(io.dw, 0, kk),
      x: bindingRange(part, 0, splits * kk),
      outer: splits,
      mid: kk,
      inner: 1,
      accumulate: o.accumulate,
    });
  }
  if (io.db) {
    reduceStrided(gpu, {
      y: bindingRange(io.db, 0, s.cOut),
      x: bindingRange(part, splits * kk, splits * s.cOut),
      outer: splits,
      mid: s.cOut,
      inner: 1,
      accumulate: o.accumulate,
    });
  }
  part.dispose();
}
