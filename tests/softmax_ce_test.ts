// Tests of kernels/softmax_ce.ts: the CPU reference against finite differences and PyTorch, the
// GPU kernel against the CPU reference on several shapes (rows > workgroup size included),
// accumulation, huge logits, argmax ties, label smoothing, invalid labels, in place, validation.
import assert from "node:assert/strict";
import type { Gpu, Tensor } from "../gpu/mod.ts";
import { accuracyCount, softmaxCrossEntropy } from "../kernels/softmax_ce.ts";
import { assertClose, checkGradient, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { accuracyCountRef, softmaxCrossEntropyRef } from "./cpu_ref/softmax_ce.ts";
import { atDeviceLimit, deviceLimit, readSlices, sampleUnits, withBindingLimit } from "./big.ts";

interface CeOut {
  dlogits: Float32Array;
  lossSum: number;
  correct: number;
}

async function runCe(
  gpu: Gpu,
  logits: Float32Array,
  labels: Int32Array,
  n: number,
  c: number,
  labelSmoothing = 0,
  opts: { inPlace?: boolean; lossInit?: number; correctInit?: number; times?: number } = {},
): Promise<CeOut> {
  const lg = gpu.tensor(logits, { shape: [n, c] });
  const lb = gpu.tensor(labels, { shape: [n] });
  const dlogits: Tensor = opts.inPlace ? lg : gpu.empty([n, c]);
  const lossSum = gpu.tensor(new Float32Array([opts.lossInit ?? 0]), { shape: [1] });
  const correct = gpu.tensor(new Uint32Array([opts.correctInit ?? 0]), { shape: [1] });
  for (let t = 0; t < (opts.times ?? 1); t++) {
    softmaxCrossEntropy({ dlogits, lossSum, correct, logits: lg, labels: lb }, {
      n,
      c,
      labelSmoothing,
    });
  }
  const out = {
    dlogits: await dlogits.toArray() as Float32Array,
    lossSum: (await lossSum.toArray())[0],
    correct: (await correct.toArray())[0],
  };
  for (const t of [lg, lb, dlogits, lossSum, correct]) t.dispose();
  return out;
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
  }
});

Deno.test(
  "softmax CE GPU matches CPU on several shapes, with and without smoothing",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(32);
    for (const [n, c] of [[1, 1], [1, 10], [7, 3], [256, 10], [300, 10], [600, 7], [33, 1000]]) {
      for (const eps of [0, 0.1]) {
        const { logits, labels } = randomCase(rng, n, c);
        const ref = softmaxCrossEntropyRef(logits, labels, n, c, eps);
        const got = await runCe(gpu, logits, labels, n, c, eps);
        const what = `n=${n} c=${c} eps=${eps}`;
        assertClose([got.lossSum], [ref.lossSum], { rtol: 1e-5, atol: 1e-6, what: `loss ${what}` });
        assertClose(got.dlogits, ref.dlogits, { rtol: 1e-4, atol: 1e-8, what: `dlogits ${what}` });
        assert.equal(got.correct, ref.correct, `correct ${what}`);
      }
    }
  },
);

Deno.test(
  "softmax CE accumulates lossSum and correct; dlogits may alias logits",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(33);
    const n = 50, c = 10;
    const { logits, labels } = randomCase(rng, n, c);
    const ref = softmaxCrossEntropyRef(logits, labels, n, c, 0.05);
    const got = await runCe(gpu, logits, labels, n, c, 0.05, {
      lossInit: 1.5,
      correctInit: 7,
      times: 3,
    });
    assertClose([got.lossSum], [1.5 + 3 * ref.lossSum], { rtol: 1e-5 });
    assert.equal(got.correct, 7 + 3 * ref.correct);
    assertClose(got.dlogits, ref.dlogits, { rtol: 1e-4, atol: 1e-8 });
    const inPlace = await runCe(gpu, logits, labels, n, c, 0.05, { inPlace: true });
    assertClose(inPlace.dlogits, ref.dlogits, { rtol: 1e-4, atol: 1e-8, what: "in place" });
    assertClose([inPlace.lossSum], [ref.lossSum], { rtol: 1e-5 });
  },
);

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
  "softmax CE and accuracy split into many row ranges and workgroups (limit lowered)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(39);
    await withBindingLimit(3000, async () => {
      for (const [n, c, eps] of [[700, 10, 0], [301, 7, 0.1], [9, 400, 0], [2, 1000, 0.2]]) {
        const { logits, labels } = randomCase(rng, n, c);
        const ref = softmaxCrossEntropyRef(logits, labels, n, c, eps);
        for (const inPlace of [false, true]) {
          const got = await runCe(gpu, logits, labels, n, c, eps, { inPlace, lossInit: 2 });
          const what = `n=${n} c=${c} inPlace=${inPlace}`;
          assertClose([got.lossSum], [2 + ref.lossSum], { rtol: 1e-5, what: `loss ${what}` });
          assertClose(got.dlogits, ref.dlogits, { rtol: 1e-4, atol: 1e-8, what });
          assert.equal(got.correct, ref.correct, what);
        }
        const correct = gpu.tensor(new Uint32Array([3]), { shape: [1] });
        accuracyCount({
          correct,
          logits: gpu.tensor(logits, { shape: [n, c] }),
          labels: gpu.tensor(labels, { shape: [n] }),
        }, { n, c });
        assert.equal((await correct.toArray())[0], 3 + ref.correct);
      }
    });
  },
);
