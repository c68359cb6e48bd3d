// An Inception block's three 1×1 convolutions of its input as ONE GEMM (issue #15, section 2;
// layers/concat.ts: planConcat, mergeLayout, concatForward/concatBackward): the plan says which
// branches merge (pointwise convolutions of the concatenation's input with the same activation),
// and the merged block computes what the unfused reference executor (tests/unfused.ts: every leaf
// by itself, the separate concat/split kernels) computes: in f32 bit for bit (output, input
// gradient, every weight and bias gradient; the same GEMM k-order per element, the input
// gradients summed in the same order through the GEMM's beta), in f16 within one more f16
// rounding of the input gradient (summed in place: rounded once instead of per member); backward
// permutes x once for the three (where the GEMMs do not read it in place). Where a call cannot merge (an f16 weight of odd size) it runs
// the branches one by one, and says so by its kernels. Training with replay (the merged GEMM in
// its recorded step) is bit-identical to recording every step (the weights' copies into the
// merged GEMM's operand are on the tape).
import assert from "node:assert/strict";
import type { Gpu, Tensor } from "../gpu/mod.ts";
import { makeSynthetic } from "../data/mod.ts";
import { GpuRuntime } from "../gpu/runtime.ts";
import {
  conv2dBackward,
  type Conv2dExecution,
  conv2dPermuteX,
  conv2dPointwiseGroup,
  conv2dReadsInPlace,
  observeConv2d,
} from "../kernels/conv2d/index.ts";
import { accumulate, cast } from "../kernels/elementwise.ts";
import {
  activation,
  conv2d,
  type Ctx,
  flatten,
  globalAvgPool,
  inception,
  type Layer,
  linear,
  maxPool2d,
  namedParams,
  release,
  sequential,
} from "../layers/mod.ts";
import {
  type Branch,
  concatBackward,
  concatForward,
  mergeLayout,
  planConcat,
} from "../layers/concat.ts";
import { planSteps } from "../layers/plan.ts";
import { createModel, Trainer, uploadImageSet } from "../models/mod.ts";
import { assertClose, F16_TEST, f16Tolerance, GPU_TEST, maxAbs, testGpu } from "./harness.ts";
import { kernelsOf, kernelsOfAsync } from "./kernels_of.ts";
import { unfused } from "./unfused.ts";

/** Uniform draws in [lo, hi) from a seed (mulberry32). */
function uniformFrom(seed: number): (lo: number, hi: number) => number {
  let a = seed >>> 0;
  return (lo, hi) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return lo + (hi - lo) * (((t ^ (t >>> 14)) >>> 0) / 2 ** 32);
  };
}

// -------------------------------------------------------------------------------- plan ----

/** A branch of `layers`, planned as a concatenation's (into its slice). */
const branch = (layers: Layer[], channelOffset: number, channels: number): Branch => ({
  steps: planSteps(layers, { into: true }),
  channelOffset,
  channels,
});
const relu = () => activation("relu");
const pw = (cIn: number, cOut: number, more: Record<string, unknown> = {}) =>
  conv2d({ inChannels: cIn, outChannels: cOut, kernel: 1, ...more });

Deno.test("planConcat: an Inception block's three 1×1 convolutions merge, in branch order", () => {
  const plan = planConcat([
    branch([pw(8, 4), relu()], 0, 4),
    branch(
      [pw(8, 6), relu(), conv2d({ inChannels: 6, outChannels: 5, kernel: 3, padding: 1 })],
      4,
      5,
    ),
    branch(
      [pw(8, 2), relu(), conv2d({ inChannels: 2, outChannels: 3, kernel: 5, padding: 2 })],
      9,
      3,
    ),
    branch([maxPool2d({ kernel: 3, stride: 1, padding: 1 }), pw(8, 2), relu()], 12, 2),
  ]);
  assert.deepEqual(JSON.parse(JSON.stringify(plan.merge)), {
    members: [
      { branch: 0, row: 0, channels: 4, into: true },
      { branch: 1, row: 4, channels: 6, into: false },
      { branch: 2, row: 10, channels: 2, into: false },
    ],
    rows: 12,
    cIn: 8,
    activation: "relu",
    bias: true,
  });
  // Pure: the same value again.
  assert.deepEqual(planConcat(plan.branches).merge, plan.merge);
});

Deno.test("planConcat: only pointwise convolutions with the same activation and bias merge", () => {
  const members = (bs: Branch[]) => planConcat(bs).merge?.members.map((m) => m.branch) ?? null;
  // A 3×3 first step, a strided, padded or grouped 1×1: not pointwise.
  assert.equal(
    members([
      branch([pw(8, 4), relu()], 0, 4),
      branch([conv2d({ inChannels: 8, outChannels: 4, kernel: 3, padding: 1 }), relu()], 4, 4),
      branch([pw(8, 4, { stride: 2 }), relu()], 8, 4),
      branch([pw(8, 4, { padding: 1 }), relu()], 12, 4),
      branch([pw(8, 4, { groups: 2 }), relu()], 16, 4),
    ]),
    null,
  );
  // Different activations: the largest set merges (the first among equals).
  assert.deepEqual(
    members([
      branch([pw(8, 4), activation("tanh")], 0, 4),
      branch([pw(8, 4), relu()], 4, 4),
      branch([pw(8, 4)], 8, 4),
      branch([pw(8, 4), relu()], 12, 4),
    ]),
    [1, 3],
  );
  // With and without a bias do not merge together; without an activation they do.
  assert.deepEqual(
    members([
      branch([pw(8, 4, { bias: false })], 0, 4),
      branch([pw(8, 4)], 4, 4),
      branch([pw(8, 4, { bias: false })], 8, 4),
    ]),
    [0, 2],
  );
  // A DenseNet stage (BatchNorm first, and the input itself): nothing to merge.
  assert.equal(
    members([branch([pw(8, 4), relu()], 8, 4), { steps: [], channelOffset: 0, channels: 8 }]),
    null,
  );
});

Deno.test("mergeLayout: outputs aligned in one buffer; declined where a call cannot merge", () => {
  const merge = planConcat([
    branch([pw(6, 3), relu()], 0, 3),
    branch([pw(6, 5), relu(), pw(5, 2)], 3, 2),
    branch([pw(6, 1), relu(), pw(1, 2)], 5, 2),
  ]).merge!;
  const limits = {
    maxStorageBufferBindingSize: 2 ** 27,
    minStorageBufferOffsetAlignment: 256,
    maxBufferSize: 2 ** 28,
  };
  const call = { x: [2, 6, 3, 3], y: [2, 7, 3, 3], dtype: "f32", limits } as const;
  // Member 1: 2 * 5 * 9 = 90 elements from 0; member 2 from the next 64-element boundary.
  assert.deepEqual(mergeLayout(merge, call), { elements: 128 + 18, outputs: [-1, 0, 128] });
  assert.deepEqual(mergeLayout(merge, { ...call, dtype: "f16" }), {
    elements: 128 + 18,
    outputs: [-1, 0, 128],
  });
  // f16 weights of 3 * 5 and 1 * 5 elements: not placeable by 4-byte copies.
  const odd = { ...call, x: [2, 5, 3, 3], dtype: "f16" } as const;
  const merge5 = { ...merge, cIn: 5 };
  assert.equal(mergeLayout(merge5, odd), null);
  assert.notEqual(mergeLayout(merge5, { ...odd, dtype: "f32" }), null);
  // f16 activations with f32 weights place them; weights of two types do not merge.
  assert.notEqual(mergeLayout(merge5, { ...odd, weights: "f32" }), null);
  assert.equal(mergeLayout(merge, { ...call, weights: "mixed" }), null);
  // A tensor over one binding.
  const small = { ...limits, maxStorageBufferBindingSize: 512 };
  assert.equal(mergeLayout(merge, { ...call, limits: small }), null);
});

// ---------------------------------------------------------------- merged vs unmerged ----

interface BlockCase {
  readonly label: string;
  readonly options: Parameters<typeof inception>[0];
  readonly x: [number, number, number, number];
  readonly dtype: "f32" | "f16";
  /** Whether the call runs merged (else the branches one by one). */
  readonly merged: boolean;
}

const BLOCKS: BlockCase[] = [
  {
    label: "odd channels, odd 5x7 images",
    options: { inChannels: 5, c1: 3, c2: [4, 6], c3: [2, 3], c4: 3 },
    x: [2, 5, 5, 7],
    dtype: "f32",
    merged: true,
  },
  {
    label: "multiples of 4 (vec4 loads and stores), 4x4 images",
    options: { inChannels: 16, c1: 8, c2: [12, 16], c3: [4, 8], c4: 8 },
    x: [3, 16, 4, 4],
    dtype: "f32",
    merged: true,
  },
  {
    label: "one pixel, a one-channel branch",
    options: { inChannels: 7, c1: 1, c2: [1, 3], c3: [5, 1], c4: 2 },
    x: [3, 7, 1, 1],
    dtype: "f32",
    merged: true,
  },
  {
    label: "GoogLeNet's 3a at 9x9 (batched pointwise GEMMs unmerged: 81 pixels)",
    options: { inChannels: 192, c1: 64, c2: [96, 128], c3: [16, 32], c4: 32 },
    x: [1, 192, 9, 9],
    dtype: "f32",
    merged: true,
  },
  {
    label: "f16, even weight sizes, odd 3x5 images",
    options: { inChannels: 6, c1: 3, c2: [5, 4], c3: [1, 2], c4: 3 },
    x: [2, 6, 3, 5],
    dtype: "f16",
    merged: true,
  },
  {
    label: "f16, odd weight sizes (3 * 5): runs unmerged",
    options: { inChannels: 5, c1: 3, c2: [4, 6], c3: [2, 3], c4: 3 },
    x: [2, 5, 3, 3],
    dtype: "f16",
    merged: false,
  },
];

/** The block's parameters on `gpu`: values, zeroed gradients, f16 copies for an f16 run. */
function materialize(gpu: Gpu, block: Layer, dtype: "f32" | "f16", seed: number): void {
  const uniform = uniformFrom(seed);
  for (const [, p] of namedParams(block)) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    const values = Float32Array.from({ length: size }, () => uniform(-0.5, 0.5));
    p.value = gpu.tensor(values, { shape: p.shape });
    p.grad = gpu.zeros(p.shape);
    if (dtype === "f16" && p.shape.length === 4) {
      p.half = gpu.empty(p.shape, { dtype: "f16" });
      cast({ y: p.half, x: p.value });
    }
  }
}

/** Forward and backward of `run`: the output, dx, the gradients by name, the kernels. */
async function pass(
  gpu: Gpu,
  block: Layer,
  run: Pick<Layer, "forward" | "backward">,
  c: BlockCase,
) {
  for (const [, p] of namedParams(block)) gpu.clear(p.grad!);
  const uniform = uniformFrom(7);
  const size = c.x.reduce((a, b) => a * b, 1);
  const x32 = gpu.tensor(Float32Array.from({ length: size }, () => uniform(-1, 1)), {
    shape: c.x,
  });
  let x: Tensor = x32;
  if (c.dtype === "f16") {
    x = gpu.empty(c.x, { dtype: "f16" });
    cast({ y: x, x: x32 });
  }
  const ctx: Ctx = { gpu, training: true, seed: 1 };
  const out = { y: null as Tensor | null, dx: null as Tensor | null };
  const calls: Conv2dExecution[] = [];
  const stop = observeConv2d(gpu, (e) => calls.push(e));
  const kernels = kernelsOf(gpu, () => {
    const f = run.forward(x, ctx);
    out.y = f.y;
    const dy = gpu.empty(f.y.shape, { dtype: f.y.dtype });
    const dy32 = gpu.tensor(
      Float32Array.from({ length: f.y.size }, () => uniform(-1, 1)),
      { shape: f.y.shape },
    );
    cast({ y: dy, x: dy32 });
    out.dx = run.backward(dy, { cache: f.cache, ctx, needDx: true });
    dy.dispose();
    dy32.dispose();
  });
  stop();
  const read = async (t: Tensor) => Float64Array.from(await t.toArray() as ArrayLike<number>);
  const grads = new Map<string, Float64Array>();
  for (const [name, p] of namedParams(block)) grads.set(name, await read(p.grad!));
  const result = { y: await read(out.y!), dx: await read(out.dx!), grads, kernels, calls };
  for (const t of [out.y, out.dx, x, x32]) t?.dispose();
  return result;
}

for (const c of BLOCKS) {
  Deno.test(
    `inception merged vs unmerged (${c.dtype}): ${c.label}`,
    c.dtype === "f16" ? F16_TEST : GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const block = inception(c.options);
      materialize(gpu, block, c.dtype, 3);
      const merged = await pass(gpu, block, block, c);
      const plain = await pass(gpu, block, unfused(block), c);
      // The merged GEMM's store (row groups) ran exactly when the call merges.
      const rows = merged.kernels.filter((k) => /^gemm_.*_rows/.test(k)).length;
      assert.equal(rows, c.merged ? 1 : 0, `merged GEMMs: ${merged.kernels.join(", ")}`);
      assert.ok(merged.kernels.length < plain.kernels.length);
      // Backward reads x and dy in place where the backward GEMMs do (conv2dReadsInPlace: here,
      // 4x4 images): then nothing is permuted, merged or not. Elsewhere it permutes x once for
      // all the merged members (concatBackward's conv2dPermuteX, which their conv2d calls bind
      // as xT): the unfused block permutes it in each of the three pointwise convolutions'
      // weight gradients (all on the GEMM path here, as their plans say), so merged runs two
      // fewer permutations; every other one (dy's, the pooled branch's x) is the same.
      const inPlace = conv2dReadsInPlace(gpu, c.x[2] * c.x[3], { direct: false });
      const shared = c.merged && !inPlace;
      const calls = (r: typeof merged, xT: boolean) =>
        r.calls.filter((e) => (e.problem.permutedX ?? false) === xT);
      const steps = (es: Conv2dExecution[], src?: string) =>
        es.flatMap((e) => e.plan.steps).filter((s) =>
          s.kind === "permute" && (src === undefined || s.src.buffer === src)
        ).length;
      const permutes = (r: typeof merged) =>
        r.kernels.filter((k) => k.startsWith("conv2d_permute")).length;
      if (inPlace) assert.equal(permutes(plain), 0, `in place: ${plain.kernels}`);
      assert.equal(calls(plain, true).length, 0);
      assert.equal(permutes(plain), steps(plain.calls), "unfused: every permutation a conv2d's");
      const members = calls(merged, true);
      assert.equal(members.length, shared ? 3 : 0, "conv2d calls binding the shared xT");
      assert.equal(steps(members, "x"), 0, "members permute no x of their own");
      assert.equal(
        permutes(merged),
        steps(merged.calls) + (shared ? 1 : 0),
        "merged: one x permutation outside the conv2d calls",
      );
      if (shared) assert.equal(steps(plain.calls, "x") - steps(merged.calls, "x"), 3);
      assert.equal(permutes(merged), permutes(plain) - (shared ? 2 : 0), `${merged.kernels}`);
      const same = (what: string, a: Float64Array, b: Float64Array, tol?: number) => {
        if (c.dtype === "f32") {
          const differ = a.filter((v, i) => v !== b[i] && !(Number.isNaN(v) && Number.isNaN(b[i])));
          assert.equal(differ.length, 0, `${what}: ${differ.length} of ${a.length} differ`);
        } else {
          assertClose(a, b, { ...f16Tolerance(maxAbs(b), tol ?? 0), what });
        }
      };
      same("y", merged.y, plain.y);
      // f16: the members' input gradients are summed before one rounding (unmerged: each is
      // rounded to f16, then their sums).
      same("dx", merged.dx, plain.dx, 2);
      for (const [name, g] of plain.grads) same(`grad ${name}`, merged.grads.get(name)!, g);
      for (const [, p] of namedParams(block)) {
        for (const t of [p.value, p.grad, p.half]) t?.dispose();
      }
    },
  );
}

// ----------------------------------------------------------------------------- replay ----

/** A small model around two Inception blocks (8x8 inputs, 3 classes). */
function inceptionModel(gpu: Gpu, precision: "f32" | "f16") {
  const net = sequential([
    conv2d({ inChannels: 1, outChannels: 8, kernel: 3, padding: 1 }),
    activation("relu"),
    inception({ inChannels: 8, c1: 4, c2: [4, 6], c3: [2, 4], c4: 2 }),
    inception({ inChannels: 16, c1: 2, c2: [6, 4], c3: [4, 2], c4: 4 }),
    globalAvgPool(),
    flatten(),
    linear({ inFeatures: 12, outFeatures: 3 }),
  ]);
  return createModel(gpu, {
    name: "inception-net",
    net,
    inputShape: [1, 8, 8],
    seed: 5,
    precision,
  });
}

for (const precision of ["f32", "f16"] as const) {
  Deno.test(
    `inception replay (${precision}): bit-identical to recording every step`,
    precision === "f16" ? F16_TEST : GPU_TEST,
    async () => {
      const gpu = await testGpu();
      assert.ok(gpu instanceof GpuRuntime);
      const train = async (replay: boolean) => {
        const model = inceptionModel(gpu, precision);
        const trainer = new Trainer(model, {
          lr: 0.1,
          momentum: 0.9,
          batchSize: 2,
          resize: 8,
          seed: 1,
          replay,
          precision,
        });
        const set = uploadImageSet(
          gpu,
          makeSynthetic({ count: 6, height: 8, classes: 3, seed: 2 }),
        );
        const replays0 = gpu.hostStats.replays;
        const losses: number[] = [];
        // The kernels dispatched (a replayed step dispatches none: its tape is re-encoded).
        const kernels = await kernelsOfAsync(gpu, async () => {
          for (let epoch = 0; epoch < 2; epoch++) {
            losses.push((await trainer.trainEpoch(set, { epoch })).loss);
          }
        });
        const steps = trainer.steps;
        const values = await model.arena.values.toArray() as Float32Array;
        const params = new Uint32Array(values.buffer, values.byteOffset, values.length);
        const replays = gpu.hostStats.replays - replays0;
        trainer.dispose();
        model.dispose();
        set.images.dispose();
        set.labels.dispose();
        return { losses, params, replays, kernels, steps };
      };
      const plain = await train(false);
      const replayed = await train(true);
      assert.equal(plain.replays, 0);
      assert.ok(replayed.replays > 0, "steps were replayed");
      // Both blocks ran merged (one row-group GEMM each per step): in the one recorded step of
      // the replayed run, in every step of the other.
      const rows = (r: typeof plain) => r.kernels.filter((k) => /^gemm_.*_rows/.test(k)).length;
      assert.equal(replayed.replays, replayed.steps - 1, "one step recorded, the others replayed");
      assert.equal(rows(replayed), 2, `recorded step: ${replayed.kernels.join(", ")}`);
      assert.equal(rows(plain), 2 * plain.steps, "every step of the run without replay");
      assert.deepEqual(replayed.losses, plain.losses, "the losses are bit-identical");
      assert.deepEqual(replayed.params, plain.params, "the parameters are bit-identical");
    },
  );
}

// ------------------------------------------------------------- conv2dBackward options ----

Deno.test(
  "conv2dBackward: accumulateDx sums into dx and xT replaces x's permutation (pointwise)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const uniform = uniformFrom(11);
    const p = { n: 2, cIn: 5, h: 3, w: 7, cOut: 6, kernel: 1 };
    const data = (shape: number[]) =>
      gpu.tensor(
        Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => uniform(-1, 1)),
        {
          shape,
        },
      );
    const x = data([2, 5, 3, 7]), w = data([6, 5, 1, 1]), dy = data([2, 6, 3, 7]);
    const prior = data([2, 5, 3, 7]);
    // Plain: dx, then dx + prior by its own kernel; dw and db accumulated onto zeros.
    const dx0 = gpu.empty(x.shape), dw0 = gpu.zeros(w.shape), db0 = gpu.zeros([6]);
    conv2dBackward({ dx: dx0, dw: dw0, db: db0, dy, x, w }, { ...p, accumulate: true });
    accumulate({ y: dx0, x: prior });
    // Options: dx += onto a copy of prior, x permuted once by the caller.
    const dx1 = gpu.empty(x.shape), dw1 = gpu.zeros(w.shape), db1 = gpu.zeros([6]);
    gpu.copy(prior, dx1);
    const xT = gpu.empty([5, 2 * 21]);
    conv2dPermuteX({ xT, x });
    const kernels = kernelsOf(
      gpu,
      () =>
        conv2dBackward({ dx: dx1, dw: dw1, db: db1, dy, x, w, xT }, {
          ...p,
          accumulate: true,
          accumulateDx: true,
        }),
    );
    // One permutation (dy's) instead of two; none where dy is read in place.
    assert.equal(
      kernels.filter((k) => k.startsWith("conv2d_permute")).length,
      conv2dReadsInPlace(gpu, 21, { direct: false }) ? 0 : 1,
      `${kernels}`,
    );
    for (const [a, b] of [[dx0, dx1], [dw0, dw1], [db0, db1]]) {
      assert.deepEqual(await b.toArray(), await a.toArray());
    }
    // Only the pointwise GEMM path accumulates dx.
    const w3 = gpu.zeros([6, 5, 3, 3]);
    assert.throws(
      () =>
        conv2dBackward({ dx: dx1, dy, x, w: w3 }, {
          ...p,
          kernel: 3,
          padding: 1,
          accumulateDx: true,
        }),
      /accumulateDx needs the pointwise GEMM path/,
    );
    assert.throws(() => conv2dPermuteX({ xT: gpu.empty([3]), x }), TypeError);
    for (const t of [x, w, dy, prior, dx0, dw0, db0, dx1, dw1, db1, xT, w3]) t.dispose();
  },
);

// ------------------------------------------------ every member into its slice; options ----

Deno.test(
  "concat merged vs one by one: members all into their slices, gradients accumulated, " +
    "needDx false, eval",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    // Two single-step branches (each writes into its slice: the merged GEMM has no second
    // output, so the row-group store binds a stand-in) and a pooled one that does not merge.
    const convs = [pw(6, 3), pw(6, 5), pw(6, 2)];
    const plan = planConcat([
      branch([convs[0], relu()], 0, 3),
      branch([convs[1], relu()], 3, 5),
      branch([maxPool2d({ kernel: 3, stride: 1, padding: 1 }), convs[2], relu()], 8, 2),
    ]);
    assert.deepEqual(plan.merge?.members.map((m) => [m.branch, m.into]), [[0, true], [1, true]]);
    const plain = { branches: plan.branches, merge: null };
    const holder = sequential(convs);
    materialize(gpu, holder, "f32", 9);
    const uniform = uniformFrom(13);
    const data = (shape: readonly number[]) =>
      gpu.tensor(
        Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => uniform(-1, 1)),
        { shape },
      );
    const x = data([2, 6, 3, 5]), dy = data([2, 10, 3, 5]);
    const priors = namedParams(holder).map(([, p]) => data(p.shape));
    const read = async (t: Tensor) => Array.from(await t.toArray() as Float32Array);
    const run = async (which: typeof plan, training: boolean, needDx: boolean) => {
      // Gradients start from non-zero values: the members' must be accumulated onto them.
      namedParams(holder).forEach(([, p], i) => gpu.copy(priors[i], p.grad!));
      const ctx: Ctx = { gpu, training, seed: 1 };
      const kernels: string[] = [];
      let out: { y: number[]; dx: number[] | null } = { y: [], dx: null };
      let dxT: Tensor | null = null, yT: Tensor | null = null;
      kernels.push(...kernelsOf(gpu, () => {
        const f = concatForward(which, { x, shape: [2, 10, 3, 5], ctx });
        yT = f.y;
        if (training) dxT = concatBackward(which, f.cache, { dy, ctx, needDx });
      }));
      out = { y: await read(yT!), dx: dxT ? await read(dxT) : null };
      const grads = [];
      for (const [, p] of namedParams(holder)) grads.push(await read(p.grad!));
      release(yT, dxT);
      return { ...out, grads, kernels };
    };
    for (const [training, needDx] of [[true, true], [true, false], [false, false]]) {
      const a = await run(plan, training, needDx), b = await run(plain, training, needDx);
      const what = `training ${training}, needDx ${needDx}`;
      assert.equal(a.kernels.filter((k) => /^gemm_.*_rows/.test(k)).length, 1, what);
      assert.deepEqual(a.y, b.y, `${what}: y`);
      assert.deepEqual(a.dx, b.dx, `${what}: dx`);
      assert.equal(a.dx === null, !needDx, what);
      assert.deepEqual(a.grads, b.grads, `${what}: gradients`);
      // The priors are non-zero: an overwritten gradient would differ from the reference's sum.
      if (training) assert.notDeepEqual(a.grads[0], await read(priors[0]), `${what}: moved`);
    }
    for (const [, p] of namedParams(holder)) for (const t of [p.value, p.grad]) t?.dispose();
    release(x, dy, ...priors);
  },
);

Deno.test(
  "conv2dPointwiseGroup: mismatched weights and outputs are one clear TypeError",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const x = gpu.zeros([1, 4, 2, 2]), y = gpu.empty([1, 6, 2, 2]);
    const w2 = gpu.zeros([2, 4, 1, 1]), w4 = gpu.zeros([4, 4, 1, 1]);
    const outputs = [
      { channels: 2, base: 0, imageStride: 24 },
      { channels: 4, base: 8, imageStride: 24 },
    ];
    assert.throws(
      () => conv2dPointwiseGroup({ y, x, weights: [w2] }, { outputs }),
      /conv2dPointwiseGroup: 1 weights, 0 biases and 2 outputs must match/,
    );
    assert.throws(
      () => conv2dPointwiseGroup({ y, x, weights: [w4, w2] }, { outputs }),
      /conv2dPointwiseGroup: weight 0 .* must hold \[2, 4, 1, 1\]/,
    );
    release(x, y, w2, w4);
  },
);
