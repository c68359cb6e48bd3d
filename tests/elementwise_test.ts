// Tests of kernels/elementwise.ts: the suites of tests/ops/elementwise.ts (add (+ fused ReLU) and
// its backward, accumulate, channel concat / split, split with a fused activation backward: vec4
// and scalar paths, in place, ranges, f16 and mixed dtypes, against Float64 CPU references and
// finite differences; fused against unfused bit for bit), aliasing, validation, tensors past one
// binding, casts, and f16 mixes bit for bit against the all-f32 kernel on the same values rounded
// once.
import assert from "node:assert/strict";
import { Tensor } from "../gpu/mod.ts";
import type { ActivationKind } from "../kernels/activation.ts";
import {
  accumulate,
  addBackwardRelu,
  addForward,
  cast,
  elementwiseMap,
  type ElementwiseMapKernel,
} from "../kernels/elementwise.ts";
import { concatChannels, splitChannels } from "../kernels/concat.ts";
import type { FloatDType } from "../kernels/_dtype.ts";
import {
  assertClose,
  exactTensor,
  F16_TEST,
  f32,
  GPU_TEST,
  Rng,
  roundF16,
  stored,
  tensorOf,
  testGpu,
} from "./harness.ts";
import {
  assertExact,
  atDeviceLimit,
  deviceLimit,
  fastFill,
  readSlices,
  withBindingLimit,
} from "./big.ts";
import { addRef, addReluBackwardRef } from "./cpu_ref/elementwise.ts";
import { activationForwardRef } from "./cpu_ref/activation.ts";
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

// ------------------------------------------------------------------ cast ----

/** Asserts `got[i]` is `want[i]` (Object.is: -0 differs from 0, NaN equals NaN). */
function assertSame(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) {
      assert.fail(`${what}: element ${i} is ${got[i]}, expected ${want[i]}`);
    }
  }
}

/** f32 values probing f16 rounding: overflow, ties, subnormals, signed zeros, NaN. */
const CAST_PROBES = [
  0,
  -0,
  1,
  -1,
  NaN,
  Infinity,
  -Infinity,
  65504,
  -65504, // the largest f16
  65519.99, // rounds down to 65504
  65520,
  -65520, // halfway to 2^16: ties to even = overflow to ±Infinity
  70000,
  -1e30,
  3.4e38,
  1 + 2 ** -11, // tie between 1 and 1 + 2^-10: to even (1)
  1 + 3 * 2 ** -11, // tie: to even (1 + 2^-9)
  1 + 2 ** -11 + 2 ** -20, // just past the tie: up
  2048 + 1, // tie (f16 spacing 2 at 2048): even 2048
  2048 + 3, // tie: even 2052
  2 ** -14, // smallest normal f16
  2 ** -14 - 2 ** -24, // largest subnormal
  2 ** -24,
  -(2 ** -24), // smallest subnormal
  2 ** -25, // tie between 0 and 2^-24: to even (0)
  -(2 ** -25), // -0
  3 * 2 ** -25, // tie between 2^-24 and 2^-23: even (2^-23)
  2 ** -25 * 1.0001, // just past the tie: 2^-24
  5 * 2 ** -26, // not a tie: 2^-24 * 1.25 -> 2^-24
  1e-8,
  1e-40,
  -1e-40, // underflow to ±0 (1e-40 is an f32 subnormal)
  0.1,
  -0.3,
  3.14159,
  1000.7,
  12345.678,
];

Deno.test(
  "cast f32 -> f16 rounds like Math.f16round: overflow, ties to even, subnormals",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(64);
    // Random f32 bit patterns spread over every exponent, and normal values.
    const bits = new Uint32Array(4000).map(() => (rng.int(2 ** 16) << 16 | rng.int(2 ** 16)) >>> 0);
    const randomF32 = new Float32Array(bits.buffer);
    const normals = f32(rng.normalArray(1001).map((v) => v * 100));
    for (const values of [f32(CAST_PROBES), randomF32, normals]) {
      const want = Float64Array.from(values, (v) => Math.f16round(v));
      const n = values.length;
      const x = gpu.tensor(values, { shape: [n] });
      const y = gpu.empty([n], { dtype: "f16" }); // pooled: the vec4 path
      cast({ y, x });
      assertSame(await y.toArray(), want, `cast f32->f16 vec4 n=${n}`);
      // Scalar path: an exact-size f16 output of odd length m (2m + 2 bytes < 8 ceil(m / 4)).
      const m = n % 2 === 1 ? n : n - 1;
      const xs = values.length === m ? x : gpu.tensor(values.subarray(0, m), { shape: [m] });
      const ys = exactTensor(gpu, new Float16Array(m));
      cast({ y: ys, x: xs });
      assertSame(await ys.toArray(), want.subarray(0, m), `cast f32->f16 scalar n=${m}`);
      for (const t of new Set([x, y, xs, ys])) t.dispose();
    }
  },
);

Deno.test(
  "cast f16 -> f32 is exact; same-dtype casts copy; ranges; in place",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(65);
    // Every f16 bit pattern (NaNs included), odd length so the tail is a partial vec4.
    const all = new Float16Array(new Uint16Array(65535).map((_, i) => i).buffer);
    const x = gpu.tensor(all, { shape: [all.length] });
    const y = gpu.empty([all.length]);
    cast({ y, x });
    assertSame(await y.toArray(), Float64Array.from(all), "cast f16->f32 every f16");
    const h = gpu.empty([all.length], { dtype: "f16" });
    cast({ y: h, x }); // f16 -> f16 copy
    assertSame(await h.toArray(), all, "cast f16->f16 copy");
    cast({ y: h, x: h }); // in place: no-op
    assertSame(await h.toArray(), all, "cast in place");
    for (const t of [x, y, h]) t.dispose();
    const vs = f32(rng.normalArray(1001));
    const a = gpu.tensor(vs, { shape: [1001] }), b = gpu.empty([1001]);
    cast({ y: b, x: a }); // f32 -> f32 copy
    assertSame(await b.toArray(), vs, "cast f32->f32 copy");
    // Ranges of 128 elements (binding limit lowered), both directions.
    await withBindingLimit(200, async () => {
      const hh = gpu.empty([1001], { dtype: "f16" });
      cast({ y: hh, x: a });
      const back = gpu.empty([1001]);
      cast({ y: back, x: hh });
      assertSame(await back.toArray(), Float64Array.from(vs, (v) => Math.f16round(v)), "ranges");
      hh.dispose();
      back.dispose();
    });
    a.dispose();
    b.dispose();
  },
);

Deno.test(
  "f16: a non-float tensor in a float slot throws TypeError naming the op",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const h = gpu.zeros([2, 3], { dtype: "f16" });
    const u = gpu.zeros([2, 3], { dtype: "u32" });
    const isType = (op: string, name: string) => (e: Error) =>
      e instanceof TypeError && e.message.startsWith(`${op}: ${name} must be f32 or f16`);
    assert.throws(() => cast({ y: h, x: u }), isType("cast", "x"));
    assert.throws(() => cast({ y: u, x: h }), isType("cast", "y"));
    assert.throws(() => addForward({ y: h, a: h, b: u }), isType("addForward", "b"));
    assert.throws(() => accumulate({ y: u, x: h }), isType("accumulate", "y"));
    assert.throws(() => addBackwardRelu({ dx: h, dy: h, y: u }), isType("addBackwardRelu", "y"));
    const p = { n: 2, hw: 1, cTotal: 3, cOffset: 0, c: 3 };
    assert.throws(() => concatChannels({ y: h, x: u }, p), isType("concatChannels", "x"));
    assert.throws(() => splitChannels({ dx: u, dy: h }, p), isType("splitChannels", "dx"));
    assert.throws(
      () => splitChannels({ dx: h, dy: gpu.zeros([2, 3]), y: u }, { ...p, activation: "relu" }),
      isType("splitChannels", "y"),
    );
    // Sizes still checked, with both shapes; an f16 and an f32 view of one buffer are refused.
    assert.throws(
      () => cast({ y: h, x: gpu.zeros([7]) }),
      (e: Error) =>
        e instanceof TypeError && /cast: x has shape \[7\]/.test(e.message) &&
        /\[2, 3\]/.test(e.message),
    );
    const alias = new Tensor(gpu, h.buffer, { shape: [2, 3], dtype: "f32" });
    assert.throws(() => cast({ y: alias, x: h }), /share a buffer but differ in dtype/);
    await gpu.sync();
  },
);

Deno.test(
  "f16: add / accumulate / split in every dtype mix equal the all-f32 kernels on the same values, rounded once",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    await gpu.scope(async () => {
      const rng = new Rng(66);
      const n = 1001;
      // f16-representable values: the all-f32 kernels compute from the same numbers.
      const as = roundF16(rng.normalArray(n)), bs = roundF16(rng.normalArray(n));
      const mixes: [FloatDType, FloatDType, FloatDType][] = [
        ["f16", "f16", "f16"],
        ["f16", "f32", "f16"],
        ["f32", "f16", "f32"],
        ["f16", "f32", "f32"],
      ];
      for (const relu of [false, true]) {
        const y32 = gpu.empty([n]);
        addForward({
          y: y32,
          a: gpu.tensor(f32(as), { shape: [n] }),
          b: gpu.tensor(f32(bs), { shape: [n] }),
        }, { relu });
        const want = await y32.toArray();
        for (const [yd, ad, bd] of mixes) {
          const y = gpu.empty([n], { dtype: yd });
          addForward({
            y,
            a: tensorOf(gpu, as, { dtype: ad, shape: [n] }),
            b: tensorOf(gpu, bs, { dtype: bd, shape: [n] }),
          }, {
            relu,
          });
          assertExact(
            await y.toArray(),
            stored(want, yd),
            `add relu=${relu} ${yd} = ${ad} + ${bd}`,
          );
        }
      }
      const acc32 = gpu.tensor(f32(as), { shape: [n] });
      accumulate({ y: acc32, x: gpu.tensor(f32(bs), { shape: [n] }) }, { alpha: -0.75 });
      const accWant = await acc32.toArray();
      for (const [yd, xd] of [["f16", "f16"], ["f32", "f16"], ["f16", "f32"]] as const) {
        const y = tensorOf(gpu, as, { dtype: yd, shape: [n] });
        accumulate({ y, x: tensorOf(gpu, bs, { dtype: xd, shape: [n] }) }, { alpha: -0.75 });
        assertExact(await y.toArray(), stored(accWant, yd), `accumulate ${yd} += ${xd}`);
      }
      // split + accumulate + fused sigmoid backward, vec4 and scalar layouts.
      for (const [sn, hw, cTotal, cOffset, c] of [[3, 4, 12, 4, 6], [2, 9, 9, 3, 5]]) {
        const dys = roundF16(rng.normalArray(sn * cTotal * hw));
        // A sigmoid output (of N(0, 16) inputs).
        const ys = roundF16(
          activationForwardRef(rng.normalArray(dys.length).map((v) => 4 * v), "sigmoid"),
        );
        const prev = roundF16(rng.normalArray(sn * c * hw));
        const shape = [sn, cTotal, hw];
        const p = {
          n: sn,
          hw,
          cTotal,
          cOffset,
          c,
          accumulate: true,
          activation: "sigmoid" as const,
        };
        const ref = gpu.tensor(f32(prev), { shape: [sn, c, hw] });
        splitChannels({
          dx: ref,
          dy: gpu.tensor(f32(dys), { shape }),
          y: gpu.tensor(f32(ys), { shape }),
        }, p);
        const want = await ref.toArray();
        for (const [dxd, dyd, yd] of mixes) {
          const dx = tensorOf(gpu, prev, { dtype: dxd, shape: [sn, c, hw] });
          splitChannels({
            dx,
            dy: tensorOf(gpu, dys, { dtype: dyd, shape }),
            y: tensorOf(gpu, ys, { dtype: yd, shape }),
          }, p);
          assertExact(
            await dx.toArray(),
            stored(want, dxd),
            `split hw=${hw} dx ${dxd} dy ${dyd} y ${yd}`,
          );
        }
      }
    });
  },
);

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
