/**
 * The register-blocked GEMM kernel (CPU adapters such as llvmpipe): no shared memory and no
 * barriers. Each thread computes a `TM x TN` block of C in registers straight from global memory,
 * loading vec4s along whichever dimension of each operand is contiguous (when it is a multiple of
 * 4), 4 k-steps at a time. llvmpipe runs invocations as SIMD lanes and loads per lane, so what
 * counts is the number of loads per FMA: big register blocks (8x8 to 16x16) win.
 *
 * One kernel description per transpose pair and tile (`gemm_reg_nt_8x4`); its variants are the
 * vec4 operands and the store of C (`store.ts`). A second description (`gemm_reg_stats_*`) is the
 * same body whose store also gathers batch statistics (`stats.ts`). (Over 500 lines: the one body
 * generator both share.)
 *
 * @module
 */

import { activationWgsl } from "../_activation_wgsl.ts";
import { defineKernel, type KernelContext, perSizes } from "../_kernel.ts";
import type { TensorRange } from "../_binding.ts";
import {
  biasVariants,
  gemmVariant,
  kSegName,
  REGISTER_VARIANTS,
  type RegisterVariant,
  rowBaseWgsl,
  rowsVariants,
  variantConfig,
} from "./store.ts";
import {
  STATS_PARAMS,
  type StatsAxis,
  statsDispatchOf,
  statsEndWgsl,
  statsRowWgsl,
  type StatsTiles,
} from "./stats.ts";
import {
  GEMM_PARAMS,
  type GemmProductBindings,
  type GemmProductDispatch,
  REGISTER_WG,
} from "./types.ts";

/** k-steps per iteration of the register kernel's main loop (4 or 8). */
const K_UNROLL = 4;

/** The register kernel's bindings (`grad_sums.ts` adds its own). */
export const BINDINGS = {
  a: { type: "float", access: "read", vec4: (v: string) => variantConfig(v).vecA },
  b: { type: "float", access: "read", vec4: (v: string) => variantConfig(v).vecB },
  c: { type: "float", access: "read_write", vec4: (v: string) => variantConfig(v).vecC },
  bias: { type: "float", access: "read", variants: biasVariants(REGISTER_VARIANTS) },
  c2: {
    type: "float",
    access: "read_write",
    vec4: (v: string) => variantConfig(v).vecC,
    variants: rowsVariants(REGISTER_VARIANTS),
  },
} as const;

/**
 * The register kernel of a transpose pair and a `tm x tn` block (built once per set).
 *
 * Thread (x, y) of workgroup (X, Y, z) computes the TM x TN block of C at rows
 * `(Y * WG_Y + y) * TM`, columns `(X * WG_X + x) * TN` of batch `z % batch`, over the k-range
 * `[s * kChunk, (s + 1) * kChunk)` with `s = z / batch`. Edge rows/columns are clamped for loads
 * and masked for stores. Fully unrolled: every operand value and accumulator is a named register
 * (llvmpipe keeps those in SIMD registers, arrays it spills).
 *
 * @example
 * ```ts
 * import { registerKernel } from "./register.ts";
 * const spec = registerKernel(false, true, 4, 8, false, false).spec({ a: "f32", b: "f32", c: "f32" }, "va_vb");
 * console.log(spec.name); // gemm_reg_nt_4x8_va_vb
 * ```
 */
export const registerKernel = perSizes((
  transA: boolean,
  transB: boolean,
  tm: number,
  tn: number,
  segKA: boolean,
  segKB: boolean,
) =>
  defineKernel({
    name: `gemm_reg_${transA ? "t" : "n"}${transB ? "t" : "n"}${
      kSegName(segKA, segKB)
    }_${tm}x${tn}`,
    doc: `Thread (x, y) of workgroup (X, Y, z): the ${tm}x${tn} block of C at rows ` +
      `(Y*${REGISTER_WG}+y)*${tm}, columns (X*${REGISTER_WG}+x)*${tn}, batch z % batch, ` +
      "k-split z / batch. No shared memory." +
      (segKA || segKB
        ? ` ${segKA ? "A" : ""}${segKA && segKB ? " and " : ""}` +
          `${segKB ? "B" : ""} read along k in segments (segKA/segKB, from kOff).`
        : ""),
    params: GEMM_PARAMS,
    bindings: BINDINGS,
    variants: REGISTER_VARIANTS,
    workgroupSize: [REGISTER_WG, REGISTER_WG, 1],
    body: (ctx) => registerBody(transA, transB, tm, tn, segKA, segKB, ctx),
  })
);

/**
 * Records a planned dispatch of the register kernel.
 *
 * @example
 * ```ts ignore
 * dispatchRegister(plan.passes[0].dispatches[0], { a, b, c });
 * ```
 */
export function dispatchRegister(
  d: GemmProductDispatch,
  bindings: GemmProductBindings,
): void {
  const c = d.config;
  registerKernel(c.transA, c.transB, c.tm, c.tn, !!c.segmentedKA, !!c.segmentedKB).dispatch({
    op: "gemm",
    variant: gemmVariant(c),
    params: d.params,
    bindings,
    workgroups: d.workgroups,
  });
}

/**
 * The variants of the register kernel that gathers batch statistics: those without an
 * activation (a batch norm's producer stores none), each with its channel axis (`strow`,
 * `stcol`).
 */
export const REGISTER_STATS_VARIANTS = REGISTER_VARIANTS.filter((v) => !variantConfig(v).activation)
  .flatMap((v) => [v === "" ? "strow" : `${v}_strow`, v === "" ? "stcol" : `${v}_stcol`]);

const STATS_BINDINGS = {
  ...BINDINGS,
  bias: { type: "float", access: "read", variants: biasVariants(REGISTER_STATS_VARIANTS) },
  c2: {
    type: "float",
    access: "read_write",
    vec4: (v: string) => variantConfig(v).vecC,
    variants: rowsVariants(REGISTER_STATS_VARIANTS),
  },
  // f32 vec4s (count, mean, mean correction, M2): one per channel and thread.
  stats: { type: "float", access: "read_write", vec4: true },
} as const;

/**
 * The register kernel that also gathers per-channel partial statistics of what it stores (see
 * `stats.ts`): the same C, bit for bit, plus `(count, mean, mean correction, M2)` per
 * (channel, thread along the reduced axis).
 *
 * @example
 * ```ts
 * import { registerStatsKernel } from "./register.ts";
 * const dtypes = { a: "f32", b: "f32", c: "f32", stats: "f32" } as const;
 * const spec = registerStatsKernel(false, false, 4, 8, false, false).spec(dtypes, "strow");
 * console.log(spec.name); // gemm_reg_stats_nn_4x8_strow
 * ```
 */
export const registerStatsKernel = perSizes((
  transA: boolean,
  transB: boolean,
  tm: number,
  tn: number,
  segKA: boolean,
  segKB: boolean,
) =>
  defineKernel({
    name: `gemm_reg_stats_${transA ? "t" : "n"}${transB ? "t" : "n"}${
      kSegName(segKA, segKB)
    }_${tm}x${tn}`,
    doc: `The register kernel (${tm}x${tn} blocks) whose store also writes the per-channel ` +
      "(count, mean, mean correction, M2) of each thread's stored values to stats[(channel * " +
      "statsTiles + statsBase + (z * statsTilesX + workgroup) * WG + thread) * 4]; channels are " +
      "rows of C (strow) or columns (stcol).",
    params: { ...GEMM_PARAMS, ...STATS_PARAMS },
    bindings: STATS_BINDINGS,
    variants: REGISTER_STATS_VARIANTS,
    workgroupSize: [REGISTER_WG, REGISTER_WG, 1],
    body: (ctx) => {
      const axis: StatsAxis = ctx.variant.endsWith("strow") ? "row" : "col";
      const variant = ctx.variant.replace(/_?st(row|col)$/, "") as RegisterVariant;
      const base = { ...ctx, variant } as unknown as KernelContext<
        typeof BINDINGS,
        RegisterVariant
      >;
      return registerBody(transA, transB, tm, tn, segKA, segKB, base, { stats: axis });
    },
  })
);

/**
 * Records a planned dispatch of the register kernel that gathers partial statistics.
 *
 * @example
 * ```ts ignore
 * dispatchRegisterStats(d, { a, b, c, stats }, { axis: "row", tiles, base, tilesX });
 * ```
 */
export function dispatchRegisterStats(
  d: GemmProductDispatch,
  bindings: GemmProductBindings & { readonly stats: TensorRange },
  s: StatsTiles,
): void {
  const c = d.config;
  const { variant, params } = statsDispatchOf(gemmVariant(c), d.params, s);
  registerStatsKernel(c.transA, c.transB, c.tm, c.tn, !!c.segmentedKA, !!c.segmentedKB).dispatch({
    op: "gemm",
    variant: variant as (typeof REGISTER_STATS_VARIANTS)[number],
    params,
    bindings,
    workgroups: d.workgroups,
  });
}

/**
 * What a kernel that gathers a batch norm's gradient sums as it stores C adds to the register
 * kernel's WGSL (`grad_sums.ts` builds it): declarations after the main loop, a statement per
 * stored element (`i`, `j`: its register row and store column, `e`: its element index in C's
 * binding, `v`: the value stored, a vec4 with `vecC`), and the partial sums' stores at the end.
 */
export interface GradSumsHooks {
  /** WGSL declarations before the store (accumulators, per-channel loads). */
  begin(): string[];
  /** The WGSL statements that add stored element(s) `v` at element index `e` to the sums. */
  add(i: number, j: number, e: string, v: string): string;
  /** The WGSL statements that write the thread's partial sums. */
  end(): string[];
}

/**
 * The body of the register kernel (see {@linkcode registerKernel}); with `extra.stats`, the batch
 * statistics gathered as C is stored (`stats.ts`), with `extra.gs`, what the kernels of
 * `grad_sums.ts` add to it as they store C.
 *
 * @returns The WGSL after the declarations.
 * @example
 * ```ts ignore
 * const wgsl = registerBody(false, false, 8, 8, false, false, ctx, { gs: hooks });
 * ```
 */
export function registerBody(
  transA: boolean,
  transB: boolean,
  tm: number,
  tn: number,
  segKA: boolean,
  segKB: boolean,
  { variant, load, store, dtypes }: KernelContext<typeof BINDINGS, RegisterVariant>,
  extra: { readonly stats?: StatsAxis; readonly gs?: GradSumsHooks } = {},
): string {
  const c = { ...variantConfig(variant), transA, transB };
  const { stats, gs } = extra;
  if ((segKA && transA) || (segKB && !transB)) {
    throw new TypeError("gemm: k segments need A [m, k] (segKA) and B [n, k] (segKB)");
  }
  const tn4 = tn / 4;
  const L: string[] = [];
  const kvecA = c.vecA && !c.transA; // A vectorized along k
  const kvecB = c.vecB && c.transB; // B vectorized along k
  const kvec = kvecA || kvecB;
  // Row index expressions (clamped) and column ones.
  L.push(
    `${activationWgsl(c.activation, c.vecC ? "vec4<f32>" : "f32")}${
      c.rowGroups ? `\n${rowBaseWgsl()}` : ""
    }
@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let r0 = (wg.y * WG_Y + l.y) * ${tm}u;
  let c0 = (wg.x * WG_X + l.x) * ${tn}u;
  ${stats ? "" : "if (r0 >= p.m || c0 >= p.n) { return; }"}
  let z = wg.z % p.batch;
  let kBeg = (wg.z / p.batch) * p.kChunk;
  let kEnd = ${
      stats
        // No early return (a thread past C's edge writes a count of 0): it runs no k-step.
        ? "select(kBeg, min(kBeg + p.kChunk, p.k), r0 < p.m && c0 < p.n)"
        : "min(kBeg + p.kChunk, p.k)"
    };
  let aBase = p.aOff + z * p.sA;
  let bBase = p.bOff + z * p.sB;`,
  );
  // A addressing.
  if (c.vecA) {
    L.push(`  let aB4 = aBase / 4u; let lda4 = p.lda / 4u;`);
    if (c.transA) {
      for (let i4 = 0; i4 < tm / 4; i4++) {
        L.push(`  let ar${i4} = min(r0 / 4u + ${i4}u, p.m / 4u - 1u);`);
      }
    } else {
      for (let i = 0; i < tm; i++) {
        L.push(`  let ar${i} = aB4 + min(r0 + ${i}u, p.m - 1u) * lda4;`);
      }
    }
  } else {
    for (let i = 0; i < tm; i++) {
      L.push(
        c.transA
          ? `  let ar${i} = aBase + min(r0 + ${i}u, p.m - 1u);`
          : `  let ar${i} = aBase + min(r0 + ${i}u, p.m - 1u) * p.lda;`,
      );
    }
  }
  // B addressing (B's columns in segments: one division per column, outside the k-loop).
  const colB = (j: string) => c.segmentedB ? `(${j} / p.segB) * p.segStrideB + ${j} % p.segB` : j;
  if (c.vecB) {
    L.push(`  let bB4 = bBase / 4u; let ldb4 = p.ldb / 4u;`);
    if (c.transB) {
      for (let j = 0; j < tn; j++) {
        L.push(`  let bc${j} = bB4 + min(c0 + ${j}u, p.n - 1u) * ldb4;`);
      }
    } else {
      for (let j4 = 0; j4 < tn4; j4++) {
        const q = `min(c0 / 4u + ${j4}u, p.n / 4u - 1u)`;
        if (c.segmentedB) {
          L.push(`  let bq${j4} = ${q} * 4u;`);
          L.push(`  let bc${j4} = (${colB(`bq${j4}`)}) / 4u;`);
        } else L.push(`  let bc${j4} = ${q};`);
      }
    }
  } else {
    for (let j = 0; j < tn; j++) {
      if (c.transB) {
        L.push(`  let bc${j} = bBase + min(c0 + ${j}u, p.n - 1u) * p.ldb;`);
      } else if (c.segmentedB) {
        L.push(`  let bq${j} = min(c0 + ${j}u, p.n - 1u);`);
        L.push(`  let bc${j} = bBase + ${colB(`bq${j}`)};`);
      } else L.push(`  let bc${j} = bBase + min(c0 + ${j}u, p.n - 1u);`);
    }
  }
  // Operands in k segments: a running offset of the current k (in vec4s when vectorized) and
  // its place in its segment, advanced without divisions in the k-loop.
  const kSeg = (x: "A" | "B", vec: boolean) => {
    const u = vec ? 4 : 1;
    const div = vec ? " / 4u" : "";
    L.push(
      `  let kg${x} = kBeg + p.kOff;`,
      `  var k${x}R = kg${x} % p.segK${x};`,
      `  var k${x}O = (kg${x} / p.segK${x}) * (p.segStrideK${x}${div}) + k${x}R${div};`,
      `  let k${x}J = p.segStrideK${x}${div} - p.segK${x}${div};`,
    );
    return (name: string): string[] => [
      `    let ${name} = k${x}O;`,
      `    k${x}R += ${u}u; k${x}O += 1u; if (k${x}R == p.segK${x}) { k${x}R = 0u; k${x}O += k${x}J; }`,
    ];
  };
  const nextA = segKA ? kSeg("A", c.vecA) : undefined;
  const nextB = segKB ? kSeg("B", c.vecB) : undefined;
  for (let i = 0; i < tm; i++) {
    for (let j4 = 0; j4 < tn4; j4++) L.push(`  var acc${i}_${j4} = vec4f(0.0);`);
  }
  // Loads of KS k-steps starting at kk; returns names of a(i, s) and b(s, j) values.
  const body = (ks: number, kExpr: string): string[] => {
    const out: string[] = [];
    const aval: string[][] = Array.from({ length: tm }, () => []);
    const bval: string[][] = Array.from({ length: ks }, () => []);
    // A values.
    if (c.vecA && !c.transA) {
      if (nextA) { for (let q = 0; q < ks / 4; q++) out.push(...nextA(`kA${q}`)); }
      for (let i = 0; i < tm; i++) {
        for (let q = 0; q < ks / 4; q++) {
          const at = nextA ? `ar${i} + kA${q}` : `ar${i} + ${kExpr} / 4u + ${q}u`;
          out.push(`    let av${i}_${q} = ${load("a", `a[${at}]`)};`);
        }
        for (let s = 0; s < ks; s++) aval[i][s] = `av${i}_${s >> 2}[${s & 3}]`;
      }
    } else if (c.vecA && c.transA) {
      for (let s = 0; s < ks; s++) {
        out.push(`    let ak${s} = aB4 + (${kExpr} + ${s}u) * lda4;`);
        for (let i4 = 0; i4 < tm / 4; i4++) {
          out.push(`    let av${s}_${i4} = ${load("a", `a[ak${s} + ar${i4}]`)};`);
          for (let q = 0; q < 4; q++) aval[i4 * 4 + q][s] = `av${s}_${i4}[${q}]`;
        }
      }
    } else {
      for (let s = 0; s < ks; s++) {
        const kk = s === 0 ? kExpr : `${kExpr} + ${s}u`;
        const koff = c.transA ? `(${kk}) * p.lda` : `${kk}`;
        if (c.transA) out.push(`    let ak${s} = ${koff};`);
        if (nextA) out.push(...nextA(`kA${s}`));
        for (let i = 0; i < tm; i++) {
          const ai = `a[ar${i} + ${c.transA ? `ak${s}` : nextA ? `kA${s}` : `${kk}`}]`;
          out.push(`    let av${s}_${i} = ${load("a", ai)};`);
          aval[i][s] = `av${s}_${i}`;
        }
      }
    }
    // B values, as vec4 groups of columns: bval[s][j4] is a vec4 expression.
    if (c.vecB && !c.transB) {
      for (let s = 0; s < ks; s++) {
        out.push(`    let bk${s} = (${kExpr} + ${s}u) * ldb4 + bB4;`);
        for (let j4 = 0; j4 < tn4; j4++) {
          out.push(`    let bv${s}_${j4} = ${load("b", `b[bk${s} + bc${j4}]`)};`);
          bval[s][j4] = `bv${s}_${j4}`;
        }
      }
    } else if (c.vecB && c.transB) {
      if (nextB) { for (let q = 0; q < ks / 4; q++) out.push(...nextB(`kB${q}`)); }
      for (let j = 0; j < tn; j++) {
        for (let q = 0; q < ks / 4; q++) {
          const at = nextB ? `bc${j} + kB${q}` : `bc${j} + ${kExpr} / 4u + ${q}u`;
          out.push(`    let bw${j}_${q} = ${load("b", `b[${at}]`)};`);
        }
      }
      for (let s = 0; s < ks; s++) {
        for (let j4 = 0; j4 < tn4; j4++) {
          const q = [0, 1, 2, 3].map((x) => `bw${j4 * 4 + x}_${s >> 2}[${s & 3}]`).join(", ");
          bval[s][j4] = `vec4f(${q})`;
        }
      }
    } else {
      for (let s = 0; s < ks; s++) {
        const kk = s === 0 ? kExpr : `${kExpr} + ${s}u`;
        if (!c.transB) out.push(`    let bk${s} = (${kk}) * p.ldb;`);
        if (nextB) out.push(...nextB(`kB${s}`));
        for (let j = 0; j < tn; j++) {
          const bj = `b[bc${j} + ${c.transB ? (nextB ? `kB${s}` : `${kk}`) : `bk${s}`}]`;
          out.push(`    let bs${s}_${j} = ${load("b", bj)};`);
        }
        for (let j4 = 0; j4 < tn4; j4++) {
          const q = [0, 1, 2, 3].map((x) => `bs${s}_${j4 * 4 + x}`).join(", ");
          bval[s][j4] = `vec4f(${q})`;
        }
      }
    }
    // All k-steps of one accumulator in a row: a spilled accumulator is loaded and stored
    // once per iteration instead of once per k-step.
    for (let i = 0; i < tm; i++) {
      for (let j4 = 0; j4 < tn4; j4++) {
        const terms = [];
        for (let s = 0; s < ks; s++) terms.push([aval[i][s], bval[s][j4]]);
        let expr = `acc${i}_${j4}`;
        for (const [av, bv] of terms) expr = `fma(vec4f(${av}), ${bv}, ${expr})`;
        out.push(`    acc${i}_${j4} = ${expr};`);
      }
    }
    return out;
  };
  L.push(`  var kk = kBeg;`);
  L.push(`  for (; kk + ${K_UNROLL}u <= kEnd; kk += ${K_UNROLL}u) {`);
  L.push(...body(K_UNROLL, "kk"));
  L.push(`  }`);
  if (K_UNROLL > 4) {
    L.push(`  for (; kk + 4u <= kEnd; kk += 4u) {`);
    L.push(...body(4, "kk"));
    L.push(`  }`);
  }
  if (!kvec) {
    L.push(`  for (; kk < kEnd; kk++) {`);
    L.push(...body(1, "kk"));
    L.push(`  }`);
  }
  // Stores: column offsets once per column (one division per thread when segmented).
  L.push(`  let cz = p.cOff + wg.z * p.sC;`);
  const step = c.vecC ? 4 : 1; // columns per store
  const nOff = tn / step;
  if (c.segmented) {
    // With row groups each row's group has its own segment stride: keep the segment and the
    // offset in it per column, and combine them per row.
    L.push(`  var sq = c0 / p.seg; var sr = c0 % p.seg;`);
    for (let j = 0; j < nOff; j++) {
      L.push(
        c.rowGroups
          ? `  let cq${j} = sq; let cr${j} = sr;`
          : `  let co${j} = sq * p.segStride + sr;`,
      );
      if (j < nOff - 1) L.push(`  sr += ${step}u; if (sr == p.seg) { sr = 0u; sq += 1u; }`);
    }
  } else {
    for (let j = 0; j < nOff; j++) L.push(`  let co${j} = (c0 + ${j * step}u) * p.ldcCol;`);
  }
  if (c.bias === "col") {
    for (let j = 0; j < tn; j++) {
      const bj = `bias[p.biasOff + z * p.sBias + min(c0 + ${j}u, p.n - 1u)]`;
      L.push(`  let bj${j} = ${load("bias", bj)};`);
    }
  }
  if (gs) L.push(...gs.begin());
  for (let i = 0; i < tm; i++) {
    // Statistics: the stored values kept (0 where nothing is stored) for the row's statistics.
    if (stats) {
      for (let j = 0; j < nOff; j++) L.push(`  var o${i}_${j} = ${c.vecC ? "vec4f(0.0)" : "0.0"};`);
    }
    L.push(`  if (r0 + ${i}u < p.m) {`);
    if (c.rowGroups) {
      L.push(`    let rb = rowBase(r0 + ${i}u);`);
      L.push(`    let ri = rb.x + wg.z * p.sC;`);
    } else L.push(`    let ri = cz + (r0 + ${i}u) * p.ldc;`);
    if (c.bias === "row") {
      const bi = `bias[p.biasOff + z * p.sBias + r0 + ${i}u]`;
      L.push(`    let bi = ${load("bias", bi)};`);
    }
    for (let j = 0; j < nOff; j++) {
      const guard = j === 0 && !stats ? "" : `if (c0 + ${j * step}u < p.n) `;
      const co = c.rowGroups ? `cq${j} * rb.y + cr${j}` : `co${j}`;
      const idx = c.vecC ? `(ri + ${co}) / 4u` : `ri + ${co}`;
      const terms = c.vecC ? [`p.alpha * acc${i}_${j}`] : [`p.alpha * acc${i}_${j >> 2}[${j & 3}]`];
      // Row groups: the row's group says whether C or c2 holds it.
      let prior = "";
      if (c.beta && c.rowGroups) {
        prior = `var o = ${c.vecC ? "vec4f(0.0)" : "0.0"}; if (rb.z == 0u) { o = ${
          load("c", `c[${idx}]`)
        }; } else { o = ${load("c2", `c2[${idx}]`)}; } `;
        terms.push("p.beta * o");
      } else if (c.beta) terms.push(`p.beta * ${load("c", `c[${idx}]`)}`);
      if (c.bias === "row") terms.push(c.vecC ? "vec4f(bi)" : "bi");
      if (c.bias === "col") {
        terms.push(
          c.vecC ? `vec4f(${[0, 1, 2, 3].map((q) => `bj${j * 4 + q}`).join(", ")})` : `bj${j}`,
        );
      }
      const v = terms.join(" + ");
      let value = c.activation ? `act(${v})` : v;
      if (stats) {
        prior += `o${i}_${j} = ${value}; `;
        value = `o${i}_${j}`;
      }
      const put = c.rowGroups
        ? `let v = ${value}; if (rb.z == 0u) { ${store("c", `c[${idx}]`, "v")} } else { ${
          store("c2", `c2[${idx}]`, "v")
        } }`
        : store("c", `c[${idx}]`, value);
      if (gs) {
        const put1 = `let v = ${value}; ${store("c", `c[${idx}]`, "v")}`;
        L.push(`    ${guard}{ ${prior}${put1} ${gs.add(i, j, `ri + ${co}`, "v")} }`);
      } else L.push(`    ${guard}{ ${prior}${put} }`);
    }
    L.push(`  }`);
    if (stats) {
      // As stored: rounded to C's type.
      const values = Array.from({ length: tn }, (_, j) => {
        const o = c.vecC ? `o${i}_${j >> 2}[${j & 3}]` : `o${i}_${j}`;
        return dtypes.c === "f16" ? `f32(f16(${o}))` : o;
      });
      L.push(statsRowWgsl(stats, { tm, tn, wg: REGISTER_WG }, i, values));
    }
  }
  if (stats) L.push(statsEndWgsl(stats, { tm, tn, wg: REGISTER_WG }));
  if (gs) L.push(...gs.end());
  L.push(`}`);
  return L.join("\n");
}
