// Tests of kernels/dropout.ts: the suites of tests/ops/dropout.ts (the GPU mask, output and
// gradient against an independent BigInt CPU reference of the counter-based RNG, bit for bit, on
// vec4 / scalar / in-place layouts, ranges and f16 tensors; the backward vs finite differences),
// statistics of the keep fraction, exact scaling, seeds, validation, and a tensor past one binding.
import assert from "node:assert/strict";
import { type Gpu, Tensor } from "../gpu/mod.ts";
import {
  dropoutBackward,
  dropoutForward,
  dropoutHash,
  dropoutMaskWords,
  dropoutThreshold,
} from "../kernels/dropout.ts";
import { F16_TEST, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { dropoutKeepRef, pcgRef } from "./cpu_ref/dropout.ts";
import { assertExact, atDeviceLimit, deviceLimit, fastFill, readSlices } from "./big.ts";
import { runOp, testOp } from "./_op.ts";
import { dropout, DROPOUT_SUITES } from "./ops/dropout.ts";

function popcount(words: Uint32Array): number {
  let c = 0;
  for (let w of words) {
    while (w) {
      w &= w - 1;
      c++;
    }
  }
  return c;
}

for (const suite of DROPOUT_SUITES) testOp(suite);

/** Dropout of `xs` (f32) with `p` and `seed` on the GPU: y and the mask read back. */
async function runForward(
  gpu: Gpu,
  xs: Float32Array,
  p: number,
  seed: number,
): Promise<{ y: Float32Array; mask: Uint32Array }> {
  const out = await runOp(gpu, dropout({ n: xs.length, p, seed }), { data: { x: xs } });
  return { y: out.y as Float32Array, mask: out.mask as Uint32Array };
}

Deno.test("dropout hash: the kernel's TS hash equals the independent BigInt reference", () => {
  for (const v of [0, 1, 2, 31, 0x7fffffff, 0x80000000, 0xffffffff, 123456789]) {
    for (const seed of [0, 1, 42, 0xffffffff]) {
      assert.equal(dropoutHash(seed, v), pcgRef((pcgRef(v) ^ pcgRef(seed)) >>> 0));
      assert.equal(
        dropoutHash(seed, v) >= dropoutThreshold(0.3),
        dropoutKeepRef(seed, v, 0.3),
      );
    }
  }
  assert.equal(dropoutMaskWords(0), 0);
  assert.equal(dropoutMaskWords(32), 1);
  assert.equal(dropoutMaskWords(33), 2);
});

Deno.test("dropout p = 0 is the identity with an all-ones mask", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(23);
  for (const n of [1, 40, 1001]) {
    const xs = f32(rng.normalArray(n));
    const got = await runForward(gpu, xs, 0, 5);
    assert.deepEqual(got.y, xs);
    const want = new Uint32Array(dropoutMaskWords(n)).fill(0xffffffff);
    if (n % 32) want[want.length - 1] = 2 ** (n % 32) - 1; // bits past n are 0
    assert.deepEqual(got.mask, want);
  }
});

Deno.test(
  "dropout keep fraction is 1 - p (within 5 sigma) and the scale is exact",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const n = 200003;
    const x = new Float32Array(n).fill(1.5);
    for (const p of [0.5, 0.99, 0.1]) {
      const got = await runForward(gpu, x, p, 2024);
      const kept = popcount(got.mask);
      const mean = n * (1 - p), sigma = Math.sqrt(n * p * (1 - p));
      assert.ok(
        Math.abs(kept - mean) < 5 * sigma,
        `p=${p}: kept ${kept}, expected ${mean}±${sigma}`,
      );
      const scaled = Math.fround(1.5 * Math.fround(1 / (1 - p)));
      let nonzero = 0;
      for (let i = 0; i < n; i++) {
        const keep = (got.mask[i >> 5] >>> (i & 31)) & 1;
        if (got.y[i] !== (keep ? scaled : 0)) assert.fail(`p=${p}: y[${i}] = ${got.y[i]}`);
        nonzero += keep;
      }
      assert.equal(nonzero, kept);
      if (p === 0.99) assert.equal(scaled, 150);
    }
  },
);

Deno.test("dropout: same seed, same mask; another seed, an unrelated mask", GPU_TEST, async () => {
  const gpu = await testGpu();
  const n = 4096;
  const x = new Float32Array(n).fill(1);
  const a = await runForward(gpu, x, 0.5, 1000);
  const b = await runForward(gpu, x, 0.5, 1000);
  const c = await runForward(gpu, x, 0.5, 1001);
  assert.deepEqual(a.mask, b.mask);
  assert.notDeepEqual(a.mask, c.mask);
  // Unrelated: about half the bits agree, and seed 1001 is not seed 1000 shifted by a few.
  for (let shift = 0; shift < 4; shift++) {
    let agree = 0;
    for (let i = 0; i + shift < n; i++) {
      const ka = (a.mask[i >> 5] >>> (i & 31)) & 1;
      const j = i + shift;
      const kc = (c.mask[j >> 5] >>> (j & 31)) & 1;
      agree += ka === kc ? 1 : 0;
    }
    const frac = agree / (n - shift);
    assert.ok(frac > 0.45 && frac < 0.55, `shift ${shift}: ${frac} of the bits agree`);
  }
});

Deno.test("dropout validates p, seed, sizes and dtypes", GPU_TEST, async () => {
  const gpu = await testGpu();
  const x = gpu.zeros([4, 10]);
  const y = gpu.empty([4, 10]);
  const mask = gpu.empty([2], { dtype: "u32" });
  for (const p of [1, -0.1, NaN, 1.5]) {
    assert.throws(() => dropoutForward({ y, mask, x }, { p, seed: 1 }), RangeError);
    assert.throws(() => dropoutBackward({ dx: y, dy: x, mask }, { p }), RangeError);
  }
  for (const seed of [-1, 1.5, 2 ** 32]) {
    assert.throws(() => dropoutForward({ y, mask, x }, { p: 0.5, seed }), RangeError);
  }
  assert.throws(
    () => dropoutForward({ y, mask: gpu.empty([1], { dtype: "u32" }), x }, { p: 0.5, seed: 1 }),
    (e: Error) =>
      e instanceof TypeError && /mask has shape \[1\]/.test(e.message) &&
      /\[4, 10\]/.test(e.message),
  );
  assert.throws(
    () => dropoutForward({ y, mask: gpu.empty([2]), x }, { p: 0.5, seed: 1 }),
    TypeError,
  );
  assert.throws(
    () => dropoutForward({ y: gpu.empty([41]), mask, x }, { p: 0.5, seed: 1 }),
    (e: Error) => e instanceof TypeError && /\[41\]/.test(e.message) && /\[4, 10\]/.test(e.message),
  );
  assert.throws(() => dropoutMaskWords(-1), RangeError);
});

Deno.test(
  "dropout forward and backward in place over 35M elements (past one binding) match the CPU",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const n = deviceLimit(gpu) + 1_234_567;
      const p = 0.5, seed = 2024;
      const xs = fastFill(n, 10);
      const x = gpu.tensor(xs, { shape: [n] });
      const mask = gpu.empty([dropoutMaskWords(n)], { dtype: "u32" });
      dropoutForward({ y: x, mask, x }, { p, seed });
      // Words per range: the limit in words, rounded down to the 256-byte alignment (64 words).
      const edge = Math.floor(deviceLimit(gpu) / 32 / 64) * 64 * 32;
      const rng = new Rng(58);
      const len = 4096;
      const at = [0, edge - len, edge, n - len, ...Array.from({ length: 6 }, () => rng.int(n))]
        .map((s) => Math.min(Math.floor(s / 32) * 32, Math.floor((n - len) / 32) * 32));
      const ys = await readSlices(gpu, x, at, len);
      const ms = await readSlices(gpu, mask, at.map((s) => s / 32), len / 32);
      dropoutBackward({ dx: x, dy: x, mask }, { p });
      const dxs = await readSlices(gpu, x, at, len);
      const scale = Math.fround(1 / (1 - p));
      at.forEach((s, k) => {
        const wantMask = new Uint32Array(len / 32);
        const wantY = new Float32Array(len), wantDx = new Float32Array(len);
        for (let i = 0; i < len; i++) {
          if (dropoutKeepRef(seed, s + i, p)) {
            wantMask[i >> 5] |= 1 << (i & 31);
            wantY[i] = Math.fround(xs[s + i] * scale);
            wantDx[i] = Math.fround(wantY[i] * scale);
          }
        }
        assertExact(ms.slices[k], wantMask, `mask at element ${s}`);
        assertExact(ys.slices[k], wantY, `y at ${s}`);
        assertExact(dxs.slices[k], wantDx, `dx at ${s}`);
      });
      x.dispose();
      mask.dispose();
      gpu.trimPool();
    });
  },
);

// ------------------------------------------------------------------------------ f16 ----

Deno.test(
  "dropout rejects non-float data and mixed-dtype in place, naming the op",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const x = gpu.zeros([40], { dtype: "f16" }), mask = gpu.empty([2], { dtype: "u32" });
    const u = gpu.empty([40], { dtype: "u32" });
    const cases: [string, () => void][] = [
      ["dropoutForward: x", () => dropoutForward({ y: x, mask, x: u }, { p: 0.5, seed: 1 })],
      ["dropoutForward: y", () => dropoutForward({ y: u, mask, x }, { p: 0.5, seed: 1 })],
      ["dropoutBackward: dy", () => dropoutBackward({ dx: x, dy: u, mask }, { p: 0.5 })],
      ["dropoutBackward: dx", () => dropoutBackward({ dx: u, dy: x, mask }, { p: 0.5 })],
    ];
    for (const [msg, fn] of cases) {
      assert.throws(
        fn,
        (e: Error) => e instanceof TypeError && e.message.startsWith(`${msg} must be f32 or f16`),
        msg,
      );
    }
    // An f32 view of an f16 tensor's buffer: "in place" with two dtypes is rejected.
    const f = gpu.zeros([40]);
    const view = new Tensor(gpu, f as Tensor, { shape: [40], dtype: "f16" });
    assert.throws(
      () => dropoutForward({ y: view, mask, x: f }, { p: 0.5, seed: 1 }),
      (e: Error) =>
        e instanceof TypeError &&
        /dropoutForward: y \(f16\) shares a buffer with x/.test(e.message),
    );
    view.dispose();
  },
);
