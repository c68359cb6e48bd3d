// conv2d's backward GEMMs read dy (and a pointwise convolution's x) in place, in segments (the
// weight gradient along k, dcol along n), where they once read copies permuted to
// [channels, images * pixels] (still so in the register family for planes of pixels not a
// multiple of 4: readsInPlace): the results equal the permuted path's bit for bit (f32: the same
// plans, the same k order), in-place plans hold no permutation and no dyT/xT scratch, and the
// backward dispatches exactly the plan's conv2d_permute kernels; the tuner records, keys and times these GEMMs.
import assert from "node:assert/strict";
import type { Tensor } from "../gpu/mod.ts";
import { adapterProfile } from "../kernels/_adapter.ts";
import { bindingRange, type TensorRange } from "../kernels/_binding.ts";
import { conv2dBackward, conv2dGeometry, runConv2dPlan } from "../kernels/conv2d/index.ts";
import { col2im, im2col, permuteNc } from "../kernels/conv2d/im2col.ts";
import {
  type ConvOperand,
  type ConvPlan,
  planConv2d,
  readsInPlace,
} from "../kernels/conv2d/plan.ts";
import { WEBGPU_DEFAULT_PROFILE } from "../kernels/_adapter.ts";
import { gemmStrided, reduceStrided } from "../kernels/gemm/index.ts";
import { recordProblems, tuneProblems, tuningTable } from "../kernels/autotune/index.ts";
import type { Conv2dKernelOptions, GemmTuning } from "../kernels/_types.ts";
import { GPU_TEST, Rng, testGpu } from "./harness.ts";
import { kernelsOf } from "./kernels_of.ts";

/**
 * Runs a backward plan as conv2d did before reading in segments: each GEMM operand read in
 * segments (an NCHW chunk `[nb, C, P]` from channel 0) is first permuted to `[C, nb * P]`
 * (`permuteNc`) and read as plain rows.
 */
function runPermuted(plan: ConvPlan, io: Record<string, Tensor | undefined>): void {
  const g = plan.geometry, P = g.oh * g.ow;
  const gpu = io.x!.gpu;
  const temps: Tensor[] = [];
  const buffers: Record<string, Tensor | undefined> = { ...io };
  for (const [name, [elements, dtype]] of Object.entries(plan.scratch)) {
    const t = gpu.empty([elements], { dtype });
    temps.push(t);
    buffers[name] = t;
  }
  const bind = (o: ConvOperand) => bindingRange(buffers[o.buffer]!, o.offset, o.count);
  /** An NCHW range `[nb, channels, P]` permuted to `[channels, nb * P]`. */
  const permuted = (r: TensorRange, channels: number): TensorRange => {
    const t = gpu.empty([r.count], { dtype: r.tensor.dtype });
    temps.push(t);
    const nb = r.count / (channels * P);
    permuteNc(r, bindingRange(t, 0, r.count), { nb, c: channels, len: P });
    return bindingRange(t, 0, r.count);
  };
  try {
    for (const s of plan.steps) {
      if (s.kind === "permute") permuteNc(bind(s.src), bind(s.dst), s.shape);
      else if (s.kind === "im2col") im2col(g, bind(s.x), bind(s.col), s.nb);
      else if (s.kind === "col2im") col2im(g, bind(s.col), bind(s.dx), s.nb, s.form);
      else if (s.kind === "reduce") reduceStrided(gpu, { ...s, y: bind(s.y), x: bind(s.x) });
      else if (s.kind === "gemm") {
        const {
          segmentKA,
          segmentStrideKA,
          segmentKB,
          segmentStrideKB,
          segmentB,
          segmentStrideB,
          ...m
        } = s.gemm;
        let a = bind(m.a), b = bind(m.b), { lda, ldb, strideA, strideB } = m;
        let seg = {};
        if (segmentKA !== undefined) {
          a = permuted(a, segmentStrideKA! / P);
          [lda, strideA] = [m.k, (strideA / P) * m.k];
        }
        if (segmentKB !== undefined) {
          b = permuted(b, segmentStrideKB! / P);
          [ldb, strideB] = [m.k, (strideB / P) * m.k];
        }
        if (segmentB !== undefined && m.c.buffer === "col") {
          // dcol = W^T . dy: dy was permuted (the pointwise GEMMs read NCHW x and dy as ever).
          b = permuted(b, segmentStrideB! / P);
          [ldb, strideB] = [m.n, (strideB / P) * m.n];
        } else if (segmentB !== undefined) seg = { segmentB, segmentStrideB };
        gemmStrided(gpu, {
          ...m,
          ...seg,
          a,
          b,
          c: bind(m.c),
          bias: m.bias && bind(m.bias),
          lda,
          ldb,
          strideA,
          strideB,
        }, s.tuning);
      } else throw new Error(`unexpected step ${s.kind}`);
    }
  } finally {
    for (const t of temps) t.dispose();
  }
}

/** The geometries: 1x1 and 3x3, strides 1 and 2, groups, several images, chunks. */
const CASES: {
  label: string;
  p: Parameters<typeof conv2dGeometry>[0];
  options?: Conv2dKernelOptions;
}[] = [
  { label: "1x1 s1 (pointwise)", p: { n: 3, cIn: 6, h: 5, w: 7, cOut: 5, kernel: 1 } },
  { label: "1x1 s1 vec4 pixels", p: { n: 2, cIn: 8, h: 4, w: 4, cOut: 12, kernel: 1 } },
  { label: "1x1 s2 (im2col)", p: { n: 2, cIn: 5, h: 7, w: 7, cOut: 6, kernel: 1, stride: 2 } },
  { label: "3x3 s1 p1", p: { n: 2, cIn: 4, h: 6, w: 6, cOut: 8, kernel: 3, padding: 1 } },
  {
    label: "3x3 s2 p1",
    p: { n: 3, cIn: 3, h: 9, w: 7, cOut: 5, kernel: 3, stride: 2, padding: 1 },
  },
  {
    label: "3x3 groups 2",
    p: { n: 2, cIn: 6, h: 6, w: 5, cOut: 4, kernel: 3, padding: 1, groups: 2 },
  },
  {
    label: "3x3 chunks of 1 image",
    p: { n: 3, cIn: 4, h: 6, w: 6, cOut: 6, kernel: 3, padding: 1 },
    options: { maxChunkBytes: 4 * 4 * 9 * 36 },
  },
  {
    label: "1x1 chunks of 1 image",
    p: { n: 3, cIn: 4, h: 6, w: 6, cOut: 6, kernel: 1 },
    options: { maxChunkBytes: 4 * 6 * 36 },
  },
  { label: "1x1 long k (split-K)", p: { n: 8, cIn: 4, h: 16, w: 16, cOut: 3, kernel: 1 } },
];

const TUNINGS: GemmTuning[] = [{}, { variant: "shared" }, { variant: "register", tile: [4, 4] }];

Deno.test(
  "conv2d backward: dy and x read in segments equal the permuted path bit for bit (f32)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(15);
    const data = (n: number) => Float32Array.from({ length: n }, () => rng.uniform(-1, 1));
    for (const c of CASES) {
      for (const gemm of TUNINGS) {
        const geometry = conv2dGeometry(c.p);
        const g = geometry;
        const options = { ...c.options, direct: false, gemm };
        const plan = planConv2d(
          {
            geometry,
            call: "backward",
            dtypes: { x: "f32", w: "f32", dy: "f32", dx: "f32", dw: "f32", db: "f32" },
            options,
          },
          adapterProfile(gpu),
          undefined,
        );
        const what = `${c.label} ${JSON.stringify(gemm)}`;
        assert.ok(plan.chunks.imagesPerChunk < g.n || !c.options, `${what}: chunks`);
        // In place (no permutation, no dyT or xT) wherever readsInPlace says so.
        const inPlace = readsInPlace(g.oh * g.ow, adapterProfile(gpu), options);
        const permuteSteps = plan.steps.filter((s) => s.kind === "permute").length;
        assert.equal(permuteSteps === 0, inPlace, `${what}: ${permuteSteps} permutations`);
        assert.equal(
          Object.keys(plan.scratch).filter((k) => k !== "col").length === 0,
          inPlace,
          `${what}: scratch ${Object.keys(plan.scratch)}`,
        );
        const x = gpu.tensor(data(g.n * g.cIn * g.h * g.w), {
          shape: [g.n, g.cIn, g.h, g.w],
        });
        const w = gpu.tensor(data(g.cOut * (g.cIn / g.groups) * g.kh * g.kw), {
          shape: [g.cOut, g.cIn / g.groups, g.kh, g.kw],
        });
        const dy = gpu.tensor(data(g.n * g.cOut * g.oh * g.ow), {
          shape: [g.n, g.cOut, g.oh, g.ow],
        });
        const outs = () => ({
          dx: gpu.empty(x.shape),
          dw: gpu.empty(w.shape),
          db: gpu.empty([g.cOut]),
        });
        const now = outs(), before = outs();
        runConv2dPlan(plan, { x, w, dy, ...now });
        runPermuted(plan, { x, w, dy, ...before });
        for (const k of ["dx", "dw", "db"] as const) {
          const [a, b] = [await now[k].toArray(), await before[k].toArray()];
          const differ = a.filter((v, i) => !Object.is(v, b[i])).length;
          assert.equal(differ, 0, `${what}: ${k} ${differ} of ${a.length} differ`);
        }
        // The call dispatches the plan's permutations, none in place.
        const kernels = kernelsOf(
          gpu,
          () => conv2dBackward({ x, w, dy, ...now }, { ...c.p, ...options }),
        );
        assert.equal(
          kernels.filter((k) => k.startsWith("conv2d_permute")).length,
          permuteSteps,
          what,
        );
        for (const t of [x, w, dy, ...Object.values(now), ...Object.values(before)]) t.dispose();
      }
    }
  },
);

Deno.test(
  "autotune: the backward's GEMMs with k segments are recorded, keyed and timed",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const table = tuningTable(gpu);
    table.clear();
    const rng = new Rng(16);
    const data = (n: number) => Float32Array.from({ length: n }, () => rng.uniform(-1, 1));
    const p = { n: 2, cIn: 8, h: 6, w: 6, cOut: 12, kernel: 1, direct: false } as const;
    const x = gpu.tensor(data(2 * 8 * 36), { shape: [2, 8, 6, 6] });
    const w = gpu.tensor(data(12 * 8), { shape: [12, 8, 1, 1] });
    const dy = gpu.tensor(data(2 * 12 * 36), { shape: [2, 12, 6, 6] });
    const dw = gpu.empty(w.shape), dx = gpu.empty(x.shape);
    const run = () => conv2dBackward({ x, w, dy, dw, dx }, p);
    try {
      run();
      const before = await dw.toArray();
      const problems = await recordProblems(gpu, run);
      const seg = problems.filter((q) => q.op === "gemm" && /:ska11:skb11$/.test(q.key));
      assert.equal(seg.length, 1, problems.map((q) => q.key).join(" "));
      const [r] = await tuneProblems(gpu, seg, {
        budgetSeconds: 30,
        minProblemMs: 0,
        minSampleMs: 1,
        samples: 1,
      });
      // Timed (a note may say the timing kept the cost model's choice, never that it failed).
      assert.doesNotMatch(r.note ?? "", /fail|error|skip/i, r.note);
      assert.ok(r.candidates > 0 && Number.isFinite(r.tunedMs), JSON.stringify(r));
      // The table's choice (set for the key) still gives the weight gradient.
      table.set(seg[0].key, {
        op: "gemm",
        tuning: { variant: "register", tile: [4, 4], splitK: 2 },
      });
      gpu.clear(dw);
      run();
      const after = await dw.toArray();
      const err = after.reduce((m, v, i) => Math.max(m, Math.abs(v - before[i])), 0);
      assert.ok(err < 1e-5, `tuned dw differs by ${err}`);
    } finally {
      table.clear();
      for (const t of [x, w, dy, dw, dx]) t.dispose();
    }
  },
);

Deno.test("planConv2d: backward in place on GPUs, and on CPU adapters for planes of 4k pixels", () => {
  const cpu = { ...WEBGPU_DEFAULT_PROFILE, isCpu: true, mesaCpu: true };
  const dtypes = { x: "f32", w: "f32", dy: "f32", dx: "f32", dw: "f32" } as const;
  const kinds = (p: Parameters<typeof conv2dGeometry>[0], profile: typeof cpu, gemm = {}) => {
    const plan = planConv2d(
      { geometry: conv2dGeometry(p), call: "backward", dtypes, options: { direct: false, gemm } },
      profile,
      undefined,
    );
    return [plan.steps.map((s) => s.kind).join(" "), Object.keys(plan.scratch).sort().join(" ")];
  };
  const pw9 = { n: 2, cIn: 8, h: 3, w: 3, cOut: 8, kernel: 1 };
  const pw16 = { ...pw9, h: 4, w: 4 };
  const c9 = { ...pw9, kernel: 3, padding: 1 };
  assert.deepEqual(kinds(pw16, cpu), ["gemm gemm", ""]);
  assert.deepEqual(kinds(pw9, WEBGPU_DEFAULT_PROFILE), ["gemm gemm", ""]);
  assert.deepEqual(kinds(pw9, cpu, { variant: "shared" }), ["gemm gemm", ""]);
  assert.deepEqual(kinds(pw9, cpu), ["permute permute gemm gemm", "dyT xT"]);
  assert.deepEqual(kinds(c9, WEBGPU_DEFAULT_PROFILE), ["im2col gemm gemm col2im", "col"]);
  assert.deepEqual(kinds(c9, cpu), ["permute im2col gemm gemm col2im", "col dyT"]);
  assert.equal(readsInPlace(9, cpu), false);
  assert.equal(readsInPlace(9, cpu, { gemm: { variant: "shared" } }), true);
  assert.equal(readsInPlace(36, cpu), true);
  assert.equal(readsInPlace(9, WEBGPU_DEFAULT_PROFILE, { gemm: { variant: "register" } }), false);
});
