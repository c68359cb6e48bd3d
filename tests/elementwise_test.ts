// Tests of kernels/elementwise.ts and kernels/concat.ts: add (+ fused ReLU) and its backward,
// accumulate, channel concat / split (vec4 and scalar paths, offsets, accumulate, round trip),
// against Float64 CPU references and finite differences, plus aliasing and validation; split with
// a fused activation backward against the CPU and bit for bit against activationBackward then
// split. f16: every kernel and cast in several dtype mixes against the CPU on f16-rounded inputs,
// and bit for bit against the all-f32 kernel on the same values rounded once.
import assert from "node:assert/strict";
import { type Gpu, Tensor } from "../gpu/mod.ts";
import { activationBackward, type ActivationKind } from "../kernels/activation.ts";
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
  checkGradient,
  type CloseOptions,
  exactTensor,
  f16,
  F16_TEST,
  f16Tolerance,
  f32,
  GPU_TEST,
  maxAbs,
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
import {
  accumulateRef,
  addRef,
  addReluBackwardRef,
  concatRef,
  sliceRef,
} from "./cpu_ref/elementwise.ts";
import { activationBackwardRef, activationForwardRef } from "./cpu_ref/activation.ts";

const SIZES = [1, 7, 1001, 65539];

Deno.test("add + relu: CPU backward matches finite differences", () => {
  const rng = new Rng(41);
  const a = rng.normalArray(30), b = rng.normalArray(30), w = rng.normalArray(30);
  for (let i = 0; i < 30; i++) if (Math.abs(a[i] + b[i]) < 1e-3) a[i] += 0.5;
  for (const relu of [false, true]) {
    const f = (v: Float64Array) => addRef(v, b, relu).reduce((s, y, i) => s + y * w[i], 0);
    const y = addRef(a, b, relu);
    const analytic = relu ? addReluBackwardRef(w, y) : w;
    checkGradient(f, a, analytic, { what: `add relu=${relu} d/da` });
    const g = (v: Float64Array) => addRef(a, v, relu).reduce((s, y, i) => s + y * w[i], 0);
    checkGradient(g, b, analytic, { what: `add relu=${relu} d/db` });
  }
});

Deno.test("add / add+relu / backward / accumulate: GPU matches CPU", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(42);
  for (const n of SIZES) {
    const as = f32(rng.normalArray(n)), bs = f32(rng.normalArray(n)), dys = f32(rng.normalArray(n));
    const a = gpu.tensor(as, { shape: [n] });
    const b = gpu.tensor(bs, { shape: [n] });
    const dy = gpu.tensor(dys, { shape: [n] });
    for (const relu of [false, true]) {
      const y = gpu.empty([n]);
      addForward({ y, a, b }, { relu });
      const yv = await y.toArray();
      assertClose(yv, addRef(as, bs, relu), { rtol: 1e-6, atol: 1e-7, what: `add n=${n}` });
      if (relu) {
        const dx = gpu.empty([n]);
        addBackwardRelu({ dx, dy, y });
        assertClose(await dx.toArray(), addReluBackwardRef(dys, yv), {
          rtol: 0,
          atol: 0,
          what: `add relu backward n=${n}`,
        });
        dx.dispose();
      }
      y.dispose();
    }
    for (const alpha of [1, 0.5, -2]) {
      const y = gpu.tensor(as, { shape: [n] });
      accumulate({ y, x: b }, { alpha });
      assertClose(await y.toArray(), accumulateRef(as, bs, alpha), {
        rtol: 1e-6,
        atol: 1e-7,
        what: `accumulate alpha=${alpha} n=${n}`,
      });
      y.dispose();
    }
    for (const t of [a, b, dy]) t.dispose();
  }
});

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

/** Concatenates `cs` channel blocks with one concatChannels call each, in a shuffled order. */
async function gpuConcat(
  gpu: Gpu,
  parts: Float32Array[],
  cs: number[],
  n: number,
  hw: number,
): Promise<Float32Array> {
  const cTotal = cs.reduce((a, b) => a + b, 0);
  const y = gpu.tensor(new Float32Array(n * cTotal * hw).fill(NaN), { shape: [n, cTotal, hw] });
  const offsets = cs.map((_, k) => cs.slice(0, k).reduce((a, b) => a + b, 0));
  for (const k of [...cs.keys()].reverse()) {
    const x = gpu.tensor(parts[k], { shape: [n, cs[k], hw] });
    concatChannels({ y, x }, { n, hw, cTotal, cOffset: offsets[k], c: cs[k] });
  }
  return await y.toArray() as Float32Array;
}

const CONCAT_CASES: [number, number, number[]][] = [
  [2, 9, [3, 5, 1]], // odd hw: scalar path
  [3, 4, [2, 4, 6]], // hw % 4 == 0: vec4 path
  [1, 1, [4, 8, 4]], // 1x1 spatial, channels % 4 == 0: vec4
  [5, 1, [3, 1, 2]], // 1x1 spatial, odd channels: scalar
  [2, 2, [2, 6]], // c * hw % 4 == 0 everywhere: vec4
  [2, 2, [1, 2]], // offsets not multiples of 4 elements: scalar
  [4, 49, [64, 32]], // DenseNet-like, 7x7
];

Deno.test(
  "concatChannels: GPU matches torch.cat semantics on several layouts",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(44);
    for (const [n, hw, cs] of CONCAT_CASES) {
      const parts = cs.map((c) => f32(rng.normalArray(n * c * hw)));
      const got = await gpuConcat(gpu, parts, cs, n, hw);
      assert.deepEqual(got, f32(concatRef(parts, cs, n, hw)), `n=${n} hw=${hw} cs=${cs}`);
    }
  },
);

Deno.test("splitChannels: slices, accumulates, and round-trips concat", GPU_TEST, async () => {
  const gpu = await testGpu();
  const rng = new Rng(45);
  for (const [n, hw, cs] of CONCAT_CASES) {
    const cTotal = cs.reduce((a, b) => a + b, 0);
    const dys = f32(rng.normalArray(n * cTotal * hw));
    const dy = gpu.tensor(dys, { shape: [n, cTotal, hw] });
    let off = 0;
    const pieces: Float32Array[] = [];
    for (const c of cs) {
      const want = sliceRef(dys, n, hw, cTotal, off, c);
      const dx = gpu.empty([n, c, hw]);
      splitChannels({ dx, dy }, { n, hw, cTotal, cOffset: off, c });
      const got = await dx.toArray() as Float32Array;
      assert.deepEqual(got, f32(want), `split n=${n} hw=${hw} off=${off} c=${c}`);
      pieces.push(got);
      const prev = f32(rng.normalArray(n * c * hw));
      const acc = gpu.tensor(prev, { shape: [n, c, hw] });
      splitChannels({ dx: acc, dy }, { n, hw, cTotal, cOffset: off, c, accumulate: true });
      assertClose(await acc.toArray(), accumulateRef(prev, want), {
        what: `split accumulate off=${off}`,
      });
      off += c;
    }
    assert.deepEqual(await gpuConcat(gpu, pieces, cs, n, hw), dys, "concat(split(dy)) == dy");
  }
});

Deno.test("concat backward (CPU slice) matches finite differences of CPU concat", () => {
  const rng = new Rng(46);
  const n = 2, hw = 3, cs = [2, 1, 3];
  const cTotal = 6;
  const parts = cs.map((c) => rng.normalArray(n * c * hw));
  const w = rng.normalArray(n * cTotal * hw);
  let off = 0;
  cs.forEach((c, k) => {
    const f = (v: Float64Array) => {
      const ps = parts.map((p, j) => (j === k ? v : p));
      return concatRef(ps, cs, n, hw).reduce((s, y, i) => s + y * w[i], 0);
    };
    checkGradient(f, parts[k], sliceRef(w, n, hw, cTotal, off, c), { what: `part ${k}` });
    off += c;
  });
});

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

Deno.test(
  "elementwise ops split into many binding ranges (limit lowered) match the CPU",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(47);
    await withBindingLimit(200, async () => {
      for (const n of [1, 7, 1001, 65539]) {
        const as = f32(rng.normalArray(n)), bs = f32(rng.normalArray(n));
        const a = gpu.tensor(as, { shape: [n] }), b = gpu.tensor(bs, { shape: [n] });
        const y = gpu.empty([n]);
        addForward({ y, a, b }, { relu: true });
        assertClose(await y.toArray(), addRef(as, bs, true), { what: `add relu n=${n}` });
        accumulate({ y: a, x: b }, { alpha: -2 });
        assertClose(await a.toArray(), accumulateRef(as, bs, -2), { what: `accumulate n=${n}` });
        for (const t of [a, b, y]) t.dispose();
        // An exact-size buffer (no room for a partial vec4): the scalar path.
        const e = exactTensor(gpu, as), f = exactTensor(gpu, bs);
        addForward({ y: e, a: e, b: f });
        assertClose(await e.toArray(), addRef(as, bs), { what: `add exact n=${n}` });
      }
    });
    // Concat / split in ranges of one or two rows: odd (scalar) and vec4 layouts.
    for (const [n, hw, cs, limit] of [[37, 5, [3, 2, 4], 64], [13, 4, [4, 8, 4], 140]] as const) {
      await withBindingLimit(limit, async () => {
        const cTotal = cs.reduce((a, b) => a + b, 0);
        const parts = cs.map((c) => f32(rng.normalArray(n * c * hw)));
        const got = await gpuConcat(gpu, parts, [...cs], n, hw);
        const want = concatRef(parts, [...cs], n, hw);
        assert.deepEqual(got, f32(want), `concat n=${n} hw=${hw}`);
        const dy = gpu.tensor(f32(want), { shape: [n, cTotal, hw] });
        const dx = gpu.tensor(parts[1], { shape: [n, cs[1], hw] });
        splitChannels({ dx, dy }, { n, hw, cTotal, cOffset: cs[0], c: cs[1], accumulate: true });
        assertClose(await dx.toArray(), accumulateRef(parts[1], parts[1]), { what: "split acc" });
      });
    }
    await withBindingLimit(64, () => {
      const big = gpu.zeros([1, 100, 1]), part = gpu.zeros([1, 10, 1]);
      assert.throws(
        () => concatChannels({ y: big, x: part }, { n: 1, hw: 1, cTotal: 100, cOffset: 0, c: 10 }),
        /concatChannels: 1 unit\(s\) of 100 elements/,
      );
    });
  },
);

// ------------------------------------------------------------ split + activation backward ----

const ACTIVATIONS: ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/**
 * A forward output of `kind` (f32): `f` of normal inputs scaled by 4, so that relu and relu6
 * produce exact zeros and relu6 exact sixes (their kinks, where the gradient is 0).
 */
function activationOutput(rng: Rng, size: number, kind: ActivationKind): Float32Array {
  return f32(activationForwardRef(rng.normalArray(size).map((v) => 4 * v), kind));
}

/**
 * splitChannels with `activation` of every slice of a `[n, sum(cs), hw]` tensor, overwriting
 * and accumulating: against the Float64 CPU reference (slice of the activation backward, on the
 * values dy and y hold) and exactly against activationBackward into a tensor of dx's dtype
 * followed by the plain split (both round the f32 result once). `dtype`: dy's and y's, `dx`:
 * dx's (both default f32; training: all f16). Exactness to the unfused pair is checked only
 * without accumulate for an f16 dx: the unfused pair rounds dz to f16 before the sum.
 */
async function checkSplitActivation(
  gpu: Gpu,
  rng: Rng,
  kind: ActivationKind,
  n: number,
  hw: number,
  cs: readonly number[],
  options: { readonly dtype?: FloatDType; readonly dx?: FloatDType } = {},
): Promise<void> {
  const ind = options.dtype ?? "f32", dxd = options.dx ?? "f32";
  const cTotal = cs.reduce((a, b) => a + b, 0);
  const shape = [n, cTotal, hw];
  const dys = stored(rng.normalArray(n * cTotal * hw), ind);
  const ys = stored(activationOutput(rng, dys.length, kind), ind);
  const dy = tensorOf(gpu, dys, { dtype: ind, shape }),
    y = tensorOf(gpu, ys, { dtype: ind, shape });
  const dz = gpu.empty(shape, { dtype: dxd });
  activationBackward({ dx: dz, dy, y }, { kind });
  const dzs = activationBackwardRef(dys, ys, kind);
  let cOffset = 0;
  for (const c of cs) {
    const p = { n, hw, cTotal, cOffset, c, activation: kind };
    const mix = ind === "f16" ? ` dx ${dxd}` : "";
    const what = `${kind}${mix} n=${n} hw=${hw} cTotal=${cTotal} off=${cOffset} c=${c}`;
    const want = sliceRef(dzs, n, hw, cTotal, cOffset, c);
    const prev = rng.normalArray(n * c * hw);
    for (const accumulate of [false, true]) {
      const dx = tensorOf(gpu, prev, { dtype: dxd, shape: [n, c, hw] });
      const unfused = tensorOf(gpu, prev, { dtype: dxd, shape: [n, c, hw] });
      splitChannels({ dx, dy, y }, { ...p, accumulate });
      splitChannels({ dx: unfused, dy: dz }, { n, hw, cTotal, cOffset, c, accumulate });
      const got = await dx.toArray();
      const ref = accumulate ? accumulateRef(stored(prev, dxd), want) : want;
      // f16 dy and y: f'(y) * dy in f32 (two products), plus one sum when accumulating: a few
      // f32 ulp, far below the f16 rounding (extra 0.01).
      const tol = ind === "f16" ? outTolerance(dxd, maxAbs(ref), 0.01) : { rtol: 1e-5, atol: 1e-6 };
      assertClose(got, ref, { ...tol, what: `split ${what} accumulate ${accumulate}` });
      if (!accumulate || dxd === "f32") {
        assertExact(
          got,
          await unfused.toArray(),
          `fused == unfused ${what} accumulate ${accumulate}`,
        );
      }
      dx.dispose();
      unfused.dispose();
    }
    cOffset += c;
  }
  for (const t of [dy, y, dz]) t.dispose();
}

Deno.test(
  "splitChannels with a fused activation backward: every kind, layout and accumulate mode vs the CPU and the unfused kernels",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(49);
    for (const kind of ACTIVATIONS) {
      // CONCAT_CASES: odd hw (scalar), hw % 4 == 0 (vec4), 1x1, offsets off the vec4 grid.
      for (const [n, hw, cs] of CONCAT_CASES) await checkSplitActivation(gpu, rng, kind, n, hw, cs);
    }
  },
);

Deno.test(
  "splitChannels with a fused activation backward in ranges of rows (binding limit lowered)",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(50);
    for (const [n, hw, cs, limit] of [[37, 5, [3, 2, 4], 64], [13, 4, [4, 8, 4], 140]] as const) {
      await withBindingLimit(limit, async () => {
        for (const kind of ACTIVATIONS) await checkSplitActivation(gpu, rng, kind, n, hw, cs);
      });
    }
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

// ------------------------------------------------------------------ f16 ----

/**
 * Tolerance of an output of `dtype` from f16-rounded inputs: f16Tolerance for an f16 output,
 * f32 rounding (2 ulp) otherwise. `extra`: see the callers.
 */
function outTolerance(dtype: FloatDType, scale: number, extra = 0): CloseOptions {
  return dtype === "f16" ? f16Tolerance(scale, extra) : { rtol: 2.5e-7, atol: 1e-7 * scale };
}

/** The dtype mixes of the f16 tests: training's (all f16) and others. */
const ADD_MIXES: { y: FloatDType; a: FloatDType; b: FloatDType }[] = [
  { y: "f16", a: "f16", b: "f16" }, // training: activations
  { y: "f16", a: "f32", b: "f16" },
  { y: "f32", a: "f16", b: "f16" },
];

Deno.test(
  "f16: add / add+relu / backward / accumulate match the CPU on f16-rounded inputs",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(60);
    for (const n of [7, 1001]) {
      const as = rng.normalArray(n), bs = rng.normalArray(n), dys = rng.normalArray(n);
      for (const mix of ADD_MIXES) {
        const a = tensorOf(gpu, as, { dtype: mix.a, shape: [n] });
        const b = tensorOf(gpu, bs, { dtype: mix.b, shape: [n] });
        const ra = stored(as, mix.a), rb = stored(bs, mix.b);
        for (const relu of [false, true]) {
          const y = gpu.empty([n], { dtype: mix.y });
          addForward({ y, a, b }, { relu });
          const want = addRef(ra, rb, relu);
          const yv = await y.toArray();
          // One f32 sum of two terms, rounded once: no reduction (extra 0).
          assertClose(yv, want, {
            ...outTolerance(mix.y, maxAbs(want)),
            what: `add relu=${relu} n=${n} ${JSON.stringify(mix)}`,
          });
          if (relu) {
            // Training: dx, dy, y f16; and dy f16 into an f32 dx. A select: exact.
            for (const dxd of ["f16", "f32"] as const) {
              const dy = tensorOf(gpu, dys, { dtype: "f16", shape: [n] });
              const dx = gpu.empty([n], { dtype: dxd });
              addBackwardRelu({ dx, dy, y });
              assertExact(
                await dx.toArray(),
                addReluBackwardRef(roundF16(dys), yv),
                `add relu backward dx ${dxd} n=${n}`,
              );
              dx.dispose();
              dy.dispose();
            }
          }
          y.dispose();
        }
        a.dispose();
        b.dispose();
      }
      // accumulate: f16 += f16 (activation gradients), f32 += f16, f16 += f32.
      for (const [yd, xd] of [["f16", "f16"], ["f32", "f16"], ["f16", "f32"]] as const) {
        for (const alpha of [1, -0.75]) {
          const y = tensorOf(gpu, as, { dtype: yd, shape: [n] });
          const x = tensorOf(gpu, bs, { dtype: xd, shape: [n] });
          accumulate({ y, x }, { alpha });
          const want = accumulateRef(stored(as, yd), stored(bs, xd), alpha);
          // y + alpha * x in f32 (a multiply-add), rounded once: extra 0.
          assertClose(await y.toArray(), want, {
            ...outTolerance(yd, maxAbs(want)),
            what: `accumulate ${yd} += ${xd} alpha=${alpha} n=${n}`,
          });
          y.dispose();
          x.dispose();
        }
      }
    }
  },
);

Deno.test(
  "f16: scalar path (exact-size buffers), in place, and ranges (limit lowered) of mixed dtypes",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(61);
    for (const n of [5, 13]) {
      // storageBytes(n, f16) < 8 * ceil(n / 4): no room for the last vec4<f16>.
      const as = f16(rng.normalArray(n)), bs = f16(rng.normalArray(n));
      const a = exactTensor(gpu, as), b = exactTensor(gpu, bs);
      addForward({ y: a, a, b }, { relu: true }); // in place
      const want = addRef(as, bs, true);
      assertClose(await a.toArray(), want, {
        ...f16Tolerance(maxAbs(want)),
        what: `add relu in place, exact-size f16 n=${n}`,
      });
      const g = exactTensor(gpu, bs);
      accumulate({ y: g, x: g }, { alpha: 0.5 }); // y += y / 2
      assertClose(await g.toArray(), accumulateRef(bs, bs, 0.5), {
        ...f16Tolerance(1.5 * maxAbs(bs)),
        what: `accumulate aliased f16 n=${n}`,
      });
      for (const t of [a, b, g]) t.dispose();
    }
    // Ranges start at multiples of 128 elements (256 bytes of f16), bases 0 for both dtypes.
    await withBindingLimit(200, async () => {
      for (const n of [7, 1001]) {
        const as = rng.normalArray(n), bs = rng.normalArray(n);
        const a = tensorOf(gpu, as, { dtype: "f32", shape: [n] });
        const b = tensorOf(gpu, bs, { dtype: "f16", shape: [n] });
        const y = gpu.empty([n], { dtype: "f16" });
        addForward({ y, a, b });
        const want = addRef(stored(as, "f32"), stored(bs, "f16"));
        assertClose(await y.toArray(), want, {
          ...f16Tolerance(maxAbs(want)),
          what: `add f32 + f16 -> f16 in ranges n=${n}`,
        });
        const acc = tensorOf(gpu, as, { dtype: "f32", shape: [n] });
        accumulate({ y: acc, x: b }, { alpha: 2 });
        assertClose(await acc.toArray(), accumulateRef(stored(as, "f32"), stored(bs, "f16"), 2), {
          ...outTolerance("f32", 3 * maxAbs(as)),
          what: `accumulate f32 += f16 in ranges n=${n}`,
        });
        for (const t of [a, b, y, acc]) t.dispose();
      }
    });
  },
);

/** Like gpuConcat, with parts and whole of the given dtypes. */
async function gpuConcatAs(
  gpu: Gpu,
  parts: ArrayLike<number>[],
  cs: readonly number[],
  n: number,
  hw: number,
  dt: { y: FloatDType; x: FloatDType },
): Promise<ArrayLike<number>> {
  const cTotal = cs.reduce((a, b) => a + b, 0);
  const y = tensorOf(gpu, new Float64Array(n * cTotal * hw).fill(NaN), {
    dtype: dt.y,
    shape: [n, cTotal, hw],
  });
  const offsets = cs.map((_, k) => cs.slice(0, k).reduce((a, b) => a + b, 0));
  for (const k of [...cs.keys()].reverse()) {
    const x = tensorOf(gpu, parts[k], { dtype: dt.x, shape: [n, cs[k], hw] });
    concatChannels({ y, x }, { n, hw, cTotal, cOffset: offsets[k], c: cs[k] });
    x.dispose();
  }
  const out = await y.toArray();
  y.dispose();
  return out;
}

/** Layouts of the f16 concat / split tests: scalar (odd hw), vec4, offsets off the vec4 grid. */
const F16_CASES: [number, number, number[]][] = [[2, 9, [3, 5, 1]], [3, 4, [2, 4, 6]], [
  2,
  2,
  [1, 2],
]];

Deno.test(
  "f16: concatChannels / splitChannels copy exactly; split accumulates",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(62);
    const mixes = [{ y: "f16", x: "f16" }, { y: "f16", x: "f32" }, { y: "f32", x: "f16" }] as const;
    for (const [n, hw, cs] of F16_CASES) {
      const cTotal = cs.reduce((a, b) => a + b, 0);
      const parts = cs.map((c) => rng.normalArray(n * c * hw));
      for (const dt of mixes) {
        // A copy (rounded to f16 when either side is f16): exact.
        const got = await gpuConcatAs(gpu, parts, cs, n, hw, dt);
        const half = dt.x === "f16" || dt.y === "f16";
        const want = concatRef(parts.map((p) => (half ? roundF16(p) : f32(p))), cs, n, hw);
        assertExact(got, want, `concat ${JSON.stringify(dt)} n=${n} hw=${hw} cs=${cs}`);
      }
      const dys = rng.normalArray(n * cTotal * hw);
      for (const dt of [{ dx: "f16", dy: "f16" }, { dx: "f32", dy: "f16" }] as const) {
        const dy = tensorOf(gpu, dys, { dtype: dt.dy, shape: [n, cTotal, hw] });
        let off = 0;
        for (const c of cs) {
          const want = sliceRef(roundF16(dys), n, hw, cTotal, off, c);
          const dx = gpu.empty([n, c, hw], { dtype: dt.dx });
          splitChannels({ dx, dy }, { n, hw, cTotal, cOffset: off, c });
          assertExact(await dx.toArray(), want, `split ${JSON.stringify(dt)} off=${off}`);
          const prev = rng.normalArray(n * c * hw);
          const acc = tensorOf(gpu, prev, { dtype: dt.dx, shape: [n, c, hw] });
          splitChannels({ dx: acc, dy }, { n, hw, cTotal, cOffset: off, c, accumulate: true });
          const sum = accumulateRef(stored(prev, dt.dx), want);
          // One f32 sum, rounded once: extra 0.
          assertClose(await acc.toArray(), sum, {
            ...outTolerance(dt.dx, maxAbs(sum)),
            what: `split accumulate ${JSON.stringify(dt)} off=${off}`,
          });
          dx.dispose();
          acc.dispose();
          off += c;
        }
        dy.dispose();
      }
    }
  },
);

Deno.test(
  "f16: splitChannels with a fused activation backward vs the CPU and the unfused kernels",
  F16_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(63);
    for (const kind of ACTIVATIONS) {
      for (const [n, hw, cs] of F16_CASES) {
        await checkSplitActivation(gpu, rng, kind, n, hw, cs, { dtype: "f16", dx: "f16" });
      }
    }
    await checkSplitActivation(gpu, rng, "sigmoid", 3, 4, [2, 4, 6], { dtype: "f16" });
    await checkSplitActivation(gpu, rng, "relu6", 2, 9, [3, 5, 1], { dtype: "f16" });
    // Ranges of rows: bases of f16 bindings (256-byte offsets = 128 elements).
    for (const [n, hw, cs, limit] of [[37, 5, [3, 2, 4], 64], [13, 4, [4, 8, 4], 140]] as const) {
      await withBindingLimit(limit, async () => {
        await checkSplitActivation(gpu, rng, "tanh", n, hw, cs, { dtype: "f16", dx: "f16" });
        const parts = cs.map((c) => rng.normalArray(n * c * hw));
        const got = await gpuConcatAs(gpu, parts, cs, n, hw, { y: "f16", x: "f16" });
        assertExact(got, concatRef(parts.map(roundF16), [...cs], n, hw), `concat ranges n=${n}`);
      });
    }
  },
);

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
        const ys = roundF16(activationOutput(rng, dys.length, "sigmoid"));
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
