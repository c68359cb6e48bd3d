// Tests of kernels/elementwise.ts: add (+ fused ReLU) and its backward, accumulate, channel
// concat / split (vec4 and scalar paths, offsets, accumulate, round trip), against Float64 CPU
// references and finite differences, plus aliasing and validation; split with a fused activation
// backward against the CPU and bit for bit against activationBackward then split.
import assert from "node:assert/strict";
import { type Gpu, POOL_USAGE, Tensor } from "../gpu/mod.ts";
import { activationBackward, type ActivationKind } from "../kernels/activation.ts";
import {
  accumulate,
  addBackwardRelu,
  addForward,
  concatChannels,
  elementwiseMap,
  type ElementwiseMapKernel,
  splitChannels,
} from "../kernels/elementwise.ts";
import { assertClose, checkGradient, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
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

function exactTensor(gpu: Gpu, data: Float32Array): Tensor {
  const buffer = gpu.device.createBuffer({ size: data.byteLength, usage: POOL_USAGE });
  const t = new Tensor(gpu, buffer, { shape: [data.length], dtype: "f32" });
  gpu.write(t, data);
  return t;
}

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
 * and accumulating: against the Float64 CPU reference (slice of the activation backward) and
 * exactly against activationBackward followed by the plain split.
 */
async function checkSplitActivation(
  gpu: Gpu,
  rng: Rng,
  kind: ActivationKind,
  n: number,
  hw: number,
  cs: readonly number[],
): Promise<void> {
  const cTotal = cs.reduce((a, b) => a + b, 0);
  const shape = [n, cTotal, hw];
  const dys = f32(rng.normalArray(n * cTotal * hw)), ys = activationOutput(rng, dys.length, kind);
  const dy = gpu.tensor(dys, { shape }), y = gpu.tensor(ys, { shape });
  const dz = gpu.empty(shape);
  activationBackward({ dx: dz, dy, y }, { kind });
  const dzs = activationBackwardRef(dys, ys, kind);
  let cOffset = 0;
  for (const c of cs) {
    const p = { n, hw, cTotal, cOffset, c, activation: kind };
    const what = `${kind} n=${n} hw=${hw} cTotal=${cTotal} off=${cOffset} c=${c}`;
    const want = sliceRef(dzs, n, hw, cTotal, cOffset, c);
    const prev = f32(rng.normalArray(n * c * hw));
    for (const accumulate of [false, true]) {
      const dx = gpu.tensor(prev, { shape: [n, c, hw] });
      const unfused = gpu.tensor(prev, { shape: [n, c, hw] });
      splitChannels({ dx, dy, y }, { ...p, accumulate });
      splitChannels({ dx: unfused, dy: dz }, { n, hw, cTotal, cOffset, c, accumulate });
      const got = await dx.toArray();
      assertClose(got, accumulate ? accumulateRef(prev, want) : want, {
        rtol: 1e-5,
        atol: 1e-6,
        what: `split ${what} accumulate ${accumulate}`,
      });
      assertExact(
        got,
        await unfused.toArray(),
        `fused == unfused ${what} accumulate ${accumulate}`,
      );
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
