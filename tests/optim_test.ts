// Tests of the optimizers and schedules against torch.optim (tests/fixtures/optim.json, made by
// tests/fixtures/make_optim.py): 5 steps of SGD (Nesterov, weight decay), Adam and AdamW under
// each schedule (none, StepLR, MultiStepLR, CosineAnnealingLR, warm-up then cosine, OneCycleLR)
// on three parameter tensors held in one buffer, as an arena; the schedules' learning rates
// exactly; and adamUpdate against its Float64 CPU reference (vec4 and scalar paths, a loss
// scale, an f16 copy, ranges), validation.
// The checks against torch.optim (Adam(W) under GradScaler with skipped steps too) and the
// Float64 reference are in tests/ops/optim.ts (shared with `deno task test:browser`); the
// validation tests and the loss-scaled path's GPU bias corrections against f64 are here.
import assert from "node:assert/strict";
import { _ADAM_CORRECTIONS_WGSL, adamUpdate } from "../kernels/adam.ts";
import { defineKernel } from "../kernels/_kernel.ts";
import { grid1d } from "../gpu/mod.ts";
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

/** A probe of the loss-scaled path's bias corrections: thread i computes them for t = i + 1. */
const corrections = defineKernel({
  name: "test_adam_corrections",
  doc: "thread i writes adamCorrections(i + 1, ...) to out[2i], out[2i + 1]",
  params: { n: "u32", lr: "f32", lnBeta1: "f32", lnBeta2: "f32" },
  bindings: { out: { type: "float", access: "read_write" } },
  workgroupSize: 64,
  body: () =>
    `${_ADAM_CORRECTIONS_WGSL}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * WG;
  if (i >= p.n) { return; }
  let c = adamCorrections(f32(i + 1u), p.lr, p.lnBeta1, p.lnBeta2);
  out[2u * i] = c.x;
  out[2u * i + 1u] = c.y;
}`,
});

Deno.test(
  "the loss-scaled Adam's GPU bias corrections are within a few f32 ulps of the host's f64",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const n = 100_000;
    const out = gpu.empty([2 * n]);
    for (const [b1, b2] of [[0.9, 0.999], [0.5, 0.9999], [0.99, 0.95], [0, 0.999]]) {
      const lr = 0.001;
      corrections.dispatch({
        params: {
          n,
          lr,
          lnBeta1: Math.max(Math.log(b1), -200),
          lnBeta2: Math.max(Math.log(b2), -200),
        },
        bindings: { out },
        workgroups: grid1d(n, 64),
      });
      const got = await out.toArray();
      // Relative differences from the f64 values the host path would round to f32.
      let worst1 = 0, worst2 = 0, at1 = 0, at2 = 0;
      for (let t = 1; t <= n; t++) {
        const want1 = -lr / (1 - b1 ** t), want2 = Math.sqrt(1 - b2 ** t);
        const d1 = Math.abs(got[2 * t - 2] / want1 - 1), d2 = Math.abs(got[2 * t - 1] / want2 - 1);
        if (d1 > worst1) [worst1, at1] = [d1, t];
        if (d2 > worst2) [worst2, at2] = [d2, t];
      }
      console.log(
        `betas (${b1}, ${b2}), t = 1..${n}: -lr/(1 - beta1^t) within ${worst1.toExponential(2)} ` +
          `(${(worst1 * 2 ** 23).toFixed(2)} x 2^-23, at t=${at1}), sqrt(1 - beta2^t) within ` +
          `${worst2.toExponential(2)} (${(worst2 * 2 ** 23).toFixed(2)} x 2^-23, at t=${at2})`,
      );
      // An f32 ulp is 2^-23 to 2^-24 relative: a few of them.
      assert.ok(worst1 < 4e-7, `-lr/(1 - beta1^t): relative error ${worst1} at t=${at1}`);
      assert.ok(worst2 < 4e-7, `sqrt(1 - beta2^t): relative error ${worst2} at t=${at2}`);
    }
    out.dispose();
  },
);
