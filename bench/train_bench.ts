// Whole training steps (deno bench -A bench/train_bench.ts): LeNet and LeNet-BN at d2l's recipe,
// batch 256, 28x28, on a synthetic Fashion-MNIST-shaped set uploaded once.
//
// One bench iteration is one `Trainer.trainEpoch` over STEPS batches: per step, batch
// preparation (gather, resize, normalize), forward, softmax cross-entropy, backward and SGD are
// recorded into one submit, and the epoch reads back once at its end (a GPU wait costs ~11 ms on
// llvmpipe). Examples per second (best of the timed iterations) are printed at the end.
// (For every model and the markdown table: deno run -A bench/train_table.ts.)
import { getGpu } from "../gpu/mod.ts";
import type { ModelName } from "../models/mod.ts";
import { setupRun, timeSteps, warmUp } from "./_train.ts";

const gpu = await getGpu();
const STEPS = 8;
const BATCH = 256;
const results = new Map<string, { examplesPerSec: number; msPerStep: number }>();

for (const name of ["lenet", "lenet-bn"] as ModelName[]) {
  const run = setupRun(gpu, name, { batch: BATCH, resize: 28, steps: STEPS });
  await warmUp(run);
  const label = `${name} train step b${BATCH} 28x28 (${STEPS} steps/readback)`;
  let epoch = 1;
  Deno.bench({
    name: label,
    n: 5,
    warmup: 1,
    async fn() {
      const t = await timeSteps(gpu, run, epoch++);
      const prev = results.get(label);
      if (!prev || t.examplesPerSec > prev.examplesPerSec) results.set(label, t);
    },
  });
}

globalThis.addEventListener("unload", () => {
  console.log(`\ntraining steps on ${gpu.description} (best of the timed iterations):`);
  for (const [label, t] of results) {
    console.log(
      `  ${label.padEnd(52)} ${t.examplesPerSec.toFixed(0).padStart(6)} examples/s ` +
        `${t.msPerStep.toFixed(1).padStart(7)} ms/step`,
    );
  }
});
