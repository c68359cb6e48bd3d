// Tests of kernels/loss_scale.ts: the kernel checks of tests/ops/loss_scale.ts, shared with
// `deno task test:browser` (the scaler's state, the Inf/NaN check on f32 and f16 gradients, the
// update rule against the Float64 reference, a whole mixed-precision step sequence against the
// CPU), and the validation here.
import assert from "node:assert/strict";
import {
  createLossScale,
  decodeLossScale,
  LOSS_SCALE_WORDS,
  lossScaleCheck,
  lossScaleUpdate,
  readLossScale,
} from "../kernels/loss_scale.ts";
import { testCheck } from "./_check.ts";
import { GPU_TEST, testGpu } from "./harness.ts";
import { LOSS_SCALE_CHECKS } from "./ops/loss_scale.ts";

for (const check of LOSS_SCALE_CHECKS) testCheck(check);

Deno.test("createLossScale validates its options", GPU_TEST, async () => {
  const gpu = await testGpu();
  for (
    const o of [
      { initScale: 0 },
      { initScale: -1 },
      { initScale: NaN },
      { initScale: Infinity },
      { initScale: 1e39 }, // not a finite f32
      { growthInterval: 0 },
      { growthInterval: 1.5 },
      { growthFactor: 1 },
      { growthFactor: Infinity },
      { backoffFactor: 1 },
      { backoffFactor: 0 },
      { backoffFactor: NaN },
      { skippedSteps: -1 },
      { skippedSteps: 1.5 },
      { skippedSteps: 2 ** 32 },
    ]
  ) {
    assert.throws(
      () => createLossScale(gpu, o),
      (e: Error) => e instanceof RangeError && /createLossScale/.test(e.message),
      JSON.stringify(o),
    );
  }
  // A resumed scaler keeps counting its skipped steps (Adam's step count subtracts them).
  const resumed = createLossScale(gpu, { skippedSteps: 7 });
  assert.equal((await readLossScale(resumed)).skippedSteps, 7);
  // The words a caller reads back itself decode to the same state (the trainer's epoch end),
  // also from a view at an offset into a larger readback.
  const words = new Uint32Array(await resumed.toArray());
  const larger = new Uint32Array(4 + LOSS_SCALE_WORDS);
  larger.set(words, 4);
  assert.deepEqual(decodeLossScale(larger.subarray(4)), await readLossScale(resumed));
  assert.equal(decodeLossScale(larger.subarray(4)).scale, 65536);
  assert.throws(() => decodeLossScale(larger), /decodeLossScale: expected 8 words/);
  resumed.dispose();
});

Deno.test("loss scale kernels validate their operands", GPU_TEST, async () => {
  const gpu = await testGpu();
  const lossScale = createLossScale(gpu);
  const grad = gpu.zeros([4]);
  for (const bad of [gpu.zeros([LOSS_SCALE_WORDS]), gpu.zeros([4], { dtype: "u32" })]) {
    assert.throws(
      () => lossScaleCheck({ lossScale: bad, grad }),
      (e: Error) => e instanceof TypeError && /lossScaleCheck: lossScale/.test(e.message),
    );
    assert.throws(() => lossScaleUpdate({ lossScale: bad }), TypeError);
    await assert.rejects(() => readLossScale(bad), TypeError);
  }
  for (const dtype of ["u32", "i32", "u8"] as const) {
    assert.throws(
      () => lossScaleCheck({ lossScale, grad: gpu.zeros([4], { dtype }) }),
      (e: Error) =>
        e instanceof TypeError && /lossScaleCheck/.test(e.message) && /grad/.test(e.message),
    );
  }
  const alias = lossScale.reshape([2, 4]);
  assert.throws(() => lossScaleCheck({ lossScale, grad: alias }), TypeError);
});
