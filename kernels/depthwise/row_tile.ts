/**
 * The tiled row convolution of the depthwise family: the same passes as `row_conv.ts` (the
 * forward pass and, variant `flip`, the stride-1 input gradient), for rows whose input and output
 * widths are multiples of 4. One workgroup row per plane, so the plane's
 * channel, its weights and its bias are uniform: llvmpipe loads them once per SIMD batch instead
 * of once per lane. Each thread computes a tile of `ry` rows by `cx` vec4s of outputs: for each
 * input row its tile reads, it loads the `cx` vec4s above its outputs and the neighbouring vec4s
 * its taps reach (zero outside the plane, by `select`, with no branch), and every tap picks its
 * four inputs from them by compile-time components. llvmpipe (Mesa 22) loads storage per lane in
 * a loop, whatever the addresses, so a vec4 costs about as much as a scalar: the tile loads a
 * sixth to a tenth as many times per output as the scalar kernel, and stores a quarter.
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import { loadF32, storeAs } from "../_dtype.ts";
import { defineKernel, perSizes, variantProduct } from "../_kernel.ts";
import { type RowConvPass, type RowTile, type RowTileDxPass, tileBlocks } from "./plan.ts";
import { _vec4Planes } from "./plane.ts";

/** Workgroups along y (planes) before z takes over. */
const MAX_Y = 65535;

/** The variants: `flip` (backward to the input), `bias`. */
const TILE_VARIANTS = variantProduct(["", "flip"], ["", "bias"]);

/**
 * A WGSL name suffix for a (possibly negative) offset.
 *
 * @returns `m1` for -1, `2` for 2.
 * @example
 * ```ts
 * import { id } from "./row_tile.ts";
 * id(-1); // "m1"
 * ```
 */
export const id = (a: number): string => (a < 0 ? `m${-a}` : `${a}`);

/**
 * WGSL: the vec4 of inputs that output vec4 `c` of a tile reads under tap `kx` (stride `sw`,
 * padding `pw`, dilation `dw`), from the row's vec4s `b<a>` (relative to the tile's first).
 *
 * @returns The expression.
 * @example
 * ```ts
 * import { tapInputs } from "./row_tile.ts";
 * tapInputs(0, 1, 1, 1, 1); // "b0"
 * tapInputs(0, 0, 1, 1, 1); // "vec4f(bm1.w, b0.x, b0.y, b0.z)"
 * ```
 */
export function tapInputs(c: number, kx: number, sw: number, pw: number, dw: number): string {
  const comps = [0, 1, 2, 3].map((v) => {
    const e = (4 * c + v) * sw - pw + kx * dw;
    const a = Math.floor(e / 4);
    return [a, e - 4 * a];
  });
  const aligned = comps.every(([a, k], v) => a === comps[0][0] && k === v);
  return aligned ? `b${id(comps[0][0])}` : `vec4f(${comps.map(([a, k]) => comp(a, k)).join(", ")})`;
}

/** A tile's input rows: row offset, and the sums `[r, c, vec4 expression]` that read it. */
interface TileTaps {
  readonly rows: [number, [number, number, string][]][];
  /** The vec4s of a row read, relative to the tile's first: `[first, last]`. */
  readonly blocks: [number, number];
}

/** An input row's vec4 `a` (relative), component `k`. */
const comp = (a: number, k: number) => `b${id(a)}.${"xyzw"[k]}`;

/**
 * The correlation's taps: output row r of the tile reads input row `r * sh + ky * dh` (from
 * `oy0 * sh - ph`), output column `4c + v` input column `(4c + v) * sw - pw + kx * dw`.
 */
function correlationTaps(
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  pw: number,
  dh: number,
  dw: number,
  cx: number,
  ry: number,
): TileTaps {
  const rows = new Map<number, [number, number, string][]>();
  for (let r = 0; r < ry; r++) {
    for (let ky = 0; ky < kh; ky++) {
      const d = r * sh + ky * dh;
      const list = rows.get(d) ?? [];
      for (let kx = 0; kx < kw; kx++) {
        for (let c = 0; c < cx; c++) {
          const inputs = tapInputs(c, kx, sw, pw, dw);
          list.push([r, c, `${inputs} * w${ky}_${kx}`]);
        }
      }
      rows.set(d, list);
    }
  }
  return {
    rows: [...rows.entries()].sort((a, b) => a[0] - b[0]),
    blocks: tileBlocks(kw, sw, dw, pw, cx),
  };
}

/**
 * The transposed correlation's taps (the input gradient; whole rows, `oy0` a multiple of `sh`):
 * dx row `oy0 + r` gathers dy row `oy0 / sh + (r + ph - ky * dh) / sh` where that divides, dx
 * column `4c + v` dy column `(4c + v + pw - kx * dw) / sw` where that divides and is not negative.
 */
function transposedTaps(
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  ph: number,
  pw: number,
  dh: number,
  dw: number,
  cx: number,
  ry: number,
): TileTaps {
  const rows = new Map<number, [number, number, string][]>();
  let lo = Infinity, hi = -Infinity;
  for (let r = 0; r < ry; r++) {
    for (let ky = 0; ky < kh; ky++) {
      const num = r + ph - ky * dh;
      if (num % sh !== 0) continue;
      const d = num / sh;
      const list = rows.get(d) ?? [];
      for (let c = 0; c < cx; c++) {
        const sums = [0, 1, 2, 3].map((v) => {
          const terms: string[] = [];
          for (let kx = 0; kx < kw; kx++) {
            const n = 4 * c + v + pw - kx * dw;
            if (n < 0 || n % sw !== 0) continue;
            const a = Math.floor(n / sw / 4);
            lo = Math.min(lo, a);
            hi = Math.max(hi, a);
            terms.push(`${comp(a, n / sw - 4 * a)} * w${ky}_${kx}`);
          }
          return terms.length ? terms.join(" + ") : "0.0";
        });
        if (sums.some((e) => e !== "0.0")) list.push([r, c, `vec4f(${sums.join(", ")})`]);
      }
      rows.set(d, list);
    }
  }
  return {
    rows: [...rows.entries()].sort((a, b) => a[0] - b[0]),
    blocks: lo <= hi ? [lo, hi] : [0, -1],
  };
}

/**
 * The tiled row-convolution kernel, specialized on the kernel, the vertical stride and dilation,
 * the horizontal dilation and padding, and the tile.
 */
const rowTileKernel = perSizes((
  kh: number,
  kw: number,
  sh: number,
  sw: number,
  dh: number,
  dw: number,
  ph: number,
  pw: number,
  cx: number,
  ry: number,
  wg: number,
  mode: "y" | "dx",
) => {
  const dx = mode === "dx";
  const plan = dx
    ? transposedTaps(kh, kw, sh, sw, ph, pw, dh, dw, cx, ry)
    : correlationTaps(kh, kw, sh, sw, pw, dh, dw, cx, ry);
  const [a0, a1] = plan.blocks;
  return defineKernel({
    name: `depthwise_rowtile${dx ? "_dx" : ""}_${kh}x${kw}_s${sh}x${sw}_d${dh}x${dw}_${
      dx ? `p${ph}x${pw}` : `pw${pw}`
    }_t${ry}x${cx}_wg${wg}`,
    doc: `Depthwise conv forward, or (flip) backward to the input at ` +
      `stride 1 (input dy, output dx, weights flipped, padding (k - 1) * d - p), for widths that ` +
      `are multiples of 4 (x and y as vec4s). Workgroup (wx, plane = wy + ${MAX_Y} * wz): the ` +
      `plane's channel, weights and bias are uniform. Thread u = wx * ${wg} + lid of the plane ` +
      `computes the outputs of rows oy0 .. oy0 + ${ry - 1} (oy0 = (u / rowUnits) * ${ry}) and ` +
      `vec4 columns q0 .. q0 + ${cx - 1} (q0 = (u % rowUnits) * ${cx}); per input row it loads ` +
      `the vec4s q0 * ${sw} + ${a0} .. q0 * ${sw} + ${a1} (zero outside the plane) and picks each tap's inputs ` +
      "by components. Plane local to a range of planes: global plane planeOff + plane, starting " +
      "at vec4 xBase4 of x and yBase4 of y.",
    params: {
      c: "u32",
      h: "u32",
      w4: "u32",
      oh: "u32",
      ow4: "u32",
      ph: "i32",
      rowUnits: "u32",
      units: "u32",
      planes: "u32",
      planeOff: "u32",
      xBase4: "u32",
      yBase4: "u32",
    },
    bindings: {
      x: { type: "float", access: "read", vec4: true },
      wt: { type: "float", access: "read" },
      bias: { type: "float", access: "read", variants: ["bias", "flip_bias"] },
      y: { type: "float", access: "read_write", vec4: true },
    },
    variants: TILE_VARIANTS,
    workgroupSize: wg,
    body: ({ dtypes: dt, variant }) => {
      const parts = variant.split("_");
      const flip = parts.includes("flip"), bias = parts.includes("bias");
      const lines: string[] = [];
      // Uniform loads first, before any control flow (llvmpipe loads them once per batch).
      for (let ky = 0; ky < kh; ky++) {
        for (let kx = 0; kx < kw; kx++) {
          const t = flip ? (kh - 1 - ky) * kw + (kw - 1 - kx) : ky * kw + kx;
          lines.push(`  let w${ky}_${kx} = ${loadF32(dt.wt, `wt[wbase + ${t}u]`)};`);
        }
      }
      const init = bias ? `vec4f(${loadF32(dt.bias, "bias[ch]")})` : "vec4f(0.0)";
      lines.push(`  let u = wid.x * WG + lid;
  let oy0 = (u / p.rowUnits) * ${ry}u;
  let q0 = i32((u % p.rowUnits) * ${cx}u);
  let qi = ${dx ? "0" : `q0 * ${sw}`};
  let xb = p.xBase4 + plane * p.h * p.w4;
  let iyb = ${dx ? `i32(oy0 / ${sh}u)` : `i32(oy0 * ${sh}u) - p.ph`};
  let qmax = i32(p.w4) - 1;`);
      for (let r = 0; r < ry; r++) {
        for (let c = 0; c < cx; c++) lines.push(`  var acc${r}_${c} = ${init};`);
      }
      for (const [d, uses] of plan.rows) {
        lines.push(`  {
    let iy = iyb + ${d};
    let rok = iy >= 0 && iy < i32(p.h);
    let rb = xb + u32(clamp(iy, 0, i32(p.h) - 1)) * p.w4;`);
        for (let a = a0; a <= a1; a++) {
          lines.push(`    let q${id(a)} = qi + ${a};`);
          lines.push(
            `    let b${id(a)} = select(vec4f(0.0), ${
              loadF32(dt.x, `x[rb + u32(clamp(q${id(a)}, 0, qmax))]`, true)
            }, rok && q${id(a)} >= 0 && q${id(a)} <= qmax);`,
          );
        }
        for (const [r, c, expr] of uses) lines.push(`    acc${r}_${c} += ${expr};`);
        lines.push("  }");
      }
      lines.push(`  if (u >= p.units || plane >= p.planes) { return; }
  let yb = p.yBase4 + plane * p.oh * p.ow4;`);
      for (let r = 0; r < ry; r++) {
        const row = [`  if (oy0 + ${r}u < p.oh) {`];
        for (let c = 0; c < cx; c++) {
          row.push(
            `    y[yb + (oy0 + ${r}u) * p.ow4 + u32(q0) + ${c}u] = ${
              storeAs(dt.y, `acc${r}_${c}`, true)
            };`,
          );
        }
        row.push("  }");
        lines.push(row.join("\n"));
      }
      return `@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u) {
  let plane = wid.y + wid.z * ${MAX_Y}u;
  let ch = (p.planeOff + plane) % p.c;
  let wbase = ch * ${kh * kw}u;
${lines.join("\n")}
}
`;
    },
  });
});

/**
 * Records a tiled row-convolution pass (`pass.tile` set): `y` (planes of `oh x ow`, overwritten)
 * from `x` (planes of `h x w`), the weights `w` (and the bias `b`), one dispatch per range of
 * planes. The tensors are checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { planDepthwise, type RowConvPass } from "./plan.ts";
 * import { recordRowTile } from "./row_tile.ts";
 * const gpu = await getGpu();
 * const op = "depthwiseConv2dForward";
 * const window = depthwiseWindow(op, { n: 1, c: 2, h: 16, w: 16, kernel: 3, padding: 1 });
 * const plan = planDepthwise({ op, window, call: "forward" }, adapterProfile(gpu));
 * const [x, w, y] = [gpu.zeros([1, 2, 16, 16]), gpu.zeros([2, 1, 3, 3]), gpu.empty([1, 2, 16, 16])];
 * recordRowTile(op, plan.forward as RowConvPass, { y, x, w });
 * ```
 */
export function recordRowTile(
  op: string,
  pass: RowConvPass,
  io: { y: Tensor; x: Tensor; w: Tensor; b?: Tensor | undefined },
): void {
  const g = pass.window, t = pass.tile as RowTile;
  const hw = g.h * g.w, ohw = g.oh * g.ow;
  const kernel = rowTileKernel(
    g.kh,
    g.kw,
    g.sh,
    g.sw,
    g.dh,
    g.dw,
    0,
    g.pw,
    t.cx,
    t.ry,
    t.wg,
    "y",
  );
  const variant = [pass.flip ? "flip" : "", io.b ? "bias" : ""].filter((s) => s !== "").join(
    "_",
  ) as (typeof TILE_VARIANTS)[number];
  const rowUnits = g.ow / (4 * t.cx);
  const units = Math.ceil(g.oh / t.ry) * rowUnits;
  for (const [p0, p1] of pass.ranges) {
    const [xr, yr] = _vec4Planes(op, {
      input: io.x,
      output: io.y,
      planes: [p0, p1],
      sizes: [hw, ohw],
    });
    const planes = p1 - p0;
    kernel.dispatch({
      op,
      variant,
      params: {
        c: g.c,
        h: g.h,
        w4: g.w / 4,
        oh: g.oh,
        ow4: g.ow / 4,
        ph: g.ph,
        rowUnits,
        units,
        planes,
        planeOff: p0,
        xBase4: xr.base / 4,
        yBase4: yr.base / 4,
      },
      bindings: { x: xr, wt: io.w, bias: io.b, y: yr },
      workgroups: [
        Math.ceil(units / t.wg),
        Math.min(planes, MAX_Y),
        Math.ceil(planes / MAX_Y),
      ],
    });
  }
}

/**
 * Records a tiled input gradient (`pass.path` `rowTileDx`): `dx` (overwritten) from `dy` and the
 * weights `w`, whole rows of vec4s per thread, one dispatch per range of planes. The tensors are
 * checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { planDepthwise, type RowTileDxPass } from "./plan.ts";
 * import { recordRowTileDx } from "./row_tile.ts";
 * const gpu = await getGpu();
 * const op = "depthwiseConv2dBackward";
 * const p = { n: 1, c: 2, h: 16, w: 16, kernel: 3, stride: 2, padding: 1 };
 * const plan = planDepthwise({ op, window: depthwiseWindow(op, p), call: "backward", dx: true }, adapterProfile(gpu));
 * const [dy, w, dx] = [gpu.zeros([1, 2, 8, 8]), gpu.zeros([2, 1, 3, 3]), gpu.empty([1, 2, 16, 16])];
 * recordRowTileDx(op, plan.inputGrad as RowTileDxPass, { dx, dy, w });
 * ```
 */
export function recordRowTileDx(
  op: string,
  pass: RowTileDxPass,
  io: { dx: Tensor; dy: Tensor; w: Tensor },
): void {
  const g = pass.window, t = pass.tile;
  const hw = g.h * g.w, ohw = g.oh * g.ow;
  const kernel = rowTileKernel(
    g.kh,
    g.kw,
    g.sh,
    g.sw,
    g.dh,
    g.dw,
    g.ph,
    g.pw,
    t.cx,
    t.ry,
    t.wg,
    "dx",
  );
  const units = Math.ceil(g.h / t.ry);
  for (const [p0, p1] of pass.ranges) {
    const [xr, yr] = _vec4Planes(op, {
      input: io.dy,
      output: io.dx,
      planes: [p0, p1],
      sizes: [ohw, hw],
    });
    const planes = p1 - p0;
    kernel.dispatch({
      op,
      params: {
        c: g.c,
        h: g.oh,
        w4: g.ow / 4,
        oh: g.h,
        ow4: g.w / 4,
        ph: g.ph,
        rowUnits: 1,
        units,
        planes,
        planeOff: p0,
        xBase4: xr.base / 4,
        yBase4: yr.base / 4,
      },
      bindings: { x: xr, wt: io.w, y: yr },
      workgroups: [Math.ceil(units / t.wg), Math.min(planes, MAX_Y), Math.ceil(planes / MAX_Y)],
    });
  }
}
