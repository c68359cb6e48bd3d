// Tests of kernels/elementwise.ts: the suites of tests/ops/elementwise.ts (add (+ fused ReLU) and
// its backward, accumulate, channel concat / split, split with a fused activation backward: vec4
// and scalar paths, in place, ranges, f16 and mixed dtypes, against Float64 CPU references and
// finite differences; fused against unfused bit for bit), aliasing, validation, tensors past one
// binding, and how elementwiseMap binds its operands. Casts and f16 mixes bit for bit against the
// all-f32 kernel: elementwise_f16_test.ts.
import assert from "node:assert/strict";
import { Tensor } from "../gpu/mod.ts";
import type { ActivationKind } from "../kernels/activation.ts";
import {
  accumulate,
  addBackwardRelu,
  addForward,
  elementwiseMap,
  type ElementwiseMapKernel,
} from "../kernels/elementwise.ts";
import { concatChannels, splitChannels } from "../kernels/concat.ts";
import { assertClose, exactTensor, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import {
  assertExact,
  atDeviceLimit,
  deviceLimit,
  fastFill,
  readSlices,
  withBindingLimit,
} from "./big.ts";
import { addRef, addReluBackwardRef } from "./cpu_ref/elementwise.ts";
import { testOp } from "./_op.ts";
import {
  ACCUMULATE_SUITES,
  ADD_SUITES,
  CONCAT_SUITES,
  SPLIT_ACTIVATION_SUITES,
} from "./ops/elementwise.ts";

for (const suite of ADD_SUITES) testOp(suite);
for (const suite of ACCUMULATE_SUITES) testOp(suite);
for (const suite of CONCAT_SUITES) testOp(suite);
for (const suite of SPLIT_ACTIVATION_SUITES) testOp(suite);

Deno.test(
  "add and accumulate with aliased operands and on exact-size buffers",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(43);
    for (const n of [1, 5, 13]) {
      const as = f32(rng.normalArray(n)), bs = f32(rng.normalArray(n));
      for (const exact of [false, true]) {
        const make = (d: Float32Array) =>
          exact ? exactTensor(gpu, d) : gpu.tensor(d, { shape: [n] });
        let a = make(as);
        const b = make(bs);
        addForward({ y: a, a, b }, { relu: true }); // y = a
        assertClose(await a.toArray(), addRef(as, bs, true), { what: `y=a exact=${exact}` });
        a = make(as);
        addForward({ y: b, a, b }); // y = b
        assertClose(await b.toArray(), addRef(as, bs), { what: `y=b exact=${exact}` });
        addForward({ y: a, a, b: a }); // y = a = b
        assertClose(await a.toArray(), addRef(as, as), { what: `y=a=b exact=${exact}` });
        accumulate({ y: a, x: a }, { alpha: 0.5 });
        assertClose(await a.toArray(), addRef(as, as).map((v) => 1.5 * v), { what: "y += y/2" });
        const g = make(bs);
        addBackwardRelu({ dx: g, dy: g, y: make(as) });
        assertClose(await g.toArray(), addReluBackwardRef(bs, as), { what: "dx=dy" });
      }
    }
  },
);

Deno.test("elementwise ops validate shapes, dtypes, params and aliasing", GPU_TEST, async () => {
  const gpu = await testGpu();
  const a = gpu.zeros([2, 3]);
  assert.throws(
    () => addForward({ y: a, a, b: gpu.zeros([7]) }),
    (e: Error) =>
      e instanceof TypeError && /addForward/.test(e.message) &&
      /\[7\]/.test(e.message) && /\[2, 3\]/.test(e.message),
  );
  assert.throws(() => addForward({ y: a, a, b: gpu.zeros([2, 3], { dtype: "i32" }) }), TypeError);
  assert.throws(() => accumulate({ y: a, x: a }, { alpha: NaN }), RangeError);
  assert.throws(() => addBackwardRelu({ dx: a, dy: a, y: gpu.zeros([5]) }), TypeError);
  const y = gpu.zeros([2, 5, 4]);
  const x = gpu.zeros([2, 2, 4]);
  assert.throws(
    () => concatChannels({ y, x }, { n: 2, hw: 4, cTotal: 5, cOffset: 4, c: 2 }),
    (e: Error) => e instanceof RangeError && /exceed cTotal 5/.test(e.message),
  );
  assert.throws(
    () => concatChannels({ y, x }, { n: 2, hw: 4, cTotal: 5, cOffset: 0, c: 3 }),
    (e: Error) =>
      e instanceof TypeError && /\[2, 2, 4\]/.test(e.message) &&
      /\[2, 5, 4\]/.test(e.message),
  );
  assert.throws(
    () => splitChannels({ dx: x, dy: y }, { n: 2, hw: 4, cTotal: 5, cOffset: -1, c: 2 }),
    RangeError,
  );
  assert.throws(
    () => splitChannels({ dx: x, dy: y }, { n: 2, hw: 4.5, cTotal: 5, cOffset: 0, c: 2 }),
    RangeError,
  );
  const whole = gpu.zeros([16]);
  assert.throws(
    () =>
      concatChannels({ y: whole, x: whole.reshape([2, 8]) }, {
        n: 1,
        hw: 16,
        cTotal: 1,
        cOffset: 0,
        c: 1,
      }),
    /share a buffer/,
  );
  const TWO_OUT: ElementwiseMapKernel = {
    name: "test_two_outputs",
    operands: [{ name: "u", access: "write" }, { name: "v", access: "write" }],
    body: "u = T(1.0); v = T(2.0);",
  };
  assert.throws(() => elementwiseMap("twoOut", TWO_OUT, { u: a, v: a }), /share a buffer/);
});

Deno.test(
  "elementwiseMap binds operands on one storage once, whatever their order",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    // The written operand comes last: in place, its binding (the first operand's) is read-write.
    const AXPY: ElementwiseMapKernel = {
      name: "test_axpy_written_last",
      operands: [
        { name: "x", access: "read" },
        { name: "s", access: "read" },
        { name: "y", access: "write" },
      ],
      uniforms: ["k"],
      body: "y = p.k * x + s;",
    };
    const rng = new Rng(7);
    for (const n of [5, 1001]) {
      const xs = f32(rng.normalArray(n)), ss = f32(rng.normalArray(n));
      const want = (x: Float32Array, s: Float32Array) =>
        Float64Array.from(x, (v, i) => 3 * v + s[i]);
      const x = gpu.tensor(xs, { shape: [n] }), s = gpu.tensor(ss, { shape: [n] });
      const y = gpu.empty([n]);
      elementwiseMap("axpy", AXPY, { x, s, y }, [3]);
      assertClose(await y.toArray(), want(xs, ss), { what: `separate n=${n}` });
      elementwiseMap("axpy", AXPY, { x, s, y: x }, [3]); // y = x (slots 0, 1, 0)
      assertClose(await x.toArray(), want(xs, ss), { what: `y on x n=${n}` });
      elementwiseMap("axpy", AXPY, { x: s, s, y: s }, [3]); // all on one (slots 0, 0, 0)
      assertClose(await s.toArray(), want(ss, ss), { what: `all on s n=${n}` });
      // The exact-size (scalar) path, y on s (slots 0, 1, 1).
      const e = exactTensor(gpu, xs), g = exactTensor(gpu, ss);
      elementwiseMap("axpy", AXPY, { x: e, s: g, y: g }, [3]);
      assertClose(await g.toArray(), want(xs, ss), { what: `exact, y on s n=${n}` });
      for (const t of [x, s, y, e, g]) t.dispose();
    }
  },
);

// ------------------------------------------------------------ beyond the device limits ----

Deno.test(
  "accumulate over 35M floats (past one binding) matches the CPU exactly",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const n = deviceLimit(gpu) + 1_445_635; // odd, past the binding limit
      const ys = fastFill(n, 1), xs = fastFill(n, 2);
      const y = gpu.tensor(ys, { shape: [n] });
      const x = gpu.tensor(xs, { shape: [n] });
      accumulate({ y, x }, { alpha: 1 });
      // Slices at both ends, around the range boundary (a multiple of 64 elements) and elsewhere.
      const edge = Math.floor(deviceLimit(gpu) / 64) * 64;
      const rng = new Rng(48);
      const at = [
        0,
        edge - 4096,
        edge - 7,
        n - 4096,
        ...Array.from({ length: 8 }, () => rng.int(n)),
      ];
      const { starts, slices } = await readSlices(gpu, y, at, 8192);
      starts.forEach((s, k) => {
        const want = Float32Array.from(slices[k], (_, i) => ys[s + i] + xs[s + i]);
        assertExact(slices[k], want, `accumulate n=${n} at ${s}`);
      });
      y.dispose();
      x.dispose();
      gpu.trimPool();
    });
  },
);

Deno.test(
  "concat / split of a [40, 96, 96x96] tensor (141 MB, past one binding) round-trips",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await atDeviceLimit(gpu, async () => {
      const n = 40, cTotal = 96, hw = 96 * 96, cOffset = 48, c = 32;
      assert.ok(n * cTotal * hw > deviceLimit(gpu));
      const parts = fastFill(n * c * hw, 3);
      const whole = gpu.zeros([n, cTotal, hw]);
      const x = gpu.tensor(parts, { shape: [n, c, hw] });
      concatChannels({ y: whole, x }, { n, hw, cTotal, cOffset, c });
      const dx = gpu.empty([n, c, hw]);
      splitChannels({ dx, dy: whole }, { n, hw, cTotal, cOffset, c });
      assertExact(await dx.toArray(), parts, "split(concat(x))");
      // Every row (sample) of the whole: the slice holds x, the channels around it stay zero.
      const chans = [cOffset - 1, cOffset, cOffset + c - 1, cOffset + c];
      const at = Array.from({ length: n }, (_, b) => chans.map((ch) => (b * cTotal + ch) * hw))
        .flat();
      const { slices } = await readSlices(gpu, whole, at, hw);
      for (let b = 0; b < n; b++) {
        chans.forEach((ch, k) => {
          const inSlice = ch >= cOffset && ch < cOffset + c;
          const start = (b * c + ch - cOffset) * hw;
          const want = inSlice ? parts.subarray(start, start + hw) : new Float32Array(hw);
          assertExact(slices[b * chans.length + k], want, `whole[${b}, ${ch}]`);
        });
      }
      for (const t of [whole, x, dx]) t.dispose();
      gpu.trimPool();
    });
  },
);

Deno.test("splitChannels with activation validates y and the kind", GPU_TEST, async () => {
  const gpu = await testGpu();
  const dy = gpu.zeros([2, 5, 4]), dx = gpu.zeros([2, 2, 4]);
  const p = { n: 2, hw: 4, cTotal: 5, cOffset: 1, c: 2 };
  assert.throws(
    () => splitChannels({ dx, dy }, { ...p, activation: "tanh" }),
    (e: Error) =>
      e instanceof TypeError && /splitChannels: activation "tanh" needs y/.test(e.message),
  );
  assert.throws(
    () => splitChannels({ dx, dy, y: gpu.zeros([2, 4, 4]) }, { ...p, activation: "relu" }),
    (e: Error) =>
      e instanceof TypeError && /splitChannels: y has shape \[2, 4, 4\]/.test(e.message) &&
      /dy has shape \[2, 5, 4\]/.test(e.message),
  );
  assert.throws(
    () =>
      splitChannels({ dx, dy, y: gpu.zeros([2, 5, 4], { dtype: "i32" }) }, {
        ...p,
        activation: "relu",
      }),
    TypeError,
  );
  assert.throws(
    () =>
      splitChannels({ dx, dy, y: dy }, { ...p, activation: "gelu" as unknown as ActivationKind }),
    (e: Error) => e instanceof RangeError && /splitChannels: unknown activation/.test(e.message),
  );
  // dx viewing the buffer of y (16 of its 40 floats)
  const y = gpu.zeros([2, 5, 4]);
  const alias = new Tensor(gpu, y.buffer, { shape: [2, 2, 4], dtype: "f32" });
  assert.throws(
    () => splitChannels({ dx: alias, dy, y }, { ...p, activation: "relu" }),
    /share a buffer/,
  );
  await gpu.sync();
});

Deno.test("concatChannels refuses a row wider than a lowered binding limit", GPU_TEST, async () => {
  const gpu = await testGpu();
  await withBindingLimit(64, () => {
    const big = gpu.zeros([1, 100, 1]), part = gpu.zeros([1, 10, 1]);
    assert.throws(
      () => concatChannels({ y: big, x: part }, { n: 1, hw: 1, cTotal: 100, cOffset: 0, c: 10 }),
      /concatChannels: 1 unit\(s\) of 100 elements/,
    );
  });
});
