/**
 * The direct weight (and bias) gradient of a 2-D convolution (no im2col) for CPU adapters such as
 * llvmpipe, which `planConv2d` (`plan.ts`) picks where it is estimated to beat im2col + GEMM
 * (see `direct.ts` for what the direct kernels are built around).
 *
 * {@linkcode directConvWeightGrad}: each thread owns the `CO x KY x kw` weights of one input
 * channel (and `CO` bias sums) and sums their products over a split of the images, stepping over
 * output pixels `TX` at a time and, when the rows advance by as many input rows as the dilation,
 * sliding a window of input rows down the image (one new row per step). Lanes of a SIMD group
 * differ only in their split of images, so they share every loop trip count. A second pass
 * (`reduceStrided`) sums the splits into `dw` and `db` (`+=` when accumulating). `x` and `dy`
 * are f32 or f16 each; every sum and the partial sums are f32.
 *
 * The kernel is described once with `defineKernel`, one description per set of unrolled sizes
 * (`perSizes`), its variants `db` and `slide`.
 *
 * @module
 */

import { type Gpu, grid1d, type Tensor } from "../../gpu/mod.ts";
import { floatDTypes } from "../_dtype.ts";
import { bindingRange, type TensorRange } from "../_binding.ts";
import { defineKernel, perSizes, variantProduct } from "../_kernel.ts";
import { reduceStrided } from "../gemm/index.ts";
import {
  DIRECT_WG,
  type DirectWeightGradSplit,
  directWeightGradSplits,
  type DirectWeightGradTile,
  directWeightGradTile,
  offsets,
  slides,
} from "./direct_plan.ts";
import type { DirectConvShape } from "./geometry.ts";

/** The variants of the weight-gradient kernel: `db` (bias sums too), `slide` (sh == dh). */
const DW_VARIANTS = variantProduct(["", "db"], ["", "slide"]);

/**
 * The weight-gradient kernel, unrolled over a kernel row of `kw` taps at horizontal stride `sw`
 * and dilation `dw`, `tx` output pixels per step, `co` output channels and `ky` kernel rows.
 */
const weightGradKernel = perSizes((
  kw: number,
  sw: number,
  dw: number,
  tx: number,
  co: number,
  ky: number,
) =>
  defineKernel({
    name: `conv2d_direct_dw_k${kw}_s${sw}_d${dw}_tx${tx}_co${co}_ky${ky}`,
    doc: "direct conv2d weight (and bias) gradient, partial sums per split of the images",
    params: {
      nb: "u32",
      cIn: "u32",
      h: "u32",
      w: "u32",
      cOut: "u32",
      oh: "u32",
      ow: "u32",
      kh: "u32",
      sh: "u32",
      dh: "u32",
      ph: "i32",
      pw: "i32",
      splits: "u32",
      ips: "u32",
      nbx: "u32",
      coBlocks: "u32",
      kyBlocks: "u32",
      xOff: "u32",
      dyOff: "u32",
      dbOff: "u32",
    },
    bindings: {
      x: { type: "float", access: "read" },
      dy: { type: "float", access: "read" },
      part: { type: "f32", access: "read_write" },
    },
    variants: DW_VARIANTS,
    workgroupSize: DIRECT_WG,
    body: ({ variant, load }) => {
      const parts = variant.split("_");
      const db = parts.includes("db"), slide = parts.includes("slide");
      const offs = offsets({ tx, kw, sw, dw });
      const init: string[] = [];
      for (let j = 0; j < co; j++) {
        for (let q = 0; q < ky; q++) {
          for (let kx = 0; kx < kw; kx++) init.push(`  var a${j}_${q}_${kx} = 0.0;`);
        }
        if (db) init.push(`  var s${j} = 0.0;`);
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
            `${ind}${decl}v${q}_${d} = select(0.0, ${load("x", `x[row${q} + cx${d}]`)}, ` +
              `rv${q} && mx${d});`,
          );
        }
        return out;
      };
      // dy loads and the multiply-adds of one step (output row oy, pixels ox0 .. +tx).
      const step = (ind: string): string[] => {
        const out: string[] = [];
        for (let j = 0; j < co; j++) {
          out.push(
            `${ind}let dr${j} = dyImg + (min(co0 + ${j}u, p.cOut - 1u) * p.oh + oy) * p.ow;`,
          );
          for (let px = 0; px < tx; px++) {
            out.push(
              `${ind}let d${j}_${px} = select(0.0, ${load("dy", `dy[dr${j} + q${px}]`)}, pv${px});`,
            );
          }
          if (db) {
            const sum = Array.from({ length: tx }, (_, px) => `d${j}_${px}`).join(" + ");
            out.push(`${ind}s${j} += ${sum};`);
          }
        }
        for (let q = 0; q < ky; q++) {
          for (let j = 0; j < co; j++) {
            for (let kx = 0; kx < kw; kx++) {
              let e = `a${j}_${q}_${kx}`;
              for (let px = 0; px < tx; px++) {
                e = `fma(d${j}_${px}, v${q}_${px * sw + kx * dw}, ${e})`;
              }
              out.push(`${ind}a${j}_${q}_${kx} = ${e};`);
            }
          }
        }
        return out;
      };
      const pixels = (ind: string): string[] => {
        const out = [`${ind}let ox0 = bx * ${tx}u;`, `${ind}let ix0 = i32(ox0 * ${sw}u) - p.pw;`];
        // Each input column's clamped index and mask once, for every kernel row (SwiftShader's
        // compiler hangs on a loop body that recomputes them per row: see direct.ts).
        for (const d of offs) {
          out.push(`${ind}let cx${d} = u32(clamp(ix0 + ${d}, 0, wMax));`);
          out.push(`${ind}let mx${d} = ix0 + ${d} >= 0 && ix0 + ${d} <= wMax;`);
        }
        for (let px = 0; px < tx; px++) {
          out.push(`${ind}let pv${px} = ox0 + ${px}u < p.ow;`);
          out.push(`${ind}let q${px} = min(ox0 + ${px}u, p.ow - 1u);`);
        }
        return out;
      };
      const loops: string[] = [];
      if (slide) {
        // Output rows advance by sh = dh input rows: kernel row q at oy + 1 reads what row q + 1
        // read at oy, so each step loads one new input row and shifts the others.
        loops.push(`    for (var bx = 0u; bx < p.nbx; bx++) {`);
        loops.push(...pixels("      "));
        for (let q = 0; q < ky - 1; q++) loops.push(...loadRow(q, "0u", "var ", "      "));
        for (const d of offs) loops.push(`      var v${ky - 1}_${d} = 0.0;`);
        loops.push(`      for (var oy = 0u; oy < p.oh; oy++) {`);
        loops.push(...loadRow(ky - 1, "oy", "", "        "));
        loops.push(...step("        "));
        for (let q = 0; q < ky - 1; q++) {
          for (const d of offs) loops.push(`        v${q}_${d} = v${q + 1}_${d};`);
        }
        loops.push(`      }`);
        loops.push(`    }`);
      } else {
        loops.push(`    for (var oy = 0u; oy < p.oh; oy++) {`);
        loops.push(`      for (var bx = 0u; bx < p.nbx; bx++) {`);
        loops.push(...pixels("        "));
        for (let q = 0; q < ky; q++) loops.push(...loadRow(q, "oy", "let ", "        "));
        loops.push(...step("        "));
        loops.push(`      }`);
        loops.push(`    }`);
      }
      const store: string[] = [];
      store.push(`  if (live) {`);
      for (let j = 0; j < co; j++) {
        store.push(`  if (co0 + ${j}u < p.cOut) {`);
        for (let q = 0; q < ky; q++) {
          store.push(`    if (ky0 + ${q}u < p.kh) {`);
          store.push(
            `      let o = ((s * p.cOut + co0 + ${j}u) * p.cIn + ci) * kk + (ky0 + ${q}u) * ${kw}u;`,
          );
          for (let kx = 0; kx < kw; kx++) store.push(`      part[o + ${kx}u] = a${j}_${q}_${kx};`);
          store.push(`    }`);
        }
        if (db) {
          store.push(
            `    if (ci == 0u && ky0 == 0u) { part[p.dbOff + s * p.cOut + co0 + ${j}u] = s${j}; }`,
          );
        }
        store.push(`  }`);
      }
      store.push(`  }`);
      return `// Thread t = s + splits * (ci + cIn * (kyBlock + kyBlocks * coBlock)): split s (images s*ips ..
// +ips), input channel ci, kernel rows ky0 = kyBlock*${ky} .. +${ky}, output channels
// co0 = coBlock*${co} .. +${co}. It sums dy[img, o, oy, ox] * x[img, ci, iy, ix] over its
// images and all output pixels (in steps of ${tx} along a row) into the ${co}x${ky}x${kw}
// weights (o, ci, ky, kx), written to part[s, o, ci, ky, kx]${
        db
          ? "; threads with ci = 0 and ky0 = 0 also write the sums of dy to part[dbOff + s*cOut + o]"
          : ""
      }.
// Lanes of a SIMD group differ in s only: they share every loop trip count. Loads convert to
// f32; every sum and part are f32.
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let total = p.splits * p.cIn * p.kyBlocks * p.coBlocks;
  let tRaw = gid.x + gid.y * nwg.x * WG;
  let live = tRaw < total;
  let t = min(tRaw, total - 1u);
  let s = t % p.splits;
  let ci = (t / p.splits) % p.cIn;
  let kb = (t / (p.splits * p.cIn)) % p.kyBlocks;
  let ky0 = kb * ${ky}u;
  let co0 = (t / (p.splits * p.cIn * p.kyBlocks)) * ${co}u;
  let kk = p.kh * ${kw}u;
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
    },
  })
);

/**
 * Records the weight (and bias) gradient of a direct convolution: `dw (+)= sum over images and
 * output pixels of dy ⊗ x`, `db (+)= sum of dy` (`[cOut, cIn, kh, kw]` and `[cOut]`: overwritten,
 * or accumulated when `accumulate`). Partial sums over splits of the images go to a scratch
 * buffer, then `reduceStrided` adds them up. Options `tile` and `splits` (or `split`) default
 * to `direct_plan.ts`'s choices.
 *
 * `x`, `dy`, `dw` and `db` are f32 or f16, each on its own (training: f16 `x` and `dy`, f32
 * `dw` and `db`); the partial sums are f32.
 *
 * @throws {TypeError} when a tensor is not f32/f16 (or f16 without `shader-f16`).
 * @throws {RangeError} when the partial sums exceed one binding.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bindingRange } from "../_binding.ts";
 * import { directConvWeightGrad } from "./direct_weight_grad.ts";
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
  io: { dw?: Tensor | undefined; db?: Tensor | undefined; x: TensorRange; dy: TensorRange },
  o: {
    accumulate: boolean;
    tile?: DirectWeightGradTile;
    /** The number of partial sums (default: about 2048 threads' worth). */
    splits?: number;
    /** The split as planned (`directWeightGradSplits`), instead of `splits`. */
    split?: DirectWeightGradSplit;
  },
): void {
  if (!io.dw && !io.db) return;
  const tile = o.tile ?? directWeightGradTile(s);
  const { splits, ips } = o.split ?? directWeightGradSplits(s, tile, gpu, o.splits);
  const nbx = Math.ceil(s.ow / tile.tx);
  const coBlocks = Math.ceil(s.cOut / tile.co);
  const kyBlocks = Math.ceil(s.kh / tile.ky);
  const kk = s.cOut * s.cIn * s.kh * s.kw;
  const db = io.db !== undefined;
  floatDTypes("conv2d", { x: io.x.tensor, dy: io.dy.tensor });
  floatDTypes("conv2d", { dw: io.dw, db: io.db }); // f32 or f16 (reduceStrided stores them)
  const part = gpu.empty([splits * (kk + (db ? s.cOut : 0))]);
  const variant = [db ? "db" : "", slides(s, tile) ? "slide" : ""].filter((v) => v !== "")
    .join("_") as (typeof DW_VARIANTS)[number];
  weightGradKernel(s.kw, s.sw, s.dw, tile.tx, tile.co, tile.ky).dispatch({
    op: "conv2d",
    variant,
    params: {
      nb: s.n,
      cIn: s.cIn,
      h: s.h,
      w: s.w,
      cOut: s.cOut,
      oh: s.oh,
      ow: s.ow,
      kh: s.kh,
      sh: s.sh,
      dh: s.dh,
      ph: s.ph,
      pw: s.pw,
      splits,
      ips,
      nbx,
      coBlocks,
      kyBlocks,
      xOff: io.x.base,
      dyOff: io.dy.base,
      dbOff: splits * kk,
    },
    bindings: { x: io.x, dy: io.dy, part },
    workgroups: grid1d(splits * s.cIn * kyBlocks * coBlocks, DIRECT_WG),
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
