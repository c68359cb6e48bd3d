/**
 * Max and average pooling with a window: the forward kernel (one thread per output element
 * scanning its window, loops unrolled per kernel size) and the backward kernel (a gather
 * specialized on the window geometry, see `../_gather.ts`: one thread per block of `sh x sw`
 * inputs aligned to the stride, for which the covering output windows are known at compile time;
 * each input adds their gradients in ascending output order, as PyTorch's CPU scatter does, so
 * overlapping windows, e.g. AlexNet's 3/2 max pool, sum correctly without float atomics), and
 * their recorders, which dispatch a plan's ranges of planes (`plan.ts`).
 *
 * @module
 */

import { grid1d, type Tensor } from "../../gpu/mod.ts";
import { bindingRange, type TensorRange } from "../_binding.ts";
import { blockCover, blockMain, offsetId } from "../_gather.ts";
import type { PlaneWindow } from "../_geometry.ts";
import { defineKernel, flatMain, perSizes } from "../_kernel.ts";
import { type Pool2dPlan, WG } from "./plan.ts";

/** Max or average pooling. */
export type PoolKind = "max" | "avg";

/**
 * The binding of planes `[first, end)` of `t`, whose planes hold `perPlane` elements.
 *
 * @returns The range to bind.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindPlanes } from "./window.ts";
 * const gpu = await getGpu();
 * bindPlanes(gpu.zeros([4, 9]), [1, 3], 9).count; // 18
 * ```
 */
export function bindPlanes(
  t: Tensor,
  [first, end]: readonly [number, number],
  perPlane: number,
): TensorRange {
  return bindingRange(t, first * perPlane, (end - first) * perPlane);
}

/**
 * The bindings of planes `range` of a pooling's input-sized tensor (`h x w` planes) and of its
 * output-sized ones (`oh x ow` planes: the output or its gradient, and argmax).
 */
function bindRange(
  r: PlaneWindow,
  range: readonly [number, number],
  t: { input: Tensor; output: Tensor; argmax?: Tensor | undefined },
): { input: TensorRange; output: TensorRange; argmax?: TensorRange | undefined } {
  const ohw = r.oh * r.ow;
  return {
    input: bindPlanes(t.input, range, r.h * r.w),
    output: bindPlanes(t.output, range, ohw),
    argmax: t.argmax && bindPlanes(t.argmax, range, ohw),
  };
}

/**
 * Forward pooling: one thread per output, the window loops unrolled (one description per
 * kh x kw; variants `max` and `avg`, each specialized on the storage types of x and y).
 */
const forwardKernel = perSizes((kh: number, kw: number) =>
  defineKernel({
    name: `pool2d_fwd_${kh}x${kw}`,
    doc: `Max (variant max) or average (avg) pool forward. One thread per output element ` +
      `idx = (plane * oh + oy) * ow + ox (flat over a grid1d launch) scans its ${kh}x${kw} ` +
      "window row by row, skipping positions in the padding. Indices are local to one range of " +
      "planes; the range starts at element xBase of the x binding, yBase of y and amBase of " +
      "argmax (max). x is read as f32 and the result rounded once to y's type. Max keeps the " +
      "first maximum (strictly greater replaces; NaN propagates) and writes the max and its flat " +
      "index iy * w + ix in the input plane (the first in-bounds position when all are -inf). " +
      "Average divides the sum by kh * kw: with ceil_mode=False every window lies inside the " +
      "padded input, so PyTorch's count_include_pad divisor is the full window.",
    params: {
      total: "u32",
      h: "u32",
      w: "u32",
      oh: "u32",
      ow: "u32",
      sh: "i32",
      sw: "i32",
      ph: "i32",
      pw: "i32",
      xBase: "u32",
      yBase: "u32",
      amBase: "u32",
    },
    bindings: {
      x: { type: "float", access: "read" },
      y: { type: "float", access: "read_write" },
      argmax: { type: "i32", access: "read_write", variants: ["max"] },
    },
    variants: ["max", "avg"],
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const max = variant === "max";
      const main = flatMain(
        "idx",
        "p.total",
        `  let P = p.oh * p.ow;
  let plane = idx / P;
  let q = idx - plane * P;
  let oy = q / p.ow;
  let ox = q - oy * p.ow;
  let base = p.xBase + plane * p.h * p.w;
  let hs = i32(oy) * p.sh - p.ph;
  let ws = i32(ox) * p.sw - p.pw;
  let W = i32(p.w);
${
          max
            ? `  // -inf through a runtime bit pattern: Chrome's WGSL compiler rejects a constant -inf.
  let negInfBits = 0xff800000u;
  var best = bitcast<f32>(negInfBits);
  var bi = max(hs, 0) * W + max(ws, 0);`
            : "  var s = 0.0;"
        }
  for (var ky = 0; ky < KH; ky++) {
    let iy = hs + ky;
    if (iy < 0 || iy >= i32(p.h)) { continue; }
    for (var kx = 0; kx < KW; kx++) {
      let ix = ws + kx;
      if (ix < 0 || ix >= W) { continue; }
      let j = iy * W + ix;
      let v = f32(x[base + u32(j)]);
${
          max
            ? `      if (v > best || isNan(v)) {
        best = v;
        bi = j;
      }`
            : "      s += v;"
        }
    }
  }
${
          max
            ? `  y[p.yBase + idx] = ${dt.y}(best);\n  argmax[p.amBase + idx] = bi;`
            : `  y[p.yBase + idx] = ${dt.y}(s / ${kh * kw}.0);`
        }`,
      );
      return `const KH = ${kh};
const KW = ${kw};

${
        max
          ? `// NaN test on the bits: compilers may fold v != v away (WGSL lets them assume no NaN).
fn isNan(v: f32) -> bool { return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u; }
`
          : ""
      }
${main}`;
    },
  })
);

/**
 * Backward pooling as a gather, specialized on the whole window geometry (one description per
 * geometry; variants `max` and `avg`, each specialized on the storage types of dy and dx): one
 * thread per block of sh x sw inputs aligned to the stride, for which the covering outputs are
 * known at compile time; the thread loads their dy (and argmax) once and writes each input's
 * sum. Every input is written by exactly one thread, once: the sums are accumulated in f32 and
 * rounded once to dx's type.
 */
const backwardKernel = perSizes((
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  ph: number,
  pw: number,
) =>
  defineKernel({
    name: `pool2d_bwd_k${kh}x${kw}_s${sh}x${sw}_p${ph}x${pw}`,
    doc: `Max (variant max) or average (avg) pool backward (specialized on kernel ${kh}x${kw}, ` +
      `stride ${sh}x${sw}, padding ${ph}x${pw}). One thread per block of ${sh}x${sw} inputs ` +
      `aligned to the stride, idx = (plane * hb + by) * wb + bx, inputs (by * ${sh} + u, ` +
      `bx * ${sw} + v). Which outputs (by + a, bx + b) cover which input is known at compile ` +
      "time: the thread loads their dy (and argmax for max; dy / (kh * kw) for avg) once, then " +
      "each input adds, in ascending output order, the dy of the windows whose argmax it is " +
      "(max) or the scaled dy of every window covering it (avg) (a gather: overlapping windows " +
      "need no atomics; each input is written once, by its block's thread, with its f32 sum " +
      "rounded to dx's type). Indices are local to one range of planes, which starts at element " +
      "dyBase of dy, amBase of argmax (max), dxBase of dx.",
    params: {
      total: "u32",
      h: "u32",
      w: "u32",
      oh: "u32",
      ow: "u32",
      hb: "u32",
      wb: "u32",
      dyBase: "u32",
      dxBase: "u32",
      amBase: "u32",
    },
    bindings: {
      dy: { type: "float", access: "read" },
      argmax: { type: "i32", access: "read", variants: ["max"] },
      dx: { type: "float", access: "read_write" },
    },
    variants: ["max", "avg"],
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const max = variant === "max";
      const { rows, cols, as, bs, lines } = blockCover({ kh, kw, sh, sw, ph, pw, dh: 1, dw: 1 });
      const id = offsetId;
      for (const a of as) {
        for (const b of bs) {
          const ab = `${id(a)}_${id(b)}`;
          lines.push(`  var g${ab} = 0.0;`);
          if (max) lines.push(`  var m${ab} = -1;`);
          lines.push(`  if (okY${id(a)} && okX${id(b)}) {`);
          lines.push(`    let o = u32(oy${id(a)}) * p.ow + u32(ox${id(b)});`);
          if (max) {
            lines.push(`    g${ab} = f32(dy[obase + o]);`, `    m${ab} = argmax[abase + o];`);
          } else lines.push(`    g${ab} = f32(dy[obase + o]) / ${kh * kw}.0;`);
          lines.push("  }");
        }
      }
      const body: string[] = [];
      for (let u = 0; u < sh; u++) {
        for (let v = 0; v < sw; v++) {
          const terms: string[] = [];
          for (const [a] of rows[u]) {
            for (const [b] of cols[v]) {
              const ab = `${id(a)}_${id(b)}`;
              terms.push(max ? `select(0.0, g${ab}, m${ab} == me)` : `g${ab}`);
            }
          }
          body.push(`  if (iy0 + ${u} < i32(p.h) && ix0 + ${v} < i32(p.w)) {`);
          if (max) body.push(`    let me = (iy0 + ${u}) * i32(p.w) + ix0 + ${v};`);
          body.push(`    var acc = 0.0;`);
          for (const t of terms) body.push(`    acc += ${t};`);
          body.push(`    dx[ibase + u32((iy0 + ${u}) * i32(p.w) + ix0 + ${v})] = ${dt.dx}(acc);`);
          body.push("  }");
        }
      }
      return blockMain(`  let iy0 = i32(by) * ${sh};
  let ix0 = i32(bx) * ${sw};
  let ibase = p.dxBase + plane * p.h * p.w;
  let obase = p.dyBase + plane * p.oh * p.ow;
${max ? "  let abase = p.amBase + plane * p.oh * p.ow;\n" : ""}${lines.join("\n")}
${body.join("\n")}`);
    },
  })
);

/**
 * Records a max or average pooling forward over `plan`'s ranges of planes: `y` (and `argmax` for
 * max) from `x`. The tensors are checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { poolWindow } from "./geometry.ts";
 * import { planPool2d } from "./plan.ts";
 * import { recordPool2dForward } from "./window.ts";
 * const gpu = await getGpu();
 * const op = "avgPool2dForward";
 * const window = poolWindow(op, { n: 1, c: 2, h: 4, w: 4, kernel: 2 });
 * const plan = planPool2d({ op, window }, adapterProfile(gpu));
 * recordPool2dForward(op, "avg", plan, { y: gpu.empty([1, 2, 2, 2]), x: gpu.zeros([1, 2, 4, 4]) });
 * ```
 */
export function recordPool2dForward(
  op: string,
  kind: PoolKind,
  plan: Pool2dPlan,
  io: { y: Tensor; argmax?: Tensor | undefined; x: Tensor },
): void {
  const r = plan.window;
  const kernel = forwardKernel(r.kh, r.kw);
  for (const range of plan.ranges) {
    const { input: x, output: y, argmax } = bindRange(r, range, {
      input: io.x,
      output: io.y,
      argmax: io.argmax,
    });
    const total = (range[1] - range[0]) * r.oh * r.ow;
    kernel.dispatch({
      op,
      variant: kind,
      params: {
        total,
        h: r.h,
        w: r.w,
        oh: r.oh,
        ow: r.ow,
        sh: r.sh,
        sw: r.sw,
        ph: r.ph,
        pw: r.pw,
        xBase: x.base,
        yBase: y.base,
        amBase: argmax?.base ?? 0,
      },
      bindings: { x, y, argmax },
      workgroups: grid1d(total, WG),
    });
  }
}

/**
 * Records a max or average pooling backward over `plan`'s ranges of planes: `dx` (overwritten)
 * from `dy` (and `argmax` for max). The tensors are checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { poolWindow } from "./geometry.ts";
 * import { planPool2d } from "./plan.ts";
 * import { recordPool2dBackward } from "./window.ts";
 * const gpu = await getGpu();
 * const op = "avgPool2dBackward";
 * const window = poolWindow(op, { n: 1, c: 2, h: 4, w: 4, kernel: 2 });
 * const plan = planPool2d({ op, window }, adapterProfile(gpu));
 * recordPool2dBackward(op, "avg", plan, { dx: gpu.empty([1, 2, 4, 4]), dy: gpu.zeros([1, 2, 2, 2]) });
 * ```
 */
export function recordPool2dBackward(
  op: string,
  kind: PoolKind,
  plan: Pool2dPlan,
  io: { dy: Tensor; argmax?: Tensor | undefined; dx: Tensor },
): void {
  const r = plan.window;
  const { hb, wb } = plan;
  const kernel = backwardKernel(r.kh, r.kw, r.sh, r.sw, r.ph, r.pw);
  for (const range of plan.ranges) {
    const { input: dx, output: dy, argmax } = bindRange(r, range, {
      input: io.dx,
      output: io.dy,
      argmax: io.argmax,
    });
    const total = (range[1] - range[0]) * hb * wb;
    kernel.dispatch({
      op,
      variant: kind,
      // dy and argmax start at the same element, but at different bases when dy is f16.
      params: {
        total,
        h: r.h,
        w: r.w,
        oh: r.oh,
        ow: r.ow,
        hb,
        wb,
        dyBase: dy.base,
        dxBase: dx.base,
        amBase: argmax?.base ?? 0,
      },
      bindings: { dy, argmax, dx },
      workgroups: grid1d(total, WG),
    });
  }
}
