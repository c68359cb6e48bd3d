// Tests of kernels/softmax_ce.ts: the CPU reference against finite differences and PyTorch, the
// GPU kernel against the CPU reference on several shapes (rows > workgroup size included),
// accumulation, huge logits, argmax ties, label smoothing, invalid labels, in place, validation.
import assert from "node:assert/strict";
import { type Gpu, Tensor } from "../gpu/mod.ts";
import { createLossScale } from "../kernels/loss_scale.ts";
import { accuracyCount, softmaxCrossEntropy } from "../kernels/softmax_ce.ts";
import {
  assertClose,
  checkGradient,
  type CloseOptions,
  f16,
  F16_TEST,
  f16Tolerance,
  f32,
  GPU_TEST,
  Rng,
  roundF16,
  stored,
  tensorOf,
  testGpu,
} from "./harness.ts";
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
  const lg = tensorOf(gpu, logits, { dtype: o.logits, shape: [n, c] });
  const lb = gpu.tensor(labels, { shape: [n] });
  const dlogits: Tensor = o.dlogits === "inplace" ? lg : gpu.empty([n, c], { dtype: o.dlogits });
  const lossSum = gpu.zeros([1]);
  const correct = gpu.zeros([1], { dtype: "u32" });
  const lossScale = o.scale === undefined ? undefined : createLossScale(gpu, {
    initScale: o.scale,
  });
  softmaxCrossEntropy({ dlogits, lossSum, correct, logits: lg, labels: lb, lossScale }, {
    n,
    c,
    labelSmoothing: o.eps ?? 0,
  });
  const out = {
    dlogits: await dlogits.toArray() as Float32Array | Float16Array,
    lossSum: (await lossSum.toArray())[0],
    correct: (await correct.toArray())[0],
  };
  for (const t of [lg, lb, dlogits, lossSum, correct, lossScale]) t?.dispose();
  return out;
}

/**
 * Tolerance of a gradient stored as f16 (one rounding of an f32 value): the f32 sum of c
 * exponentials behind it carries a relative error up to c * 2^-24 = (c * 2^-13) * 2^-11, i.e.
 * c * 2^-13 of an f16 half-ulp (exp, log and the division add a few f32 ulps, far less).
 */
function f16GradTolerance(ref: ArrayLike<number>, c: number): CloseOptions {
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]));
  return f16Tolerance(scale, c * 2 ** -13);
}

/** Checks one mixed-precision run against the Float64 reference on what the GPU was given. */
async function checkMixed(
  gpu: Gpu,
  n: number,
  c: number,
  o: { logits: "f32" | "f16"; dlogits: "f32" | "f16" | "inplace"; eps?: number; scale?: number },
  rng: Rng,
): Promise<void> {
  const { logits, labels } = randomCase(rng, n, c);
  // The reference gets the logits the GPU holds: rounded to f16 for f16 logits.
  const given = stored(logits, o.logits);
  const ref = softmaxCrossEntropyRef(given, labels, n, c, o.eps ?? 0);
  const scale = o.scale ?? 1;
  const want = ref.dlogits.map((v) => v * scale);
  const got = await runMixed(gpu, logits, labels, n, c, o);
  const what = `n=${n} c=${c} ${JSON.stringify(o)}`;
  const half = o.dlogits === "f16" || (o.dlogits === "inplace" && o.logits === "f16");
  assert.equal(got.dlogits instanceof Float16Array, half, `dlogits dtype ${what}`);
  assertClose(
    got.dlogits,
    want,
    { ...(half ? f16GradTolerance(want, c) : { rtol: 1e-4, atol: 1e-8 * scale }), what },
  );
  // The loss and the hits are f32 / u32 sums whatever the storage of the logits: unscaled.
  assertClose([got.lossSum], [ref.lossSum], { rtol: 1e-5, atol: 1e-6, what: `loss ${what}` });
  assert.equal(got.correct, ref.correct, `correct ${what}`);
}

Deno.test(
  "softmax CE with f16 logits and/or dlogits matches the CPU on the f16-rounded logits",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(40);
    const mixes = [
      { logits: "f16", dlogits: "f16" }, // training in f16
      { logits: "f16", dlogits: "inplace" },
      { logits: "f16", dlogits: "f32" },
      { logits: "f32", dlogits: "f16" },
    ] as const;
    for (const [n, c] of [[1, 1], [7, 3], [300, 10], [5, 257]]) {
      for (const mix of mixes) {
        for (const eps of [0, 0.1]) await checkMixed(gpu, n, c, { ...mix, eps }, rng);
      }
    }
  },
);

Deno.test(
  "softmax CE with a loss scale: dlogits scaled (f32 exactly by 2^k), loss and hits unscaled",
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
      for (const scale of [4096, 3000]) {
        for (const dlogits of ["f16", "inplace"] as const) {
          await checkMixed(gpu, n, c, { logits: "f16", dlogits, eps: 0.1, scale }, rng);
        }
        await checkMixed(gpu, n, c, { logits: "f32", dlogits: "f32", scale }, rng);
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
  "softmax CE and accuracy with f16 logits split into row ranges and workgroups (limit lowered)",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(42);
    await withBindingLimit(3000, async () => {
      // Rows per workgroup and per range: floor(3000 / c), so 3, 2 and 1 ranges / workgroups.
      for (const [n, c] of [[1001, 7], [9, 400], [2, 1000]]) {
        for (const dlogits of ["f16", "inplace"] as const) {
          await checkMixed(gpu, n, c, { logits: "f16", dlogits, eps: 0.1, scale: 512 }, rng);
        }
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
