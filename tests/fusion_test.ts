// Fused steps (ctx.fuse, on by default): conv/linear/BatchNorm + activation epilogues, Inception
// branches and DenseNet convs writing straight into their concat buffers. Their correctness
// against PyTorch is the parity suite's (models_test.ts runs the default, fused); here: fused and
// unfused runs of the same model give bit-identical logits, gradients and running statistics (the
// fused kernels compute exactly what the separate ones do), so the unfused path is right too; and
// the fused run records fewer dispatches, peaks lower and leaves no handle live.
import assert from "node:assert/strict";
import type { Tensor } from "../gpu/mod.ts";
import { softmaxCrossEntropy } from "../kernels/softmax_ce.ts";
import type { Ctx } from "../layers/mod.ts";
import { createModel, type ModelName } from "../models/mod.ts";
import { detState, detValues } from "./det.ts";
import { GPU_TEST, testGpu } from "./harness.ts";

interface StepResult {
  logitsEval: Float32Array;
  logitsTrain: Float32Array;
  grads: Map<string, Float32Array>;
  running: Map<string, Float32Array>;
  /** Dispatches of the training forward and backward. */
  dispatches: number;
  /** Peak live bytes of the training step. */
  peak: number;
  /** Live bytes left over by the step once its outputs are disposed (leaked handles). */
  leaked: number;
}

const f32 = async (t: Tensor): Promise<Float32Array> => (await t.toArray()) as Float32Array;

async function step(name: ModelName, size: number, fuse: boolean): Promise<StepResult> {
  const gpu = await testGpu();
  const model = createModel(gpu, { name });
  model.loadStateDict(detState(model));
  const batch = 2;
  const x = gpu.tensor(detValues("input", batch * size * size, 0, 1), {
    shape: [batch, 1, size, size],
  });
  const labels = gpu.tensor(Int32Array.from([3, 7]), { shape: [batch] });
  const ev = model.forward(x, { gpu, training: false, seed: 0, fuse });
  const logitsEval = await f32(ev.y);
  ev.y.dispose();
  await gpu.sync();
  gpu.pool.resetPeak();
  const before = gpu.stats.dispatches;
  const liveBefore = gpu.pool.stats.liveBytes;
  const ctx: Ctx = { gpu, training: true, seed: 1, dropout: 0, fuse };
  const f = model.forward(x, ctx);
  const dlogits = gpu.empty(f.y.shape);
  const lossSum = gpu.zeros([1]);
  const correct = gpu.zeros([1], { dtype: "u32" });
  softmaxCrossEntropy({ dlogits, lossSum, correct, logits: f.y, labels }, { n: batch, c: 10 });
  model.backward(dlogits, { cache: f.cache, ctx });
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
  return { logitsEval, logitsTrain, grads, running, dispatches, peak, leaked };
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
    `fused and unfused ${name} steps are bit-identical; fused records fewer dispatches`,
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
      console.log(
        `${name}: dispatches fused ${fused.dispatches} / unfused ${plain.dispatches}, ` +
          `peak ${(fused.peak / 2 ** 20).toFixed(2)} / ${(plain.peak / 2 ** 20).toFixed(2)} MiB`,
      );
      assert.equal(failures.length, 0, `${name}: ${failures.join("\n")}`);
      // Every cache handle is released by backward, fused or not.
      assert.equal(fused.leaked, 0, `${name}: the fused step left ${fused.leaked} bytes live`);
      assert.equal(plain.leaked, 0, `${name}: the unfused step left ${plain.leaked} bytes live`);
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
