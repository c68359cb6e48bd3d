// The optimizers' kernel checks of tests/optim_test.ts, shared with `deno task test:browser`:
// 5 steps of SGD (Nesterov, weight decay), Adam and AdamW under each schedule against torch.optim
// (tests/fixtures/optim.json, made by tests/fixtures/make_optim.py), the schedules' learning rates
// exactly, and adamUpdate against its Float64 CPU reference (vec4 and scalar paths, ranges, a
// loss scale and an f16 copy), and Adam(W) under a loss scaler that skips steps against
// torch.optim under GradScaler (the fixture's lossScaled). No Deno API.
import type { Gpu } from "../../gpu/mod.ts";
import { adamUpdate } from "../../kernels/adam.ts";
import {
  createLossScale,
  lossScaleCheck,
  lossScaleUpdate,
  readLossScale,
} from "../../kernels/loss_scale.ts";
import { sgdUpdate } from "../../kernels/sgd.ts";
import { type LrSchedule, scheduleLr } from "../../models/schedule.ts";
import { adamStepRef } from "../cpu_ref/adam.ts";
import assert from "../_assert.ts";
import { withBindingLimit } from "../big.ts";
import type { KernelCheck } from "../_check.ts";
import { assertClose, f32, Rng, roundF16 } from "../harness.ts";

/** A case of tests/fixtures/optim.json. */
export interface OptimCase {
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

/** tests/fixtures/optim.json: torch.optim over 5 steps, every optimizer and schedule. */
export interface OptimFixture {
  param0: number[];
  grads: number[][];
  cases: OptimCase[];
}

/** Runs `steps` Adam(W) steps on the GPU and in Float64; returns both parameters. */
async function adamVsRef(
  gpu: Gpu,
  n: number,
  o: { decoupled?: boolean; weightDecay?: number; steps?: number; capacity?: number },
) {
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

/** tests/fixtures/optim.json's `lossScaled`: Adam(W) under GradScaler with skipped steps. */
export interface LossScaledFixture {
  param0: number[];
  grads: number[][];
  lossScaled: {
    scaler: {
      initScale: number;
      growthInterval: number;
      growthFactor: number;
      backoffFactor: number;
    };
    infSteps: number[];
    infAt: number;
    cases: {
      optimizer: "adam" | "adamw";
      config: { lr: number; weight_decay: number };
      steps: {
        scale: number;
        skipped: boolean;
        lr: number;
        param: number[];
        expAvg: number[];
        expAvgSq: number[];
        step: number;
      }[];
    }[];
  };
}

/** The checks of tests/optim_test.ts that `deno task test:browser` runs too. */
export const OPTIM_CHECKS: readonly KernelCheck[] = [
  {
    name: "scheduleLr gives torch.optim.lr_scheduler's learning rates",
    gpu: false,
    f16: false,
    run: async (_gpu, fixture) => {
      const fx = await fixture("optim.json") as OptimFixture;
      for (const k of fx.cases) {
        k.steps.forEach((s, i) => {
          const lr = scheduleLr({ schedule: k.schedule, warmup: k.warmup }, k.config.lr, i);
          assertClose([lr], [s.lr], {
            rtol: 1e-12,
            atol: 1e-15,
            what: `${k.scheduleName} step ${i}`,
          });
        });
      }
      // Longer runs, against PyTorch's closed forms.
      const at = (schedule: LrSchedule["schedule"], s: number, warmup = 0) =>
        scheduleLr({ schedule, warmup }, 0.1, s);
      assert.equal(at({ kind: "step", stepSize: 30 }, 59), 0.1 * 0.1);
      assert.equal(at({ kind: "multistep", milestones: [30, 60] }, 60), 0.1 * 0.1 * 0.1);
      assert.equal(at({ kind: "cosine", tMax: 100 }, 100), 0);
      assert.equal(at({ kind: "constant" }, 0, 4), 0.1 / 5);
    },
  },
  {
    name: "SGD, Adam and AdamW x every schedule: 5 steps equal torch.optim's within f32 error",
    gpu: true,
    f16: false,
    run: async (gpu, fixture) => {
      const fx = await fixture("optim.json") as OptimFixture;
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
  },
  {
    name: "adamUpdate matches the Float64 reference (vec4, scalar tails, ranges)",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      for (const n of [1, 3, 4, 257, 1000]) {
        for (
          const o of [{}, { weightDecay: 0.1 }, { decoupled: true }, {
            decoupled: true,
            weightDecay: 0,
          }]
        ) {
          const { got, ref } = await adamVsRef(gpu, n, o);
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
        const { got, ref } = await adamVsRef(gpu, 1000, { decoupled: true });
        assertClose(got.param, ref.param, { rtol: 1e-5, atol: 1e-6, what: "param in ranges" });
      });
    },
  },
  {
    name: "adamUpdate with a loss scale unscales the gradient, skips on Inf and writes an f16 copy",
    gpu: true,
    f16: true,
    run: async (gpu) => {
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
  },
  {
    name: "Adam and AdamW under a loss scaler skip steps as torch.optim under GradScaler " +
      "(the step count too)",
    gpu: true,
    f16: false,
    run: async (gpu, fixture) => {
      const fx = await fixture("optim.json") as LossScaledFixture;
      const ls = fx.lossScaled;
      const n = fx.param0.length;
      for (const k of ls.cases) {
        const param = gpu.tensor(f32(fx.param0), { shape: [n] });
        const [expAvg, expAvgSq] = [gpu.zeros([n]), gpu.zeros([n])];
        const grad = gpu.empty([n]);
        const lossScale = createLossScale(gpu, ls.scaler);
        for (let s = 0; s < k.steps.length; s++) {
          const want = k.steps[s];
          const { scale } = await readLossScale(lossScale);
          assert.equal(scale, want.scale, `${k.optimizer} step ${s}: the scale`);
          // The scaled gradient (a power-of-two scale: exact), an Inf where PyTorch's had one.
          const g = f32(fx.grads[s].map((v) => v * scale));
          if (ls.infSteps.includes(s)) g[ls.infAt] = Infinity;
          gpu.write(grad, g);
          lossScaleCheck({ lossScale, grad });
          adamUpdate({ param, grad, expAvg, expAvgSq, lossScale }, {
            lr: want.lr,
            step: s + 1, // the caller's steps, skipped ones included
            weightDecay: k.config.weight_decay,
            decoupled: k.optimizer === "adamw",
          });
          lossScaleUpdate({ lossScale });
          const info = await readLossScale(lossScale);
          assert.equal(info.foundInf, false);
          assert.equal(s + 1 - info.skippedSteps, want.step, `${k.optimizer} step ${s}: updates`);
          const what = `${k.optimizer} step ${s}${want.skipped ? " (skipped)" : ""}`;
          // The tolerances of the fixture checks and of adamUpdate's Float64 reference.
          assertClose(await param.toArray(), want.param, {
            rtol: 1e-5,
            atol: 1e-6,
            what: `param ${what}`,
          });
          assertClose(await expAvg.toArray(), want.expAvg, {
            rtol: 1e-5,
            atol: 1e-7,
            what: `expAvg ${what}`,
          });
          assertClose(await expAvgSq.toArray(), want.expAvgSq, {
            rtol: 1e-5,
            atol: 1e-7,
            what: `expAvgSq ${what}`,
          });
        }
        assert.equal((await readLossScale(lossScale)).skippedSteps, ls.infSteps.length);
        for (const t of [param, expAvg, expAvgSq, grad, lossScale]) t.dispose();
      }
    },
  },
];
