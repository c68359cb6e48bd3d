// Tests of kernels/softmax_ce/: the suites of tests/ops/softmax_ce.ts (GPU vs the Float64 CPU
// reference on several shapes, rows > workgroup size included, with smoothing, accumulation, in
// place, ranges, f16 logits and gradients, loss scales), the CPU reference against finite
// differences and PyTorch, huge logits, argmax ties, invalid labels, accuracy, validation, and
// tensors past one binding and the loop cap. One file of about 500 lines on purpose: the f16 and
// loss-scale cases at its end draw their data with the f32 cases' randomCase.
import assert from "node:assert/strict";
import { type Gpu, Tensor } from "../gpu/mod.ts";
import { accuracyCount, softmaxCrossEntropy } from "../kernels/softmax_ce/index.ts";
import {
  assertClose,
  checkGradient,
  f16,
  F16_TEST,
  f32,
  GPU_TEST,
  Rng,
  roundF16,
  testGpu,
} from "./harness.ts";
import { accuracyCountRef, softmaxCrossEntropyRef } from "./cpu_ref/softmax_ce.ts";
import { atDeviceLimit, deviceLimit, readSlices, sampleUnits, withBindingLimit } from "./big.ts";
import { runOp, testOp } from "./_op.ts";
import { CE_SUITES, softmaxCe } from "./ops/softmax_ce.ts";
import { WEBGPU_DEFAULT_PROFILE } from "../kernels/_adapter.ts";
import { MAX_CE_ROWS, planSoftmaxCe } from "../kernels/softmax_ce/plan.ts";

for (const suite of CE_SUITES) testOp(suite);

interface CeOut {
  dlogits: Float32Array;
  lossSum: number;
  correct: number;
  validRows: number;
}

/** softmaxCrossEntropy of `logits` (f32) and `labels` on the GPU, read back. */
async function runCe(
  gpu: Gpu,
  logits: Float32Array,
  labels: Int32Array,
  n: number,
  c: number,
  labelSmoothing = 0,
): Promise<CeOut> {
  const out = await runOp(gpu, softmaxCe({ n, c, eps: labelSmoothing, counted: true }), {
    data: { logits, labels, validRows: [0] },
  });
  return {
    dlogits: out.dlogits as Float32Array,
    lossSum: out.lossSum[0],
    correct: out.correct[0],
    validRows: out.validRows[0],
  };
}

function randomCase(rng: Rng, n: number, c: number, scale = 2) {
  const logits = f32(rng.normalArray(n * c).map((v) => v * scale));
  const labels = Int32Array.from({ length: n }, () => rng.int(c));
  return { logits, labels };
}

Deno.test("softmax CE CPU gradient matches finite differences of the mean loss", () => {
  const rng = new Rng(31);
  for (const [n, c, eps] of [[1, 1, 0], [3, 5, 0], [4, 7, 0.2], [2, 3, 1]]) {
    const x = rng.normalArray(n * c);
    const labels = Array.from({ length: n }, () => rng.int(c));
    const f = (v: Float64Array) => softmaxCrossEntropyRef(v, labels, n, c, eps).lossSum / n;
    const { dlogits } = softmaxCrossEntropyRef(x, labels, n, c, eps);
    checkGradient(f, x, dlogits, { rtol: 1e-5, atol: 1e-8, what: `CE n=${n} c=${c} eps=${eps}` });
  }
});

/**
 * PyTorch's mean loss (`k.loss`, null for NaN: every row ignored) from a sum and a count of
 * valid rows, within `rtol`.
 */
function assertMeanLoss(
  k: { loss: number | null; lossSum: number; validRows: number; n: number },
  lossSum: number,
  validRows: number,
  rtol: number,
): void {
  assert.equal(validRows, k.validRows, `validRows n=${k.n}`);
  const mean = lossSum / validRows;
  if (k.loss === null) assert.ok(Number.isNaN(mean), `loss n=${k.n}: ${mean}, want NaN`);
  else assertClose([mean], [k.loss], { rtol, what: `mean loss n=${k.n}` });
}

Deno.test("softmax CE CPU reference matches PyTorch (smoothing, ignored rows, 1e4 logits)", async () => {
  const fx = JSON.parse(
    await Deno.readTextFile(new URL("./fixtures/misc_ce.json", import.meta.url)),
  );
  for (const k of fx.cases) {
    // The fixture's logits are f32 values printed with 9 digits: f32() recovers them exactly.
    const ref = softmaxCrossEntropyRef(f32(k.logits), k.labels, k.n, k.c, k.labelSmoothing);
    assertClose([ref.lossSum], [k.lossSum], { rtol: 1e-12, what: "lossSum" });
    assertClose(ref.dlogits, k.dlogits, { rtol: 1e-7, atol: 1e-12, what: "dlogits" });
    assert.equal(ref.correct, k.correct);
    assertMeanLoss(k, ref.lossSum, ref.validRows, 1e-12);
  }
});

Deno.test("softmax CE GPU matches PyTorch fixture", GPU_TEST, async () => {
  const gpu = await testGpu();
  const fx = JSON.parse(
    await Deno.readTextFile(new URL("./fixtures/misc_ce.json", import.meta.url)),
  );
  for (const k of fx.cases) {
    const got = await runCe(
      gpu,
      f32(k.logits),
      Int32Array.from(k.labels),
      k.n,
      k.c,
      k.labelSmoothing,
    );
    assertClose([got.lossSum], [k.lossSum], { rtol: 1e-5, what: `lossSum n=${k.n}` });
    assertClose(got.dlogits, k.dlogits, { rtol: 1e-4, atol: 1e-7, what: `dlogits n=${k.n}` });
    assert.equal(got.correct, k.correct);
    assertMeanLoss(k, got.lossSum, got.validRows, 1e-5);
    // Every row ignored: PyTorch's gradient is exactly zero, ours too.
    if (k.validRows === 0) assert.deepEqual(got.dlogits, new Float32Array(k.n * k.c));
  }
});

Deno.test(
  "softmax CE: huge logits (±1e4) stay finite; argmax ties pick the first",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const c = 6;
    const rows = [
      [1e4, -1e4, 0, 5, -5, 1e4 - 1], // label 0: loss ~ e^-1
      [1e4, -1e4, 0, 5, -5, 1e4 - 1], // label 1: loss 2e4
      [-1e4, -1e4, -1e4, -1e4, -1e4, -1e4], // ties everywhere: argmax 0
      [1, 2, 3, 3, 3, 0], // tie between 2, 3, 4: argmax 2
      [1, 2, 3, 3, 3, 0],
      [1e4, 1e4, -1e4, 3e3, 0, 1e4],
    ];
    const labels = new Int32Array([0, 1, 0, 2, 3, 5]);
    const logits = f32(rows.flat());
    const n = rows.length;
    for (const eps of [0, 0.3]) {
      const ref = softmaxCrossEntropyRef(logits, labels, n, c, eps);
      const got = await runCe(gpu, logits, labels, n, c, eps);
      assert.ok(Number.isFinite(got.lossSum) && got.dlogits.every(Number.isFinite));
      assertClose([got.lossSum], [ref.lossSum], { rtol: 1e-6, what: `loss eps=${eps}` });
      assertClose(got.dlogits, ref.dlogits, { rtol: 1e-4, atol: 1e-7, what: `dlogits eps=${eps}` });
      // Rows 0, 2 and 3 are correct (first maximum); rows 1, 4 and 5 (tie lost to index 0) are not.
      assert.equal(got.correct, 3);
    }
    const correct = gpu.zeros([1], { dtype: "u32" });
    accuracyCount({
      correct,
      logits: gpu.tensor(logits, { shape: [n, c] }),
      labels: gpu.tensor(labels, { shape: [n] }),
    }, { n, c });
    assert.equal((await correct.toArray())[0], 3);
  },
);

Deno.test(
  "softmax CE ignores labels outside [0, c): zero gradient, no loss, not correct",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(34);
    const n = 6, c = 4;
    const { logits } = randomCase(rng, n, c);
    // Row 1 would be correct for label 2 = argmax: make sure an invalid label never counts.
    const labels = new Int32Array([-1, 4, -100, 2147483647, -2147483648, 1]);
    const got = await runCe(gpu, logits, labels, n, c, 0.1);
    const ref = softmaxCrossEntropyRef(logits, labels, n, c, 0.1);
    assert.deepEqual(got.dlogits.subarray(0, 5 * c), new Float32Array(5 * c));
    assertClose(got.dlogits, ref.dlogits, { rtol: 1e-4, atol: 1e-8 });
    assertClose([got.lossSum], [ref.lossSum], { rtol: 1e-5 });
    assert.equal(got.correct, ref.correct);
    const correct = gpu.zeros([1], { dtype: "u32" });
    accuracyCount({
      correct,
      logits: gpu.tensor(logits, { shape: [n, c] }),
      labels: gpu.tensor(labels, { shape: [n] }),
    }, { n, c });
    assert.equal((await correct.toArray())[0], ref.correct);
  },
);

Deno.test("accuracyCount matches CPU and accumulates", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(35);
  for (const [n, c] of [[1, 1], [9, 3], [1000, 10], [70, 257]]) {
    const { logits, labels } = randomCase(rng, n, c, 1);
    // Make about half the rows correct.
    for (let r = 0; r < n; r += 2) logits[r * c + labels[r]] = 100;
    const correct = gpu.tensor(new Uint32Array([5]), { shape: [1] });
    const lg = gpu.tensor(logits, { shape: [n, c] });
    const lb = gpu.tensor(labels, { shape: [n] });
    accuracyCount({ correct, logits: lg, labels: lb }, { n, c });
    accuracyCount({ correct, logits: lg, labels: lb }, { n, c });
    assert.equal((await correct.toArray())[0], 5 + 2 * accuracyCountRef(logits, labels, n, c));
  }
});

Deno.test("softmax CE validates shapes, dtypes and params", GPU_TEST, async () => {
  const gpu = await testGpu();
  const logits = gpu.zeros([4, 10]);
  const labels = gpu.zeros([4], { dtype: "i32" });
  const dlogits = gpu.zeros([4, 10]);
  const lossSum = gpu.zeros([1]);
  const correct = gpu.zeros([1], { dtype: "u32" });
  const io = { dlogits, lossSum, correct, logits, labels };
  const ok = { n: 4, c: 10 };
  assert.throws(
    () => softmaxCrossEntropy({ ...io, logits: gpu.zeros([4, 9]) }, ok),
    (e: Error) =>
      e instanceof TypeError && /logits has shape \[4, 9\]/.test(e.message) &&
      /\[4, 10\]/.test(e.message),
  );
  assert.throws(
    () => softmaxCrossEntropy({ ...io, labels: gpu.zeros([4]) }, ok),
    (e: Error) => e instanceof TypeError && /labels/.test(e.message) && /f32/.test(e.message),
  );
  assert.throws(() => softmaxCrossEntropy({ ...io, dlogits: gpu.zeros([4, 11]) }, ok), TypeError);
  assert.throws(() => softmaxCrossEntropy({ ...io, correct: gpu.zeros([1]) }, ok), TypeError);
  assert.throws(() => softmaxCrossEntropy({ ...io, lossSum: gpu.zeros([2]) }, ok), TypeError);
  assert.throws(() => softmaxCrossEntropy({ ...io, lossSum: dlogits }, ok), TypeError);
  assert.throws(
    () => softmaxCrossEntropy({ ...io, validRows: gpu.zeros([1]) }, ok),
    (e: Error) => e instanceof TypeError && /validRows has shape \[1\] \(f32\)/.test(e.message),
  );
  assert.throws(() => softmaxCrossEntropy({ ...io, validRows: correct }, ok), TypeError);
  assert.throws(() => softmaxCrossEntropy(io, { n: 4, c: 0 }), RangeError);
  assert.throws(() => softmaxCrossEntropy(io, { n: -1, c: 10 }), RangeError);
  for (const labelSmoothing of [-0.1, 1.5, NaN]) {
    assert.throws(() => softmaxCrossEntropy(io, { ...ok, labelSmoothing }), RangeError);
  }
  assert.throws(
    () => accuracyCount({ correct, logits, labels: gpu.zeros([5], { dtype: "i32" }) }, ok),
    (e: Error) => e instanceof TypeError && /\[5\]/.test(e.message),
  );
});

/**
 * A case of `n` rows that repeat with period `period` (labels too), so that the Float64 reference
 * of one period gives the whole result: loss and hits scale with the number of copies, and the
 * gradient of row r is that of row r % period times period / n.
 */
function periodicCase(n: number, c: number, period: number, seed: number) {
  const rng = new Rng(seed);
  const block = randomCase(rng, period, c, 3);
  const logits = new Float32Array(n * c), labels = new Int32Array(n);
  for (let r0 = 0; r0 < n; r0 += period) {
    const k = Math.min(period, n - r0);
    logits.set(block.logits.subarray(0, k * c), r0 * c);
    labels.set(block.labels.subarray(0, k), r0);
  }
  const full = softmaxCrossEntropyRef(block.logits, block.labels, period, c);
  const rest = n % period;
  const tail = softmaxCrossEntropyRef(block.logits, block.labels, rest, c);
  const copies = Math.floor(n / period);
  return {
    logits,
    labels,
    lossSum: copies * full.lossSum + tail.lossSum,
    correct: copies * full.correct + tail.correct,
    /** The reference gradient of row r. */
    dlogitsRow: (r: number) =>
      full.dlogits.subarray((r % period) * c, (r % period + 1) * c).map((v) => v * period / n),
  };
}

Deno.test(
  "softmax CE past llvmpipe's loop cap (6403 rows of 1000 classes) matches the CPU",
  GPU_TEST,
  async () => {
    // One workgroup of 256 threads would loop 25 rows x ~3000 iterations = 75000 times per
    // thread, past the silent cap of 65535.
    const gpu = await testGpu();
    const n = 6403, c = 1000;
    const k = periodicCase(n, c, 97, 36);
    const got = await runCe(gpu, k.logits, k.labels, n, c);
    assertClose([got.lossSum], [k.lossSum], { rtol: 1e-5, what: "lossSum" });
    assert.equal(got.correct, k.correct);
    for (let r = 0; r < n; r++) {
      assertClose(got.dlogits.subarray(r * c, (r + 1) * c), k.dlogitsRow(r), {
        rtol: 1e-4,
        atol: 1e-10,
        what: `dlogits row ${r}`,
      });
    }
    const correct = gpu.zeros([1], { dtype: "u32" });
    accuracyCount({
      correct,
      logits: gpu.tensor(k.logits, { shape: [n, c] }),
      labels: gpu.tensor(k.labels, { shape: [n] }),
    }, { n, c });
    assert.equal((await correct.toArray())[0], k.correct);
  },
);

Deno.test(
  "softmax CE in place on 3.4M x 10 logits (136 MB, past one binding) matches the CPU",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const c = 10, n = Math.ceil(deviceLimit(gpu) / c) + 44_443;
      const k = periodicCase(n, c, 4099, 37);
      const logits = gpu.tensor(k.logits, { shape: [n, c] });
      const labels = gpu.tensor(k.labels, { shape: [n] });
      const correct = gpu.zeros([1], { dtype: "u32" });
      accuracyCount({ correct, logits, labels }, { n, c });
      const lossSum = gpu.zeros([1]), correct2 = gpu.zeros([1], { dtype: "u32" });
      softmaxCrossEntropy({ dlogits: logits, lossSum, correct: correct2, logits, labels }, {
        n,
        c,
      });
      // A sum of 3.4M f32 losses: relative rounding error well under 1e-4.
      assertClose([(await lossSum.toArray())[0]], [k.lossSum], { rtol: 1e-4, what: "lossSum" });
      assert.equal((await correct.toArray())[0], k.correct);
      assert.equal((await correct2.toArray())[0], k.correct);
      // The gradients are O(1 / n): atol 1e-5 / n as the other tests' 1e-8 at n ~ 1000 (f32
      // cancellation in softmax - 1 on the label). The last 100k rows hold the range boundary (whatever the row block size); plus samples.
      const tail = n - 100_000;
      const rows = sampleUnits(gpu, tail, c, 20, new Rng(38));
      const got = await readSlices(gpu, logits, [...rows.map((r) => r * c), tail * c], c);
      rows.forEach((r, i) => {
        assertClose(got.slices[i], k.dlogitsRow(r), {
          rtol: 1e-4,
          atol: 1e-5 / n,
          what: `row ${r}`,
        });
      });
      const end = await readSlices(gpu, logits, [tail * c], (n - tail) * c);
      const want = new Float64Array((n - tail) * c);
      for (let r = tail; r < n; r++) want.set(k.dlogitsRow(r), (r - tail) * c);
      assertClose(end.slices[0], want, { rtol: 1e-4, atol: 1e-5 / n, what: `rows ${tail}..${n}` });
      for (const t of [logits, labels, correct, correct2, lossSum]) t.dispose();
      gpu.trimPool();
    });
  },
);

Deno.test(
  "accuracyCount split into many row ranges and workgroups (limit lowered)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(39);
    await withBindingLimit(3000, async () => {
      for (const [n, c] of [[700, 10], [301, 7], [9, 400], [2, 1000]]) {
        const { logits, labels } = randomCase(rng, n, c);
        const correct = gpu.tensor(new Uint32Array([3]), { shape: [1] });
        accuracyCount({
          correct,
          logits: gpu.tensor(logits, { shape: [n, c] }),
          labels: gpu.tensor(labels, { shape: [n] }),
        }, { n, c });
        assert.equal((await correct.toArray())[0], 3 + accuracyCountRef(logits, labels, n, c));
      }
    });
  },
);

// ------------------------------------------------------------------ f16 and loss scaling ----

interface MixedCe {
  dlogits: Float32Array | Float16Array;
  lossSum: number;
  correct: number;
}

/**
 * Runs softmax CE with logits stored as `o.logits` and dlogits as `o.dlogits` ("inplace": the
 * logits tensor itself), optionally scaled by a loss scaler created at `o.scale`.
 */
async function runMixed(
  gpu: Gpu,
  logits: ArrayLike<number>,
  labels: Int32Array,
  n: number,
  c: number,
  o: { logits: "f32" | "f16"; dlogits: "f32" | "f16" | "inplace"; eps?: number; scale?: number },
): Promise<MixedCe> {
  const inPlace = o.dlogits === "inplace";
  const p = { n, c, eps: o.eps, lossScale: o.scale, inPlace };
  const mix = { logits: o.logits, ...(o.dlogits === "inplace" ? {} : { dlogits: o.dlogits }) };
  const out = await runOp(gpu, softmaxCe(p), { data: { logits, labels }, mix });
  return {
    dlogits: out.dlogits as Float32Array | Float16Array,
    lossSum: out.lossSum[0],
    correct: out.correct[0],
  };
}

Deno.test(
  "softmax CE with a loss scale: f32 dlogits scaled exactly by 2^k, loss and hits unscaled; f16 precision kept",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(41);
    for (const [n, c] of [[7, 3], [300, 10], [5, 257]]) {
      const { logits, labels } = randomCase(rng, n, c);
      const plain = await runMixed(gpu, logits, labels, n, c, { logits: "f32", dlogits: "f32" });
      for (const scale of [1024, 0.25]) {
        const scaled = await runMixed(gpu, logits, labels, n, c, {
          logits: "f32",
          dlogits: "inplace",
          eps: 0,
          scale,
        });
        assert.deepEqual(scaled.dlogits, plain.dlogits.map((v) => v * scale), `scale ${scale}`);
        assert.equal(scaled.lossSum, plain.lossSum);
        assert.equal(scaled.correct, plain.correct);
      }
    }
    // Why: 2000 rows make gradients of ~5e-5 / 10, below f16's smallest normal (6.1e-5), where
    // f16 keeps only a few bits; scaled by 2^12 they keep f16's full relative precision.
    const n = 2000, c = 10;
    const { logits, labels } = randomCase(rng, n, c);
    const ref = softmaxCrossEntropyRef(roundF16(logits), labels, n, c);
    const relErr = (got: ArrayLike<number>, s: number) => {
      let worst = 0;
      for (let i = 0; i < ref.dlogits.length; i++) {
        const e = ref.dlogits[i];
        if (Math.abs(e) > 1e-7) worst = Math.max(worst, Math.abs(got[i] / s - e) / Math.abs(e));
      }
      return worst;
    };
    const unscaled = await runMixed(gpu, logits, labels, n, c, { logits: "f16", dlogits: "f16" });
    const scaled = await runMixed(gpu, logits, labels, n, c, {
      logits: "f16",
      dlogits: "f16",
      scale: 4096,
    });
    assert.ok(relErr(unscaled.dlogits, 1) > 1e-2, `unscaled: ${relErr(unscaled.dlogits, 1)}`);
    assert.ok(relErr(scaled.dlogits, 4096) < 2 ** -10, `scaled: ${relErr(scaled.dlogits, 4096)}`);
  },
);

Deno.test(
  "accuracyCount with f16 logits split into row ranges and workgroups (limit lowered)",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(42);
    await withBindingLimit(3000, async () => {
      for (const [n, c] of [[1001, 7], [9, 400], [2, 1000]]) {
        const { logits, labels } = randomCase(rng, n, c);
        const correct = gpu.tensor(new Uint32Array([3]), { shape: [1] });
        accuracyCount({
          correct,
          logits: gpu.tensor(f16(logits), { shape: [n, c] }),
          labels: gpu.tensor(labels, { shape: [n] }),
        }, { n, c });
        const want = accuracyCountRef(roundF16(logits), labels, n, c);
        assert.equal((await correct.toArray())[0], 3 + want, `accuracy n=${n} c=${c}`);
      }
    });
  },
);

Deno.test(
  "accuracyCount with f16 logits matches the CPU (ties from f16 rounding)",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(43);
    for (const [n, c] of [[9, 3], [1000, 10], [70, 257]]) {
      const { logits, labels } = randomCase(rng, n, c, 1);
      // 1 + 1e-4 and 1 round to the same f16 value: the first of the two wins.
      for (let r = 0; r < n; r += 3) {
        logits[r * c + labels[r]] = 1 + 1e-4 * (r % 2);
        logits[r * c + (labels[r] + 1) % c] = 1;
      }
      const correct = gpu.zeros([1], { dtype: "u32" });
      accuracyCount({
        correct,
        logits: gpu.tensor(f16(logits), { shape: [n, c] }),
        labels: gpu.tensor(labels, { shape: [n] }),
      }, { n, c });
      assert.equal(
        (await correct.toArray())[0],
        accuracyCountRef(roundF16(logits), labels, n, c),
        `n=${n} c=${c}`,
      );
    }
  },
);

Deno.test("softmax CE validates f16 operands and the loss scale", F16_TEST, async () => {
  const gpu = await testGpu();
  const logits = gpu.zeros([4, 10], { dtype: "f16" });
  const labels = gpu.zeros([4], { dtype: "i32" });
  const dlogits = gpu.zeros([4, 10], { dtype: "f16" });
  const lossSum = gpu.zeros([1]);
  const correct = gpu.zeros([1], { dtype: "u32" });
  const io = { dlogits, lossSum, correct, logits, labels };
  const ok = { n: 4, c: 10 };
  for (const dtype of ["u32", "i32"] as const) {
    const bad = gpu.zeros([4, 10], { dtype });
    assert.throws(
      () => softmaxCrossEntropy({ ...io, logits: bad }, ok),
      (e: Error) =>
        e instanceof TypeError && /softmaxCrossEntropy: logits/.test(e.message) &&
        /f32 or f16/.test(e.message),
    );
    assert.throws(
      () => softmaxCrossEntropy({ ...io, dlogits: bad }, ok),
      (e: Error) => e instanceof TypeError && /softmaxCrossEntropy: dlogits/.test(e.message),
    );
    assert.throws(
      () => accuracyCount({ correct, logits: bad, labels }, ok),
      (e: Error) => e instanceof TypeError && /accuracyCount: logits/.test(e.message),
    );
  }
  assert.throws(
    () => softmaxCrossEntropy({ ...io, logits: gpu.zeros([4, 9], { dtype: "f16" }) }, ok),
    (e: Error) =>
      e instanceof TypeError && /logits has shape \[4, 9\] \(f16\)/.test(e.message) &&
      /f16 \[4, 10\]/.test(e.message),
  );
  // In place needs one dtype: an f32 view of the f16 logits' buffer is refused.
  const f32View = new Tensor(gpu, logits as unknown as Tensor<"f32">, {
    shape: [4, 10],
    dtype: "f32",
  });
  assert.throws(
    () => softmaxCrossEntropy({ ...io, dlogits: f32View }, ok),
    (e: Error) => e instanceof TypeError && /in place needs one dtype/.test(e.message),
  );
  for (const bad of [gpu.zeros([8]), gpu.zeros([4], { dtype: "u32" })]) {
    assert.throws(
      () => softmaxCrossEntropy({ ...io, lossScale: bad }, ok),
      (e: Error) => e instanceof TypeError && /softmaxCrossEntropy: lossScale/.test(e.message),
    );
  }
});

Deno.test("planSoftmaxCe: rows per workgroup, ranges and partial sums as plain values", () => {
  const profile = WEBGPU_DEFAULT_PROFILE;
  const op = "softmaxCrossEntropy";
  // 16384 / (3 * 10 + 4) = 481 rows per thread, 256 threads: one workgroup for 256 rows.
  const head = planSoftmaxCe({ op, kind: "ce", n: 256, c: 10, labelSmoothing: 0.1 }, profile);
  assert.deepEqual(head, {
    kind: "ce",
    n: 256,
    c: 10,
    onTarget: 1 - 0.1,
    offTarget: 0.1 / 10,
    rowsPerGroup: 123136,
    ranges: [{ rows: [0, 256], groups: 1, partialOff: 0 }],
    groups: 1,
    partial: false,
  });
  const acc = planSoftmaxCe({ op: "accuracyCount", kind: "acc", n: 300000, c: 10 }, profile);
  assert.deepEqual([acc.n, acc.onTarget, acc.offTarget, acc.groups, acc.partial], [
    300000,
    0,
    0,
    3,
    true,
  ]);
  // A binding of 3000 elements: ranges of 300 rows, one workgroup each, numbered in order.
  const ranged = planSoftmaxCe({ op, kind: "ce_inplace", n: 1000, c: 10 }, profile, 3000);
  assert.equal(ranged.rowsPerGroup, 300);
  assert.deepEqual(ranged.ranges.map((r) => [...r.rows, r.groups, r.partialOff]), [
    [0, 300, 1, 0],
    [300, 600, 1, 1],
    [600, 900, 1, 2],
    [900, 1000, 1, 3],
  ]);
  assert.throws(
    () => planSoftmaxCe({ op, kind: "ce", n: 1, c: 16385 }, profile),
    /c = 16385 classes is more than the supported 16384/,
  );
  // The loss binds all the labels at once (each workgroup counts the valid ones); acc does not.
  assert.throws(
    () => planSoftmaxCe({ op, kind: "ce", n: 3001, c: 1 }, profile, 3000),
    /n = 3001 rows is more than the supported 3000/,
  );
  assert.equal(planSoftmaxCe({ op, kind: "acc", n: 3001, c: 1 }, profile, 3000).ranges.length, 2);
  assert.throws(
    () => planSoftmaxCe({ op, kind: "ce", n: MAX_CE_ROWS + 1, c: 1 }, profile),
    RangeError,
  );
});
