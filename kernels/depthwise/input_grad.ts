/**
 * The depthwise convolution's backward to the input at strides above 1: a gather over blocks of
 * `sh x sw` inputs aligned to the stride (see `../_gather.ts`), for which the covering outputs and
 * taps are known at compile time, so that each input's sum is written once without atomics. At
 * stride 1 the input gradient is the row convolution of `row_conv.ts`, flipped.
 *
 * @module
 */

import { grid1d, type Tensor } from "../../gpu/mod.ts";
import { bindingRange } from "../_binding.ts";
import { assignAs, loadF32 } from "../_dtype.ts";
import { blockCover, blockMain, offsetId } from "../_gather.ts";
import { defineKernel, perSizes } from "../_kernel.ts";
import { type BlockGatherPass, WG } from "./plan.ts";

/**
 * The strided backward to the input, specialized on the kernel size, stride, padding and
 * dilation.
 */
const backwardDataBlockKernel = perSizes((
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  ph: number,
  pw: number,
  dh: number,
  dw: number,
) =>
  defineKernel({
    name: `depthwise_bwd_data_block_k${kh}x${kw}_s${sh}x${sw}_p${ph}x${pw}_d${dh}x${dw}`,
    doc: `Depthwise conv backward to the input, strided. One thread per block of ${sh}x${sw} ` +
      `inputs, idx = (plane * hb + by) * wb + bx, inputs (by * ${sh} + u, bx * ${sw} + v): with ` +
      "the block aligned to the stride, which output (by + a, bx + b) reaches which input " +
      "through which tap is known at compile time, so the thread loads the dy patch it needs " +
      "and the used taps once and writes each input's sum (a gather: no atomics). idx is local " +
      "to one range of planes: global plane planeOff + plane, starting at element dyBase of dy " +
      "and dxBase of dx.",
    params: {
      c: "u32",
      h: "u32",
      w: "u32",
      oh: "u32",
      ow: "u32",
      hb: "u32",
      wb: "u32",
      total: "u32",
      planeOff: "u32",
      dyBase: "u32",
      dxBase: "u32",
    },
    bindings: {
      dy: { type: "float", access: "read" },
      wt: { type: "float", access: "read" },
      dx: { type: "float", access: "read_write" },
    },
    workgroupSize: WG,
    body: ({ dtypes: dt }) => {
      const { rows, cols, as, bs, lines } = blockCover({ kh, kw, sh, sw, ph, pw, dh, dw });
      const id = offsetId;
      for (const a of as) {
        for (const b of bs) {
          const d = `d${id(a)}_${id(b)}`;
          lines.push(`  var ${d} = 0.0;`);
          lines.push(
            `  if (okY${id(a)} && okX${id(b)}) { ${d} = ${
              loadF32(dt.dy, `dy[obase + u32(oy${id(a)}) * p.ow + u32(ox${id(b)})]`)
            }; }`,
          );
        }
      }
      const used = new Set<string>();
      const body: string[] = [];
      for (let u = 0; u < sh; u++) {
        for (let v = 0; v < sw; v++) {
          const terms: string[] = [];
          for (const [a, ky] of rows[u]) {
            for (const [b, kx] of cols[v]) {
              used.add(`${ky}_${kx}`);
              terms.push(`d${id(a)}_${id(b)} * w${ky}_${kx}`);
            }
          }
          const target = `dx[ibase + (iy0 + ${u}u) * p.w + ix0 + ${v}u]`;
          const sum = terms.length ? terms.join(" + ") : "0.0";
          body.push(
            `  if (iy0 + ${u}u < p.h && ix0 + ${v}u < p.w) { ${
              assignAs(dt.dx, target, "=", sum)
            } }`,
          );
        }
      }
      for (const k of used) {
        const [ky, kx] = k.split("_").map(Number);
        lines.push(`  let w${k} = ${loadF32(dt.wt, `wt[wbase + ${ky * kw + kx}u]`)};`);
      }
      return blockMain(`  let ch = (p.planeOff + plane) % p.c;
  let iy0 = by * ${sh}u;
  let ix0 = bx * ${sw}u;
  let ibase = p.dxBase + plane * p.h * p.w;
  let obase = p.dyBase + plane * p.oh * p.ow;
  let wbase = ch * ${kh * kw}u;
${lines.join("\n")}
${body.join("\n")}`);
    },
  })
);

/**
 * Records the strided input gradient: `dx` (overwritten) from `dy` and the weights `w`, one
 * dispatch per range of planes. The tensors are checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { recordBlockGather } from "./input_grad.ts";
 * import { type BlockGatherPass, planDepthwise } from "./plan.ts";
 * const gpu = await getGpu();
 * const op = "depthwiseConv2dBackward";
 * const window = depthwiseWindow(op, { n: 1, c: 2, h: 13, w: 13, kernel: 3, stride: 2 });
 * const plan = planDepthwise({ op, window, call: "backward", dx: true }, adapterProfile(gpu));
 * const [dy, w, dx] = [gpu.zeros([1, 2, 6, 6]), gpu.zeros([2, 1, 3, 3]), gpu.empty([1, 2, 13, 13])];
 * recordBlockGather(op, plan.inputGrad as BlockGatherPass, { dx, dy, w });
 * ```
 */
export function recordBlockGather(
  op: string,
  pass: BlockGatherPass,
  io: { dx: Tensor; dy: Tensor; w: Tensor },
): void {
  const { window: r, hb, wb } = pass;
  const hw = r.h * r.w, ohw = r.oh * r.ow;
  const kernel = backwardDataBlockKernel(r.kh, r.kw, r.sh, r.sw, r.ph, r.pw, r.dh, r.dw);
  for (const [p0, p1] of pass.ranges) {
    const dy = bindingRange(io.dy, p0 * ohw, (p1 - p0) * ohw);
    const dx = bindingRange(io.dx, p0 * hw, (p1 - p0) * hw);
    const total = (p1 - p0) * hb * wb;
    kernel.dispatch({
      op,
      params: {
        c: r.c,
        h: r.h,
        w: r.w,
        oh: r.oh,
        ow: r.ow,
        hb,
        wb,
        total,
        planeOff: p0,
        dyBase: dy.base,
        dxBase: dx.base,
      },
      bindings: { dy, wt: io.w, dx },
      workgroups: grid1d(total, WG),
    });
  }
}
