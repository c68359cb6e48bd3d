/**
 * The small-plane kernel of the depthwise family (MobileNet's 6x6 and 3x3 layers): one thread
 * per `pp` consecutive whole planes, specialized on every size, so that every index is a
 * compile-time constant. It loads its input planes as vec4s (`pp * h * w` and `pp * oh * ow` are
 * multiples of 4), computes each output as a fixed sum of taps and stores the outputs as vec4s:
 * the forward pass (a correlation) or, mode `dx`, the backward to the input at any stride (the
 * transposed correlation: each input's sum over the outputs and taps that read it, enumerated at
 * compile time). llvmpipe loads storage per lane in a loop, so a vec4 costs about as much as a
 * scalar: a 6x6 plane takes 9 loads and 9 stores instead of the row kernel's ~80 loads.
 *
 * @module
 */

import { grid1d, type Tensor } from "../../gpu/mod.ts";
import { bindingRange, type TensorRange } from "../_binding.ts";
import { loadF32, storeAs } from "../_dtype.ts";
import type { PlaneWindow } from "../_geometry.ts";
import { defineKernel, perSizes } from "../_kernel.ts";
import { type PlanePass, WG } from "./plan.ts";

/** A term of an output's sum: its input element (in a plane) and its tap (`ky * kw + kx`). */
export type Term = readonly [number, number];

/**
 * The terms of each output of a plane: forward, `y[oy, ox]` from `x`; mode `dx`, `dx[iy, ix]`
 * from `dy`. Rows then columns, in the order of the reference's sums.
 *
 * @returns Per output (row-major), its terms `[input element, tap]`.
 * @example
 * ```ts
 * import { depthwiseWindow } from "./geometry.ts";
 * import { planeTerms } from "./plane.ts";
 * const r = depthwiseWindow("op", { n: 1, c: 1, h: 2, w: 2, kernel: 3, padding: 1 });
 * planeTerms(r, false)[0]; // [[0, 4], [1, 5], [2, 7], [3, 8]]
 * ```
 */
export function planeTerms(r: PlaneWindow, dx: boolean): Term[][] {
  const outs: Term[][] = Array.from(
    { length: dx ? r.h * r.w : r.oh * r.ow },
    () => [],
  );
  for (let oy = 0; oy < r.oh; oy++) {
    for (let ox = 0; ox < r.ow; ox++) {
      for (let ky = 0; ky < r.kh; ky++) {
        const iy = oy * r.sh - r.ph + ky * r.dh;
        if (iy < 0 || iy >= r.h) continue;
        for (let kx = 0; kx < r.kw; kx++) {
          const ix = ox * r.sw - r.pw + kx * r.dw;
          if (ix < 0 || ix >= r.w) continue;
          const i = iy * r.w + ix, o = oy * r.ow + ox, t = ky * r.kw + kx;
          if (dx) outs[i].push([o, t]);
          else outs[o].push([i, t]);
        }
      }
    }
  }
  return outs;
}

/** The small-plane kernel, specialized on the whole window, the mode and planes per thread. */
const planeKernel = perSizes((
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  ph: number,
  pw: number,
  dh: number,
  dw: number,
  h: number,
  w: number,
  oh: number,
  ow: number,
  mode: "y" | "dx",
  pp: number,
) => {
  const dx = mode === "dx";
  const terms = planeTerms({ kh, kw, sh, sw, ph, pw, dh, dw, h, w, oh, ow } as PlaneWindow, dx);
  const inPlane = dx ? oh * ow : h * w, outPlane = terms.length;
  const size = `${kh}x${kw}_s${sh}x${sw}_p${ph}x${pw}_d${dh}x${dw}_${h}x${w}`;
  return defineKernel({
    name: `depthwise_plane_${mode}_${size}_pp${pp}`,
    doc: `Depthwise conv ${dx ? "backward to the input (dx from dy)" : "forward (y from x)"} ` +
      `on whole ${h}x${w} planes (output ${oh}x${ow}): one thread per ${pp} consecutive planes, ` +
      `t = gid.x + gid.y * nwg.x * WG (planes t * ${pp} ..), local to one range of planes ` +
      `(global plane planeOff + plane; the input's vec4s start at inBase4, the output's at ` +
      `outBase4). It loads its ${pp * inPlane / 4} input vec4s, then writes each output vec4 as ` +
      "sums of taps fixed at compile time.",
    params: { c: "u32", threads: "u32", planeOff: "u32", inBase4: "u32", outBase4: "u32" },
    bindings: {
      x: { type: "float", access: "read", vec4: true },
      wt: { type: "float", access: "read" },
      bias: { type: "float", access: "read", variants: ["bias"] },
      y: { type: "float", access: "read_write", vec4: true },
    },
    variants: ["", "bias"],
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const lines: string[] = [];
      const nin = (pp * inPlane) / 4;
      lines.push(`  let ib = p.inBase4 + t * ${nin}u;`);
      for (let k = 0; k < nin; k++) {
        lines.push(`  let i${k} = ${loadF32(dt.x, `x[ib + ${k}u]`, true)};`);
      }
      const used = new Set<number>();
      for (const list of terms) for (const [, tap] of list) used.add(tap);
      for (let q = 0; q < pp; q++) {
        lines.push(`  let ch${q} = (p.planeOff + t * ${pp}u + ${q}u) % p.c;`);
        for (const tap of [...used].sort((a, b) => a - b)) {
          lines.push(
            `  let w${q}_${tap} = ${loadF32(dt.wt, `wt[ch${q} * ${kh * kw}u + ${tap}u]`)};`,
          );
        }
        if (variant === "bias") lines.push(`  let b${q} = ${loadF32(dt.bias, `bias[ch${q}]`)};`);
      }
      const el = (e: number) => `i${Math.floor(e / 4)}.${"xyzw"[e % 4]}`;
      const sum = (e: number) => {
        const q = Math.floor(e / outPlane), list = terms[e % outPlane];
        const parts = list.map(([i, tap]) => `${el(q * inPlane + i)} * w${q}_${tap}`);
        if (variant === "bias") parts.push(`b${q}`);
        return parts.length ? parts.join(" + ") : "0.0";
      };
      lines.push(`  let ob = p.outBase4 + t * ${(pp * outPlane) / 4}u;`);
      for (let k = 0; k < (pp * outPlane) / 4; k++) {
        const v = [0, 1, 2, 3].map((j) => sum(4 * k + j)).join(",\n      ");
        lines.push(`  y[ob + ${k}u] = ${storeAs(dt.y, `vec4f(\n      ${v})`, true)};`);
      }
      return `@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * WG;
  if (t >= p.threads) { return; }
${lines.join("\n")}
}
`;
    },
  });
});

/**
 * Records a small-plane pass: `y` (overwritten) from `x`, the weights `w` (and, forward, the
 * bias `b`): the forward pass (`x`, `y` the convolution's input and output) or, mode `dx`, the
 * input gradient (`x` is `dy`, `y` is `dx`); one dispatch per range of planes. The tensors are
 * checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { type PlanePass, planDepthwise } from "./plan.ts";
 * import { recordPlane } from "./plane.ts";
 * const gpu = await getGpu();
 * const op = "depthwiseConv2dForward";
 * const window = depthwiseWindow(op, { n: 1, c: 2, h: 6, w: 6, kernel: 3, padding: 1 });
 * const plan = planDepthwise({ op, window, call: "forward" }, adapterProfile(gpu));
 * const [x, w, y] = [gpu.zeros([1, 2, 6, 6]), gpu.zeros([2, 1, 3, 3]), gpu.empty([1, 2, 6, 6])];
 * recordPlane(op, plan.forward as PlanePass, { y, x, w });
 * ```
 */
export function recordPlane(
  op: string,
  pass: PlanePass,
  io: { y: Tensor; x: Tensor; w: Tensor; b?: Tensor | undefined },
): void {
  const r = pass.window, pp = pass.pp;
  const hw = r.h * r.w, ohw = r.oh * r.ow;
  const [inPlane, outPlane] = pass.mode === "dx" ? [ohw, hw] : [hw, ohw];
  const kernel = planeKernel(
    r.kh,
    r.kw,
    r.sh,
    r.sw,
    r.ph,
    r.pw,
    r.dh,
    r.dw,
    r.h,
    r.w,
    r.oh,
    r.ow,
    pass.mode,
    pp,
  );
  for (const [p0, p1] of pass.ranges) {
    const [xr, yr] = _vec4Planes(op, {
      input: io.x,
      output: io.y,
      planes: [p0, p1],
      sizes: [inPlane, outPlane],
    });
    const threads = (p1 - p0) / pp;
    kernel.dispatch({
      op,
      variant: io.b ? "bias" : "",
      params: { c: r.c, threads, planeOff: p0, inBase4: xr.base / 4, outBase4: yr.base / 4 },
      bindings: { x: xr, wt: io.w, bias: io.b, y: yr },
      workgroups: grid1d(threads, WG),
    });
  }
}

/**
 * The bindings of planes `[p0, p1)` of a vec4 kernel's input and output (planes of `inPlane` and
 * `outPlane` elements); the plans only choose vec4 paths whose ranges start on whole vec4s, so
 * one that does not is an internal error.
 *
 * @returns The two ranges.
 * @throws {Error} when a range starts inside a vec4.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { _vec4Planes } from "./plane.ts";
 * const gpu = await getGpu();
 * const [x, y] = [gpu.zeros([4, 16]), gpu.zeros([4, 4])];
 * const b = { input: x, output: y, planes: [0, 4], sizes: [16, 4] } as const;
 * _vec4Planes("depthwiseConv2dForward", b)[1].count; // 16
 * ```
 */
export function _vec4Planes(
  op: string,
  b: {
    readonly input: Tensor;
    readonly output: Tensor;
    readonly planes: readonly [number, number];
    readonly sizes: readonly [number, number];
  },
): [TensorRange, TensorRange] {
  const [p0, p1] = b.planes, [inPlane, outPlane] = b.sizes;
  const xr = bindingRange(b.input, p0 * inPlane, (p1 - p0) * inPlane);
  const yr = bindingRange(b.output, p0 * outPlane, (p1 - p0) * outPlane);
  if (xr.base % 4 !== 0 || yr.base % 4 !== 0) {
    throw new Error(`${op}: internal: a vec4 binding starts inside a vec4`);
  }
  return [xr, yr];
}
