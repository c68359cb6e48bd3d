// planGemm (kernels/gemm/plan.ts): GEMM planning is a pure function of a problem, an adapter
// profile and a tuning, and its plan is a plain value that fits the adapter's limits; gemm
// records exactly the plan's dispatches.
import assert from "node:assert/strict";
import {
  type AdapterProfile,
  adapterProfile,
  WEBGPU_DEFAULT_PROFILE,
} from "../kernels/_adapter.ts";
import {
  dispatchKernel,
  gemm,
  type GemmDispatch,
  type GemmPlan,
  type GemmProblem,
  type GemmProductDispatch,
  type GemmTuning,
  planDispatches,
  planGemm,
} from "../kernels/gemm/index.ts";
import { gemmKey } from "../kernels/autotune/table.ts";
import type { StridedGemm } from "../kernels/_types.ts";
import { type Dims, problemOf } from "./_gemm_problem.ts";
import { GPU_TEST, testGpu } from "./harness.ts";
import { kernelsOf } from "./kernels_of.ts";

/** A CPU adapter (llvmpipe's kind) with WebGPU's default limits. */
const CPU_PROFILE: AdapterProfile = Object.freeze({
  ...WEBGPU_DEFAULT_PROFILE,
  description: "a CPU adapter with WebGPU's default limits",
  isCpu: true,
  mesaCpu: true,
});

/** A linear layer x[b, i] -> y[b, o]: the forward, input-gradient and weight-gradient GEMMs. */
function linearGemms(b: number, i: number, o: number): GemmProblem[] {
  return [
    problemOf({ m: b, n: o, k: i, transB: true, bias: true }),
    problemOf({ m: b, n: i, k: o }),
    problemOf({ m: o, n: i, k: b, transA: true, beta: 1 }),
  ];
}

/**
 * A convolution's im2col GEMMs over a chunk of `images` (`taps` = kh * kw, `pixels` per output
 * plane): the forward with its NCHW store and row bias, the columns' gradient, the weights'.
 */
function convGemms(
  images: number,
  cIn: number,
  cOut: number,
  taps: number,
  pixels: number,
): GemmProblem[] {
  const k = cIn * taps, n = images * pixels;
  const forward: GemmProblem = {
    ...problemOf({ m: cOut, n, k }),
    ldc: pixels,
    strideC: 0,
    segment: pixels,
    segmentStride: cOut * pixels,
    bias: { base: 0, dtype: "f32" },
    biasMode: "row",
    strideBias: 0,
  };
  // The backward reads NCHW dy in place: dcol's B in column segments, dW's A in k segments.
  return [
    forward,
    {
      ...problemOf({ m: k, n, k: cOut, transA: true }),
      ldb: pixels,
      segmentB: pixels,
      segmentStrideB: cOut * pixels,
    },
    {
      ...problemOf({ m: cOut, n: k, k: n, transB: true, beta: 1 }),
      lda: pixels,
      segmentKA: pixels,
      segmentStrideKA: cOut * pixels,
    },
  ];
}

/**
 * A 1x1 convolution's GEMMs over a chunk of `images`, straight on NCHW tensors (B read in
 * segments, C stored in segments): the forward with its row bias, the input gradient; the
 * weight gradient (A and B read along k in segments).
 */
function pointwiseGemms(images: number, cIn: number, cOut: number, pixels: number): GemmProblem[] {
  const n = images * pixels;
  const nchw = (m: number, k: number, transA: boolean): GemmProblem => ({
    ...problemOf({ m, n, k, transA }),
    ldb: pixels,
    segmentB: pixels,
    segmentStrideB: k * pixels,
    ldc: pixels,
    strideC: 0,
    segment: pixels,
    segmentStride: m * pixels,
  });
  // The weight gradient dW [cOut, cIn] = dy . x^T, both NCHW read along k in segments.
  const dw: GemmProblem = {
    ...problemOf({ m: cOut, n: cIn, k: n, transB: true, beta: 1 }),
    lda: pixels,
    ldb: pixels,
    segmentKA: pixels,
    segmentStrideKA: cOut * pixels,
    segmentKB: pixels,
    segmentStrideKB: cIn * pixels,
  };
  return [
    { ...nchw(cOut, cIn, false), bias: { base: 0, dtype: "f32" }, biasMode: "row", strideBias: 0 },
    nchw(cIn, cOut, true),
    dw,
  ];
}

/** The GEMMs of the seed models' layers (linear layers at d2l's batches, convolutions per chunk). */
const SEED_GEMMS: GemmProblem[] = [
  ...linearGemms(256, 400, 120), // LeNet
  ...linearGemms(256, 120, 84),
  ...linearGemms(256, 84, 10),
  ...linearGemms(128, 6400, 4096), // AlexNet
  ...linearGemms(128, 4096, 4096),
  ...linearGemms(128, 4096, 10),
  ...linearGemms(128, 25088, 4096), // VGG-11
  ...linearGemms(256, 512, 10), // ResNet-18
  ...linearGemms(128, 1024, 10), // GoogLeNet
  ...convGemms(256, 1, 6, 25, 28 * 28), // LeNet conv1, conv2
  ...convGemms(256, 6, 16, 25, 10 * 10),
  ...convGemms(32, 1, 96, 121, 54 * 54), // AlexNet conv1, conv2
  ...convGemms(32, 96, 256, 25, 26 * 26),
  ...convGemms(32, 1, 64, 49, 48 * 48), // ResNet-18 at 96x96: stem, first and last 3x3
  ...convGemms(32, 64, 64, 9, 24 * 24),
  ...convGemms(32, 512, 512, 9, 3 * 3),
  ...convGemms(32, 480, 192, 1, 6 * 6), // a GoogLeNet 1x1 branch
  ...pointwiseGemms(8, 480, 192, 6 * 6), // GoogLeNet's 1x1 branches at 96x96
  ...pointwiseGemms(8, 832, 384, 3 * 3),
  ...pointwiseGemms(32, 32, 64, 48 * 48), // MobileNet at 96x96: first and last 1x1
  ...pointwiseGemms(32, 1024, 1024, 3 * 3),
];

/** Other problems that exercise every path: k = 0, sequential k-passes (f32 and f16 C), batches. */
const EDGE_GEMMS: GemmProblem[] = [
  problemOf({ m: 3, n: 2, k: 0, beta: 2, bias: true }),
  problemOf({ m: 3, n: 5, k: 40000, transA: true, bias: true, beta: 0.5 }),
  problemOf({ m: 2, n: 4, k: 250000, transB: true, bias: true }, { c: "f16" }),
  problemOf({ m: 9, n: 6, k: 11, batch: 3, beta: 1, bias: true }),
  problemOf({ m: 65, n: 7, k: 17, batch: 2 }),
];

/** Freezes a value and everything it holds. */
function deepFreeze<T>(x: T): T {
  if (typeof x === "object" && x !== null && !Object.isFrozen(x)) {
    Object.freeze(x);
    for (const v of Object.values(x)) deepFreeze(v);
  }
  return x;
}

/** Bytes of `var<workgroup>` arrays a kernel's WGSL declares. */
function workgroupBytes(code: string): number {
  const bytes: Record<string, number> = { f32: 4, u32: 4, i32: 4, f16: 2, vec4f: 16 };
  let total = 0;
  for (const m of code.matchAll(/var<workgroup>\s+\w+\s*:\s*array<(\w+),\s*(\d+)>/g)) {
    assert.ok(m[1] in bytes, `unknown workgroup element type ${m[1]}`);
    total += bytes[m[1]] * Number(m[2]);
  }
  return total;
}

/** Checks that every dispatch and scratch buffer of `plan` fits `profile`'s limits. */
function assertFits(plan: GemmPlan, p: GemmProblem, profile: AdapterProfile, what: string): number {
  const l = profile.limits;
  let most = 0;
  for (const d of planDispatches(plan)) {
    const { spec, workgroupSize } = dispatchKernel(d);
    const size = typeof workgroupSize === "number" ? [workgroupSize] : workgroupSize;
    const threads = size.reduce((a, b) => a * b, 1);
    assert.ok(threads <= l.maxComputeInvocationsPerWorkgroup, `${what}: ${spec.name} ${threads}`);
    const shared = workgroupBytes(spec.code);
    most = Math.max(most, shared);
    assert.ok(shared <= l.maxComputeWorkgroupStorageSize, `${what}: ${spec.name} ${shared} B`);
    for (const w of d.workgroups) {
      assert.ok(w >= 1 && w <= l.maxComputeWorkgroupsPerDimension, `${what}: ${d.workgroups}`);
    }
    if (d.kernel === "epilogue") {
      const total = d.params.batch * d.params.m * d.params.n;
      assert.ok(d.workgroups[0] * d.workgroups[1] * 64 >= total, `${what}: epilogue grid`);
    } else {
      // The grid covers C (swapped problems have m and n exchanged in their params).
      assert.ok(d.workgroups[0] * d.config.colsPerGroup >= d.params.n, `${what}: columns`);
      assert.ok(d.workgroups[1] * d.config.rowsPerGroup >= d.params.m, `${what}: rows`);
      assert.equal(d.workgroups[2] % d.params.batch, 0, `${what}: batch`);
    }
  }
  for (const [name, elements] of Object.entries(plan.scratch)) {
    assert.ok(elements * 4 <= l.maxStorageBufferBindingSize, `${what}: ${name} scratch`);
  }
  // The passes cover k in order.
  let k0 = 0;
  for (const pass of plan.passes) {
    assert.equal(pass.k0, k0, `${what}: pass at k0 ${pass.k0}`);
    k0 += pass.k;
  }
  assert.equal(k0, p.m === 0 || p.n === 0 ? 0 : p.k, `${what}: k covered`);
  return most;
}

Deno.test("planGemm is pure: the same plain value twice, from the problem alone (no Gpu)", () => {
  const tunings: GemmTuning[] = [
    {},
    { variant: "register", tile: [8, 4], splitK: 3 },
    { variant: "register", swap: true },
    { variant: "shared", splitK: 2 },
  ];
  for (const profile of [WEBGPU_DEFAULT_PROFILE, CPU_PROFILE]) {
    for (const p of [...SEED_GEMMS, ...EDGE_GEMMS]) {
      for (const tuning of tunings) {
        // Frozen inputs: planning must not write to them.
        const problem = deepFreeze(structuredClone(p));
        const first = planGemm(problem, profile, deepFreeze(structuredClone(tuning)));
        const again = planGemm(problem, profile, tuning);
        assert.notEqual(first, again);
        assert.deepStrictEqual(again, first);
        // A plain value: no functions, class instances or tensors (structuredClone keeps it).
        assert.deepStrictEqual(structuredClone(first), first);
      }
    }
  }
});

Deno.test("planGemm: the seed models' GEMMs fit WebGPU's default limits", () => {
  let shared = 0;
  for (const profile of [WEBGPU_DEFAULT_PROFILE, CPU_PROFILE]) {
    for (const variant of [undefined, "register", "shared"] as const) {
      for (const p of [...SEED_GEMMS, ...EDGE_GEMMS]) {
        const what = `${profile.description} ${variant ?? "default"} ` +
          `${p.m}x${p.n}x${p.k}${p.transA ? " tA" : ""}${p.transB ? " tB" : ""}`;
        const plan = planGemm(p, profile, variant ? { variant } : {});
        shared = Math.max(shared, assertFits(plan, p, profile, what));
      }
    }
  }
  // The shared-memory kernel's tiles were measured (8 KiB: two 16x64 f32 tiles).
  assert.equal(shared, 8192);
});

Deno.test("planGemm: register kernels on CPU adapters, shared ones on GPUs, unless tuned", () => {
  const kernels = (plan: GemmPlan) =>
    new Set(planDispatches(plan).map((d) => d.kernel).filter((k) => k !== "epilogue"));
  for (const p of [...SEED_GEMMS, ...EDGE_GEMMS]) {
    const gpu = planGemm(p, WEBGPU_DEFAULT_PROFILE), cpu = planGemm(p, CPU_PROFILE);
    assert.equal(gpu.variant, "shared");
    assert.deepEqual(kernels(gpu), new Set(["shared"]));
    assert.equal(cpu.variant, "register");
    assert.deepEqual(kernels(cpu), new Set(["register"]));
    assert.equal(gpu.swap, false, "the shared family never swaps");
    assert.deepEqual(
      kernels(planGemm(p, WEBGPU_DEFAULT_PROFILE, { variant: "register" })),
      new Set(["register"]),
    );
    assert.deepEqual(kernels(planGemm(p, CPU_PROFILE, { variant: "shared" })), new Set(["shared"]));
  }
  // Skinny products run swapped on CPU adapters (SIMD lanes along the long side).
  assert.equal(planGemm(problemOf({ m: 256, n: 10, k: 84, transB: true }), CPU_PROFILE).swap, true);
  // Long reductions over few tiles split k, up to 256 workgroups on a GPU (64 splits at most).
  const dw = problemOf({ m: 6, n: 25, k: 200704, transB: true, beta: 1 });
  assert.equal(planGemm(dw, WEBGPU_DEFAULT_PROFILE).splitK, 64);
});

Deno.test("planGemm: k-passes, split-K and the f16 accumulator", () => {
  // Sequential passes over k (each after the first adds to C: beta 1, no bias).
  const long = planGemm(
    problemOf({ m: 3, n: 5, k: 40000, transA: true, bias: true, beta: 0.5 }),
    CPU_PROFILE,
    { variant: "shared", splitK: 1 },
  );
  assert.deepEqual(long.passes.map((p) => [p.k0, p.k]), [[0, 20000], [20000, 20000]]);
  const products = planDispatches(long);
  assert.deepEqual(products.map((d) => d.bindings.c), ["c", "c"]);
  assert.deepEqual(products.map((d) => [d.params.beta, d.bindings.bias]), [[0.5, "bias"], [
    1,
    undefined,
  ]]);
  assert.equal(long.epilogue, undefined);
  // With an f16 C the passes sum into an f32 accumulator, then an epilogue stores C once.
  const half = planGemm(
    problemOf({ m: 2, n: 4, k: 250000, transB: true, bias: true }, { c: "f16" }),
    CPU_PROFILE,
    { variant: "register", splitK: 1 },
  );
  assert.equal(half.passes.length, 2);
  assert.deepEqual(half.scratch, { accumulator: 8, partials: 0 });
  assert.deepEqual(planDispatches(half).map((d) => [d.kernel, d.bindings.c]), [
    ["register", "accumulator"],
    ["register", "accumulator"],
    ["epilogue", "c"],
  ]);
  assert.deepEqual(half.epilogue?.bindings, { part: "accumulator", c: "c", bias: "bias" });
  // Split-K: partial products into scratch, summed by the epilogue (which applies the bias).
  const split = planGemm(
    problemOf({ m: 5, n: 7, k: 1001, bias: true, beta: 0.5, batch: 2 }),
    CPU_PROFILE,
    { variant: "register", splitK: 3, swap: false },
  );
  const [pass] = split.passes;
  assert.deepEqual([split.splitK, pass.splits, pass.kChunk, pass.grid[2]], [3, 3, 334, 6]);
  assert.equal(split.scratch.partials, 3 * 2 * 5 * 7);
  assert.deepEqual(pass.dispatches.map((d) => d.kernel), ["register", "epilogue"]);
  assert.deepEqual(pass.dispatches[0].bindings, { a: "a", b: "b", c: "partials" });
  assert.deepEqual(pass.dispatches[1].bindings, { part: "partials", c: "c", bias: "bias" });
});

Deno.test("gemm records exactly the dispatches of its plan", GPU_TEST, async () => {
  const gpu = await testGpu();
  const profile = adapterProfile(gpu);
  const cases: [Dims, GemmTuning][] = [
    [{ m: 65, n: 33, k: 17, bias: true }, {}],
    [{ m: 128, n: 10, k: 84, transB: true, bias: true }, {}],
    [{ m: 5, n: 7, k: 1001, transA: true, bias: true, beta: 0.5, batch: 2 }, { splitK: 3 }],
    [{ m: 6, n: 25, k: 4096, transB: true }, {}],
    [{ m: 16, n: 32, k: 64, transA: true, transB: true }, { variant: "register", swap: true }],
    [{ m: 9, n: 6, k: 11, batch: 3, beta: 1 }, { variant: "shared" }],
  ];
  for (const [d, tuning] of cases) {
    const plan = planGemm(problemOf(d), profile, tuning);
    const want = planDispatches(plan).map((x) => dispatchKernel(x).spec.name);
    const lead = d.batch === undefined ? [] : [d.batch];
    const a = gpu.zeros([...lead, ...(d.transA ? [d.k, d.m] : [d.m, d.k])]);
    const b = gpu.zeros([...lead, ...(d.transB ? [d.n, d.k] : [d.k, d.n])]);
    const c = gpu.zeros([...lead, d.m, d.n]), bias = d.bias ? gpu.zeros([d.n]) : undefined;
    const names = kernelsOf(gpu, () => gemm({ c, a, b, bias }, { ...d, ...tuning }));
    assert.deepEqual(names, want, JSON.stringify(d));
    for (const t of [a, b, c, bias]) t?.dispose();
  }
});

Deno.test("planGemm: B read in segments (1x1 convolutions on NCHW tensors)", () => {
  const [fwd9, dx9] = pointwiseGemms(8, 13, 7, 3 * 3);
  const [fwd36] = pointwiseGemms(8, 16, 8, 6 * 6);
  for (const profile of [CPU_PROFILE, WEBGPU_DEFAULT_PROFILE]) {
    for (const p of [fwd9, dx9, fwd36]) {
      for (const d of planDispatches(planGemm(p, profile))) {
        if (d.kernel === "epilogue") continue;
        assert.equal(d.config.segmentedB, true);
        assert.deepEqual([d.params.segB, d.params.segStrideB], [p.segmentB, p.segmentStrideB]);
        assert.match(dispatchKernel(d).spec.name, /_sb/);
      }
    }
  }
  // vec4 loads of B only where 4 columns from a multiple of 4 stay in one segment.
  const vecB = (p: GemmProblem) => planGemm(p, CPU_PROFILE).passes[0].config.vecB;
  assert.equal(vecB(fwd9), false);
  assert.equal(vecB(fwd36), true);
  // Never swapped, even when tuned so (B's segments are along n).
  assert.equal(planGemm(fwd9, CPU_PROFILE, { swap: true }).swap, false);
  // Split-K keeps the segments of B.
  const split = planGemm(fwd9, CPU_PROFILE, { splitK: 2 }).passes[0];
  assert.equal(split.splits, 2);
  assert.equal(split.config.segmentedB, true);
  assert.throws(() => planGemm({ ...fwd9, transB: true }, CPU_PROFILE), RangeError);
});

Deno.test("planGemm: A and B read along k in segments (conv2d's weight gradients on NCHW)", () => {
  const [, , dw9] = pointwiseGemms(8, 13, 7, 3 * 3);
  const [, , dw36] = pointwiseGemms(8, 16, 8, 6 * 6);
  const [, , im2colDw] = convGemms(4, 5, 6, 9, 5 * 5);
  for (const profile of [CPU_PROFILE, WEBGPU_DEFAULT_PROFILE]) {
    for (const p of [dw9, dw36, im2colDw]) {
      const plan = planGemm(p, profile);
      for (const d of planDispatches(plan)) {
        if (d.kernel === "epilogue") continue;
        const [a, b] = plan.swap ? ["B", "A"] : ["A", "B"];
        const want = (x: string) => (x === "A" ? p.segmentKA : p.segmentKB) !== undefined;
        assert.deepEqual([!!d.config.segmentedKA, !!d.config.segmentedKB], [want(a), want(b)]);
        const name = dispatchKernel(d).spec.name;
        assert.equal(/_ska/.test(name), want(a), name);
        assert.equal(/_skb/.test(name), want(b), name);
        if (!plan.swap) {
          assert.deepEqual(
            [d.params.segKA, d.params.segStrideKA, d.params.segKB, d.params.segStrideKB],
            [p.segmentKA ?? 1, p.segmentStrideKA ?? 0, p.segmentKB ?? 1, p.segmentStrideKB ?? 0],
          );
        }
        assert.equal(d.params.kOff, 0);
      }
    }
  }
  assert.match(
    dispatchKernel(planDispatches(planGemm(dw9, CPU_PROFILE, { swap: false }))[0]).spec.name,
    /^gemm_reg_nt_ska_skb_\d+x\d+/,
  );
  assert.match(
    dispatchKernel(planDispatches(planGemm(dw9, WEBGPU_DEFAULT_PROFILE))[0]).spec.name,
    /^gemm_smem_nt_ska_skb_4x4/,
  );
  // vec4 loads along k only where the segments are whole vec4s.
  const cfg = (p: GemmProblem) => planGemm(p, CPU_PROFILE, { swap: false }).passes[0].config;
  assert.deepEqual([cfg(dw9).vecA, cfg(dw9).vecB], [false, false]);
  assert.deepEqual([cfg(dw36).vecA, cfg(dw36).vecB], [true, true]);
  // The same plan as the permuted copies' (plain rows, ld = k): the same orientation, tile,
  // k-splits and chunks, so the same sums in the same order.
  for (const p of [dw9, dw36, im2colDw]) {
    const {
      segmentKA: _a,
      segmentStrideKA: _sa,
      segmentKB: _b,
      segmentStrideKB: _sb,
      ...plain
    } = p;
    const copies: GemmProblem = {
      ...plain,
      lda: p.k,
      ldb: p.k,
      strideA: (p.strideA / p.lda) * p.k,
      strideB: (p.strideB / (p.segmentKB ?? p.k)) * p.k,
    };
    for (const profile of [CPU_PROFILE, WEBGPU_DEFAULT_PROFILE]) {
      for (const tuning of [{}, { splitK: 3 }, { swap: true }] as GemmTuning[]) {
        const [x, y] = [planGemm(p, profile, tuning), planGemm(copies, profile, tuning)];
        const shape = (q: GemmPlan) =>
          q.passes.map((s) => [s.swap, s.config.tm, s.config.tn, s.splits, s.kChunk, s.k0]);
        assert.deepEqual(shape(x), shape(y), `${JSON.stringify(tuning)} ${profile.isCpu}`);
      }
    }
  }
  // Swapped: A's k segments become B's (and back).
  const swapped = planGemm(im2colDw, CPU_PROFILE, { swap: true });
  assert.equal(swapped.swap, true);
  const d0 = swapped.passes[0].dispatches[0] as GemmProductDispatch;
  assert.deepEqual([!!d0.config.segmentedKA, !!d0.config.segmentedKB], [false, true]);
  assert.deepEqual([d0.params.segKB, d0.params.segStrideKB], [25, 6 * 25]);
  // k-passes: segmented operands keep their base and index from the pass's kOff; plain ones move.
  const long: GemmProblem = {
    ...problemOf({ m: 2, n: 4, k: 250002, transB: true }),
    a: { base: 9, dtype: "f32" },
    lda: 9,
    segmentKA: 9,
    segmentStrideKA: 18,
  };
  const passes = planGemm(long, CPU_PROFILE, { splitK: 1 }).passes;
  assert.equal(passes.length, 2);
  const p1 = passes[1].dispatches[0] as GemmProductDispatch;
  assert.deepEqual([p1.params.kOff, p1.params.aOff], [passes[1].k0, 9]);
  assert.equal(p1.params.bOff, passes[1].k0);
  // Bad segments: A's need A [m, k], B's need B [n, k], lengths >= 1.
  assert.throws(() => planGemm({ ...dw9, transA: true }, CPU_PROFILE), RangeError);
  assert.throws(() => planGemm({ ...dw9, transB: false }, CPU_PROFILE), RangeError);
  assert.throws(() => planGemm({ ...dw9, segmentKA: 0 }, CPU_PROFILE), /segmentKA 0/);
});

Deno.test("gemmKey: the tuner keys k segments and their alignment facts", () => {
  // gemmKey reads the operands' bases only: the problem's shapes stand in for tensor ranges.
  const key = (p: GemmProblem) => gemmKey(p as unknown as StridedGemm);
  const [, , dw9] = pointwiseGemms(8, 13, 7, 3 * 3);
  const [, , dw36] = pointwiseGemms(8, 16, 8, 6 * 6);
  const { segmentKB: _b, segmentStrideKB: _sb, ...aOnly } = dw36;
  assert.match(key(dw9), /:ska00:skb00$/);
  assert.match(key(dw36), /:ska11:skb11$/);
  assert.match(key(aOnly), /:ska11$/);
  const { segmentKA: _a, segmentStrideKA: _sa, ...plain } = aOnly;
  assert.doesNotMatch(key(plain), /:sk/);
});

/**
 * Three row groups of a 6-row C (rows 0-1 into C, 2-4 and 5 into c2), C and c2 bound from
 * elements 4 and 8: a merged Inception GEMM's shape.
 */
const ROWS: GemmProblem = {
  m: 6,
  n: 8,
  k: 5,
  batch: 1,
  transA: false,
  transB: false,
  alpha: 1,
  beta: 0,
  a: { base: 0, dtype: "f32" },
  b: { base: 0, dtype: "f32" },
  c: { base: 4, dtype: "f32" },
  c2: { base: 8, dtype: "f32" },
  lda: 5,
  ldb: 8,
  ldc: 4,
  strideA: 0,
  strideB: 0,
  strideC: 0,
  biasMode: "none",
  segment: 4,
  segmentStride: 40,
  rowGroups: [
    { row: 0, base: 4, segmentStride: 40 },
    { row: 2, base: 0, segmentStride: 16, second: true },
    { row: 5, base: 32, segmentStride: 16, second: true },
  ],
};

/** The `Params` of ROWS's groups: bases from each group's tensor's binding, c2's as bit 1 and 2. */
const ROWS_PARAMS = {
  rgRow1: 2,
  rgRow2: 5,
  rgRow3: 0xffffffff, // no fourth group: never reached
  rgBase0: 4 + 4,
  rgBase1: 8 + 0,
  rgBase2: 8 + 32,
  rgBase3: 0,
  rgStride0: 40,
  rgStride1: 16,
  rgStride2: 16,
  rgStride3: 0,
  rgSecond: 0b110,
};

/** The row-group part of a dispatch: its store, c2 binding and `Params`. */
function rowsOf(d: GemmDispatch) {
  const params = d.params as Record<string, number>;
  return {
    rows: d.config.rowGroups ?? false,
    c: d.bindings.c,
    c2: (d.bindings as { c2?: string }).c2,
    params: Object.fromEntries(Object.keys(ROWS_PARAMS).map((key) => [key, params[key]])),
  };
}

Deno.test("planGemm: row groups' params and bindings in every pass, split-K and epilogue", () => {
  const stored = { rows: true, c: "c", c2: "c2", params: ROWS_PARAMS };
  for (const profile of [CPU_PROFILE, WEBGPU_DEFAULT_PROFILE]) {
    assert.deepEqual(planDispatches(planGemm(ROWS, profile)).map(rowsOf), [stored]);
  }
  // Split-K: plain partial products, the epilogue stores the rows.
  const split = planDispatches(planGemm(ROWS, CPU_PROFILE, { variant: "register", splitK: 2 }));
  assert.deepEqual(split.map((d) => [d.kernel, rowsOf(d).rows, rowsOf(d).c2]), [
    ["register", false, undefined],
    ["epilogue", true, "c2"],
  ]);
  assert.deepEqual(rowsOf(split[1]), stored);
  // k-passes (k beyond the shared kernel's 32768 per dispatch), as the GPU cases run them: an
  // f32 C stores the rows in both passes (the second adds, beta 1), an f16 C sums plain rows
  // into the f32 accumulator and the epilogue stores the rows.
  const long = { ...ROWS, k: 40000, lda: 40000, beta: 0.5 };
  const f32 = planGemm(long, CPU_PROFILE, { variant: "shared", splitK: 1 });
  assert.deepEqual(planDispatches(f32).map(rowsOf), [stored, stored]);
  assert.deepEqual(planDispatches(f32).map((d) => d.params.beta), [0.5, 1]);
  const half = { ...long, c: { base: 4, dtype: "f16" }, c2: { base: 8, dtype: "f16" } } as const;
  const f16 = planDispatches(planGemm(half, CPU_PROFILE, { variant: "shared", splitK: 1 }));
  assert.deepEqual(f16.map((d) => [d.kernel, rowsOf(d).rows, rowsOf(d).c, rowsOf(d).c2]), [
    ["shared", false, "accumulator", undefined],
    ["shared", false, "accumulator", undefined],
    ["epilogue", true, "c", "c2"],
  ]);
  assert.deepEqual(rowsOf(f16[2]).params, ROWS_PARAMS);
  assert.equal(f16[2].params.beta, 0.5);
});

Deno.test("planGemm: row groups that cannot be stored are rejected, naming what is wrong", () => {
  const rows = (r: GemmProblem["rowGroups"], more: Partial<GemmProblem> = {}) => () =>
    planGemm({ ...ROWS, rowGroups: r, ...more }, CPU_PROFILE);
  const group = (row: number, more: Record<string, unknown> = {}) => ({
    row,
    base: 0,
    segmentStride: 16,
    ...more,
  });
  const order = (got: string) =>
    new RegExp(
      `^gemm: rowGroups must be 1 to 4 groups in increasing row order from row 0, each ` +
        `starting below m = 6; got rows \\[${got}\\]$`,
    );
  const throws = (f: () => unknown, type: ErrorConstructor, message: RegExp) =>
    assert.throws(f, (e: Error) => {
      assert.ok(e instanceof type, `${e.constructor.name}: ${e.message}`);
      assert.match(e.message, message);
      return true;
    });
  throws(
    rows(ROWS.rowGroups, { segment: undefined, segmentStride: undefined }),
    RangeError,
    /^gemm: rowGroups need a segmented C \(segment set\)$/,
  );
  throws(rows([]), RangeError, order(""));
  throws(rows([group(0), group(2), group(2)]), RangeError, order("0, 2, 2"));
  throws(rows([group(0), group(3), group(2)]), RangeError, order("0, 3, 2"));
  throws(rows([group(1), group(2)]), RangeError, order("1, 2"));
  throws(rows([0, 1, 2, 3, 4].map((r) => group(r))), RangeError, order("0, 1, 2, 3, 4"));
  throws(rows([group(0), group(6)]), RangeError, order("0, 6"));
  throws(
    rows([group(0), group(2, { second: true })], { c2: undefined }),
    TypeError,
    /^gemm: a row group stored into c2 without a c2$/,
  );
  const bad = /^gemm: a row group's base and segmentStride must be integers >= 0$/;
  throws(rows([group(0), group(2, { base: -4 })]), RangeError, bad);
  throws(rows([group(0, { segmentStride: -16 })]), RangeError, bad);
  throws(rows([group(0, { base: 1.5 })]), RangeError, bad);
  // Four groups, all into C (no c2 needed): fine.
  assert.equal(
    planGemm({ ...ROWS, rowGroups: [0, 1, 2, 5].map((r) => group(r)), c2: undefined }, CPU_PROFILE)
      .passes.length,
    1,
  );
});
