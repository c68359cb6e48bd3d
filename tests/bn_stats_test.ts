// Batch statistics gathered by the producer of a batch norm's input (the op-level checks are
// BN_STATS_CHECKS of tests/ops/batchnorm_stats.ts, run by batchnorm_test.ts): the plan's pure
// decisions (which steps pair in layers/plan.ts, which GEMM and conv plans can gather, and every
// fallback), the kernels a fused training forward records (and eval's, unchanged), and whole
// models' training steps against the old path (the batch norm reducing its own input: the
// unfused reference of tests/unfused.ts), within the batch-norm suites' tolerances.
import assert from "node:assert/strict";
import type { Tensor } from "../gpu/mod.ts";
import { WEBGPU_DEFAULT_PROFILE } from "../kernels/_adapter.ts";
import { conv2dGeometry, conv2dStatsLayout } from "../kernels/conv2d/index.ts";
import { planConv2d } from "../kernels/conv2d/plan.ts";
import { type GemmProblem, gemmStatsLayout, planGemm } from "../kernels/gemm/index.ts";
import { MAX_PARTIAL_TILES } from "../kernels/batchnorm/partials.ts";
import { setBnFusionMode } from "../kernels/batchnorm/fusion_mode.ts";
import { REGISTER_WG } from "../kernels/gemm/types.ts";
import { statsOnAdapter } from "../kernels/gemm/stats.ts";
import {
  activation,
  batchNorm,
  conv2d,
  type Ctx,
  flatten,
  type Layer,
  linear,
  maxPool2d,
  sequential,
} from "../layers/mod.ts";
import { planSteps } from "../layers/plan.ts";
import { createModel, type Model, type ModelName } from "../models/mod.ts";
import { softmaxCrossEntropy } from "../kernels/softmax_ce/index.ts";
import { detState, detValues } from "./det.ts";
import { assertClose, GPU_TEST, testGpu } from "./harness.ts";
import { kernelsOf } from "./kernels_of.ts";
import { unfused } from "./unfused.ts";

const CPU = { ...WEBGPU_DEFAULT_PROFILE, isCpu: true, mesaCpu: true, cores: 2 };

Deno.test("plan: a conv/linear without an activation pairs with the batch norm after it", () => {
  const conv = (o: number, groups = 1) =>
    conv2d({ inChannels: 4, outChannels: o, kernel: 3, padding: 1, groups });
  const summary = (layers: Layer[], into = false) =>
    planSteps(layers, { into }).map((s) =>
      [s.layer.kind, s.activation ?? "", s.stats ? "stats" : "", s.batchStats ? "merge" : ""]
        .filter((v) => v !== "").join(" ")
    );
  // conv -> BN -> ReLU: the conv gathers, the BN merges (and applies the ReLU).
  assert.deepEqual(summary([conv(8), batchNorm({ channels: 8 }), activation("relu")]), [
    "Conv2d stats",
    "BatchNorm2d relu merge",
  ]);
  // linear -> BatchNorm1d -> sigmoid (lenet-bn's head).
  assert.deepEqual(
    summary([
      linear({ inFeatures: 4, outFeatures: 3 }),
      batchNorm({ channels: 3, dims: 1 }),
      activation("sigmoid"),
    ]),
    ["Linear stats", "BatchNorm1d sigmoid merge"],
  );
  // A conv with its own activation before the BN: it stores f(y), the BN's input; no pairing.
  assert.deepEqual(summary([conv(8), activation("relu"), batchNorm({ channels: 8 })]), [
    "Conv2d relu",
    "BatchNorm2d",
  ]);
  // A depthwise conv (its own kernels, no epilogue) or a pool before the BN: the BN reduces.
  assert.deepEqual(
    summary([
      conv2d({ inChannels: 4, outChannels: 4, kernel: 3, groups: 4 }),
      batchNorm({ channels: 4 }),
    ]),
    ["Conv2d", "BatchNorm2d"],
  );
  assert.deepEqual(summary([maxPool2d({ kernel: 2 }), batchNorm({ channels: 4 })]), [
    "MaxPool2d",
    "BatchNorm2d",
  ]);
  // A grouped conv pairs (its plan then falls back, see below); BN -> BN does not.
  assert.deepEqual(summary([conv(8, 2), batchNorm({ channels: 8 }), batchNorm({ channels: 8 })]), [
    "Conv2d stats",
    "BatchNorm2d merge",
    "BatchNorm2d",
  ]);
  // A branch's last conv writes into the concatenation: not followed by a BN, no pairing; a BN
  // ending a branch still merges what its conv gathered.
  assert.deepEqual(summary([conv(8)], true), ["Conv2d"]);
  assert.deepEqual(summary([conv(8), batchNorm({ channels: 8 })], true), [
    "Conv2d stats",
    "BatchNorm2d merge",
  ]);
});

/** A row-major GEMM problem (f32 unless said), as a conv's or linear's forward. */
function problem(o: Partial<GemmProblem> & { m: number; n: number; k: number }): GemmProblem {
  return {
    batch: 1,
    transA: false,
    transB: false,
    alpha: 1,
    beta: 0,
    lda: o.k,
    ldb: o.n,
    ldc: o.n,
    strideA: 0,
    strideB: 0,
    strideC: 0,
    biasMode: "none",
    a: { base: 0, dtype: "f32" },
    b: { base: 0, dtype: "f32" },
    c: { base: 0, dtype: "f32" },
    ...o,
  };
}

Deno.test("plan: which GEMM plans gather statistics, and where", () => {
  const conv = problem({ m: 24, n: 300, k: 27 });
  const plan = planGemm(conv, CPU);
  const layout = gemmStatsLayout(plan, "row", CPU, "on");
  assert.ok(layout, "a register GEMM in one dispatch gathers (forced on)");
  assert.equal(gemmStatsLayout(plan, "row", CPU), undefined, "not by default on a CPU adapter");
  const [gx, gy, gz] = plan.passes[0].dispatches[0].workgroups;
  assert.deepEqual(
    layout,
    plan.swap
      ? { kernel: "register", axis: "col", tiles: gy * gz * REGISTER_WG, tilesX: gy, pass: 0 }
      : { kernel: "register", axis: "row", tiles: gx * gz * REGISTER_WG, tilesX: gx, pass: 0 },
  );
  // The shared-memory family: one tile per workgroup along the reduced axis (a GPU gathers by
  // default; a CPU adapter only when forced on: measured slower there).
  const shared = planGemm(conv, WEBGPU_DEFAULT_PROFILE);
  assert.equal(shared.variant, "shared");
  const [sx, , sz] = shared.passes[0].dispatches[0].workgroups;
  assert.deepEqual(gemmStatsLayout(shared, "row", WEBGPU_DEFAULT_PROFILE), {
    kernel: "shared",
    axis: "row",
    tiles: sx * sz,
    tilesX: sx,
    pass: 0,
  });
  const sharedOnCpu = planGemm(conv, CPU, { variant: "shared" });
  assert.equal(gemmStatsLayout(sharedOnCpu, "row", CPU), undefined);
  assert.ok(gemmStatsLayout(sharedOnCpu, "row", CPU, "on"));
  // Partials that would not fit one binding: the batch norm reduces.
  const tinyBinding = {
    ...WEBGPU_DEFAULT_PROFILE,
    limits: { ...WEBGPU_DEFAULT_PROFILE.limits, maxStorageBufferBindingSize: 1024 },
  };
  assert.equal(gemmStatsLayout(shared, "row", tinyBinding), undefined);
  // Forced off: nothing gathers anywhere.
  assert.equal(gemmStatsLayout(plan, "row", CPU, "off"), undefined);
  assert.equal(gemmStatsLayout(shared, "row", WEBGPU_DEFAULT_PROFILE, "off"), undefined);
  // Batched: one tile per thread along the columns, and batch.
  const batched = planGemm(
    problem({ m: 16, n: 81, k: 4, batch: 3, strideB: 324, strideC: 1296 }),
    CPU,
  );
  const lb = gemmStatsLayout(batched, "row", CPU, "on")!;
  assert.equal(lb.tiles, lb.tilesX * 3 * REGISTER_WG);
  // Swapped plans gather along the other axis of the kernel's C.
  const swapped = planGemm(problem({ m: 300, n: 8, k: 64 }), CPU, { swap: true });
  assert.equal(swapped.swap, true);
  assert.equal(gemmStatsLayout(swapped, "col", CPU, "on")?.axis, "row");
  // Beta (a k-pass after the first adds to C) gathers: the stored values are C's final ones.
  assert.ok(gemmStatsLayout(planGemm({ ...conv, beta: 1 }, CPU), "row", CPU, "on"));
  const longF32 = planGemm(problem({ m: 8, n: 64, k: 300000 }), CPU, { splitK: 1 });
  assert.ok(longF32.passes.length > 1 && !longF32.epilogue);
  assert.equal(gemmStatsLayout(longF32, "row", CPU, "on")?.pass, longF32.passes.length - 1);
  // Fallbacks (the kernel that stores C cannot gather): split-K (partial products, then an
  // epilogue stores C), k-passes into an f32 accumulator for an f16 C (an epilogue stores C), an
  // activation in the store (no batch norm's producer has one).
  const split = planGemm(conv, CPU, { splitK: 3 });
  assert.ok(split.splitK > 1);
  assert.equal(gemmStatsLayout(split, "row", CPU, "on"), undefined);
  const relu = planGemm({ ...conv, activation: "relu" }, CPU);
  assert.equal(gemmStatsLayout(relu, "row", CPU, "on"), undefined);
  const longK = problem({ m: 8, n: 64, k: 300000, c: { base: 0, dtype: "f16" } });
  const passes = planGemm(longK, CPU);
  assert.ok(passes.passes.length > 1 && passes.epilogue);
  assert.equal(gemmStatsLayout(passes, "row", CPU, "on"), undefined);
});

Deno.test("plan: the adapter decision (auto) is pure: GPUs every family, CPUs none (measured)", () => {
  for (const kernel of ["register", "shared"] as const) {
    assert.equal(statsOnAdapter(WEBGPU_DEFAULT_PROFILE, kernel), true, kernel);
  }
  assert.equal(statsOnAdapter(CPU, "register"), false);
  assert.equal(statsOnAdapter(CPU, "shared"), false);
  const swiftShader = { ...CPU, mesaCpu: false, swiftShader: true };
  assert.equal(statsOnAdapter(swiftShader, "shared"), false);
});

Deno.test("plan: which conv2d forward plans gather statistics (pure), and the fallbacks", () => {
  const dtypes = { x: "f32", w: "f32", b: "f32", y: "f32" } as const;
  const plan = (p: Parameters<typeof conv2dGeometry>[0], options = {}) =>
    planConv2d(
      { geometry: conv2dGeometry(p), call: "forward", dtypes, options },
      CPU,
      undefined,
    );
  const gemmOk = planGemm(problem({ m: 8, n: 64, k: 9 }), CPU);
  const gemmSplit = planGemm(problem({ m: 8, n: 64, k: 900 }), CPU, { splitK: 2 });
  const im2col = plan({ n: 2, cIn: 3, h: 8, w: 8, cOut: 8, kernel: 3, padding: 1 }, {
    direct: false,
  });
  assert.equal(im2col.forward?.path, "im2col");
  const gemms = im2col.steps.filter((s) => s.kind === "gemm").length;
  const call = { yChannels: 8 };
  const ok = conv2dStatsLayout(im2col, Array(gemms).fill(gemmOk), call, CPU, "on");
  assert.equal(conv2dStatsLayout(im2col, Array(gemms).fill(gemmOk), call, CPU), undefined);
  const t = gemmStatsLayout(gemmOk, "row", CPU, "on")!.tiles;
  assert.deepEqual(ok, {
    tiles: t * gemms,
    gemms: Array.from({ length: gemms }, (_, i) => ({
      layout: gemmStatsLayout(gemmOk, "row", CPU, "on"),
      base: i * t,
    })),
  });
  assert.equal(conv2dStatsLayout(im2col, Array(gemms).fill(gemmOk), call, CPU, "off"), undefined);
  // One GEMM that cannot gather: none does (the batch norm reduces y itself).
  assert.equal(conv2dStatsLayout(im2col, [gemmSplit], call, CPU, "on"), undefined);
  // Output into a slice of a wider tensor (a concatenation); a fused activation.
  const fill = Array(gemms).fill(gemmOk);
  assert.equal(conv2dStatsLayout(im2col, fill, { yChannels: 16 }, CPU, "on"), undefined);
  const relu = { ...call, activation: "relu" };
  assert.equal(conv2dStatsLayout(im2col, fill, relu, CPU, "on"), undefined);
  // Pointwise (GEMMs straight on NCHW) gathers.
  const pointwise = plan({ n: 2, cIn: 16, h: 9, w: 9, cOut: 8, kernel: 1 });
  assert.equal(pointwise.forward?.path, "pointwise");
  assert.ok(conv2dStatsLayout(pointwise, [gemmOk], call, CPU, "on"));
  // The direct kernel does not gather (the batch norm reduces its output), even forced on.
  const direct = plan({ n: 2, cIn: 3, h: 8, w: 8, cOut: 8, kernel: 3 }, { direct: true });
  assert.equal(direct.forward?.path, "direct");
  assert.equal(conv2dStatsLayout(direct, [], call, CPU, "on"), undefined);
  assert.equal(conv2dStatsLayout(direct, [], call, WEBGPU_DEFAULT_PROFILE), undefined);
  // A grouped convolution (one GEMM per group) does not gather.
  const grouped = plan({ n: 2, cIn: 4, h: 8, w: 8, cOut: 8, kernel: 3, groups: 2 }, {
    direct: false,
  });
  assert.equal(conv2dStatsLayout(grouped, [gemmOk], call, CPU, "on"), undefined);
  // Too many tiles per channel for the merge.
  const many = Array(MAX_PARTIAL_TILES / t + 1).fill(gemmOk);
  assert.equal(conv2dStatsLayout(pointwise, many, call, CPU, "on"), undefined);
});

/** One training step (batch 2) of a model, fused or the old path: logits, grads, running stats. */
async function trainStep(
  model: Model,
  size: number,
  run: "fused" | "old",
): Promise<{ kernels: string[]; out: Map<string, Float32Array> }> {
  const gpu = model.gpu;
  const ref = unfused(model.net);
  const fwd = (x: Tensor, ctx: Ctx) =>
    run === "fused" ? model.forward(x, ctx) : ref.forward(x, ctx);
  model.loadStateDict(detState(model));
  model.zeroGrad();
  const x = gpu.tensor(detValues("input", 2 * size * size, 0, 1), { shape: [2, 1, size, size] });
  const labels = gpu.tensor(Int32Array.from([3, 7]), { shape: [2] });
  const ctx: Ctx = { gpu, training: true, seed: 1, dropout: 0 };
  let f!: ReturnType<typeof fwd>;
  const kernels = kernelsOf(gpu, () => f = fwd(x, ctx));
  const dlogits = gpu.empty(f.y.shape), lossSum = gpu.zeros([1]);
  const correct = gpu.zeros([1], { dtype: "u32" });
  softmaxCrossEntropy({ dlogits, lossSum, correct, logits: f.y, labels }, { n: 2, c: 10 });
  if (run === "fused") model.backward(dlogits, { cache: f.cache, ctx });
  else ref.backward(dlogits, { cache: f.cache, ctx, needDx: false })?.dispose();
  const out = new Map<string, Float32Array>();
  out.set("logits", await f.y.toArray() as Float32Array);
  for (const [k, p] of model.params) out.set(`grad ${k}`, await p.grad!.toArray() as Float32Array);
  for (const e of model.state) {
    if (e.kind === "buffer") out.set(e.name, await e.buffer.value!.toArray() as Float32Array);
  }
  for (const t of [x, labels, dlogits, lossSum, correct, f.y]) t.dispose();
  return { kernels, out };
}

const MODELS: [ModelName, number][] = [["lenet-bn", 28], ["resnet", 64], ["mobilenet", 96]];
for (const [name, size] of MODELS) {
  Deno.test(
    `${name}: a training step with gathered statistics matches the old path (the batch norms ` +
      "reducing their inputs) within the batch-norm tolerances",
    GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const model = createModel(gpu, { name });
      const mode = setBnFusionMode(gpu, "batchStats", "on"); // (a CPU adapter: not by default)
      let fused, old;
      try {
        fused = await trainStep(model, size, "fused");
        old = await trainStep(model, size, "old");
      } finally {
        setBnFusionMode(gpu, "batchStats", mode);
        model.dispose();
      }
      const merges = fused.kernels.filter((k) => k.startsWith("batchnorm_stats_tiles")).length;
      const gathers = fused.kernels.filter((k) => /^gemm_(reg|smem)_stats_/.test(k)).length;
      console.log(`${name}: ${gathers} GEMM stores gather, ${merges} batch norms merge`);
      assert.ok(merges > 0 && merges === gathers, `${gathers} gather, ${merges} merge`);
      assert.equal(old.kernels.filter((k) => k.startsWith("batchnorm_stats_tiles")).length, 0);
      for (const [k, want] of old.out) {
        const got = fused.out.get(k)!;
        const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-3);
        if (!k.startsWith("grad ")) {
          // Logits and running statistics: the batch-norm suites' tolerance, relative to the
          // tensor's magnitude.
          assertClose(got, want, { rtol: 1e-4, atol: 1e-4 * scale, what: `${name} ${k}` });
          continue;
        }
        // Gradients: a statistic's last-bit difference moves every value after it, and through
        // the ReLUs of a batch of 2 a value near 0 may change side, which moves single elements
        // of the first layers' gradients by up to a few percent: the difference's norm, relative
        // to the gradient's, at most 3e-2 (measured: 1.2e-2, MobileNet's conv1.weight; conv biases
        // before a batch norm, zero but for rounding, relative to 1e-2 per element).
        let d2 = 0, g2 = 0;
        for (let i = 0; i < want.length; i++) {
          d2 += (got[i] - want[i]) ** 2;
          g2 += want[i] ** 2;
        }
        const rel = Math.sqrt(d2) / Math.max(Math.sqrt(g2), 1e-2 * Math.sqrt(want.length));
        assert.ok(rel <= 3e-2, `${name} ${k}: |fused - old| / |old| = ${rel}`);
      }
    },
  );
}

Deno.test(
  "a conv -> BN -> ReLU chain: training merges the gathered statistics, eval reduces; no partials left live",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const net = sequential([
      conv2d({ inChannels: 1, outChannels: 6, kernel: 3, padding: 1 }),
      batchNorm({ channels: 6 }),
      activation("relu"),
      flatten(),
      linear({ inFeatures: 6 * 8 * 8, outFeatures: 3 }),
    ]);
    const model = createModel(gpu, { name: "chain", net, inputShape: [1, 8, 8], seed: 1 });
    const x = gpu.tensor(detValues("input", 2 * 64, -1, 1), { shape: [2, 1, 8, 8] });
    const mode = setBnFusionMode(gpu, "batchStats", "on");
    for (const training of [true, false]) {
      const ctx: Ctx = { gpu, training, seed: 1 };
      const live = gpu.pool.stats.liveBytes;
      let f!: ReturnType<typeof model.forward>;
      const names = kernelsOf(gpu, () => f = model.forward(x, ctx));
      const has = (re: RegExp) => names.some((n) => re.test(n));
      if (training) {
        assert.ok(has(/^gemm_(reg|smem)_stats_/), `gathered in the GEMM store: ${names}`);
        assert.ok(has(/^batchnorm_stats_tiles/), `merged: ${names}`);
        assert.ok(!has(/^batchnorm_stats_(?!tiles)/), `no reduction of the input: ${names}`);
      } else if (!training) {
        assert.ok(!has(/^gemm_(reg|smem)_stats_|^batchnorm_stats_tiles/), `eval: ${names}`);
      }
      const dy = gpu.zeros(f.y.shape);
      if (training) model.backward(dy, { cache: f.cache, ctx });
      for (const t of [dy, f.y]) t.dispose();
      // (eval's caches hold handles to the inputs until a backward, which eval has not)
      if (training) assert.equal(gpu.pool.stats.liveBytes, live, "no handle left live");
    }
    setBnFusionMode(gpu, "batchStats", mode);
    x.dispose();
    model.dispose();
  },
);
