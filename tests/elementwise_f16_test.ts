// Tests of kernels/elementwise.ts in f16: casts between f32 and f16 (rounding like
// Math.f16round: overflow, ties to even, subnormals, signed zeros, NaN), a non-float tensor in a
// float slot, and add / accumulate / split in every dtype mix bit for bit against the all-f32
// kernels on the same values rounded once.
import assert from "node:assert/strict";
import { Tensor } from "../gpu/mod.ts";
import { accumulate, addBackwardRelu, addForward, cast } from "../kernels/elementwise.ts";
import { concatChannels, splitChannels } from "../kernels/concat.ts";
import type { FloatDType } from "../kernels/_dtype.ts";
import { exactTensor, F16_TEST, f32, Rng, roundF16, stored, tensorOf, testGpu } from "./harness.ts";
import { assertExact, withBindingLimit } from "./big.ts";
import { activationForwardRef } from "./cpu_ref/activation.ts";

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
