// Batch normalization from the statistics its producer gathered (kernels/batchnorm/partials.ts):
// conv2d (im2col and pointwise GEMMs, register and shared-memory kernels) and linear (gemm)
// storing their output and per-(channel, tile) partial statistics, then batchNormForward
// merging them instead of reducing its input. Checked against the old path (the producer alone, then the batch norm's own reduction) and the Float64
// references: the stored output bit for bit, the batch norm's output, saved and running
// statistics within the batch-norm suites' tolerances, the backward (dx, dW, db, dγ, dβ) from
// those statistics; the merge kernel on synthetic tiles of values far from zero against the
// Float64 merge. The fusion is forced on (setBnFusionMode) and each GEMM family forced in
// turn; the direct kernel does not gather (the batch norm reduces its input itself). Also the
// GEMM's own variants (k segments, row groups, k-passes, batches) against Float64. (Over 500
// lines: the producers' cases and their shared comparison of the two batch-norm paths.)
import type { Gpu, Shape, Tensor } from "../../gpu/mod.ts";
import type { ActivationKind } from "../../kernels/activation.ts";
import {
  batchNormBackward,
  batchNormForward,
  type ChannelPartials,
} from "../../kernels/batchnorm/index.ts";
import { checkConv2d, conv2dBackward, conv2dForward } from "../../kernels/conv2d/index.ts";
import {
  gemm,
  gemmProblem,
  gemmStatsLayout,
  gemmStrided,
  type GemmVariant,
  planGemm,
  runGemmPlan,
  type StatsAxis,
  type StridedGemm,
} from "../../kernels/gemm/index.ts";
import { adapterProfile } from "../../kernels/_adapter.ts";
import { bindingRange } from "../../kernels/_binding.ts";
import { setBnFusionMode } from "../../kernels/batchnorm/fusion_mode.ts";
import assert from "../_assert.ts";
import type { KernelCheck } from "../_check.ts";
import { batchNormTrainRef } from "../cpu_ref/batchnorm.ts";
import { mergePartialsRef, tileStatsRef } from "../cpu_ref/bn_stats.ts";
import { assertClose, type CloseOptions, f16Tolerance, Rng, tensorOf } from "../harness.ts";

const EPS = 1e-5, MOMENTUM = 0.1;
const TOL = { rtol: 1e-4, atol: 1e-4 }, GRAD = { rtol: 1e-4, atol: 1e-3 };
type DT = "f32" | "f16";

/** A convolution followed by a batch norm (and an activation); `off`: the output's mean. */
interface ConvCase {
  readonly n: number;
  readonly cIn: number;
  readonly h: number;
  readonly w: number;
  readonly cOut: number;
  readonly k: number;
  readonly pad?: number;
  readonly stride?: number;
  readonly off: number;
  readonly act?: ActivationKind;
  /** Force the direct kernel (default: the GEMM paths), which does not gather. */
  readonly direct?: boolean;
}

const CONV_CASES: readonly ConvCase[] = [
  { n: 2, cIn: 3, h: 7, w: 5, cOut: 5, k: 3, pad: 1, off: 0, act: "relu" }, // im2col, odd sizes
  { n: 1, cIn: 8, h: 6, w: 6, cOut: 7, k: 1, off: 0, act: "sigmoid" }, // pointwise (one GEMM), n = 1
  { n: 3, cIn: 4, h: 9, w: 9, cOut: 16, k: 1, off: 2 }, // pointwise batched over images
  { n: 2, cIn: 6, h: 11, w: 13, cOut: 9, k: 3, pad: 1, stride: 2, off: -1, act: "relu" },
  { n: 4, cIn: 5, h: 10, w: 10, cOut: 33, k: 3, pad: 1, off: 0, act: "relu" }, // several row tiles
  // large mean relative to the spread (no E[x²] - E[x]² cancellation)
  { n: 2, cIn: 3, h: 12, w: 12, cOut: 6, k: 3, pad: 1, off: 500 },
  { n: 3, cIn: 16, h: 9, w: 9, cOut: 11, k: 1, off: 1000, act: "relu" },
  // more than one shared-memory tile along both axes
  { n: 2, cIn: 3, h: 10, w: 9, cOut: 70, k: 3, pad: 1, off: 3 },
  // the direct kernel: it does not gather
  { n: 2, cIn: 1, h: 11, w: 9, cOut: 6, k: 5, pad: 2, off: 0, act: "sigmoid", direct: true },
];

const rand = (rng: Rng, k: number, scale: number, off = 0) =>
  rng.normalArray(k).map((v) => off + scale * v);

/** Fresh batch-norm state: weights in [0.5, 1.5], biases N(0, 1), running stats 0 and 1. */
function bnState(gpu: Gpu, rng: Rng, c: number) {
  const weight = rng.uniformArray(c, 0.5, 1.5), bias = rng.normalArray(c);
  return () => ({
    saveMean: gpu.empty([c]),
    saveInvStd: gpu.empty([c]),
    runningMean: gpu.zeros([c]),
    runningVar: gpu.tensor(new Float32Array(c).fill(1), { shape: [c] }),
    weight: tensorOf(gpu, weight, { shape: [c] }),
    bias: tensorOf(gpu, bias, { shape: [c] }),
  });
}

const read = async (t: Tensor) => Float64Array.from(await t.toArray() as ArrayLike<number>);

/**
 * The batch norm (with `act`) of a producer's output `y` `[n, c, hw]` twice, from its own
 * reduction and from `partials`, then both backwards from the same `dy`: every output compared
 * (fused vs old path within the suites' tolerances; statistics also against the Float64
 * reference of `y`). Returns both input gradients for the producer's backward.
 */
async function compareBn(
  gpu: Gpu,
  rng: Rng,
  io: { y: Tensor; partials: ChannelPartials },
  p: { n: number; c: number; hw: number; act?: ActivationKind; what: string },
): Promise<{ dxOld: Tensor; dxNew: Tensor }> {
  const { n, c, hw, act, what } = p;
  const shape = io.y.shape, dt = io.y.dtype as DT;
  const mk = bnState(gpu, rng, c);
  const sOld = mk(), sNew = mk();
  const zOld = gpu.empty(shape, { dtype: dt }), zNew = gpu.empty(shape, { dtype: dt });
  const bp = { n, c, hw, eps: EPS, momentum: MOMENTUM, activation: act };
  batchNormForward({ ...sOld, y: zOld, x: io.y }, { ...bp, training: true });
  batchNormForward({ ...sNew, y: zNew, x: io.y, partials: io.partials }, {
    ...bp,
    training: true,
  });
  const y = await read(io.y);
  const ref = batchNormTrainRef(n, c, hw, y, await read(sOld.weight), await read(sOld.bias), EPS);
  const yScale = Math.max(...y.map(Math.abs));
  const zTol: CloseOptions = dt === "f16" ? f16Tolerance(4, n * hw * 2 ** -13) : TOL;
  assertClose(await read(zNew), await read(zOld), { ...zTol, what: `${what}: BN output` });
  for (const [k, refv] of [["saveMean", ref.mean], ["saveInvStd", ref.invstd]] as const) {
    const got = await read(sNew[k]);
    assertClose(got, await read(sOld[k]), { ...TOL, what: `${what}: ${k} vs old path` });
    // the mean to f32 accuracy of the data's magnitude
    const tol = k === "saveMean" ? { rtol: 1e-6, atol: yScale * 2e-7 } : { rtol: 2e-6, atol: 0 };
    assertClose(got, refv, { ...tol, what: `${what}: ${k} vs Float64` });
  }
  for (const k of ["runningMean", "runningVar"] as const) {
    assertClose(await read(sNew[k]), await read(sOld[k]), { ...TOL, what: `${what}: ${k}` });
  }
  // Backward from each forward's statistics (and output), the same dy.
  const dy = tensorOf(gpu, rand(rng, n * c * hw, 1), { dtype: dt, shape });
  const dxOld = gpu.empty(shape, { dtype: dt }), dxNew = gpu.empty(shape, { dtype: dt });
  const grads = [0, 1].map(() => ({ dweight: gpu.zeros([c]), dbias: gpu.zeros([c]) }));
  for (const [i, s, z, dx] of [[0, sOld, zOld, dxOld], [1, sNew, zNew, dxNew]] as const) {
    batchNormBackward({ ...s, ...grads[i], dx, dy, x: io.y, y: act ? z : undefined }, bp);
  }
  const gTol: CloseOptions = dt === "f16" ? f16Tolerance(4, n * hw * 2 ** -13) : GRAD;
  assertClose(await read(dxNew), await read(dxOld), { ...gTol, what: `${what}: BN dx` });
  for (const k of ["dweight", "dbias"] as const) {
    assertClose(await read(grads[1][k]), await read(grads[0][k]), {
      ...GRAD,
      atol: GRAD.atol * Math.sqrt(n * hw),
      what: `${what}: BN ${k}`,
    });
  }
  for (const t of [...Object.values(sOld), ...Object.values(sNew), zOld, zNew, dy]) t.dispose();
  for (const g of grads) for (const t of Object.values(g)) t.dispose();
  return { dxOld, dxNew };
}

/** Counts and the Float64 merge of the partials against the statistics of `y` `[n, c, hw]`. */
async function checkPartials(
  partials: ChannelPartials,
  y: Tensor,
  p: { n: number; c: number; hw: number; what: string },
): Promise<void> {
  const { n, c, hw, what } = p;
  const data = await read(y);
  const merged = mergePartialsRef(await read(partials.partials), c, partials.tiles);
  const yScale = Math.max(...data.map(Math.abs));
  for (let ch = 0; ch < c; ch++) {
    const values: number[] = [];
    for (let b = 0; b < n; b++) {
      for (let i = 0; i < hw; i++) values.push(data[(b * c + ch) * hw + i]);
    }
    const want = tileStatsRef(values);
    assert.equal(merged[ch].count, want.count, `${what}: channel ${ch} count`);
    assertClose([merged[ch].mean], [want.mean], {
      rtol: 1e-6,
      atol: yScale * 2e-7,
      what: `${what}: channel ${ch} merged mean`,
    });
    assertClose([merged[ch].m2], [want.m2], {
      rtol: 1e-5,
      atol: 1e-6 * want.count,
      what: `${what}: channel ${ch} merged M2`,
    });
  }
}

/** Whether exact equality holds (bit for bit, NaN equal to NaN). */
async function assertSameBits(a: Tensor, b: Tensor, what: string): Promise<void> {
  const x = await a.toArray(), y = await b.toArray();
  let diff = 0;
  for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) diff++;
  assert.equal(diff, 0, `${what}: ${diff} of ${x.length} stored elements differ`);
}

async function convCase(
  gpu: Gpu,
  rng: Rng,
  cs: ConvCase,
  dt: DT,
  variant: GemmVariant,
): Promise<void> {
  const { n, cIn, h, w, cOut, k } = cs;
  const p = {
    n,
    cIn,
    h,
    w,
    cOut,
    kernel: k,
    padding: cs.pad ?? 0,
    stride: cs.stride ?? 1,
    direct: cs.direct ?? false,
    gemm: { variant },
  };
  const shape = checkConv2d(p);
  const hw = shape[2] * shape[3];
  const what = `${dt} ${variant} conv ${JSON.stringify(cs)}`;
  const x = tensorOf(gpu, rand(rng, n * cIn * h * w, 1), { dtype: dt, shape: [n, cIn, h, w] });
  const wt = tensorOf(gpu, rand(rng, cOut * cIn * k * k, 1 / Math.sqrt(cIn * k * k)), {
    dtype: dt,
    shape: [cOut, cIn, k, k],
  });
  const b = tensorOf(gpu, rand(rng, cOut, 1, cs.off), { shape: [cOut] });
  const yOld = gpu.empty(shape, { dtype: dt }), yNew = gpu.empty(shape, { dtype: dt });
  assert.equal(conv2dForward({ y: yOld, x, w: wt, b }, p), undefined);
  // With an activation fused, nothing is gathered (a batch norm never follows one).
  if (cs.act) {
    const yAct = gpu.empty(shape, { dtype: dt });
    const none = conv2dForward({ y: yAct, x, w: wt, b }, { ...p, stats: true, activation: cs.act });
    assert.equal(none, undefined, `${what}: nothing gathered with an activation`);
    yAct.dispose();
  }
  const partials = conv2dForward({ y: yNew, x, w: wt, b }, { ...p, stats: true });
  await assertSameBits(yNew, yOld, what);
  if (cs.direct) {
    assert.equal(partials, undefined, `${what}: the direct kernel gathers no statistics`);
    for (const t of [x, wt, b, yOld, yNew]) t.dispose();
    return;
  }
  assert.ok(partials, `${what}: the ${variant} GEMM gathers the statistics`);
  await checkPartials(partials, yNew, { n, c: cOut, hw, what });
  const { dxOld, dxNew } = await compareBn(gpu, rng, { y: yNew, partials }, {
    n,
    c: cOut,
    hw,
    act: cs.act,
    what,
  });
  // The convolution's backward from each batch norm's input gradient.
  const back = () => ({
    dx: gpu.empty(x.shape, { dtype: dt }),
    dw: gpu.zeros(wt.shape),
    db: gpu.zeros([cOut]),
  });
  const gOld = back(), gNew = back();
  conv2dBackward({ ...gOld, dy: dxOld, x, w: wt }, p);
  conv2dBackward({ ...gNew, dy: dxNew, x, w: wt }, p);
  for (const key of ["dx", "dw", "db"] as const) {
    const got = await read(gNew[key]), want = await read(gOld[key]);
    const scale = Math.max(1, ...want.map(Math.abs));
    // f16: the batch norm's dx may differ by an f16 rounding per element; dW and db sum them.
    const tol = dt === "f16" && key === "dx" ? f16Tolerance(scale, 2 ** -8) : {
      ...GRAD,
      atol: GRAD.atol * scale * (dt === "f16" ? Math.sqrt(n * hw) : 1),
    };
    assertClose(got, want, { ...tol, what: `${what}: conv ${key}` });
  }
  partials.partials.dispose();
  for (const t of [x, wt, b, yOld, yNew, dxOld, dxNew, ...Object.values(gOld)]) t.dispose();
  for (const t of Object.values(gNew)) t.dispose();
}

/** linear -> BatchNorm1d: the channels are C's columns. */
async function linearCase(
  gpu: Gpu,
  rng: Rng,
  cs: { n: number; fin: number; fout: number; off: number; act?: ActivationKind },
  dt: DT,
  variant: GemmVariant,
  swap: boolean,
): Promise<void> {
  const { n, fin, fout } = cs;
  const what = `${dt} ${variant}${swap ? " swapped" : ""} linear ${JSON.stringify(cs)}`;
  const x = tensorOf(gpu, rand(rng, n * fin, 1), { dtype: dt, shape: [n, fin] });
  const wt = tensorOf(gpu, rand(rng, fout * fin, 1 / Math.sqrt(fin)), {
    dtype: dt,
    shape: [fout, fin],
  });
  const b = tensorOf(gpu, rand(rng, fout, 1, cs.off), { shape: [fout] });
  const yOld = gpu.empty([n, fout], { dtype: dt }), yNew = gpu.empty([n, fout], { dtype: dt });
  const gp = { m: n, n: fout, k: fin, transB: true, variant, swap };
  gemm({ c: yOld, a: x, b: wt, bias: b }, gp);
  const partials = gemm({ c: yNew, a: x, b: wt, bias: b }, { ...gp, stats: "col" });
  await assertSameBits(yNew, yOld, what);
  {
    assert.ok(partials, `${what}: the ${variant} GEMM gathers the statistics`);
    await checkPartials(partials, yNew, { n, c: fout, hw: 1, what });
    const { dxOld, dxNew } = await compareBn(gpu, rng, { y: yNew, partials }, {
      n,
      c: fout,
      hw: 1,
      act: cs.act,
      what,
    });
    partials.partials.dispose();
    dxOld.dispose();
    dxNew.dispose();
  }
  for (const t of [x, wt, b, yOld, yNew]) t.dispose();
}

const LINEAR_CASES = [
  { n: 2, fin: 400, fout: 120, off: 0, act: "sigmoid" as const }, // lenet-bn's
  { n: 37, fin: 13, fout: 9, off: 300, act: "relu" as const }, // odd sizes, large mean
  { n: 130, fin: 8, fout: 5, off: -2 }, // several row tiles
];

/**
 * The merge kernel alone: tiles of random sizes (some empty) of values with a large mean and a
 * small spread, their (count, mean, correction, M2) in Float64 rounded to f32 (the mean as the
 * sum of two f32 values), merged on the GPU; against the
 * Float64 statistics of the values, at least as close as the old path's reduction of the same
 * values.
 */
async function mergeCheck(
  gpu: Gpu,
  cases: readonly (readonly [n: number, c: number, hw: number, off: number, tiles?: number])[] = [
    [3, 4, 50, 1e3],
    [5, 3, 17, -250],
    [2, 2, 401, 4e4],
    // ~2,000 tiles per channel: the merge's one-workgroup-per-channel variant.
    [2, 3, 20000, 3e3],
  ],
): Promise<void> {
  const rng = new Rng(71);
  for (const [n, c, hw, off, count] of cases) {
    const N = n * hw, shape: Shape = [n, c, hw];
    const x = Float64Array.from(rand(rng, n * c * hw, 1, off), Math.fround);
    // Tiles of each channel's values in (sample, position) order, random sizes, some empty; or
    // `count` tiles of nearly equal sizes.
    const cuts = [0];
    if (count === undefined) {
      while (cuts.at(-1)! < N) cuts.push(Math.min(N, cuts.at(-1)! + rng.int(40)));
    } else for (let t = 1; t <= count; t++) cuts.push(Math.round(t * N / count));
    const tiles = cuts.length - 1;
    const parts = new Float32Array(c * tiles * 4);
    for (let ch = 0; ch < c; ch++) {
      const values = Array.from(
        { length: N },
        (_, e) => x[(Math.floor(e / hw) * c + ch) * hw + (e % hw)],
      );
      for (let t = 0; t < tiles; t++) {
        const s = tileStatsRef(values.slice(cuts[t], cuts[t + 1]));
        const hi = Math.fround(s.mean);
        parts.set([s.count, hi, s.mean - hi, s.m2], (ch * tiles + t) * 4);
      }
    }
    const partials = { partials: gpu.tensor(parts, { shape: [parts.length] }), tiles };
    const xt = tensorOf(gpu, x, { shape });
    const mk = bnState(gpu, rng, c);
    const sOld = mk(), sNew = mk();
    const y = gpu.empty(shape);
    const bp = { n, c, hw, eps: EPS, momentum: MOMENTUM, training: true };
    batchNormForward({ ...sOld, y, x: xt }, bp);
    batchNormForward({ ...sNew, y, x: xt, partials }, bp);
    const ref = batchNormTrainRef(n, c, hw, x, await read(sOld.weight), await read(sOld.bias), EPS);
    const what = `merge n=${n} c=${c} hw=${hw} mean ${off}, ${tiles} tiles`;
    for (const [k, want] of [["saveMean", ref.mean], ["saveInvStd", ref.invstd]] as const) {
      const got = await read(sNew[k]), old = await read(sOld[k]);
      const err = (a: Float64Array) => Math.max(...a.map((v, i) => Math.abs(v - want[i])));
      // f32 accuracy of the values (the mean) or of the spread (1/std), and not worse than the
      // old path's by more than one rounding of the result.
      const ulp = Math.max(...want.map((v) => Math.abs(v))) * 2 ** -23;
      assert.ok(
        err(got) <= err(old) + ulp,
        `${what}: ${k} error ${err(got)} vs old path ${err(old)}`,
      );
      assertClose(got, want, { rtol: 1e-6, atol: 2 * ulp, what: `${what}: ${k}` });
    }
    for (const t of [partials.partials, xt, y, ...Object.values(sOld), ...Object.values(sNew)]) {
      t.dispose();
    }
  }
}

/**
 * The GEMM's own variants with statistics: A read along k in segments (conv2d's in-place NCHW
 * operand), C's rows in two groups (the merged 1x1 convolutions' store), several passes over k
 * (the last one, reading C, gathers), a batch; each kernel family, each channel axis, f32 and
 * f16 C. The stored C bit for bit as without statistics; the merged partials against the
 * Float64 statistics of the stored values.
 */
async function gemmVariantsCheck(gpu: Gpu, dt: DT): Promise<void> {
  const rng = new Rng(dt === "f32" ? 81 : 82);
  const profile = adapterProfile(gpu);
  const cases = [
    { what: "k segments", m: 13, pixels: 7, images: 3, n: 9, kseg: true },
    { what: "row groups", m: 11, pixels: 10, images: 2, n: 0, rows: [5, 6] },
    { what: "k passes", m: 6, pixels: 1, images: 1, n: 21, k: 1, passes: true },
    { what: "batch", m: 9, pixels: 1, images: 1, n: 17, k: 30, batch: 3 },
  ];
  for (const variant of ["register", "shared"] as const) {
    for (const cs of cases) {
      for (const axis of ["row", "col"] as StatsAxis[]) {
        if (cs.rows && axis === "col") continue; // row groups: a convolution's channels, rows
        const batch = cs.batch ?? 1;
        // k segments: A = NCHW dy [images, m, pixels] as [m, images * pixels]; C = A . B^T.
        // k passes: k past one dispatch's (gemm/plan.ts: 240,000 register, 32,768 shared).
        const kPasses = variant === "register" ? 240_008 : 40_000;
        const k = cs.kseg ? cs.images * cs.pixels : cs.rows ? 8 : cs.passes ? kPasses : cs.k!;
        const m = cs.m, n = cs.rows ? cs.images * cs.pixels : cs.n;
        const a = tensorOf(gpu, rand(rng, batch * m * k, 1), { dtype: dt, shape: [batch * m * k] });
        const bT = cs.kseg || !cs.rows;
        const b = tensorOf(gpu, rand(rng, batch * k * n, 1 / Math.sqrt(k)), {
          dtype: dt,
          shape: [batch * k * n],
        });
        const biasLen = axis === "row" ? m : n;
        const bias = tensorOf(gpu, rand(rng, biasLen, 1, 50), { shape: [biasLen] });
        // Row groups: group 0 into channels [1, 1 + g0) of a [images, g0 + 2, pixels] tensor at 0,
        // group 1 into its own [images, g1, pixels] after it; all in one C.
        const P = cs.pixels, g = cs.rows ?? [];
        const second = cs.rows ? cs.images * (g[0] + 2) * P + 4 : 0;
        const cLen = cs.rows ? second + cs.images * g[1] * P : batch * m * n;
        const c0 = tensorOf(gpu, rand(rng, cLen, 1), { dtype: dt, shape: [cLen] });
        const cOld = tensorOf(gpu, await read(c0), { dtype: dt, shape: [cLen] });
        const beta = cs.passes ? 0.5 : 0;
        const mk = (c: Tensor): StridedGemm => ({
          m,
          n,
          k,
          batch,
          transA: false,
          transB: bT,
          alpha: 1,
          beta,
          a: bindingRange(a, 0, a.size),
          b: bindingRange(b, 0, b.size),
          c: bindingRange(c, 0, cLen),
          lda: cs.kseg ? P : k,
          ldb: bT ? k : n,
          ldc: cs.rows ? P : n,
          strideA: batch > 1 ? m * k : 0,
          strideB: batch > 1 ? k * n : 0,
          strideC: batch > 1 ? m * n : 0,
          ...(cs.kseg ? { segmentKA: P, segmentStrideKA: m * P } : {}),
          ...(cs.rows
            ? {
              segment: P,
              segmentStride: (g[0] + 2) * P,
              rowGroups: [
                { row: 0, base: P, segmentStride: (g[0] + 2) * P },
                { row: g[0], base: second, segmentStride: g[1] * P },
              ],
            }
            : {}),
          bias: bindingRange(bias, 0, biasLen),
          biasMode: axis,
        });
        const tuning = { variant, splitK: 1 }; // split-K's epilogue stores C: it cannot gather
        gemmStrided(gpu, mk(cOld), tuning);
        const gs = mk(c0);
        const plan = planGemm(gemmProblem(gs), profile, tuning);
        const layout = gemmStatsLayout(plan, axis, profile, "on");
        const what = `${dt} ${variant} ${cs.what} (${axis})`;
        if (cs.passes && plan.passes.length < 2) throw new Error(`${what}: expected k-passes`);
        if (cs.passes && dt === "f16") {
          // An f16 C's k-passes sum into an f32 scratch; their epilogue stores C: no gathering.
          assert.equal(layout, undefined, `${what}: an f16 C's k-passes do not gather`);
          for (const t of [a, b, bias, c0, cOld]) t.dispose();
          continue;
        }
        assert.ok(layout, `${what}: the plan gathers`);
        assert.equal(layout.kernel, variant, `${what}: the kernel`);
        const channels = axis === "row" ? m : n;
        const out = gpu.empty([channels * layout.tiles * 4]);
        runGemmPlan(gpu, gs, plan, { layout, out: bindingRange(out, 0, out.size), base: 0 });
        await assertSameBits(c0, cOld, what);
        // The stored values of each channel, from C.
        const cv = await read(c0);
        const at = (z: number, i: number, j: number) => {
          if (!cs.rows) return cv[z * m * n + i * n + j];
          const img = Math.floor(j / P), px = j % P;
          return i < g[0]
            ? cv[P + img * (g[0] + 2) * P + i * P + px]
            : cv[second + img * g[1] * P + (i - g[0]) * P + px];
        };
        const merged = mergePartialsRef(await read(out), channels, layout.tiles);
        for (let ch = 0; ch < channels; ch++) {
          const values: number[] = [];
          for (let z = 0; z < batch; z++) {
            for (let e = 0; e < (axis === "row" ? n : m); e++) {
              values.push(axis === "row" ? at(z, ch, e) : at(z, e, ch));
            }
          }
          const want = tileStatsRef(values);
          const scale = Math.max(...values.map(Math.abs));
          assert.equal(merged[ch].count, want.count, `${what}: channel ${ch} count`);
          assertClose([merged[ch].mean], [want.mean], {
            rtol: 1e-6,
            atol: scale * 2e-7,
            what: `${what}: channel ${ch} mean`,
          });
          assertClose([merged[ch].m2], [want.m2], {
            rtol: 1e-5,
            atol: 1e-6 * want.count,
            what: `${what}: channel ${ch} M2`,
          });
        }
        for (const t of [a, b, bias, c0, cOld, out]) t.dispose();
      }
    }
  }
}

/** The checks of tests/batchnorm_test.ts for statistics gathered by the producer. */
export const BN_STATS_CHECKS: readonly KernelCheck[] = [
  ...(["f32", "f16"] as const).map((dt): KernelCheck => ({
    name:
      `conv2d/linear -> batch norm (${dt}): statistics gathered in the producer's store equal the ` +
      "batch norm's own reduction (output bit for bit, forward, backward), register and " +
      "shared-memory GEMMs",
    gpu: true,
    f16: dt === "f16",
    run: async (gpu) => {
      const rng = new Rng(dt === "f32" ? 61 : 62);
      const mode = setBnFusionMode(gpu, "batchStats", "on");
      try {
        for (const variant of ["register", "shared"] as const) {
          for (const cs of CONV_CASES) await convCase(gpu, rng, cs, dt, variant);
          for (const cs of LINEAR_CASES) {
            // (Swapped: the kernel's C is y^T, its channels are rows.)
            for (const swap of [false, true]) await linearCase(gpu, rng, cs, dt, variant, swap);
          }
        }
      } finally {
        setBnFusionMode(gpu, "batchStats", mode);
      }
    },
  })),
  ...(["f32", "f16"] as const).map((dt): KernelCheck => ({
    name: `GEMM statistics (${dt}) with k segments, row groups, k-passes and a batch, both ` +
      "families and channel axes, vs Float64",
    gpu: true,
    f16: dt === "f16",
    run: (gpu) => gemmVariantsCheck(gpu, dt),
  })),
  {
    name: "batch norm merging partial statistics (Chan) vs Float64, far from zero",
    gpu: true,
    f16: false,
    run: (gpu) => mergeCheck(gpu),
  },
];

/**
 * The merge's workgroup variant (more than 256 tiles per channel: 64 threads striding over the
 * tiles, their sums added through workgroup memory) at each side of its workgroup's edges: 257,
 * 319, 320, 321 and 385 tiles, an odd channel count (tests/workgroup_memory_test.ts).
 */
export const BN_MERGE_WORKGROUP_CHECK: KernelCheck = {
  name: "batch norm merging partial statistics, workgroup variant at 257-385 tiles",
  gpu: true,
  f16: false,
  run: (gpu) => mergeCheck(gpu, [257, 319, 320, 321, 385].map((t) => [2, 3, 700, 2e3, t] as const)),
};
