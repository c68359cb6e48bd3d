// Tests of kernels/sgd.ts: the CPU reference against torch.optim.SGD (fixture), the GPU update
// against the CPU reference and the fixture over 3 steps (momentum, dampening, nesterov, weight
// decay), first-step semantics, and validation.
import assert from "node:assert/strict";
import type { Gpu, Tensor } from "../gpu/mod.ts";
import { type SgdParams, sgdUpdate } from "../kernels/sgd.ts";
import { assertClose, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { sgdStepRef } from "./cpu_ref/sgd.ts";
import { atDeviceLimit, deviceLimit, fastFill, readSlices } from "./big.ts";

interface Fixture {
  cases: {
    config: {
      lr: number;
      momentum?: number;
      dampening?: number;
      weight_decay?: number;
      nesterov?: boolean;
    };
    param0: number[];
    steps: { grad: number[]; param: number[]; buf: number[] | null }[];
  }[];
}

async function loadFixture(): Promise<Fixture> {
  return JSON.parse(
    await Deno.readTextFile(new URL("./fixtures/misc_sgd.json", import.meta.url)),
  );
}

function toParams(cfg: Fixture["cases"][number]["config"]): SgdParams {
  return {
    lr: cfg.lr,
    momentum: cfg.momentum,
    dampening: cfg.dampening,
    weightDecay: cfg.weight_decay,
    nesterov: cfg.nesterov,
  };
}

/** Runs `grads.length` GPU steps; returns param and momentum buffer after each step. */
async function gpuSteps(
  gpu: Gpu,
  param0: Float32Array,
  grads: Float32Array[],
  p: SgdParams,
): Promise<{ param: Float32Array; buf: Float32Array }[]> {
  const n = param0.length;
  const param = gpu.tensor(param0, { shape: [n] });
  const momentumBuf: Tensor = gpu.tensor(new Float32Array(n).fill(NaN), { shape: [n] });
  const out = [];
  for (let s = 0; s < grads.length; s++) {
    const grad = gpu.tensor(grads[s], { shape: [n] });
    sgdUpdate({ param, grad, momentumBuf }, { ...p, firstStep: s === 0 });
    out.push({
      param: await param.toArray() as Float32Array,
      buf: await momentumBuf.toArray() as Float32Array,
    });
    grad.dispose();
  }
  param.dispose();
  momentumBuf.dispose();
  return out;
}

Deno.test("SGD CPU reference matches torch.optim.SGD over 3 steps", async () => {
  const fx = await loadFixture();
  for (const k of fx.cases) {
    const p = toParams(k.config);
    const param = Float64Array.from(k.param0);
    let buf: Float64Array | null = null;
    for (const [s, step] of k.steps.entries()) {
      buf = sgdStepRef(param, step.grad, buf, p);
      const what = `${JSON.stringify(k.config)} step ${s}`;
      // torch ran in f32: allow f32 rounding accumulated over a few steps.
      assertClose(param, step.param, { rtol: 1e-6, atol: 1e-7, what: `param ${what}` });
      if (step.buf) assertClose(buf!, step.buf, { rtol: 1e-6, atol: 1e-7, what: `buf ${what}` });
      else assert.equal(buf, null);
    }
  }
});

Deno.test("SGD GPU matches torch.optim.SGD over 3 steps", GPU_TEST, async () => {
  const gpu = await testGpu();
  const fx = await loadFixture();
  for (const k of fx.cases) {
    const got = await gpuSteps(
      gpu,
      f32(k.param0),
      k.steps.map((s) => f32(s.grad)),
      toParams(k.config),
    );
    for (const [s, step] of k.steps.entries()) {
      const what = `${JSON.stringify(k.config)} step ${s}`;
      assertClose(got[s].param, step.param, { rtol: 1e-6, atol: 1e-7, what: `param ${what}` });
      if (step.buf) {
        assertClose(got[s].buf, step.buf, { rtol: 1e-6, atol: 1e-7, what: `buf ${what}` });
      }
    }
  }
});

Deno.test("SGD GPU matches the CPU reference on several sizes and settings", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(51);
  const settings: SgdParams[] = [
    { lr: 0.1 },
    { lr: 0.2, weightDecay: 5e-4 },
    { lr: 0.05, momentum: 0.9 },
    { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 1e-3 },
    { lr: 0.01, momentum: 0.95, nesterov: true, weightDecay: 1e-2 },
    { lr: 0, momentum: 0.5 },
  ];
  for (const n of [1, 7, 1003, 40961]) {
    for (const p of settings) {
      const param0 = f32(rng.normalArray(n));
      const grads = [0, 1, 2].map(() => f32(rng.normalArray(n)));
      const got = await gpuSteps(gpu, param0, grads, p);
      const param = Float64Array.from(param0);
      let buf: Float64Array | null = null;
      for (let s = 0; s < 3; s++) {
        buf = sgdStepRef(param, grads[s], buf, p);
        const what = `n=${n} ${JSON.stringify(p)} step ${s}`;
        assertClose(got[s].param, param, { rtol: 1e-5, atol: 1e-6, what: `param ${what}` });
        if (buf) assertClose(got[s].buf, buf, { rtol: 1e-5, atol: 1e-6, what: `buf ${what}` });
      }
    }
  }
});

Deno.test(
  "SGD firstStep: lazily created buffer vs zero buffer; no-momentum leaves it",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(52);
    const n = 9;
    const p0 = f32(rng.normalArray(n)), g = f32(rng.normalArray(n));
    const run = async (p: SgdParams, bufInit: number) => {
      const param = gpu.tensor(p0, { shape: [n] });
      const momentumBuf = gpu.tensor(new Float32Array(n).fill(bufInit), { shape: [n] });
      sgdUpdate({ param, grad: gpu.tensor(g, { shape: [n] }), momentumBuf }, p);
      return { param: await param.toArray(), buf: await momentumBuf.toArray() };
    };
    // dampening 0: a zero buffer without firstStep equals firstStep.
    const a = await run({ lr: 0.1, momentum: 0.9, firstStep: true }, 123);
    const b = await run({ lr: 0.1, momentum: 0.9 }, 0);
    assert.deepEqual(a, b);
    assert.deepEqual(a.buf, g);
    // With dampening, the first step must still set buf = grad (not (1 - dampening) * grad).
    const c = await run({ lr: 0.1, momentum: 0.9, dampening: 0.5, firstStep: true }, 123);
    assert.deepEqual(c.buf, g);
    // Without momentum the buffer is neither read nor written.
    const d = await run({ lr: 0.1 }, 7);
    assert.deepEqual(d.buf, new Float32Array(n).fill(7));
  },
);

Deno.test("SGD validates hyper-parameters and tensors", GPU_TEST, async () => {
  const gpu = await testGpu();
  const param = gpu.zeros([3, 4]);
  const grad = gpu.zeros([3, 4]);
  const momentumBuf = gpu.zeros([3, 4]);
  const io = { param, grad, momentumBuf };
  for (
    const p of [
      { lr: -0.1 },
      { lr: NaN },
      { lr: 0.1, momentum: -0.5 },
      { lr: 0.1, weightDecay: -1 },
      { lr: 0.1, dampening: -1 },
      { lr: 0.1, nesterov: true },
      { lr: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true },
    ]
  ) {
    assert.throws(() => sgdUpdate(io, p), RangeError, JSON.stringify(p));
  }
  assert.throws(
    () => sgdUpdate({ param, grad }, { lr: 0.1, momentum: 0.9 }),
    (e: Error) => e instanceof TypeError && /momentumBuf/.test(e.message),
  );
  assert.throws(
    () => sgdUpdate({ param, grad: gpu.zeros([3, 5]) }, { lr: 0.1 }),
    (e: Error) =>
      e instanceof TypeError && /sgdUpdate/.test(e.message) &&
      /\[3, 5\]/.test(e.message) && /\[3, 4\]/.test(e.message),
  );
  assert.throws(
    () => sgdUpdate({ ...io, momentumBuf: gpu.zeros([11]) }, { lr: 0.1, momentum: 0.9 }),
    (e: Error) => e instanceof TypeError && /\[11\]/.test(e.message),
  );
  assert.throws(
    () => sgdUpdate({ param, grad: gpu.zeros([3, 4], { dtype: "i32" }) }, { lr: 0.1 }),
    TypeError,
  );
});

Deno.test(
  "SGD with momentum and weight decay on 35M parameters (past one binding) matches the CPU",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const n = deviceLimit(gpu) + 1_000_003;
      const ps = fastFill(n, 7), gs = fastFill(n, 8);
      const param = gpu.tensor(ps, { shape: [n] });
      const grad = gpu.tensor(gs, { shape: [n] });
      const momentumBuf = gpu.zeros([n]); // read and written: buf = 0.9 * 0 + d
      const p = { lr: 0.1, momentum: 0.9, weightDecay: 5e-4, nesterov: true };
      sgdUpdate({ param, grad, momentumBuf }, p);
      const edge = Math.floor(deviceLimit(gpu) / 64) * 64;
      const rng = new Rng(77);
      const at = [
        0,
        edge - 4096,
        edge - 3,
        n - 4096,
        ...Array.from({ length: 8 }, () => rng.int(n)),
      ];
      const got = await readSlices(gpu, param, at, 8192);
      const gotBuf = await readSlices(gpu, momentumBuf, at, 8192);
      got.starts.forEach((s, k) => {
        const pr = Float64Array.from(ps.subarray(s, s + 8192));
        const br = sgdStepRef(
          pr,
          gs.subarray(s, s + 8192),
          new Float64Array(8192),
          p,
        );
        assertClose(got.slices[k], pr, { rtol: 1e-5, atol: 1e-7, what: `param at ${s}` });
        assertClose(gotBuf.slices[k], br!, { rtol: 1e-5, atol: 1e-7, what: `buf at ${s}` });
      });
      for (const t of [param, grad, momentumBuf]) t.dispose();
      gpu.trimPool();
    });
  },
);
