// Tests of the optimizers and schedules against torch.optim (tests/fixtures/optim.json, made by
// tests/fixtures/make_optim.py): 5 steps of SGD (Nesterov, weight decay), Adam and AdamW under
// each schedule (none, StepLR, MultiStepLR, CosineAnnealingLR, warm-up then cosine, OneCycleLR)
// on three parameter tensors held in one buffer, as an arena; the schedules' learning rates
// exactly; and adamUpdate against its Float64 CPU reference (vec4 and scalar paths, a loss
// scale, an f16 copy, ranges), validation.
import assert from "node:assert/strict";
import { adamUpdate } from "../kernels/adam.ts";
import { createLossScale, lossScaleCheck } from "../kernels/loss_scale.ts";
import { sgdUpdate } from "../kernels/sgd.ts";
import { type LrSchedule, scheduleLr } from "../models/schedule.ts";
import { adamStepRef } from "./cpu_ref/adam.ts";
import { withBindingLimit } from "./big.ts";
import { assertClose, F16_TEST, f32, GPU_TEST, Rng, roundF16, testGpu } from "./harness.ts";

interface Case {
  optimizer: "sgd" | "adam" | "adamw";
  config: {
    lr: number;
    momentum?: number;
    nesterov?: boolean;
    weight_decay?: number;
  };
  schedule: LrSchedule["schedule"];
  warmup: number;
  scheduleName: string;
  steps: { lr: number; param: number[] }[];
}

interface Fixture {
  param0: number[];
  grads: number[][];
  cases: Case[];
}

async function loadFixture(): Promise<Fixture> {
  return JSON.parse(await Deno.readTextFile(new URL("./fixtures/optim.json", import.meta.url)));
}

Deno.test("scheduleLr gives torch.optim.lr_scheduler's learning rates", async () => {
  const fx = await loadFixture();
  for (const k of fx.cases) {
    k.steps.forEach((s, i) => {
      const lr = scheduleLr({ schedule: k.schedule, warmup: k.warmup }, k.config.lr, i);
      assertClose([lr], [s.lr], { rtol: 1e-12, atol: 1e-15, what: `${k.scheduleName} step ${i}` });
    });
  }
  // Longer runs, against PyTorch's closed forms.
  const at = (schedule: LrSchedule["schedule"], s: number, warmup = 0) =>
    scheduleLr({ schedule, warmup }, 0.1, s);
  assert.equal(at({ kind: "step", stepSize: 30 }, 59), 0.1 * 0.1);
  assert.equal(at({ kind: "multistep", milestones: [30, 60] }, 60), 0.1 * 0.1 * 0.1);
  assert.equal(at({ kind: "cosine", tMax: 100 }, 100), 0);
  assert.equal(at({ kind: "constant" }, 0, 4), 0.1 / 5);
});

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

Deno.test(
  "SGD, Adam and AdamW x every schedule: 5 steps equal torch.optim's within f32 error",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const fx = await loadFixture();
    const n = fx.param0.length;
    for (const k of fx.cases) {
      const param = gpu.tensor(f32(fx.param0), { shape: [n] });
      const [a, b] = [gpu.zeros([n]), gpu.zeros([n])];
      const grad = gpu.empty([n]);
      const sched = { schedule: k.schedule, warmup: k.warmup };
      const wd = k.config.weight_decay ?? 0;
      for (let s = 0; s < k.steps.length; s++) {
        gpu.write(grad, f32(fx.grads[s]));
        const lr = scheduleLr(sched, k.config.lr, s);
        if (k.optimizer === "sgd") {
          sgdUpdate({ param, grad, momentumBuf: a }, {
            lr,
            momentum: k.config.momentum,
            nesterov: k.config.nesterov,
            weightDecay: wd,
            firstStep: s === 0,
          });
        } else {
          adamUpdate({ param, grad, expAvg: a, expAvgSq: b }, {
            lr,
            step: s + 1,
            weightDecay: wd,
            decoupled: k.optimizer === "adamw",
          });
        }
        const got = await param.toArray();
        // f32 rounding of a few operations per step, compounded over 5 steps.
        assertClose(got, k.steps[s].param, {
          rtol: 1e-5,
          atol: 1e-6,
          what: `${k.optimizer} ${k.scheduleName} step ${s}`,
        });
      }
      for (const t of [param, a, b, grad]) t.dispose();
    }
  },
);

/** Runs `steps` Adam(W) steps on the GPU and in Float64; returns both parameters. */
async function adamVsRef(
  n: number,
  o: { decoupled?: boolean; weightDecay?: number; steps?: number; capacity?: number },
) {
  const gpu = await testGpu();
  const rng = new Rng(n + (o.decoupled ? 1 : 0));
  const p0 = rng.normalArray(n);
  const ref = {
    param: Float64Array.from(p0),
    expAvg: new Float64Array(n),
    expAvgSq: new Float64Array(n),
  };
  const param = gpu.tensor(f32(p0), { shape: [n] });
  const expAvg = gpu.zeros([n]), expAvgSq = gpu.zeros([n]), grad = gpu.empty([n]);
  for (let s = 1; s <= (o.steps ?? 3); s++) {
    const g = f32(rng.normalArray(n));
    gpu.write(grad, g);
    const p = { lr: 0.01 * s, step: s, decoupled: o.decoupled, weightDecay: o.weightDecay };
    adamUpdate({ param, grad, expAvg, expAvgSq }, p);
    adamStepRef(ref, g, p);
  }
  const out = {
    param: await param.toArray(),
    expAvg: await expAvg.toArray(),
    expAvgSq: await expAvgSq.toArray(),
  };
  for (const t of [param, expAvg, expAvgSq, grad]) t.dispose();
  return { got: out, ref };
}

Deno.test(
  "adamUpdate matches the Float64 reference (vec4, scalar tails, ranges)",
  GPU_TEST,
  async () => {
    for (const n of [1, 3, 4, 257, 1000]) {
      for (
        const o of [{}, { weightDecay: 0.1 }, { decoupled: true }, {
          decoupled: true,
          weightDecay: 0,
        }]
      ) {
        const { got, ref } = await adamVsRef(n, o);
        const what = `n=${n} ${JSON.stringify(o)}`;
        assertClose(got.param, ref.param, { rtol: 1e-5, atol: 1e-6, what: `param ${what}` });
        assertClose(got.expAvg, ref.expAvg, { rtol: 1e-5, atol: 1e-7, what: `expAvg ${what}` });
        assertClose(got.expAvgSq, ref.expAvgSq, {
          rtol: 1e-5,
          atol: 1e-7,
          what: `expAvgSq ${what}`,
        });
      }
    }
    // Ranges of a lowered binding limit: the same values.
    await withBindingLimit(256, async () => {
      const { got, ref } = await adamVsRef(1000, { decoupled: true });
      assertClose(got.param, ref.param, { rtol: 1e-5, atol: 1e-6, what: "param in ranges" });
    });
  },
);

Deno.test(
  "adamUpdate with a loss scale unscales the gradient, skips on Inf and writes an f16 copy",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const n = 6;
    const p0 = [1, -2, 3, 0.5, -0.25, 4];
    const g = [0.5, 1, -1, 2, 0, -3];
    const run = async (scaleGrad: number, inf: boolean) => {
      const lossScale = createLossScale(gpu, { initScale: 1024 });
      const param = gpu.tensor(f32(p0), { shape: [n] });
      const grad = gpu.tensor(f32(g.map((v, i) => (inf && i === 2 ? Infinity : v * scaleGrad))), {
        shape: [n],
      });
      const expAvg = gpu.zeros([n]), expAvgSq = gpu.zeros([n]);
      const half = gpu.empty([n], { dtype: "f16" });
      lossScaleCheck({ lossScale, grad });
      adamUpdate({ param, grad, expAvg, expAvgSq, half, lossScale }, { lr: 0.1, step: 1 });
      return {
        param: await param.toArray(),
        half: await half.toArray(),
        avg: await expAvg.toArray(),
      };
    };
    const ref = {
      param: Float64Array.from(p0),
      expAvg: new Float64Array(n),
      expAvgSq: new Float64Array(n),
    };
    adamStepRef(ref, g, { lr: 0.1, step: 1 });
    const ok = await run(1024, false);
    assertClose(ok.param, ref.param, { rtol: 1e-6, atol: 1e-7, what: "unscaled step" });
    assert.deepEqual(Array.from(ok.half), Array.from(roundF16(ok.param)));
    const skipped = await run(1024, true);
    assert.deepEqual(Array.from(skipped.param), p0);
    assert.deepEqual(Array.from(skipped.avg), new Array(n).fill(0));
    assert.deepEqual(Array.from(skipped.half), p0);
  },
);

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
