// Tests of the optimizers and schedules against torch.optim (tests/fixtures/optim.json, made by
// tests/fixtures/make_optim.py): 5 steps of SGD (Nesterov, weight decay), Adam and AdamW under
// each schedule (none, StepLR, MultiStepLR, CosineAnnealingLR, warm-up then cosine, OneCycleLR)
// on three parameter tensors held in one buffer, as an arena; the schedules' learning rates
// exactly; and adamUpdate against its Float64 CPU reference (vec4 and scalar paths, a loss
// scale, an f16 copy, ranges), validation.
// The checks against torch.optim and the Float64 reference are in tests/ops/optim.ts (shared with
// `deno task test:browser`); the validation tests are here.
import assert from "node:assert/strict";
import { adamUpdate } from "../kernels/adam.ts";
import { type LrSchedule, scheduleLr } from "../models/schedule.ts";
import { testCheck } from "./_check.ts";
import { GPU_TEST, testGpu } from "./harness.ts";
import { OPTIM_CHECKS } from "./ops/optim.ts";

for (const check of OPTIM_CHECKS) testCheck(check);

Deno.test("scheduleLr validates its schedule", () => {
  const bad: LrSchedule[] = [
    { schedule: { kind: "step", stepSize: 0 } },
    { schedule: { kind: "multistep", milestones: [3, 2] } },
    { schedule: { kind: "cosine", tMax: 1.5 } },
    { schedule: { kind: "onecycle", totalSteps: 10, pctStart: 1 } },
    { schedule: { kind: "constant" }, warmup: -1 },
  ];
  for (const s of bad) assert.throws(() => scheduleLr(s, 0.1, 0), RangeError);
  assert.throws(() => scheduleLr({ schedule: { kind: "constant" } }, 0.1, -1), RangeError);
});

Deno.test("adamUpdate validates its operands and hyper-parameters", GPU_TEST, async () => {
  const gpu = await testGpu();
  const io = {
    param: gpu.zeros([4]),
    grad: gpu.zeros([4]),
    expAvg: gpu.zeros([4]),
    expAvgSq: gpu.zeros([4]),
  };
  assert.throws(
    () => adamUpdate({ ...io, expAvg: gpu.zeros([5]) }, { lr: 0.1, step: 1 }),
    TypeError,
  );
  assert.throws(
    () => adamUpdate({ ...io, grad: gpu.zeros([4], { dtype: "f16" }) }, { lr: 0.1, step: 1 }),
    TypeError,
  );
  assert.throws(
    () => adamUpdate({ ...io, expAvgSq: io.expAvg }, { lr: 0.1, step: 1 }),
    /share a buffer/,
  );
  assert.throws(() => adamUpdate(io, { lr: 0.1, step: 0 }), RangeError);
  assert.throws(() => adamUpdate(io, { lr: -1, step: 1 }), RangeError);
  assert.throws(() => adamUpdate(io, { lr: 0.1, step: 1, betas: [0.9, 1] }), /betas\[1\]/);
});
