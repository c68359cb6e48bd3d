/**
 * Direct 2-D convolution kernels (no im2col) for CPU adapters such as llvmpipe, which
 * `planConv2d` (`plan.ts`) picks where they are estimated to beat im2col + GEMM: convolutions
 * with few channels (LeNet's 1->6 and 6->16 5x5 ones, the first layer of every model). These
 * functions take resolved shapes (`DirectConvShape`), tensor ranges and the blockings that
 * `direct_plan.ts` searches.
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
 *   for every tap and channel; with output-channel groups (`tile.cg`), the multiply-adds run
 *   group by group over all taps, so that a group's accumulators stay in registers (the input
 *   values, loaded once, are reread where they spilled). Input channels are taken `CI` per
 *   dispatch (later dispatches add to the output) to bound the unrolled code: each per-lane
 *   load costs llvmpipe compile time.
 *   The last dispatch can apply an activation as it stores, and y's images may have more
 *   channels than the convolution writes (output into a channel slice).
 * - **input gradient** (stride 1): the forward kernel run on `dy` with the kernel flipped and
 *   input/output channels exchanged (`flip`), padding `dilation*(k-1) - padding`.
 * - **weight (and bias) gradient**: in `direct_weight_grad.ts`.
 *
 * Storage: x, w, y, dy and the bias are f32 or f16 each (WGSL element types per binding); loads
 * convert to f32, every sum (workgroup memory included) is f32, and an f16 output is rounded
 * once as it is stored.
 *
 * No kernel returns early (that would turn constant-address loads into per-lane ones), padding
 * is handled by clamped, masked loads, and every invocation's loop trip count stays within
 * llvmpipe's silent cap of 65535 iterations. Each kernel is described once with `defineKernel`,
 * one description per set of unrolled sizes (`perSizes`), its variants (`flip`, the activation,
 * `prev`) and storage types the description's.
 *
 * @module
 */

import { type Gpu, grid1d, type Tensor } from "../../gpu/mod.ts";
import { floatDTypes } from "../_dtype.ts";
import { type ActivationKind, activationWgsl } from "../_activation_wgsl.ts";
import { bindingRange, maxBindingElements, type TensorRange } from "../_binding.ts";
import { adapterProfile, MIN_STORAGE_BUFFERS } from "../_adapter.ts";
import { bnFusionMode } from "../batchnorm/fusion_mode.ts";
import {
  gradSumsBindings,
  type GradSumsPartials,
  type GradSumsSource,
  planGradSums,
} from "../batchnorm/grad_sums.ts";
import { defineKernel, perSizes, variantProduct } from "../_kernel.ts";
import {
  DIRECT_WG,
  type DirectConvTile,
  MAX_STAGED_WEIGHTS,
  offsets,
  planDirectConv,
} from "./direct_plan.ts";
import type { DirectConvShape } from "./geometry.ts";
import { directGradSums, gradSumsArg } from "./direct_grad_sums.ts";

function grid(threads: number, z: number): [number, number, number] {
  const [x, y] = grid1d(threads, DIRECT_WG);
  return [x, y, z];
}

// ------------------------------------------------------------------------- forward ----

const ACTIVATIONS = ["relu", "relu6", "sigmoid", "tanh"] as const satisfies ActivationKind[];

/**
 * The variants of the forward kernel: `flip` (the input gradient), a fused activation (in the
 * last input-channel dispatch only), `prev` (the last dispatch into an f16 `y`, adding the f32
 * sums of the earlier ones from binding `prev`, `[n, cOut, oh, ow]`).
 */
const FORWARD_VARIANTS = variantProduct(["", "flip"], ["", ...ACTIVATIONS], ["", "prev"]);
type ForwardVariant = (typeof FORWARD_VARIANTS)[number];

/**
 * The forward kernel, unrolled over `cin` input channels, `co` output channels, a `kh x kw`
 * kernel at horizontal stride `sw` and dilation `dw`, and `tx` output pixels.
 */
const forwardKernel = perSizes((
  cin: number,
  co: number,
  kh: number,
  kw: number,
  sw: number,
  dw: number,
  tx: number,
  cg: number,
  gs: string,
) =>
  defineKernel({
    name: `conv2d_direct_fwd_c${cin}_co${co}_k${kh}x${kw}_s${sw}_d${dw}_tx${tx}${
      cg < co ? `_g${cg}` : ""
    }${gs ? `_${gs}` : ""}`,
    doc: "direct conv2d forward (or, flip, the stride-1 input gradient); see below",
    params: {
      nb: "u32",
      cIn: "u32",
      cOut: "u32",
      h: "u32",
      w: "u32",
      oh: "u32",
      ow: "u32",
      sh: "u32",
      dh: "u32",
      ph: "i32",
      pw: "i32",
      nbx: "u32",
      wsO: "u32",
      wsI: "u32",
      ci0: "u32",
      xOff: "u32",
      yOff: "u32",
      acc: "u32",
      bias: "u32",
      yC: "u32",
    },
    bindings: {
      x: { type: "float", access: "read" },
      wgt: { type: "float", access: "read" },
      y: { type: "float", access: "read_write" },
      // Read only when p.bias != 0 (any tensor fills it otherwise).
      bias: { type: "float", access: "read" },
      prev: {
        type: "f32",
        access: "read",
        variants: FORWARD_VARIANTS.filter((v) => v.split("_").includes("prev")),
      },
      // The gradient sums (`gs`, see direct_grad_sums.ts): declared in those kernels only.
      ...gradSumsBindings(gs, FORWARD_VARIANTS),
    },
    variants: FORWARD_VARIANTS,
    workgroupSize: DIRECT_WG,
    body: ({ variant, load, store, dtypes }) => {
      const parts = variant.split("_");
      const flip = parts.includes("flip"), prev = parts.includes("prev");
      const sums = gs ? directGradSums(gs, co, dtypes.y!, load) : undefined;
      const activation = ACTIVATIONS.find((a) => parts.includes(a));
      const offs = offsets({ tx, kw, sw, dw });
      const kk = kh * kw;
      const nw = co * cin * kk; // the block's weights, staged as wS[o][i][tap]
      const L: string[] = [];
      for (let j = 0; j < co; j++) {
        for (let px = 0; px < tx; px++) L.push(`  var a${j}_${px} = 0.0;`);
      }
      // Each input column's clamped index and in-bounds mask once, shared by every row's loads:
      // recomputing them per row (the same values) made SwiftShader's shader compiler (Chromium)
      // superlinear in the rows, and hang in the weight gradient's loops.
      for (const d of offs) {
        L.push(`  let cx${d} = u32(clamp(ix0 + ${d}, 0, wMax));`);
        L.push(`  let mx${d} = ix0 + ${d} >= 0 && ix0 + ${d} <= wMax;`);
      }
      // Fully unrolled over (ci, ky, kx, o, pixel), weights read from workgroup memory at
      // constant indices outside any loop or branch: llvmpipe then loads each once for the SIMD
      // group (in a loop or under a branch it would load it lane by lane). Input loads are per
      // lane.
      const fmas = (ci: number, ky: number, j: number) => {
        const r = `${ci}_${ky}`;
        const tapRow = flip ? kh - 1 - ky : ky;
        for (let kx = 0; kx < kw; kx++) {
          const tap = tapRow * kw + (flip ? kw - 1 - kx : kx);
          L.push(`  let w${r}_${j}_${kx} = wS[${(j * cin + ci) * kk + tap}u];`);
          for (let px = 0; px < tx; px++) {
            L.push(
              `  a${j}_${px} = fma(w${r}_${j}_${kx}, v${r}_${px * sw + kx * dw}, a${j}_${px});`,
            );
          }
        }
      };
      for (let ci = 0; ci < cin; ci++) {
        L.push(`  let xc${ci} = p.xOff + (img * p.cIn + p.ci0 + ${ci}u) * p.h * p.w;`);
        for (let ky = 0; ky < kh; ky++) {
          const r = `${ci}_${ky}`;
          L.push(`  let iy${r} = i32(oy * p.sh + ${ky}u * p.dh) - p.ph;`);
          L.push(`  let ok${r} = iy${r} >= 0 && iy${r} <= hMax;`);
          L.push(`  let row${r} = xc${ci} + u32(clamp(iy${r}, 0, hMax)) * p.w;`);
          for (const d of offs) {
            L.push(
              `  let v${r}_${d} = select(0.0, ${
                load("x", `x[row${r} + cx${d}]`)
              }, ok${r} && mx${d});`,
            );
          }
          if (cg >= co) { for (let j = 0; j < co; j++) fmas(ci, ky, j); }
        }
      }
      // In groups of cg output channels: each group's cg x tx accumulators stay in registers
      // over all taps, the input values (loaded once above) are reread from where they spilled.
      for (let j0 = 0; cg < co && j0 < co; j0 += cg) {
        for (let ci = 0; ci < cin; ci++) {
          for (let ky = 0; ky < kh; ky++) {
            for (let j = j0; j < Math.min(co, j0 + cg); j++) fmas(ci, ky, j);
          }
        }
      }
      if (sums) L.push(...sums.begin());
      L.push(`  if (live) {`);
      for (let j = 0; j < co; j++) {
        L.push(`  if (co0 + ${j}u < p.cOut) {`);
        L.push(`    var b${j} = 0.0;`);
        L.push(`    if (p.bias != 0u) { b${j} = ${load("bias", `bias[co0 + ${j}u]`)}; }`);
        L.push(`    let y${j} = p.yOff + ((img * p.yC + co0 + ${j}u) * p.oh + oy) * p.ow + ox0;`);
        if (prev) {
          L.push(`    let q${j} = ((img * p.cOut + co0 + ${j}u) * p.oh + oy) * p.ow + ox0;`);
        }
        for (let px = 0; px < tx; px++) {
          L.push(`    if (ox0 + ${px}u < p.ow) {`);
          L.push(`      var v = a${j}_${px} + b${j};`);
          const earlier = prev ? `prev[q${j} + ${px}u]` : load("y", `y[y${j} + ${px}u]`);
          L.push(`      if (p.acc != 0u) { v += ${earlier}; }`);
          L.push(`      ${store("y", `y[y${j} + ${px}u]`, activation ? "act(v)" : "v")}`);
          if (sums) L.push(`      ${sums.add(j, `y${j} + ${px}u`, "v")}`);
          L.push(`    }`);
        }
        L.push(`  }`);
      }
      L.push(`  }`);
      if (sums) L.push(...sums.end());
      return `var<workgroup> wS: array<f32, ${nw}>;
${activationWgsl(activation, "f32")}${sums ? sums.helpers : ""}
// Workgroup (X, Y, Z), thread li: t = (X + Y * nwg.x) * ${DIRECT_WG} + li computes output pixels
// ox0 = (t % nbx) * ${tx} .. +${tx} of row oy = (t / nbx) % oh of image t / (nbx * oh), for
// output channels co0 = Z * ${co} .. +${co}, over input channels ci0 .. ci0 + ${cin} and
// ${kh}x${kw} taps, writing y (+ bias[o] when p.bias) or adding to it (p.acc${
        prev ? ": adding the f32 sums prev[((img * cOut + o) * oh + oy) * ow + ox]" : ""
      })${activation ? `, through ${activation}` : ""}.
// Output (img, o, oy, ox) is y[yOff + ((img * yC + o) * oh + oy) * ow + ox] (yC channels per
// image). Weight (o, i, ky, kx) is wgt[o * wsO + i * wsI + tap], tap = ky * ${kw} + kx${
        flip ? " taken from the kernel flipped in both directions" : ""
      }; the workgroup first stages
// its block's weights in wS[o - co0][i - ci0][tap]. No early return: threads past the end
// compute a clamped pixel and store nothing. Every load converts to f32 (wS and all sums are
// f32); each output is rounded once to y's storage type.
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let co0 = wid.z * ${co}u;
  for (var e = li; e < ${nw}u; e += WG) {
    let tap = e % ${kk}u;
    let i = p.ci0 + (e / ${kk}u) % ${cin}u;
    let o = min(co0 + e / ${kk * cin}u, p.cOut - 1u);
    wS[e] = ${load("wgt", "wgt[o * p.wsO + i * p.wsI + tap]")};
  }
  workgroupBarrier();
  let total = p.nb * p.oh * p.nbx;
  let tRaw = (wid.x + wid.y * nwg.x) * WG + li;
  let live = tRaw < total;
  let t = min(tRaw, total - 1u);
  let ox0 = (t % p.nbx) * ${tx}u;
  let r = t / p.nbx;
  let oy = r % p.oh;
  let img = r / p.oh;
  let ix0 = i32(ox0 * ${sw}u) - p.pw;
  let wMax = i32(p.w) - 1;
  let hMax = i32(p.h) - 1;
${L.join("\n")}
}`;
    },
  })
);

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
 * Options: `tile` (default: {@linkcode planDirectConv}'s). `activation` applies `f` to every
 * output in the last dispatch's store (`y = f(conv(x, w) + b)`, bit for bit
 * `activationForward`'s; that dispatch runs a variant specialized for it). `yChannels` (default
 * `s.cOut`) is the channel count of y's images: output `(img, o, oy, ox)` is element
 * `((img * yChannels + o) * oh + oy) * ow + ox` of the `y` range, so the convolution can fill a
 * channel slice of a wider tensor (the range starting at the slice's first channel).
 *
 * @throws {RangeError} when no blocking fits the kernel's budgets (see
 * {@linkcode planDirectConv}), `yChannels < s.cOut`, or the f32 scratch exceeds one binding.
 * @throws {TypeError} when a tensor is not f32/f16 (or f16 without `shader-f16`).
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "../_binding.ts";
 * import { directConvForward } from "./direct.ts";
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
  io: { y: TensorRange; x: TensorRange; w: Tensor; b?: Tensor | undefined },
  o: {
    flip?: boolean;
    tile?: DirectConvTile;
    activation?: ActivationKind | undefined;
    yChannels?: number;
    /**
     * With `flip`: y is the output gradient of this batch norm, whose gradient sums the last
     * dispatch gathers where {@linkcode planGradSums} says so (`direct_grad_sums.ts`).
     */
    gradSums?: GradSumsSource;
  } = {},
): GradSumsPartials | undefined {
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
  if (tile.cg !== undefined && !(Number.isInteger(tile.cg) && tile.cg >= 1)) {
    throw new RangeError(`conv2d: output-channel group ${tile.cg} must be an integer >= 1`);
  }
  const cg = Math.min(tile.co, tile.cg ?? tile.co);
  const kernel = forwardKernel(tile.ci, tile.co, s.kh, s.kw, s.sw, s.dw, tile.tx, cg, "");
  const flip = o.flip ? "flip" : "";
  // The activation goes into the last dispatch's variant only: the earlier dispatches run the
  // plain one (no per-store flag to test in every dispatch).
  const last = [flip, o.activation ?? "", scratch ? "prev" : ""].filter((v) => v !== "")
    .join("_") as ForwardVariant;
  const workgroups = grid(s.n * s.oh * nbx, Math.ceil(s.cOut / tile.co));
  const sums = o.gradSums && _gradSums(gpu, o.gradSums, io.y, {
    slots: s.n * s.oh * nbx,
    k: s.cIn * kk,
    c: s.cOut,
    plain: !!o.flip && !o.activation && yC === s.cOut,
    prev: scratch !== undefined,
  });
  const gsKernel = sums &&
    forwardKernel(tile.ci, tile.co, s.kh, s.kw, s.sw, s.dw, tile.tx, cg, gradSumsArg(sums.act));
  for (let ci0 = 0; ci0 < s.cIn; ci0 += tile.ci) {
    const isLast = ci0 + tile.ci >= s.cIn;
    // With the scratch, the earlier chunks write it as a plain [n, cOut, oh, ow] y.
    const toScratch = scratch !== undefined && !isLast;
    (isLast && gsKernel ? gsKernel : kernel).dispatch({
      op: "conv2d",
      variant: isLast ? last : flip,
      params: {
        nb: s.n,
        cIn: s.cIn,
        cOut: s.cOut,
        h: s.h,
        w: s.w,
        oh: s.oh,
        ow: s.ow,
        sh: s.sh,
        dh: s.dh,
        ph: s.ph,
        pw: s.pw,
        nbx,
        // Weight strides per output and input channel of this convolution.
        wsO: o.flip ? kk : s.cIn * kk,
        wsI: o.flip ? s.cOut * kk : kk,
        ci0,
        xOff: io.x.base,
        yOff: toScratch ? 0 : io.y.base,
        acc: ci0 > 0 ? 1 : 0,
        bias: ci0 === 0 && io.b ? 1 : 0,
        yC: toScratch ? s.cOut : yC,
      },
      bindings: {
        x: io.x,
        wgt: io.w,
        y: toScratch ? scratch : io.y,
        bias: io.b ?? io.w,
        prev: isLast ? scratch : undefined,
        ...(isLast && sums ? sums.bindings : {}),
      },
      workgroups,
    });
  }
  scratch?.dispose();
  return sums?.partials;
}

/**
 * The gradient sums' bindings and partials of a direct input gradient into `y` (`plain`: flip,
 * no activation, no channel slice), where they fit and {@linkcode planGradSums} says so.
 */
function _gradSums(
  gpu: Gpu,
  src: GradSumsSource,
  y: TensorRange,
  q: { slots: number; k: number; c: number; plain: boolean; prev: boolean },
) {
  const gx = bindingRange(src.x, 0, y.count);
  const gy = src.y && bindingRange(src.y, 0, y.count);
  // Storage buffers of the last dispatch: x, wgt, y, bias, the f32 scratch of an f16 y split
  // over input channels (prev), gx, gMean, gPart, and gy with an activation: at most WebGPU's
  // default (a device may offer more; no kernel counts on it).
  const storage = 4 + (q.prev ? 1 : 0) + 3 + (gy ? 1 : 0);
  const fits = q.plain && y.base === gx.base && (gy === undefined || gy.base === y.base) &&
    y.count === src.x.size && src.mean.shape[0] === q.c &&
    (src.act === undefined) === (src.y === undefined) && storage <= MIN_STORAGE_BUFFERS;
  const path = fits ? "direct" as const : undefined;
  if (
    !planGradSums(
      adapterProfile(gpu),
      { path, slots: q.slots, k: q.k, channels: q.c },
      bnFusionMode(gpu, "gradSums"),
    )
  ) {
    return undefined;
  }
  const partial = gpu.empty([q.c, q.slots, 2]);
  return {
    act: src.act,
    bindings: { gx, gMean: src.mean, gPart: partial, ...(gy ? { gy } : {}) },
    partials: { partials: partial, tiles: q.slots },
  };
}
