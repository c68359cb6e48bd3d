/**
 * Pass 1 of the tiled weight gradient of the depthwise family, for planes whose input and output
 * widths are multiples of 4 (at most 12 vec4s an output row): one thread per (channel, band of
 * `ry` output rows) walks the samples; per sample it loads the band's rows of `dy` and the input
 * rows they read as vec4s (zero outside the plane) and adds each tap's dot products, picked by
 * compile-time components, and `sum(dy)` in registers; then writes its partial sums, which pass 2
 * of the chunked reduction (`weight_grad.ts`) adds in band order. llvmpipe (Mesa 22) loads
 * storage per lane in a loop, so a vec4 costs about as much as a scalar.
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import { loadF32 } from "../_dtype.ts";
import { defineKernel, perSizes } from "../_kernel.ts";
import { tileBlocks, type TileWeightGradPass } from "./plan.ts";
import { id, tapInputs } from "./row_tile.ts";

/** The tiled weight-gradient partial kernel, specialized on the window's constants and tile. */
const weightTileKernel = perSizes((
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  dh: number,
  dw: number,
  pw: number,
  cx: number,
  ry: number,
  wg: number,
) => {
  const kk = kh * kw;
  const [a0, a1] = tileBlocks(kw, sw, dw, pw, cx);
  return defineKernel({
    name: `depthwise_bwd_weight_tile_${kh}x${kw}_s${sh}x${sw}_d${dh}x${dw}_pw${pw}_t${ry}x${cx}`,
    doc: "Depthwise conv backward to the weight and bias, pass 1 of 2, for output rows of " +
      `${cx} vec4s. Workgroup (wx, ch = wy): thread band = wx * ${wg} + lid takes output rows ` +
      `oy0 = band * ${ry} .. + ${ry - 1} of channel ch in every sample: it loads those rows of ` +
      `dy and, per input row they read (oy0 * ${sh} - ph + r * ${sh} + ky * ${dh}), the vec4s ` +
      `${a0} .. ${a1} (zero outside the plane), and adds dot(dy, inputs under tap) to the ${kk} ` +
      `tap sums (rows past oh add nothing) and sum(dy); then writes partial[(ch * bands + band) ` +
      `* ${kk + 1} + tap].`,
    params: { c: "u32", n: "u32", h: "u32", w4: "u32", oh: "u32", bands: "u32", ph: "i32" },
    bindings: {
      dy: { type: "float", access: "read", vec4: true },
      x: { type: "float", access: "read", vec4: true },
      partial: { type: "f32", access: "read_write" },
    },
    workgroupSize: wg,
    body: ({ dtypes: dt }) => {
      const loop: string[] = [
        "    let plane = b * p.c + ch;",
        `    let gb = plane * p.oh * ${cx}u + oy0 * ${cx}u;`,
        "    let xb = plane * p.h * p.w4;",
      ];
      for (let r = 0; r < ry; r++) {
        for (let c = 0; c < cx; c++) {
          const at = `gb + ${r * cx + c}u`;
          loop.push(
            `    let g${r}_${c} = select(vec4f(0.0), ${
              loadF32(dt.dy, `dy[min(${at}, last)]`, true)
            }, ok${r});`,
          );
        }
        const all = Array.from({ length: cx }, (_, c) => `g${r}_${c}`).join(" + ");
        loop.push(`    s${kk} += dot(${all}, vec4f(1.0));`);
      }
      const rows = new Map<number, [number, number][]>();
      for (let r = 0; r < ry; r++) {
        for (let ky = 0; ky < kh; ky++) {
          const d = r * sh + ky * dh;
          rows.set(d, [...(rows.get(d) ?? []), [r, ky]]);
        }
      }
      for (const [d, uses] of [...rows.entries()].sort((a, b) => a[0] - b[0])) {
        loop.push(`    {
      let iy = iyb + ${d};
      let rok = iy >= 0 && iy < i32(p.h);
      let rb = xb + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w4;`);
        for (let a = a0; a <= a1; a++) {
          loop.push(
            `      let b${id(a)} = select(vec4f(0.0), ${
              loadF32(dt.x, `x[rb + u32(clamp(${a}, 0, qmax))]`, true)
            }, rok && ${a} >= 0 && ${a} <= qmax);`,
          );
        }
        for (const [r, ky] of uses) {
          for (let kx = 0; kx < kw; kx++) {
            const dots = Array.from(
              { length: cx },
              (_, c) => `dot(g${r}_${c}, ${tapInputs(c, kx, sw, pw, dw)})`,
            );
            // rows past oh: their dy is zero, but an input they would read may be Inf
            loop.push(`      s${ky * kw + kx} += select(0.0, ${dots.join(" + ")}, ok${r});`);
          }
        }
        loop.push("    }");
      }
      const sums = Array.from({ length: kk + 1 }, (_, t) => `  var s${t} = 0.0;`);
      const oks = Array.from({ length: ry }, (_, r) => `  let ok${r} = oy0 + ${r}u < p.oh;`);
      const writes = Array.from({ length: kk + 1 }, (_, t) => `  partial[out + ${t}u] = s${t};`);
      return `@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u) {
  let ch = wid.y;
  let band = wid.x * WG + lid;
  if (band >= p.bands) { return; }
  let oy0 = band * ${ry}u;
  let iyb = i32(oy0 * ${sh}u) - p.ph;
  let qmax = i32(p.w4) - 1;
  let last = p.n * p.c * p.oh * ${cx}u - 1u;
${oks.join("\n")}
${sums.join("\n")}
  for (var b = 0u; b < p.n; b++) {
${loop.join("\n")}
  }
  let out = (ch * p.bands + band) * ${kk + 1}u;
${writes.join("\n")}
}
`;
    },
  });
});

/**
 * Records pass 1 of the tiled weight gradient into `partial` (`[c, bands, kh * kw + 1]`, f32)
 * from `dy` and `x`, bound whole; pass 2 is the chunked reduction's (`weight_grad.ts`). The
 * tensors are checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { planDepthwise, type TileWeightGradPass } from "./plan.ts";
 * import { recordWeightTile } from "./weight_tile.ts";
 * const gpu = await getGpu();
 * const op = "depthwiseConv2dBackward";
 * const p = { n: 8, c: 2, h: 16, w: 16, kernel: 3, padding: 1 };
 * const plan = planDepthwise({ op, window: depthwiseWindow(op, p), call: "backward", dw: true }, adapterProfile(gpu));
 * if (plan.weightGrad?.path === "tile") { // on Mesa's CPU adapters, batches of 8 and more
 *   const pass = plan.weightGrad as TileWeightGradPass;
 *   const [dy, x] = [gpu.zeros([8, 2, 16, 16]), gpu.zeros([8, 2, 16, 16])];
 *   const partial = gpu.empty([2, pass.bands, 10]);
 *   recordWeightTile(op, pass, { dy, x, partial });
 * }
 * ```
 */
export function recordWeightTile(
  op: string,
  pass: TileWeightGradPass,
  io: { dy: Tensor; x: Tensor; partial: Tensor },
): void {
  const r = pass.window, t = pass.tile;
  weightTileKernel(r.kh, r.kw, r.sh, r.sw, r.dh, r.dw, r.pw, t.cx, t.ry, t.wg).dispatch({
    op,
    params: { c: r.c, n: r.n, h: r.h, w4: r.w / 4, oh: r.oh, bands: pass.bands, ph: r.ph },
    bindings: io,
    workgroups: [Math.ceil(pass.bands / t.wg), r.c, 1],
  });
}
