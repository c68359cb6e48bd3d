// Tests of kernels/sgd.ts: the suites of tests/ops/sgd.ts (the GPU update against the CPU
// reference over 3 steps: momentum, dampening, nesterov, weight decay; with a loss scale and a
// half-precision copy, vec4 and scalar paths, ranges) and the torch.optim.SGD fixture (the CPU
// reference too), first-step semantics, bit-identical mixed-precision updates, skipped steps,
// validation, and a tensor past one binding.
// And the update over a parameter arena (every parameter in one buffer: one dispatch, the
// padding between parameters kept zero).
import assert from "node:assert/strict";
import { type Gpu, numel, type Tensor } from "../gpu/mod.ts";
import { createLossScale, lossScaleCheck, lossScaleUpdate } from "../kernels/loss_scale.ts";
import { type SgdParams, sgdUpdate } from "../kernels/sgd.ts";
import { assertClose, f16, F16_TEST, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { param } from "../layers/mod.ts";
import { ParamArena } from "../models/arena.ts";
import { sgdStepRef } from "./cpu_ref/sgd.ts";
import { atDeviceLimit, deviceLimit, fastFill, readSlices, withBindingLimit } from "./big.ts";
import { runOpPhases, testOp } from "./_op.ts";
import { testCheck } from "./_check.ts";
import { MIXED_SETTINGS, sgd, SGD_CHECKS, SGD_SUITES } from "./ops/sgd.ts";

for (const suite of SGD_SUITES) testOp(suite);

/** The starting values of an sgd case: param0 and the gradient of each step. */
function sgdData(param0: Float32Array, grads: Float32Array[]): Record<string, Float32Array> {
  return Object.fromEntries([["param", param0], ...grads.map((g, s) => [`g${s}`, g])]);
}

/** Runs `grads.length` GPU steps; returns param and momentum buffer after each step. */
async function gpuSteps(
  gpu: Gpu,
  param0: Float32Array,
  grads: Float32Array[],
  p: SgdParams,
): Promise<{ param: Float32Array; buf: Float32Array }[]> {
  const c = sgd({ n: param0.length, p, steps: grads.length });
  const steps = await runOpPhases(gpu, c, { data: sgdData(param0, grads) });
  return steps.map((v) => ({ param: v.param as Float32Array, buf: v.momentumBuf as Float32Array }));
}

for (const check of SGD_CHECKS) testCheck(check);

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

// ------------------------------------------------------------------ mixed precision ----

/**
 * Runs `grads.length` mixed-precision GPU steps (grads already scaled by `o.scale`, a scaler
 * created at that scale, a copy of `o.half`'s type); returns param, momentum buffer and copy
 * after each step.
 */
async function mixedSteps(
  gpu: Gpu,
  param0: Float32Array,
  grads: Float32Array[],
  p: SgdParams,
  o: { scale?: number; half?: "f16" | "f32" },
): Promise<{ param: Float32Array; buf: Float32Array; half: Float16Array | Float32Array }[]> {
  const c = sgd({ n: param0.length, p, steps: grads.length, lossScale: o.scale, half: true });
  const mix = { half: o.half ?? "f16" };
  const steps = await runOpPhases(gpu, c, { data: sgdData(param0, grads), mix });
  return steps.map((v) => ({
    param: v.param as Float32Array,
    buf: v.momentumBuf as Float32Array,
    half: v.half as Float16Array | Float32Array,
  }));
}

Deno.test(
  "SGD mixed precision: copy-only and power-of-two scales are bit-identical to the plain update",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(54);
    for (const n of [7, 1003]) {
      for (const p of MIXED_SETTINGS) {
        const param0 = f32(rng.normalArray(n));
        const grads = [0, 1].map(() => f32(rng.normalArray(n)));
        const plain = await gpuSteps(gpu, param0, grads, p);
        const what = `n=${n} ${JSON.stringify(p)}`;
        // Only the f16 copy (no scaler), then an f32 copy (the other mix: a plain copy).
        for (const half of ["f16", "f32"] as const) {
          const copy = await mixedSteps(gpu, param0, grads, p, { half });
          copy.forEach((c, s) => {
            assert.deepEqual(c.param, plain[s].param, `${what} ${half} copy: param step ${s}`);
            assert.deepEqual(c.buf, plain[s].buf, `${what} ${half} copy: buf step ${s}`);
            const want = half === "f16" ? f16(plain[s].param) : plain[s].param;
            assert.deepEqual(c.half, want, `${what} ${half} copy step ${s}`);
          });
        }
        // Scaling by 2^10 and dividing by it again is exact.
        const scaled = grads.map((g) => g.map((v) => v * 1024));
        const mixed = await mixedSteps(gpu, param0, scaled, p, { scale: 1024 });
        mixed.forEach((c, s) => {
          assert.deepEqual(c.param, plain[s].param, `${what} scaled: param step ${s}`);
          assert.deepEqual(c.buf, plain[s].buf, `${what} scaled: buf step ${s}`);
        });
      }
    }
  },
);

Deno.test(
  "SGD with a loss scale skips the step on Inf/NaN (f32 or f16 grads): param and momentum kept",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(55);
    const n = 9, scale = 256;
    const p = { lr: 0.1, momentum: 0.9, weightDecay: 1e-3 };
    const cases: [string, (g: Float64Array) => Tensor][] = [
      ["f32 NaN", (g) => gpu.tensor(f32(g.map((v, i) => i === 4 ? NaN : v)), { shape: [n] })],
      [
        "f32 -Inf",
        (g) => gpu.tensor(f32(g.map((v, i) => i === 8 ? -Infinity : v)), { shape: [n] }),
      ],
      // An overflowing f16 activation gradient elsewhere in the model: the flag is global.
      ["f16 Inf", () => gpu.tensor(f16([1, 2, 70000]), { shape: [3] })],
      ["f16 NaN", () => gpu.tensor(f16([NaN]), { shape: [1] })],
    ];
    for (const [what, badGrad] of cases) {
      for (const firstStep of [false, true]) {
        const param0 = f32(rng.normalArray(n)), buf0 = f32(rng.normalArray(n));
        const g = rng.normalArray(n);
        const param = gpu.tensor(param0, { shape: [n] });
        const momentumBuf = gpu.tensor(buf0, { shape: [n] });
        const half = gpu.zeros([n], { dtype: "f16" });
        const lossScale = createLossScale(gpu, { initScale: scale });
        const grad = gpu.tensor(f32(g.map((v) => v * scale)), { shape: [n] });
        const bad = badGrad(g);
        lossScaleCheck({ lossScale, grad });
        lossScaleCheck({ lossScale, grad: bad });
        sgdUpdate({ param, grad: bad.size === n ? bad : grad, momentumBuf, half, lossScale }, {
          ...p,
          firstStep,
        });
        lossScaleUpdate({ lossScale });
        const w = `${what} firstStep=${firstStep}`;
        assert.deepEqual(await param.toArray(), param0, `${w}: param`);
        assert.deepEqual(await momentumBuf.toArray(), buf0, `${w}: momentum`);
        assert.deepEqual(await half.toArray(), f16(param0), `${w}: half written anyway`);
        // The next step (scale halved, finite grads) applies.
        const grad2 = gpu.tensor(f32(g.map((v) => v * scale / 2)), { shape: [n] });
        lossScaleCheck({ lossScale, grad: grad2 });
        sgdUpdate({ param, grad: grad2, momentumBuf, half, lossScale }, { ...p, firstStep });
        const ref = Float64Array.from(param0);
        const refBuf = sgdStepRef(
          ref,
          f32(g.map((v) => v * scale / 2)).map((v) => v / (scale / 2)),
          firstStep ? null : Float64Array.from(buf0),
          p,
        )!;
        const got = await param.toArray();
        assertClose(got, ref, { rtol: 1e-5, atol: 1e-6, what: `${w}: next step param` });
        assertClose(await momentumBuf.toArray(), refBuf, {
          rtol: 1e-5,
          atol: 1e-6,
          what: `${w}: next step buf`,
        });
        assert.deepEqual(await half.toArray(), f16(got), `${w}: next step half`);
        for (const t of [param, momentumBuf, half, lossScale, grad, bad, grad2]) t.dispose();
      }
    }
  },
);

Deno.test("SGD mixed precision validates its operands", F16_TEST, async () => {
  const gpu = await testGpu();
  const param = gpu.zeros([3, 4]);
  const grad = gpu.zeros([3, 4]);
  const half = gpu.zeros([3, 4], { dtype: "f16" });
  const lossScale = createLossScale(gpu);
  const p = { lr: 0.1 };
  assert.throws(
    () => sgdUpdate({ param, grad, half: gpu.zeros([11], { dtype: "f16" }) }, p),
    (e: Error) =>
      e instanceof TypeError && /sgdUpdate: half/.test(e.message) && /\[11\]/.test(e.message) &&
      /\[3, 4\]/.test(e.message),
  );
  for (const dtype of ["u32", "i32"] as const) {
    assert.throws(
      () => sgdUpdate({ param, grad, half: gpu.zeros([3, 4], { dtype }) }, p),
      (e: Error) => e instanceof TypeError && /sgdUpdate/.test(e.message) && /half/.test(e.message),
    );
  }
  assert.throws(
    () => sgdUpdate({ param, grad, lossScale: gpu.zeros([8]) }, p),
    (e: Error) => e instanceof TypeError && /sgdUpdate: lossScale/.test(e.message),
  );
  // The master, its gradient and momentum stay f32.
  assert.throws(
    () => sgdUpdate({ param, grad: gpu.zeros([3, 4], { dtype: "f16" }), lossScale }, p),
    (e: Error) => e instanceof TypeError && /sgdUpdate: grad must be f32/.test(e.message),
  );
  assert.throws(
    () => sgdUpdate({ param: gpu.zeros([3, 4], { dtype: "f16" }), grad, half }, p),
    (e: Error) => e instanceof TypeError && /param must be f32/.test(e.message),
  );
  assert.throws(
    () => sgdUpdate({ param, grad, half: param.reshape([12]) }, p),
    (e: Error) => e instanceof TypeError && /share a buffer/.test(e.message),
  );
  assert.throws(
    () => sgdUpdate({ param, grad, momentumBuf: grad, lossScale }, { lr: 0.1, momentum: 0.9 }),
    (e: Error) => e instanceof TypeError && /share a buffer/.test(e.message),
  );
  assert.throws(() => sgdUpdate({ param, grad, half, lossScale }, { lr: -1 }), RangeError);
});

// ------------------------------------------------------------------ parameter arena ----

/** Parameters of odd sizes (a model's mix: weights, biases, a scalar, one past a quantum). */
const ARENA_SHAPES: number[][] = [[1], [7], [3, 5], [129], [2, 3, 3, 3], [1003], [4, 4]];

/** Nonzero elements of `data` outside the arena's slots. */
function paddingNonzero(arena: ParamArena, data: ArrayLike<number>): number {
  let bad = 0, end = 0;
  for (const s of [...arena.slots, { offset: arena.size, size: 0 }]) {
    for (let i = end; i < s.offset; i++) if (data[i] !== 0) bad++;
    end = s.offset + s.size;
  }
  return bad;
}

Deno.test(
  "SGD over a parameter arena: one dispatch, each parameter as the CPU reference, padding zero",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(56);
    for (const p of [...MIXED_SETTINGS, { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 }]) {
      for (const limit of [undefined, 256]) {
        const params = ARENA_SHAPES.map((shape, k) =>
          [`p${k}`, param("weight", shape, { init: "zeros", fanIn: 1, fanOut: 1 })] as const
        );
        const init = new Map(params.map(([, q]) => [q, f32(rng.normalArray(numel(q.shape)))]));
        const arena = new ParamArena(gpu, params, { initial: (q) => init.get(q)! });
        const momentumBuf = (p.momentum ?? 0) > 0 ? arena.ensureMomentum() : undefined;
        const ref = params.map(([, q]) => Float64Array.from(init.get(q)!));
        const bufs: (Float64Array | null)[] = params.map(() => null);
        for (let s = 0; s < 3; s++) {
          const grads = params.map(([, q]) => f32(rng.normalArray(numel(q.shape))));
          params.forEach(([, q], k) => gpu.write(q.grad!, grads[k]));
          const what = `${JSON.stringify(p)} limit ${limit} step ${s}`;
          const d0 = gpu.stats.dispatches;
          await withBindingLimit(limit ?? deviceLimit(gpu), () =>
            sgdUpdate(
              { param: arena.values, grad: arena.grads, momentumBuf },
              { ...p, firstStep: s === 0 },
            ));
          // One dispatch over the whole arena; with a 256-element binding, one per range.
          const ranges = limit === undefined ? 1 : Math.ceil(arena.size / limit);
          assert.equal(gpu.stats.dispatches - d0, ranges, `${what}: dispatches`);
          for (const [k, [name, q]] of params.entries()) {
            bufs[k] = sgdStepRef(ref[k], grads[k], bufs[k], p);
            const o = { rtol: 1e-5, atol: 1e-6, what: `${name} ${q.shape} ${what}` };
            assertClose(await q.value!.toArray(), ref[k], o);
            if (bufs[k]) assertClose(await q.momentum!.toArray(), bufs[k]!, o);
          }
          for (const t of [arena.values, arena.grads, momentumBuf]) {
            if (t) assert.equal(paddingNonzero(arena, await t.toArray()), 0, `${what}: ${t}`);
          }
        }
        arena.dispose();
        for (const [, q] of params) assert.equal(q.value, null, "the views are released");
      }
    }
  },
);

Deno.test(
  "SGD over a parameter arena with a loss scale and f16 copies: as per parameter, padding zero",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(57);
    const scale = 1024;
    for (const p of MIXED_SETTINGS) {
      const params = ARENA_SHAPES.map((shape, k) =>
        [`p${k}`, param("weight", shape, { init: "zeros", fanIn: 1, fanOut: 1 })] as const
      );
      const init = new Map(params.map(([, q]) => [q, f32(rng.normalArray(numel(q.shape)))]));
      const arena = new ParamArena(gpu, params, { initial: (q) => init.get(q)! });
      // Copies of the weights only (rank >= 2), as a model in f16.
      arena.enableHalves((q) => q.shape.length >= 2);
      for (const [, q] of params) assert.equal(q.half === null, q.shape.length < 2);
      const momentumBuf = (p.momentum ?? 0) > 0 ? arena.ensureMomentum() : undefined;
      const lossScale = createLossScale(gpu, { initScale: scale, growthInterval: 1000 });
      const ref = params.map(([, q]) => Float64Array.from(init.get(q)!));
      const bufs: (Float64Array | null)[] = params.map(() => null);
      for (let s = 0; s < 2; s++) {
        const grads = params.map(([, q]) =>
          f32(rng.normalArray(numel(q.shape)).map((v) => v * scale))
        );
        params.forEach(([, q], k) => gpu.write(q.grad!, grads[k]));
        const d0 = gpu.stats.dispatches;
        lossScaleCheck({ lossScale, grad: arena.grads });
        sgdUpdate({
          param: arena.values,
          grad: arena.grads,
          momentumBuf,
          half: arena.halves!,
          lossScale,
        }, { ...p, firstStep: s === 0 });
        assert.equal(gpu.stats.dispatches - d0, 2, "one check, one update");
        lossScaleUpdate({ lossScale });
        const what = `${JSON.stringify(p)} step ${s}`;
        for (const [k, [name, q]] of params.entries()) {
          bufs[k] = sgdStepRef(ref[k], Float64Array.from(grads[k], (v) => v / scale), bufs[k], p);
          const o = { rtol: 1e-5, atol: 1e-6, what: `${name} ${q.shape} ${what}` };
          const got = await q.value!.toArray() as Float32Array;
          assertClose(got, ref[k], o);
          if (bufs[k]) assertClose(await q.momentum!.toArray(), bufs[k]!, o);
          if (q.half) assert.deepEqual(await q.half.toArray(), f16(got), `${o.what}: copy`);
        }
        for (const t of [arena.values, arena.grads, momentumBuf, arena.halves]) {
          if (t) assert.equal(paddingNonzero(arena, await t.toArray()), 0, `${what}: ${t}`);
        }
      }
      lossScale.dispose();
      arena.dispose();
    }
  },
);
