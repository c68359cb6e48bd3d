// Tests of kernels/softmax_ce.ts: the CPU reference against finite differences and PyTorch, the
// GPU kernel against the CPU reference on several shapes (rows > workgroup size included),
// accumulation, huge logits, argmax ties, label smoothing, invalid labels, in place, validation.
import assert from "node:assert/strict";
import type { Gpu, Tensor } from "../gpu/mod.ts";
import { accuracyCount, softmaxCrossEntropy } from "../kernels/softmax_ce.ts";
import { assertClose, checkGradient, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { accuracyCountRef, softmaxCrossEntropyRef } from "./cpu_ref/softmax_ce.ts";

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
