// Fused steps: the compositions run the plan of layers/plan.ts, which fuses conv/linear/BatchNorm
// + activation epilogues and lets Inception branches and DenseNet convs write straight into their
// concat buffers. Their correctness against PyTorch is the parity suite's (models_test.ts); here
// the fused step of each model is compared with the unfused reference executor of tests/unfused.ts
// (every leaf layer by itself, the separate concat/split kernels): bit-identical logits,
// gradients and running statistics (the fused kernels compute exactly what the separate ones do);
// and the fused step records no separate activation pass and no copy of a branch's output into a
// concatenation (the kernels it dispatches, by name), fewer dispatches in all, peaks lower and
// leaves no handle live.
import assert from "node:assert/strict";
import type { Tensor } from "../gpu/mod.ts";
import { softmaxCrossEntropy } from "../kernels/softmax_ce/index.ts";
import type { Ctx, Layer } from "../layers/mod.ts";
import { buildArchitecture, createModel, type Model, type ModelName } from "../models/mod.ts";
import { detState, detValues } from "./det.ts";
import { GPU_TEST, testGpu } from "./harness.ts";
import { kernelsOf } from "./kernels_of.ts";
import { unfused } from "./unfused.ts";

interface StepResult {
  logitsEval: Float32Array;
  logitsTrain: Float32Array;
  grads: Map<string, Float32Array>;
  running: Map<string, Float32Array>;
  /** Dispatches of the training forward and backward. */
  dispatches: number;
  /** The kernels of the training forward, by name. */
  forwardKernels: string[];
  /** The kernels of the training backward, by name. */
  backwardKernels: string[];
  /** Peak live bytes of the training step. */
  peak: number;
  /** Live bytes left over by the step once its outputs are disposed (leaked handles). */
  leaked: number;
}

const f32 = async (t: Tensor): Promise<Float32Array> => (await t.toArray()) as Float32Array;

/** The model's own (fused) forward and backward, or the unfused reference of its tree. */
function runner(model: Model, fused: boolean) {
  if (fused) return { forward: model.forward.bind(model), backward: model.backward.bind(model) };
  const ref = unfused(model.net);
  return {
    forward: (x: Tensor, ctx: Ctx) => ref.forward(x, ctx),
    backward(dy: Tensor, o: { cache: unknown; ctx: Ctx }) {
      ref.backward(dy, { ...o, needDx: false })?.dispose();
    },
  };
}

async function step(name: ModelName, size: number, fused: boolean): Promise<StepResult> {
  const gpu = await testGpu();
  const model = createModel(gpu, { name });
  model.loadStateDict(detState(model));
  const run = runner(model, fused);
  const batch = 2;
  const x = gpu.tensor(detValues("input", batch * size * size, 0, 1), {
    shape: [batch, 1, size, size],
  });
  const labels = gpu.tensor(Int32Array.from([3, 7]), { shape: [batch] });
  const ev = run.forward(x, { gpu, training: false, seed: 0 });
  const logitsEval = await f32(ev.y);
  ev.y.dispose();
  await gpu.sync();
  gpu.pool.resetPeak();
  const before = gpu.stats.dispatches;
  const liveBefore = gpu.pool.stats.liveBytes;
  const ctx: Ctx = { gpu, training: true, seed: 1, dropout: 0 };
  let f!: ReturnType<typeof run.forward>;
  const forwardKernels = kernelsOf(gpu, () => f = run.forward(x, ctx));
  const dlogits = gpu.empty(f.y.shape);
  const lossSum = gpu.zeros([1]);
  const correct = gpu.zeros([1], { dtype: "u32" });
  const backwardKernels = kernelsOf(gpu, () => {
    softmaxCrossEntropy({ dlogits, lossSum, correct, logits: f.y, labels }, { n: batch, c: 10 });
    run.backward(dlogits, { cache: f.cache, ctx });
  });
  const dispatches = gpu.stats.dispatches - before;
  const peak = gpu.pool.stats.peakLiveBytes;
  const logitsTrain = await f32(f.y);
  for (const t of [dlogits, lossSum, correct, f.y]) t.dispose();
  const leaked = gpu.pool.stats.liveBytes - liveBefore;
  const grads = new Map<string, Float32Array>();
  for (const [k, p] of model.params) grads.set(k, await f32(p.grad as Tensor));
  const running = new Map<string, Float32Array>();
  for (const e of model.state) {
    if (e.kind === "buffer") running.set(e.name, await f32(e.buffer.value!));
  }
  for (const t of [x, labels]) t.dispose();
  model.dispose();
  return {
    logitsEval,
    logitsTrain,
    grads,
    running,
    dispatches,
    forwardKernels,
    backwardKernels,
    peak,
    leaked,
  };
}

/** How many elements differ (bit for bit) and the largest difference. */
function differences(a: Float32Array, b: Float32Array): { count: number; max: number } {
  let count = 0, max = 0;
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) {
      count++;
      max = Math.max(max, Math.abs(a[i] - b[i]));
    }
  }
  return { count, max };
}

/**
 * The channel copies (`concatChannels`) of a tree's forward: unfused, every branch of an
 * Inception block and both parts of each DenseNet `cat(X, blk(X))`; fused, only the X of the
 * latter (the branches write into their slices).
 */
function concatCopies(l: Layer): { fused: number; unfused: number } {
  if (l.kind === "Inception") return { fused: 0, unfused: 4 };
  if (l.kind === "DenseBlock") {
    const blocks = l.children[0][1].children.length;
    return { fused: blocks, unfused: 2 * blocks };
  }
  return l.children.reduce((s, [, c]) => {
    const n = concatCopies(c);
    return { fused: s.fused + n.fused, unfused: s.unfused + n.unfused };
  }, { fused: 0, unfused: 0 });
}

const ACTIVATION_FORWARD = /^(relu6?|sigmoid|tanh)_forward/;
const CONCAT = /^concat/;
const count = (names: string[], re: RegExp) => names.filter((n) => re.test(n)).length;

// Sizes: the parity fixtures' (the smallest each model accepts comfortably on llvmpipe).
const CASES: [ModelName, number][] = [
  ["lenet", 28],
  ["lenet-bn", 28],
  ["googlenet", 64],
  ["resnet", 64],
  ["densenet", 64],
  ["mobilenet", 96],
];

for (const [name, size] of CASES) {
  Deno.test(
    `fused ${name} step is bit-identical to the unfused reference, without activation passes or copies`,
    GPU_TEST,
    async () => {
      const fused = await step(name, size, true);
      const plain = await step(name, size, false);
      const failures: string[] = [];
      const check = (what: string, a: Float32Array, b: Float32Array) => {
        const d = differences(a, b);
        if (d.count > 0) {
          failures.push(`${what}: ${d.count} of ${a.length} elements differ, max ${d.max}`);
        }
      };
      check("eval logits", fused.logitsEval, plain.logitsEval);
      check("train logits", fused.logitsTrain, plain.logitsTrain);
      for (const [k, g] of plain.grads) check(`grad ${k}`, fused.grads.get(k)!, g);
      for (const [k, v] of plain.running) check(`${k}`, fused.running.get(k)!, v);
      const copies = concatCopies(buildArchitecture(name).net);
      const kernels = (r: StepResult) => [...r.forwardKernels, ...r.backwardKernels];
      console.log(
        `${name}: dispatches fused ${fused.dispatches} / unfused ${plain.dispatches}, ` +
          `peak ${(fused.peak / 2 ** 20).toFixed(2)} / ${(plain.peak / 2 ** 20).toFixed(2)} MiB, ` +
          `activation passes ${count(fused.forwardKernels, ACTIVATION_FORWARD)} / ` +
          `${count(plain.forwardKernels, ACTIVATION_FORWARD)}, concat copies ` +
          `${count(fused.forwardKernels, CONCAT)} / ${count(plain.forwardKernels, CONCAT)}`,
      );
      assert.equal(failures.length, 0, `${name}: ${failures.join("\n")}`);
      // Every cache handle is released by backward, fused or not.
      assert.equal(fused.leaked, 0, `${name}: the fused step left ${fused.leaked} bytes live`);
      assert.equal(plain.leaked, 0, `${name}: the unfused step left ${plain.leaked} bytes live`);
      // Each dispatch counted, by name (the kernel names are what the counts below rest on).
      assert.equal(kernels(fused).length, fused.dispatches);
      assert.equal(kernels(plain).length, plain.dispatches);
      // Every activation of these models follows a conv, linear or BatchNorm: none runs alone.
      assert.equal(count(fused.forwardKernels, ACTIVATION_FORWARD), 0, `${name}: activation pass`);
      assert.ok(count(plain.forwardKernels, ACTIVATION_FORWARD) > 0);
      // Branch outputs are written into their slices: the only copies left are the inputs of
      // DenseNet's conv blocks; unfused, each branch is copied too.
      assert.deepEqual(
        {
          fused: count(fused.forwardKernels, CONCAT),
          unfused: count(plain.forwardKernels, CONCAT),
        },
        copies,
        `${name}: concat copies`,
      );
      assert.ok(
        fused.dispatches < plain.dispatches,
        `${name}: fused step recorded ${fused.dispatches} dispatches, unfused ${plain.dispatches}`,
      );
      assert.ok(
        fused.peak <= plain.peak,
        `${name}: fused peak ${fused.peak} bytes > unfused ${plain.peak}`,
      );
    },
  );
}
