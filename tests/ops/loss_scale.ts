// The loss scaler's kernel checks (kernels/loss_scale.ts) of tests/loss_scale_test.ts, shared
// with `deno task test:browser`: the scaler's initial state and options, the Inf/NaN check on f32
// and f16 gradients (every position, range boundaries, f16 padding, finite extremes), the update
// rule against the Float64 reference (backoff, growth after the interval, growth capped at the
// f32 range, non-power-of-two factors), and a whole mixed-precision step sequence (softmax CE with
// scaled f16 gradients, check, SGD with skip and f16 copy, update) against the CPU, with no
// readback or upload inside a step. No Deno API, no node: module.
import type { FloatDType } from "../../kernels/_dtype.ts";
import { type Gpu, Tensor } from "../../gpu/mod.ts";
import {
  createLossScale,
  LOSS_SCALE_WORDS,
  lossScaleCheck,
  lossScaleUpdate,
  readLossScale,
} from "../../kernels/loss_scale.ts";
import { softmaxCrossEntropy } from "../../kernels/softmax_ce/index.ts";
import { sgdUpdate } from "../../kernels/sgd.ts";
import {
  anyNonFinite,
  type LossScaleRef,
  lossScaleRef,
  lossScaleUpdateRef,
} from "../cpu_ref/loss_scale.ts";
import { softmaxCrossEntropyRef } from "../cpu_ref/softmax_ce.ts";
import assert from "../_assert.ts";
import { withBindingLimit } from "../big.ts";
import type { KernelCheck } from "../_check.ts";
import { assertClose, f16, f32, Rng, roundF16, tensorOf } from "../harness.ts";

/** Asserts that the GPU scaler's state equals the reference's. */
async function assertState(lossScale: Tensor, ref: LossScaleRef, what: string): Promise<void> {
  const got = await readLossScale(lossScale);
  assert.deepEqual(
    {
      scale: got.scale,
      growthTracker: got.growthTracker,
      skippedSteps: got.skippedSteps,
      steps: got.steps,
    },
    {
      scale: ref.scale,
      growthTracker: ref.growthTracker,
      skippedSteps: ref.skippedSteps,
      steps: ref.steps,
    },
    what,
  );
  assert.equal(got.foundInf, false, `${what}: the update clears the flag`);
}

/** Runs the check on `values` stored as `dtype`; returns the found flag (fresh scaler). */
async function found(gpu: Gpu, values: ArrayLike<number>, dtype: FloatDType): Promise<boolean> {
  const lossScale = createLossScale(gpu);
  const shape = [values.length];
  const grad = tensorOf(gpu, values, { dtype, shape });
  lossScaleCheck({ lossScale, grad });
  const info = await readLossScale(lossScale);
  grad.dispose();
  lossScale.dispose();
  return info.foundInf;
}

/**
 * One reference step of the identity model below: the parameter is the logits (master `w`, f16
 * working copy `h`); the scaled f16 gradient overflows when `scale * |dlogits|` rounds to Inf.
 */
function refStep(
  w: Float64Array,
  buf: Float64Array,
  h: ArrayLike<number>,
  labels: Int32Array,
  n: number,
  c: number,
  s: LossScaleRef,
  lr: number,
  momentum: number,
): { found: boolean; lossSum: number } {
  const ref = softmaxCrossEntropyRef(h, labels, n, c);
  const scaled = ref.dlogits.map((v) => v * s.scale);
  // f32 arithmetic of the GPU could round a value within ~1e-6 of the f16 overflow threshold
  // the other way: keep the test's data clear of it.
  for (const v of scaled) {
    if (Math.abs(Math.abs(v) / 65520 - 1) < 1e-4) throw new Error(`ambiguous overflow ${v}`);
  }
  const found = anyNonFinite(roundF16(scaled));
  if (!found) {
    for (let i = 0; i < w.length; i++) {
      buf[i] = momentum * buf[i] + ref.dlogits[i];
      w[i] -= lr * buf[i];
    }
  }
  lossScaleUpdateRef(s, found);
  return { found, lossSum: ref.lossSum };
}

/** The loss scaler's checks (GPU; all but the first need `shader-f16`). */
export const LOSS_SCALE_CHECKS: readonly KernelCheck[] = [
  {
    name: "createLossScale: initial state and options",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      const a = await readLossScale(createLossScale(gpu));
      assert.deepEqual(a, {
        scale: 65536,
        growthTracker: 0,
        foundInf: false,
        skippedSteps: 0,
        steps: 0,
        growthInterval: 2000,
        growthFactor: 2,
        backoffFactor: 0.5,
      });
      const t = createLossScale(gpu, {
        initScale: 3,
        growthInterval: 7,
        growthFactor: 1.5,
        backoffFactor: 0.25,
      });
      assert.equal(t.dtype, "u32");
      assert.deepEqual(t.shape, [LOSS_SCALE_WORDS]);
      const b = await readLossScale(t);
      assert.deepEqual(
        [b.scale, b.growthInterval, b.growthFactor, b.backoffFactor],
        [3, 7, 1.5, 0.25],
      );
    },
  },
  {
    name: "lossScaleCheck finds NaN, +Inf and -Inf at every position of f32 and f16 gradients",
    gpu: true,
    f16: true,
    run: async (gpu) => {
      const rng = new Rng(61);
      for (const dtype of ["f32", "f16"] as const) {
        for (const n of [1, 2, 5, 7, 9]) {
          const base = Array.from({ length: n }, () => rng.uniform(-3, 3));
          assert.equal(await found(gpu, base, dtype), false, `${dtype} n=${n} finite`);
          for (let i = 0; i < n; i++) {
            for (const bad of [NaN, Infinity, -Infinity]) {
              const v = base.slice();
              v[i] = bad;
              assert.equal(
                await found(gpu, v, dtype),
                anyNonFinite(v),
                `${dtype} n=${n} [${i}]=${bad}`,
              );
            }
          }
        }
      }
    },
  },
  {
    name: "lossScaleCheck: finite extremes are not flagged; f16 overflow on upload is",
    gpu: true,
    f16: true,
    run: async (gpu) => {
      const f32Max = 3.4028234663852886e38;
      const extremes32 = [f32Max, -f32Max, 1.4e-45, -1.4e-45, -0, 0, 1.1754943508222875e-38];
      assert.equal(await found(gpu, extremes32, "f32"), false, "f32 extremes");
      const extremes16 = [65504, -65504, 2 ** -24, -(2 ** -24), -0, 0, 2 ** -14];
      assert.equal(await found(gpu, extremes16, "f16"), false, "f16 extremes");
      // 65520 rounds to Inf in f16 (what an overflowing scaled f16 gradient holds); fine in f32.
      assert.equal(anyNonFinite(roundF16([65520])), true);
      assert.equal(await found(gpu, [1, 65520, 2], "f16"), true, "f16 65520");
      assert.equal(await found(gpu, [1, 65520, 2], "f32"), false, "f32 65520");
    },
  },
  {
    name: "lossScaleCheck ignores the padding half of an odd f16 tensor's last word",
    gpu: true,
    f16: true,
    run: async (gpu) => {
      // Words of f16 pairs (low half first): 1.0 everywhere, NaN (0x7e00) in the last high half.
      const words = gpu.tensor(new Uint32Array([0x3c003c00, 0x3c003c00, 0x7e003c00]), {
        shape: [3],
      });
      for (const [n, want] of [[5, false], [6, true]] as const) {
        const view = new Tensor(gpu, words as unknown as Tensor<"f16">, {
          shape: [n],
          dtype: "f16",
        });
        const lossScale = createLossScale(gpu);
        lossScaleCheck({ lossScale, grad: view });
        assert.equal((await readLossScale(lossScale)).foundInf, want, `n=${n}`);
        view.dispose();
      }
    },
  },
  {
    name: "lossScaleCheck over many ranges (binding limit lowered): a NaN or Inf at every boundary",
    gpu: true,
    f16: true,
    run: async (gpu) => {
      await withBindingLimit(256, async () => {
        for (const dtype of ["f32", "f16"] as const) {
          const n = 1003; // 4 ranges of up to 256 elements, the last one odd
          const base = Array.from({ length: n }, (_, i) => (i % 17) - 8);
          assert.equal(await found(gpu, base, dtype), false, `${dtype} finite`);
          for (const i of [0, 255, 256, 511, 512, 767, 768, 1001, 1002]) {
            const v = base.slice();
            v[i] = i % 2 ? NaN : -Infinity;
            assert.equal(await found(gpu, v, dtype), true, `${dtype} at ${i}`);
          }
        }
      });
    },
  },
  {
    name: "lossScaleUpdate matches the reference: backoff, growth after the interval, flag cleared",
    gpu: true,
    f16: true,
    run: async (gpu) => {
      const pattern = [0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0];
      for (
        const o of [
          { initScale: 1024, growthInterval: 3 },
          { initScale: 7, growthInterval: 2, growthFactor: 3, backoffFactor: 0.3 },
          { initScale: 2 ** 127, growthInterval: 1 }, // growth would overflow f32: kept
        ]
      ) {
        const lossScale = createLossScale(gpu, o);
        const ref = lossScaleRef(o);
        const good = gpu.tensor(new Float32Array([1, 2, 3]), { shape: [3] });
        const bad = gpu.tensor(new Float16Array([1, NaN, 3]), { shape: [3] });
        for (const [s, f] of pattern.entries()) {
          // Several checks per step, as one per parameter: the flag is sticky until the update.
          lossScaleCheck({ lossScale, grad: good });
          if (f) lossScaleCheck({ lossScale, grad: bad });
          lossScaleCheck({ lossScale, grad: good });
          lossScaleUpdate({ lossScale });
          lossScaleUpdateRef(ref, f === 1);
          await assertState(lossScale, ref, `${JSON.stringify(o)} step ${s}`);
        }
        if (o.initScale === 2 ** 127) {
          // Every good step at 2^127 tried to grow to 2^128 (Inf in f32) and kept the scale.
          assert.equal(ref.scale, 2 ** 127);
        }
      }
    },
  },
  {
    name:
      "mixed-precision steps (scaled f16 CE gradient, check, SGD with skip and f16 copy, update) " +
      "match the CPU with no readback or upload inside a step",
    gpu: true,
    f16: true,
    run: async (gpu) => {
      const rng = new Rng(62);
      const n = 4, c = 5, lr = 0.5, momentum = 0.9;
      const w0 = f32(rng.normalArray(n * c));
      const labels = Int32Array.from({ length: n }, () => rng.int(c));
      const opts = { initScale: 2 ** 20, growthInterval: 2 };
      // The model's parameter is its logits: f32 master, f16 working copy, f32 momentum.
      const master = gpu.tensor(w0, { shape: [n, c] });
      const half = gpu.tensor(f16(w0), { shape: [n, c] });
      const momentumBuf = gpu.zeros([n, c]);
      const lb = gpu.tensor(labels, { shape: [n] });
      const lossSum = gpu.zeros([1]), correct = gpu.zeros([1], { dtype: "u32" });
      const lossSum2 = gpu.zeros([1]), correct2 = gpu.zeros([1], { dtype: "u32" });
      const lossScale = createLossScale(gpu, opts);
      const sRef = lossScaleRef(opts);
      let refLoss = 0;
      const skips: boolean[] = [];
      for (let step = 0; step < 12; step++) {
        const w = Float64Array.from(await master.toArray());
        const buf = Float64Array.from(await momentumBuf.toArray());
        const h = await half.toArray();
        const before = { ...gpu.stats };
        // --- the step: all on the GPU ---
        const dAct = gpu.empty([n, c], { dtype: "f16" });
        const grad = gpu.empty([n, c]);
        // The gradient reaching the model output: f16 and scaled (what a backward pass would get).
        softmaxCrossEntropy(
          { dlogits: dAct, lossSum, correct, logits: half, labels: lb, lossScale },
          {
            n,
            c,
          },
        );
        lossScaleCheck({ lossScale, grad: dAct });
        // The parameter gradient of this identity model: the same, kept in f32 (as every dw).
        softmaxCrossEntropy({
          dlogits: grad,
          lossSum: lossSum2,
          correct: correct2,
          logits: half,
          labels: lb,
          lossScale,
        }, { n, c });
        lossScaleCheck({ lossScale, grad });
        sgdUpdate({ param: master, grad, momentumBuf, half, lossScale }, { lr, momentum });
        lossScaleUpdate({ lossScale });
        gpu.flush();
        assert.equal(gpu.stats.readbacks, before.readbacks, `step ${step}: no readback`);
        assert.equal(gpu.stats.uploads, before.uploads, `step ${step}: no upload`);
        dAct.dispose();
        grad.dispose();
        // --- the reference, from the GPU's state before the step ---
        const r = refStep(w, buf, h, labels, n, c, sRef, lr, momentum);
        skips.push(r.found);
        refLoss += r.lossSum;
        const what = `step ${step} (found ${r.found})`;
        const gotW = await master.toArray();
        if (r.found) {
          assert.deepEqual(gotW, f32(w), `${what}: master untouched`);
          assert.deepEqual(await momentumBuf.toArray(), f32(buf), `${what}: momentum untouched`);
        } else {
          assertClose(gotW, w, { rtol: 1e-5, atol: 1e-6, what: `${what}: master` });
          assertClose(await momentumBuf.toArray(), buf, {
            rtol: 1e-5,
            atol: 1e-6,
            what: `${what}: momentum`,
          });
        }
        assert.deepEqual(await half.toArray(), f16(gotW), `${what}: half = f16(master)`);
        assertClose(await lossSum.toArray(), [refLoss], { rtol: 1e-5, what: `${what}: lossSum` });
        await assertState(lossScale, sRef, what);
      }
      // The data make the scaler both skip (overflow, backoff) and grow (after 2 good steps).
      assert.ok(skips.some((f) => f) && skips.some((f) => !f), `skips ${skips}`);
      assert.ok(sRef.skippedSteps >= 2, `skipped ${sRef.skippedSteps}`);
    },
  },
];
