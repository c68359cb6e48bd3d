/**
 * The depthwise convolution's backward to the weight and bias: a reduction over `n * oh * ow`
 * per channel in units of {@linkcode V} outputs of a row. Short reductions use one thread per
 * channel (`serial`); longer ones two passes (`partial`: workgroups of `(chunk, channel)` reduce
 * chunks into partial sums of every tap and of `dy`, one dispatch per range of samples; `final`:
 * one thread per `(channel, tap)` adds the chunks in order). `dw` / `db` are overwritten or
 * accumulated (variant `acc`). `plan.ts` chooses the path and sizes the chunks from the loop
 * count of one unit of work.
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import { bindingRange } from "../_binding.ts";
import { assignAs, type FloatDType, loadF32 } from "../_dtype.ts";
import type { PlaneWindow } from "../_geometry.ts";
import { defineKernel, perSizes, variantProduct } from "../_kernel.ts";
import {
  type ChunkedWeightGradPass,
  type PlaneWeightGradPass,
  type SerialWeightGradPass,
  type TileWeightGradPass,
  V,
  WG,
} from "./plan.ts";
import { planeTerms } from "./plane.ts";
import { recordWeightTile } from "./weight_tile.ts";
import { rowConsts, rowLoop, rowTaps } from "./row_conv.ts";

/** The window geometry fields of the weight-gradient kernels' `Params`, in struct order. */
const GEOMETRY = {
  c: "u32",
  h: "u32",
  w: "u32",
  oh: "u32",
  ow: "u32",
  sh: "i32",
  sw: "i32",
  ph: "i32",
  pw: "i32",
  dh: "i32",
  dw: "i32",
} as const;

/** Taps reduced per round of the workgroup reduction (bounds the workgroup memory). */
function roundTaps(kk1: number): number {
  return Math.min(kk1, 32);
}

/** The `Params` of the weight-gradient kernels that run {@linkcode unitWgsl}, in struct order. */
const WEIGHT_PARAMS = {
  ...GEOMETRY,
  n: "u32",
  owb: "u32",
  chunk: "u32",
  chunks: "u32",
  stepOb: "u32",
  stepRow: "u32",
  xBase: "u32",
  dyBase: "u32",
  chunkOff: "u32",
} as const;

/**
 * WGSL shared by the weight-gradient kernels (after their declarations of `p`, `dy` and `x`):
 * `unit` adds the contribution of one unit of work, the outputs (oy, ox0 .. ox0 + 3) of one plane
 * (fewer at the row's end), to the per-tap sums: it loads dy as a vec4 (zero past the row), and
 * for each kernel row the input span those outputs read (zero outside the plane and past what
 * valid outputs use), then adds dot(dy, inputs under tap) for each tap, and sum(dy) for the bias.
 */
function unitWgsl(
  g: { kh: number; kw: number; sw: number; dw: number },
  dt: { dy: FloatDType; x: FloatDType },
): string {
  const { kh, kw, sw, dw } = g;
  const kk = kh * kw;
  const taps = rowTaps(sw);
  return `${rowConsts(kh, kw, sw, dw)}
const KK = ${kk}u;
const KK1 = ${kk + 1}u;

// plane is local to the range of samples bound (which starts at element xBase of x, dyBase of dy).
fn unit(plane: u32, oy: u32, ox0: u32, acc: ptr<function, array<f32, KK1>>) {
  let o = p.dyBase + (plane * p.oh + oy) * p.ow + ox0;
  let n = min(p.ow - ox0, ${V}u);
  var g = vec4f(0.0);
  for (var v = 0u; v < n; v++) { g[v] = ${loadF32(dt.dy, "dy[o + v]")}; }
  (*acc)[KK] += g.x + g.y + g.z + g.w;
  let base = p.xBase + plane * p.h * p.w;
  let iy0 = i32(oy) * p.sh - p.ph;
  let ix0 = i32(ox0) * SW - p.pw;
  let tmax = i32(n - 1u) * SW + (KW - 1) * DW;
${rowLoop(dt.x, "t <= tmax && ", `(*acc)[ky * KW + kx] += dot(g, vec4f(${taps}));`)}
}`;
}

function weightParams(
  r: PlaneWindow,
  g: { n: number; chunk: number; chunks: number; xBase: number; dyBase: number; chunkOff: number },
): { readonly [K in keyof typeof WEIGHT_PARAMS]: number } {
  const owb = Math.ceil(r.ow / V);
  const { c, h, w, oh, ow, sh, sw, ph, pw, dh, dw } = r;
  return {
    c,
    h,
    w,
    oh,
    ow,
    sh,
    sw,
    ph,
    pw,
    dh,
    dw,
    n: g.n,
    owb,
    chunk: g.chunk,
    chunks: g.chunks,
    stepOb: WG % owb,
    stepRow: Math.floor(WG / owb),
    xBase: g.xBase,
    dyBase: g.dyBase,
    chunkOff: g.chunkOff,
  };
}

/** Pass 1 of the chunked weight gradient, specialized as {@linkcode unitWgsl}. */
const backwardWeightPartialKernel = perSizes((kh: number, kw: number, sw: number, dw: number) => {
  const kk1 = kh * kw + 1;
  const r = roundTaps(kk1);
  return defineKernel({
    name: `depthwise_bwd_weight_partial_${kh}x${kw}_sw${sw}_dw${dw}`,
    doc: "Depthwise conv backward to the weight and bias, pass 1 of 2, over one range of " +
      "samples (one dispatch per range). The work of a channel is split in units (b, oy, block " +
      `of ${V} ox), unit index j = (b * oh + oy) * owb + block (b local to the range). Workgroup ` +
      "(chunk, ch) reduces units [chunk * chunkUnits, (chunk + 1) * chunkUnits) of channel ch: " +
      "thread lid takes j = start + lid, + WG, ... (row and block advanced without divisions) " +
      `and accumulates the ${kk1 - 1} tap sums and sum(dy) in registers; a tree reduction in ` +
      `workgroup memory (${r} sums per round) writes partial[(ch * chunks + chunkOff + chunk) * ` +
      `${kk1} + tap] (chunks: all ranges' chunks).`,
    params: WEIGHT_PARAMS,
    bindings: {
      dy: { type: "float", access: "read" },
      x: { type: "float", access: "read" },
      partial: { type: "f32", access: "read_write" },
    },
    workgroupSize: WG,
    body: ({ dtypes }) =>
      `const R = ${r}u;
${unitWgsl({ kh, kw, sw, dw }, dtypes)}
var<workgroup> red: array<f32, ${r * WG}>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u) {
  let chunk = wid.x;
  let ch = wid.y;
  let units = p.n * p.oh * p.owb;
  let j0 = chunk * p.chunk + lid;
  let j1 = min((chunk + 1u) * p.chunk, units);
  var acc: array<f32, KK1>;
  for (var t = 0u; t < KK1; t++) { acc[t] = 0.0; }
  var row = j0 / p.owb;
  var ob = j0 % p.owb;
  for (var j = j0; j < j1; j += WG) {
    let b = row / p.oh;
    unit(b * p.c + ch, row - b * p.oh, ob * ${V}u, &acc);
    ob += p.stepOb;
    row += p.stepRow;
    if (ob >= p.owb) { ob -= p.owb; row += 1u; }
  }
  let out = (ch * p.chunks + p.chunkOff + chunk) * KK1;
  for (var r0 = 0u; r0 < KK1; r0 += R) {
    for (var t = 0u; t < R; t++) {
      let tap = min(r0 + t, KK1 - 1u);
      red[t * WG + lid] = acc[tap];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (lid < s) {
        for (var t = 0u; t < R; t++) { red[t * WG + lid] += red[t * WG + lid + s]; }
      }
      workgroupBarrier();
    }
    if (lid < R && r0 + lid < KK1) { partial[out + r0 + lid] = red[lid * WG]; }
    workgroupBarrier();
  }
}
`,
  });
});

/**
 * The variants of the kernels that write the weight gradient: which of `dw`, `db` they write
 * (bound in that order), and whether they accumulate (`acc`: `+=`) or overwrite.
 */
const OUTPUT_VARIANTS = variantProduct(["dw", "db", "dw_db"], ["", "acc"]);
type OutputVariant = (typeof OUTPUT_VARIANTS)[number];

/** The output variants that write `name`. */
const writing = (name: "dw" | "db") => OUTPUT_VARIANTS.filter((v) => v.split("_").includes(name));

/** The bindings of the gradients, in binding order: each bound by the variants that write it. */
const GRADIENTS = {
  dw: { type: "float", access: "read_write", variants: writing("dw") },
  db: { type: "float", access: "read_write", variants: writing("db") },
} as const;

/** What an output variant writes, and its assignment operator (`+=` for `acc`). */
function outputsOf(variant: OutputVariant): { dw: boolean; db: boolean; op: "=" | "+=" } {
  const parts = variant.split("_");
  return {
    dw: parts.includes("dw"),
    db: parts.includes("db"),
    op: parts.includes("acc") ? "+=" : "=",
  };
}

/** The output variant for the outputs bound and `accumulate`. */
function outputVariant(dw: boolean, db: boolean, accumulate: boolean): OutputVariant {
  return [dw ? "dw" : "", db ? "db" : "", accumulate ? "acc" : ""].filter((s) => s !== "")
    .join("_") as OutputVariant;
}

/** The serial weight gradient, specialized as {@linkcode unitWgsl}. */
const backwardWeightSerialKernel = perSizes((kh: number, kw: number, sw: number, dw: number) =>
  defineKernel({
    name: `depthwise_bwd_weight_serial_${kh}x${kw}_sw${sw}_dw${dw}`,
    doc: "Depthwise conv backward to the weight and bias for short reductions (few outputs per " +
      `channel): one thread per channel walks all its units (b, oy, block of ${V} ox) in order, ` +
      `accumulating the ${kh * kw} tap sums and sum(dy) in registers (no barriers, no ` +
      "divisions), then overwrites (acc: accumulates into) dw[ch, tap] and db[ch].",
    params: WEIGHT_PARAMS,
    bindings: {
      dy: { type: "float", access: "read" },
      x: { type: "float", access: "read" },
      ...GRADIENTS,
    },
    variants: OUTPUT_VARIANTS,
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const out = outputsOf(variant), op = out.op;
      return `${unitWgsl({ kh, kw, sw, dw }, dt)}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let ch = gid.x;
  if (ch >= p.c) { return; }
  var acc: array<f32, KK1>;
  for (var t = 0u; t < KK1; t++) { acc[t] = 0.0; }
  for (var b = 0u; b < p.n; b++) {
    for (var oy = 0u; oy < p.oh; oy++) {
      for (var ob = 0u; ob < p.owb; ob++) { unit(b * p.c + ch, oy, ob * ${V}u, &acc); }
    }
  }
  ${
        out.dw
          ? `for (var t = 0u; t < KK; t++) { ${assignAs(dt.dw, "dw[ch * KK + t]", op, "acc[t]")} }`
          : ""
      }
  ${out.db ? assignAs(dt.db, "db[ch]", op, "acc[KK]") : ""}
}
`;
    },
  })
);

/**
 * The weight gradient of small planes, specialized on the whole window and the channels per
 * thread.
 */
const backwardWeightPlaneKernel = perSizes((
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
  pp: number,
) => {
  const r = { kh, kw, sh, sw, ph, pw, dh, dw, h, w, oh, ow } as PlaneWindow;
  const kk = kh * kw, hw = h * w, ohw = oh * ow;
  // per tap, its terms [output, input] over the plane
  const byTap: [number, number][][] = Array.from({ length: kk }, () => []);
  planeTerms(r, false).forEach((list, o) => {
    for (const [i, tap] of list) byTap[tap].push([o, i]);
  });
  const size = `${kh}x${kw}_s${sh}x${sw}_p${ph}x${pw}_d${dh}x${dw}_${h}x${w}`;
  return defineKernel({
    name: `depthwise_bwd_weight_plane_${size}_pp${pp}`,
    doc: `Depthwise conv backward to the weight and bias on whole ${h}x${w} planes (output ` +
      `${oh}x${ow}): one thread per ${pp} consecutive channels (t = gid.x: channels t * ${pp} ` +
      `..) walks the n samples; per sample it loads its ${pp} planes of x and of dy as vec4s ` +
      "and adds each tap's sum, fixed at compile time, and sum(dy) in registers; then " +
      "overwrites (acc: accumulates into) dw[ch, tap] and db[ch].",
    params: { c: "u32", n: "u32", groups: "u32" },
    bindings: {
      dy: { type: "float", access: "read", vec4: true },
      x: { type: "float", access: "read", vec4: true },
      ...GRADIENTS,
    },
    variants: OUTPUT_VARIANTS,
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const out = outputsOf(variant), op = out.op;
      const el = (v: string, e: number) => `${v}${Math.floor(e / 4)}.${"xyzw"[e % 4]}`;
      const lines: string[] = [];
      for (let q = 0; q < pp; q++) {
        for (let t = 0; t <= kk; t++) lines.push(`  var a${q}_${t} = 0.0;`);
      }
      const loop: string[] = [
        `    let plane = b * p.c + t * ${pp}u;`,
        `    let xb = plane * ${hw}u / 4u;`,
        `    let gb = plane * ${ohw}u / 4u;`,
      ];
      for (let k = 0; k < (pp * hw) / 4; k++) {
        loop.push(`    let x${k} = ${loadF32(dt.x, `x[xb + ${k}u]`, true)};`);
      }
      for (let k = 0; k < (pp * ohw) / 4; k++) {
        loop.push(`    let g${k} = ${loadF32(dt.dy, `dy[gb + ${k}u]`, true)};`);
      }
      for (let q = 0; q < pp; q++) {
        for (let tap = 0; tap < kk; tap++) {
          const terms = byTap[tap].map(([o, i]) =>
            `${el("g", q * ohw + o)} * ${el("x", q * hw + i)}`
          );
          if (terms.length) loop.push(`    a${q}_${tap} += ${terms.join(" + ")};`);
        }
        const all = Array.from({ length: ohw }, (_, o) => el("g", q * ohw + o));
        loop.push(`    a${q}_${kk} += ${all.join(" + ")};`);
      }
      const writes: string[] = [];
      for (let q = 0; q < pp; q++) {
        const ch = `t * ${pp}u + ${q}u`;
        if (out.dw) {
          for (let tap = 0; tap < kk; tap++) {
            writes.push(
              `  ${assignAs(dt.dw, `dw[(${ch}) * ${kk}u + ${tap}u]`, op, `a${q}_${tap}`)}`,
            );
          }
        }
        if (out.db) writes.push(`  ${assignAs(dt.db, `db[${ch}]`, op, `a${q}_${kk}`)}`);
      }
      return `@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x;
  if (t >= p.groups) { return; }
${lines.join("\n")}
  for (var b = 0u; b < p.n; b++) {
${loop.join("\n")}
  }
${writes.join("\n")}
}
`;
    },
  });
});

/** Pass 2 of the chunked weight gradient, specialized on the kernel size. */
const backwardWeightFinalKernel = perSizes((kh: number, kw: number) => {
  const kk = kh * kw;
  const kk1 = kk + 1;
  return defineKernel({
    name: `depthwise_bwd_weight_final_${kh}x${kw}`,
    doc: "Depthwise conv backward to the weight and bias, pass 2 of 2. One thread per (ch, " +
      `tap), idx = ch * ${kk1} + tap, adds the per-chunk partial sums of pass 1 in chunk order ` +
      `and overwrites (acc: accumulates into) dw[ch * ${kk} + tap] (tap < ${kk}) or db[ch] ` +
      `(tap ${kk}).`,
    params: { c: "u32", chunks: "u32" },
    bindings: {
      partial: { type: "f32", access: "read" },
      ...GRADIENTS,
    },
    variants: OUTPUT_VARIANTS,
    workgroupSize: WG,
    body: ({ dtypes: dt, variant }) => {
      const out = outputsOf(variant), op = out.op;
      return `const KK1 = ${kk1}u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = gid.x;
  if (idx >= p.c * KK1) { return; }
  let ch = idx / KK1;
  let tap = idx % KK1;
  var s = 0.0;
  for (var k = 0u; k < p.chunks; k++) { s += partial[(ch * p.chunks + k) * KK1 + tap]; }
  if (tap < KK1 - 1u) {
    ${out.dw ? assignAs(dt.dw, "dw[ch * (KK1 - 1u) + tap]", op, "s") : ""}
  } else {
    ${out.db ? assignAs(dt.db, "db[ch]", op, "s") : ""}
  }
}
`;
    },
  });
});

/**
 * Records the weight and bias gradients as `pass` says: `dw` and/or `db` (overwritten, or `+=`
 * when the pass accumulates) from `dy` and `x`. The tensors are checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { depthwiseWindow } from "./geometry.ts";
 * import { planDepthwise } from "./plan.ts";
 * import { recordWeightGrad } from "./weight_grad.ts";
 * const gpu = await getGpu();
 * const op = "depthwiseConv2dBackward";
 * const window = depthwiseWindow(op, { n: 1, c: 2, h: 5, w: 5, kernel: 3 });
 * const plan = planDepthwise({ op, window, call: "backward", dw: true }, adapterProfile(gpu));
 * const [dy, x, dw] = [gpu.zeros([1, 2, 3, 3]), gpu.zeros([1, 2, 5, 5]), gpu.empty([2, 1, 3, 3])];
 * recordWeightGrad(op, plan.weightGrad!, { dw, dy, x });
 * ```
 */
export function recordWeightGrad(
  op: string,
  pass: SerialWeightGradPass | ChunkedWeightGradPass | PlaneWeightGradPass | TileWeightGradPass,
  io: { dw?: Tensor | undefined; db?: Tensor | undefined; dy: Tensor; x: Tensor },
): void {
  const r = pass.window;
  const variant = outputVariant(io.dw !== undefined, io.db !== undefined, pass.accumulate);
  if (pass.path === "plane") {
    const groups = r.c / pass.pp;
    backwardWeightPlaneKernel(
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
      pass.pp,
    )
      .dispatch({
        op,
        variant,
        params: { c: r.c, n: r.n, groups },
        bindings: { dy: io.dy, x: io.x, dw: io.dw, db: io.db },
        workgroups: Math.ceil(groups / WG),
      });
    return;
  }
  if (pass.path === "serial") {
    backwardWeightSerialKernel(r.kh, r.kw, r.sw, r.dw).dispatch({
      op,
      variant,
      params: weightParams(r, {
        n: r.n,
        chunk: pass.units,
        chunks: 1,
        xBase: 0,
        dyBase: 0,
        chunkOff: 0,
      }),
      bindings: { dy: io.dy, x: io.x, dw: io.dw, db: io.db },
      workgroups: Math.ceil(r.c / WG),
    });
    return;
  }
  const kk1 = r.kh * r.kw + 1;
  const chunks = pass.path === "tile" ? pass.bands : pass.chunks;
  const partial = io.dy.gpu.empty([r.c, chunks, kk1]);
  if (pass.path === "tile") recordWeightTile(op, pass, { dy: io.dy, x: io.x, partial });
  else recordPartials(op, pass, io, partial);
  backwardWeightFinalKernel(r.kh, r.kw).dispatch({
    op,
    variant,
    params: { c: r.c, chunks },
    bindings: { partial, dw: io.dw, db: io.db },
    workgroups: Math.ceil((r.c * kk1) / WG),
  });
  partial.dispose();
}

/** Records pass 1 of the chunked weight gradient into `partial`, one dispatch per range. */
function recordPartials(
  op: string,
  pass: ChunkedWeightGradPass,
  io: { dy: Tensor; x: Tensor },
  partial: Tensor,
): void {
  const r = pass.window;
  const hw = r.h * r.w, ohw = r.oh * r.ow;
  for (const { samples: [b0, b1], chunks: count, chunkOff } of pass.ranges) {
    const nb = b1 - b0;
    const dy = bindingRange(io.dy, b0 * r.c * ohw, nb * r.c * ohw);
    const x = bindingRange(io.x, b0 * r.c * hw, nb * r.c * hw);
    backwardWeightPartialKernel(r.kh, r.kw, r.sw, r.dw).dispatch({
      op,
      params: weightParams(r, {
        n: nb,
        chunk: pass.chunkUnits,
        chunks: pass.chunks,
        xBase: x.base,
        dyBase: dy.base,
        chunkOff,
      }),
      bindings: { dy, x, partial },
      workgroups: [count, r.c, 1],
    });
  }
}
