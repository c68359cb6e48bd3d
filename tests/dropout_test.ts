// Tests of kernels/dropout.ts: the GPU mask and output against an independent BigInt CPU
// reference of the counter-based RNG (bit for bit), layout independence (vec4 / scalar / in
// place), statistics of the keep fraction, exact scaling, seeds, the backward, and validation.
import assert from "node:assert/strict";
import { type Gpu, Tensor } from "../gpu/mod.ts";
import {
  dropoutBackward,
  dropoutForward,
  dropoutHash,
  dropoutMaskWords,
  dropoutThreshold,
} from "../kernels/dropout.ts";
import {
  assertClose,
  checkGradient,
  exactTensor,
  f16,
  F16_TEST,
  f16Tolerance,
  f32,
  GPU_TEST,
  Rng,
  roundF16,
  stored,
  testGpu,
} from "./harness.ts";
import type { FloatDType } from "../kernels/_dtype.ts";
import {
  dropoutBackwardRef,
  dropoutForwardRef,
  dropoutKeepRef,
  pcgRef,
} from "./cpu_ref/dropout.ts";
import {
  assertExact,
  atDeviceLimit,
  deviceLimit,
  fastFill,
  readSlices,
  withBindingLimit,
} from "./big.ts";

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

async function runForward(
  gpu: Gpu,
  x: Tensor,
  p: number,
  seed: number,
  y: Tensor = gpu.empty([x.size]),
): Promise<{ y: Float32Array; mask: Uint32Array }> {
  const mask = gpu.empty([dropoutMaskWords(x.size)], { dtype: "u32" });
  dropoutForward({ y, mask, x }, { p, seed });
  const out = { y: await y.toArray() as Float32Array, mask: await mask.toArray() as Uint32Array };
  mask.dispose();
  return out;
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

Deno.test(
  "dropout forward: GPU mask and output equal the CPU reference bit for bit",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(21);
    for (const n of [1, 7, 33, 1000, 100003]) {
      const xs = f32(rng.normalArray(n));
      const x = gpu.tensor(xs, { shape: [n] });
      for (const [p, seed] of [[0.5, 1], [0.1, 987654321], [0.9, 0xffffffff]]) {
        const ref = dropoutForwardRef(xs, p, seed);
        const got = await runForward(gpu, x, p, seed);
        assert.deepEqual(got.mask, ref.mask, `mask n=${n} p=${p}`);
        assert.deepEqual(got.y, f32(ref.y), `y n=${n} p=${p}`);
      }
      x.dispose();
    }
  },
);

Deno.test(
  "dropout mask does not depend on the layout (vec4, scalar, in place)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(22);
    for (const n of [5, 37, 4097]) {
      const xs = f32(rng.normalArray(n));
      const ref = dropoutForwardRef(xs, 0.4, 77);
      const pooled = await runForward(gpu, gpu.tensor(xs, { shape: [n] }), 0.4, 77);
      const ex = exactTensor(gpu, xs);
      const scalar = await runForward(gpu, ex, 0.4, 77, exactTensor(gpu, new Float32Array(n)));
      const inPlaceT = gpu.tensor(xs, { shape: [n] });
      const inPlace = await runForward(gpu, inPlaceT, 0.4, 77, inPlaceT);
      const inPlaceEx = exactTensor(gpu, xs);
      const inPlaceScalar = await runForward(gpu, inPlaceEx, 0.4, 77, inPlaceEx);
      for (const [what, got] of Object.entries({ pooled, scalar, inPlace, inPlaceScalar })) {
        assert.deepEqual(got.mask, ref.mask, `${what} mask n=${n}`);
        assert.deepEqual(got.y, f32(ref.y), `${what} y n=${n}`);
      }
    }
  },
);

Deno.test("dropout p = 0 is the identity with an all-ones mask", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(23);
  for (const n of [1, 40, 1001]) {
    const xs = f32(rng.normalArray(n));
    const got = await runForward(gpu, gpu.tensor(xs, { shape: [n] }), 0, 5);
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
    const x = gpu.tensor(new Float32Array(n).fill(1.5), { shape: [n] });
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
  const x = gpu.tensor(new Float32Array(n).fill(1), { shape: [n] });
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

Deno.test(
  "dropout backward: CPU vs finite differences, GPU vs CPU, in place",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(24);
    // CPU: with the mask fixed, the forward is linear; its gradient is the backward.
    {
      const n = 50, p = 0.3, seed = 9;
      const w = rng.normalArray(n);
      const x = rng.normalArray(n);
      const { mask } = dropoutForwardRef(x, p, seed);
      const f = (v: Float64Array) => {
        let s = 0;
        for (let i = 0; i < n; i++) if (dropoutKeepRef(seed, i, p)) s += w[i] * v[i] / (1 - p);
        return s;
      };
      checkGradient(f, x, dropoutBackwardRef(w, mask, p), { rtol: 1e-6, what: "dropout backward" });
    }
    for (const n of [1, 7, 1000, 70001]) {
      const p = 0.35;
      const xs = f32(rng.normalArray(n));
      const dys = f32(rng.normalArray(n));
      const mask = gpu.empty([dropoutMaskWords(n)], { dtype: "u32" });
      dropoutForward({ y: gpu.empty([n]), mask, x: gpu.tensor(xs, { shape: [n] }) }, {
        p,
        seed: n,
      });
      const maskCpu = await mask.toArray() as Uint32Array;
      const want = f32(dropoutBackwardRef(dys, maskCpu, p));
      const dy = gpu.tensor(dys, { shape: [n] });
      const dx = gpu.empty([n]);
      dropoutBackward({ dx, dy, mask }, { p });
      assert.deepEqual(await dx.toArray(), want, `dx n=${n}`);
      dropoutBackward({ dx: dy, dy, mask }, { p });
      assert.deepEqual(await dy.toArray(), want, `dx in place n=${n}`);
      const ex = exactTensor(gpu, dys);
      dropoutBackward({ dx: ex, dy: ex, mask }, { p });
      assertClose(await ex.toArray(), want, { rtol: 0, atol: 0, what: `dx scalar n=${n}` });
    }
  },
);

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

Deno.test(
  "dropout split into many binding ranges (limit lowered) matches the CPU bit for bit",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(59);
    await withBindingLimit(4096, async () => {
      for (const n of [5000, 20001]) {
        const xs = f32(rng.normalArray(n));
        const ref = dropoutForwardRef(xs, 0.3, 99);
        for (const exact of [false, true]) {
          const x = exact ? exactTensor(gpu, xs) : gpu.tensor(xs, { shape: [n] });
          const got = await runForward(gpu, x, 0.3, 99);
          assert.deepEqual(got.mask, ref.mask, `mask n=${n} exact=${exact}`);
          assert.deepEqual(got.y, f32(ref.y), `y n=${n} exact=${exact}`);
          const mask = gpu.tensor(got.mask, { shape: [got.mask.length] });
          const dx = gpu.empty([n]);
          dropoutBackward({ dx, dy: x, mask }, { p: 0.3 });
          assert.deepEqual(await dx.toArray(), f32(dropoutBackwardRef(xs, ref.mask, 0.3)));
          for (const t of [x, mask, dx]) t.dispose();
        }
      }
    });
  },
);

// ------------------------------------------------------------------------------ f16 ----

/** A tensor of `data` stored as `dtype` (pooled, or in a buffer of exactly its size: scalar path). */
function dataTensor(gpu: Gpu, data: ArrayLike<number>, dtype: FloatDType, exact = false): Tensor {
  const n = data.length;
  const values = dtype === "f16" ? f16(data) : f32(data);
  return exact ? exactTensor(gpu, values) : gpu.tensor(values, { shape: [n] }) as Tensor;
}

/**
 * Checks `got` against the f32 reference `want` (zeros where dropped, `fround(v * scale)` where
 * kept): dropped elements exactly 0; kept ones within one rounding of `got`'s type (one f32
 * product before it: extra 0).
 */
function assertDropped(
  got: ArrayLike<number>,
  want: Float64Array,
  mask: Uint32Array,
  dtype: FloatDType,
  what: string,
): void {
  for (let i = 0; i < want.length; i++) {
    if (!((mask[i >> 5] >>> (i & 31)) & 1) && got[i] !== 0) {
      assert.fail(`${what}: element ${i} dropped but is ${got[i]}`);
    }
  }
  const scale = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const tol = dtype === "f16" ? f16Tolerance(scale, 0) : { rtol: 0, atol: 0 };
  assertClose(got, want, { ...tol, what });
}

const F16_MIXES: { x: FloatDType; y: FloatDType }[] = [
  { x: "f16", y: "f16" }, // training: f16 activations (and gradients: dy -> dx alike)
  { x: "f32", y: "f16" },
  { x: "f16", y: "f32" },
];

Deno.test(
  "dropout with f16 tensors: the mask bit for bit, y and dx vs the CPU reference",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(60);
    // 37 and 4097 f16 elements fill a partial vec4<f16> (8 bytes): with an exact-size buffer the
    // scalar kernels run; pooled buffers take the vec4 ones.
    for (const n of [7, 37, 4097]) {
      for (const dt of F16_MIXES) {
        for (const exact of [false, true]) {
          const what = `n=${n} x ${dt.x} y ${dt.y}${exact ? " exact" : ""}`;
          const p = 0.4, seed = 1000 + n;
          const xs = rng.normalArray(n), dys = rng.normalArray(n);
          const x = dataTensor(gpu, xs, dt.x, exact);
          const y = dataTensor(gpu, new Float64Array(n), dt.y, exact);
          const got = await runForward(gpu, x, p, seed, y);
          const ref = dropoutForwardRef(stored(xs, dt.x), p, seed);
          assert.deepEqual(got.mask, ref.mask, `mask ${what}`);
          assertDropped(got.y, ref.y, ref.mask, dt.y, `y ${what}`);
          // The backward with the same dtypes (dy like x, dx like y).
          const mask = gpu.tensor(ref.mask, { shape: [ref.mask.length] });
          const dy = dataTensor(gpu, dys, dt.x, exact);
          const dx = dataTensor(gpu, new Float64Array(n), dt.y, exact);
          dropoutBackward({ dx, dy, mask }, { p });
          const dref = dropoutBackwardRef(stored(dys, dt.x), ref.mask, p);
          assertDropped(await dx.toArray(), dref, ref.mask, dt.y, `dx ${what}`);
          for (const t of [x, y, mask, dy, dx]) t.dispose();
        }
      }
    }
  },
);

Deno.test("dropout in place on f16 tensors matches the CPU reference", F16_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(61);
  for (const n of [5, 1000]) {
    for (const exact of [false, true]) {
      const what = `n=${n}${exact ? " exact" : ""}`;
      const p = 0.3, seed = 7 + n;
      const xs = rng.normalArray(n);
      const x = dataTensor(gpu, xs, "f16", exact);
      const got = await runForward(gpu, x, p, seed, x);
      const ref = dropoutForwardRef(roundF16(xs), p, seed);
      assert.deepEqual(got.mask, ref.mask, `mask ${what}`);
      assertDropped(got.y, ref.y, ref.mask, "f16", `y ${what}`);
      const mask = gpu.tensor(ref.mask, { shape: [ref.mask.length] });
      dropoutBackward({ dx: x, dy: x, mask }, { p });
      const dref = dropoutBackwardRef(Float64Array.from(got.y), ref.mask, p);
      assertDropped(await x.toArray(), dref, ref.mask, "f16", `dx ${what}`);
      for (const t of [x, mask]) t.dispose();
    }
  }
});

Deno.test(
  "f16 dropout split into binding ranges (limit lowered) matches the CPU",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(62);
    await withBindingLimit(4096, async () => {
      const n = 20001, p = 0.3, seed = 99;
      const xs = rng.normalArray(n);
      for (const dt of [F16_MIXES[0], F16_MIXES[1]]) {
        const x = dataTensor(gpu, xs, dt.x), y = dataTensor(gpu, new Float64Array(n), dt.y);
        const got = await runForward(gpu, x, p, seed, y);
        const ref = dropoutForwardRef(stored(xs, dt.x), p, seed);
        assert.deepEqual(got.mask, ref.mask, `mask x ${dt.x}`);
        assertDropped(got.y, ref.y, ref.mask, dt.y, `y x ${dt.x}`);
        const mask = gpu.tensor(ref.mask, { shape: [ref.mask.length] });
        const dx = dataTensor(gpu, new Float64Array(n), dt.y);
        dropoutBackward({ dx, dy: x, mask }, { p });
        const dref = dropoutBackwardRef(stored(xs, dt.x), ref.mask, p);
        assertDropped(await dx.toArray(), dref, ref.mask, dt.y, `dx x ${dt.x}`);
        for (const t of [x, y, mask, dx]) t.dispose();
      }
    });
  },
);

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
