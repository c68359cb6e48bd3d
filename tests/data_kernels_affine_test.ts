// Tests of prepareBatch's affine form (kernels/data/): the equivalence with the special-case
// kernel it replaced (tests/ops/data_legacy.ts) where they overlap, the affine reference against
// the step-by-step one, the RandomAffine suites of tests/ops/data.ts (against the Float64 affine
// reference, f32 and f16), exact properties (an identity RandomAffine, whole-pixel shifts with
// zero fill), the draws, and checkAugment's errors.
import assert from "node:assert/strict";
import type { Gpu } from "../gpu/mod.ts";
import type { FloatDType } from "../kernels/_dtype.ts";
import {
  type AugmentParams,
  checkAugment,
  checkPrepareBatch,
  prepareBatch,
  type PrepareBatchParams,
} from "../kernels/data/index.ts";
import { assertClose, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { augmentRef, prepareBatchRef, prepareBatchStepsRef } from "./cpu_ref/data.ts";
import { testOp } from "./_op.ts";
import { AFFINE_SUITES, type Data, makeData, runPrepare, TOL } from "./ops/data.ts";
import { legacyPrepareBatch } from "./ops/data_legacy.ts";
for (const suite of AFFINE_SUITES) testOp(suite);

/** Runs the legacy kernel and the affine one on the same batch; returns both x read back. */
async function both(
  gpu: Gpu,
  d: Data,
  indices: number[],
  p: PrepareBatchParams,
  dtype: FloatDType = "f32",
): Promise<{ old: Float32Array | Float16Array; now: Float32Array | Float16Array }> {
  return await gpu.scope(async () => {
    const io = () => ({
      x: gpu.empty([p.batch, p.channels, p.dstH, p.dstW], { dtype }),
      labels: gpu.empty([p.batch], { dtype: "i32" }),
    });
    const images = gpu.tensor(d.images, { shape: [d.count, p.channels, p.srcH, p.srcW] });
    const srcLabels = gpu.tensor(d.labels, { shape: [d.count] });
    const idx = gpu.tensor(Uint32Array.from(indices), { shape: [p.batch] });
    const a = io(), b = io();
    legacyPrepareBatch({ ...a, images, srcLabels, indices: idx }, p);
    prepareBatch({ ...b, images, srcLabels, indices: idx }, p);
    const old = await a.x.toArray() as Float32Array | Float16Array;
    const now = await b.x.toArray() as Float32Array | Float16Array;
    return { old, now };
  });
}

/** The f32 ulp of `v` (its spacing at |v|). */
const ulp = (v: number) => 2 ** (Math.floor(Math.log2(Math.max(Math.abs(v), 2 ** -126))) - 23);

interface EquivCase {
  readonly name: string;
  readonly shape: readonly [number, number, number, number, number, number]; // c h w oh ow, batch
  readonly augment?: AugmentParams;
  readonly norm?: boolean;
  /** Bit for bit (else within the bound below). */
  readonly exact: boolean;
}

const RRC = { scale: [0.08, 1], ratio: [3 / 4, 4 / 3] } as const;
const EQUIV: EquivCase[] = [
  { name: "resize only 28->28", shape: [1, 28, 28, 28, 28, 5], exact: true },
  { name: "resize only 28->96", shape: [1, 28, 28, 96, 96, 3], exact: true },
  { name: "resize only 28->224", shape: [1, 28, 28, 224, 224, 1], exact: true },
  { name: "resize only 28->13", shape: [1, 28, 28, 13, 13, 7], exact: true },
  { name: "resize only odd 5x7->11x3", shape: [2, 5, 7, 11, 3, 3], exact: true },
  { name: "resize 32->40 rgb normalized", shape: [3, 32, 32, 40, 40, 3], norm: true, exact: true },
  {
    name: "crop 4, 28->28",
    shape: [1, 28, 28, 28, 28, 9],
    augment: { cropPadding: 4 },
    exact: true,
  },
  {
    name: "crop 2, rgb 32->17x11",
    shape: [3, 32, 32, 17, 11, 5],
    augment: { cropPadding: 2 },
    exact: true,
  },
  {
    name: "resized crop 32->24",
    shape: [3, 32, 32, 24, 24, 6],
    augment: { resizedCrop: RRC },
    exact: true,
  },
  {
    name: "resized crop + crop 3, 28->96 normalized",
    shape: [1, 28, 28, 96, 96, 3],
    augment: { resizedCrop: RRC, cropPadding: 3 },
    norm: true,
    exact: true,
  },
  {
    name: "flip 5x7 (no resize)",
    shape: [3, 5, 7, 5, 7, 16],
    augment: { flip: true },
    exact: true,
  },
  {
    name: "flip + crop 4, 32->32 rgb",
    shape: [3, 32, 32, 32, 32, 12],
    augment: { flip: true, cropPadding: 4 },
    exact: true,
  },
  { name: "flip, 28->96", shape: [1, 28, 28, 96, 96, 6], augment: { flip: true }, exact: false },
  {
    name: "flip + crop 2, rgb 32->13x17 normalized",
    shape: [3, 32, 32, 13, 17, 8],
    augment: { flip: true, cropPadding: 2 },
    norm: true,
    exact: false,
  },
  {
    name: "flip + resized crop, 32->24",
    shape: [3, 32, 32, 24, 24, 10],
    augment: { flip: true, resizedCrop: RRC },
    exact: false,
  },
];

Deno.test(
  "the affine kernel gives the special-case kernel's outputs where they overlap",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const rng = new Rng(81);
    const report: string[] = [];
    for (const c of EQUIV) {
      const [ch, h, w, oh, ow, batch] = c.shape;
      const d = makeData(rng, 17, ch, h, w);
      const std = [0.25, 0.3, 0.35].slice(0, ch);
      const p: PrepareBatchParams = {
        batch,
        channels: ch,
        srcH: h,
        srcW: w,
        dstH: oh,
        dstW: ow,
        seed: 5,
        ...(c.augment ? { augment: c.augment } : {}),
        ...(c.norm ? { mean: [0.5, 0.4, 0.3].slice(0, ch), std } : {}),
      };
      const indices = Array.from({ length: batch }, () => rng.int(17));
      const { old, now } = await both(gpu, d, indices, p);
      let worst = 0;
      for (let i = 0; i < old.length; i++) worst = Math.max(worst, Math.abs(old[i] - now[i]));
      report.push(`${c.name}: max |diff| ${worst.toExponential(2)}`);
      if (c.exact) {
        assert.deepEqual(now, old, `${c.name}: bit for bit`);
        if (gpu.features.f16) {
          const h16 = await both(gpu, d, indices, p, "f16");
          assert.deepEqual(h16.now, h16.old, `${c.name}: f16 bit for bit`);
        }
      } else {
        // The flip is a mirror of the f32 view coordinate (w - 0.5 - sx * u) instead of the
        // old mirror of integer taps: the coordinate and the bilinear weight differ by the
        // roundings of the multiply-add, at most 2 f32 ulps of the view size; the value (pixel
        // steps of at most 1) by as much, divided by std when normalized.
        const view = Math.max(h, w);
        const bound = 2 * ulp(view) / (c.norm ? Math.min(...std) : 1);
        assert.ok(worst <= bound, `${c.name}: max |diff| ${worst} > bound ${bound}`);
      }
    }
    console.log(report.join("\n"));
  },
);

Deno.test("the affine reference equals the step-by-step reference where they overlap", () => {
  const rng = new Rng(82);
  for (const c of EQUIV) {
    const [ch, h, w, oh, ow, batch] = c.shape;
    const d = makeData(rng, 9, ch, h, w);
    const p = {
      batch,
      channels: ch,
      srcH: h,
      srcW: w,
      dstH: oh,
      dstW: ow,
      seed: 6,
      augment: c.augment,
    };
    const indices = Array.from({ length: batch }, () => rng.int(9));
    const a = prepareBatchRef(d.images, d.labels, indices, p);
    const s = prepareBatchStepsRef(d.images, d.labels, indices, p);
    assert.deepEqual(a.labels, s.labels);
    if (!c.augment?.flip) assert.deepEqual(a.x, s.x, `${c.name}: the same f32 coordinates`);
    else assertClose(a.x, s.x, { ...TOL, what: c.name });
  }
});

Deno.test("an identity RandomAffine is bit for bit no RandomAffine", GPU_TEST, async () => {
  const gpu = await testGpu();
  const d = makeData(new Rng(83), 8, 3, 32, 32);
  const base: PrepareBatchParams = {
    batch: 6,
    channels: 3,
    srcH: 32,
    srcW: 32,
    dstH: 40,
    dstW: 24,
    seed: 3,
    augment: { flip: true, cropPadding: 4 },
  };
  const indices = [1, 7, 3, 3, 0, 5];
  const plain = await runPrepare(gpu, d, indices, base);
  const identity = await runPrepare(gpu, d, indices, {
    ...base,
    augment: { ...base.augment, rotate: 0, translate: [0, 0], scale: [1, 1], shear: 0 },
  });
  assert.deepEqual(identity.x, plain.x);
});

Deno.test("whole-pixel shifts move the image and fill zeros, exactly", GPU_TEST, async () => {
  const gpu = await testGpu();
  const d = makeData(new Rng(84), 30, 2, 9, 11);
  const p: PrepareBatchParams = {
    batch: 30,
    channels: 2,
    srcH: 9,
    srcW: 11,
    dstH: 9,
    dstW: 11,
    seed: 12,
    augment: { translate: [0.3, 0.4] },
  };
  const indices = Array.from({ length: 30 }, (_, i) => i);
  const got = await runPrepare(gpu, d, indices, p);
  const shifts = new Set<string>();
  for (let b = 0; b < 30; b++) {
    const { tx, ty } = augmentRef(p, b);
    shifts.add(`${tx},${ty}`);
    // round(uniform(-a * size, a * size)), as torchvision.
    assert.ok(Math.abs(tx) <= Math.round(0.3 * 11) && Math.abs(ty) <= Math.round(0.4 * 9));
    for (let c = 0; c < 2; c++) {
      for (let y = 0; y < 9; y++) {
        for (let x = 0; x < 11; x++) {
          const sy = y - ty, sx = x - tx;
          const want = sy < 0 || sy >= 9 || sx < 0 || sx >= 11
            ? 0
            : Math.fround(d.images[((b * 2 + c) * 9 + sy) * 11 + sx] / 255);
          assert.equal(got.x[((b * 2 + c) * 9 + y) * 11 + x], want, `sample ${b} (${y}, ${x})`);
        }
      }
    }
  }
  assert.ok(shifts.size > 10, `shifts vary (${shifts.size} distinct)`);
});

Deno.test("RandomAffine's draws follow torchvision's ranges", () => {
  const p = {
    batch: 1,
    channels: 1,
    srcH: 28,
    srcW: 28,
    dstH: 96,
    dstW: 96,
    seed: 9,
    augment: { rotate: 20, translate: [0.1, 0.2] as const, scale: [0.8, 1.25] as const, shear: 5 },
  };
  const angles: number[] = [], zooms: number[] = [];
  for (let n = 0; n < 500; n++) {
    const a = augmentRef(p, n);
    assert.ok(Math.abs(a.angle) <= 20 && Math.abs(a.shear) <= 5);
    assert.ok(Number.isInteger(a.tx) && Math.abs(a.tx) <= 10 && Math.abs(a.ty) <= 19);
    assert.ok(a.zoom >= 0.8 && a.zoom <= 1.25);
    angles.push(a.angle);
    zooms.push(a.zoom);
  }
  assert.ok(Math.min(...angles) < -18 && Math.max(...angles) > 18, "angles span the range");
  assert.ok(Math.min(...zooms) < 0.82 && Math.max(...zooms) > 1.23, "zooms span the range");
});

Deno.test("checkAugment: one-line TypeError and RangeError naming the field", () => {
  const base = { batch: 2, channels: 1, srcH: 28, srcW: 28, dstH: 28, dstW: 28 };
  checkAugment({});
  checkAugment({ flip: true, cropPadding: 4, rotate: 180, translate: [1, 0], scale: [1, 1] });
  const bad: [unknown, ErrorConstructor, RegExp][] = [
    [[], TypeError, /augment must be an object/],
    [{ flip: 1 }, TypeError, /augment\.flip must be true or false, got 1/],
    [{ cropPadding: 1.5 }, RangeError, /augment\.cropPadding must be an integer >= 0, got 1\.5/],
    [{ cropPadding: -1 }, RangeError, /augment\.cropPadding must be an integer >= 0/],
    [{ rotate: "15" }, TypeError, /augment\.rotate must be a number, got "15"/],
    [{ rotate: 181 }, RangeError, /augment\.rotate must be in \[0, 180\], got 181/],
    [{ translate: 0.1 }, TypeError, /augment\.translate must be \[lo, hi\], got 0\.1/],
    [{ translate: [0.1, 1.5] }, RangeError, /augment\.translate must be \[a, b\] with a and b/],
    [{ scale: [1.2, 0.8] }, RangeError, /augment\.scale must be \[lo, hi\] with 0 < lo <= hi/],
    [{ scale: [0, 1] }, RangeError, /augment\.scale must be/],
    [{ shear: 90 }, RangeError, /augment\.shear must be in \[0, 90\), got 90/],
    [{ shear: NaN }, RangeError, /augment\.shear must be in \[0, 90\)/],
    [{ resizedCrop: { scale: [0.5, 0.1], ratio: [1, 1] } }, RangeError, /resizedCrop\.scale/],
    [{ resizedCrop: { scale: [0.1, 1] } }, TypeError, /resizedCrop\.ratio must be \[lo, hi\]/],
  ];
  for (const [a, type, re] of bad) {
    assert.throws(
      () => checkPrepareBatch({ ...base, augment: a as AugmentParams }),
      (e: Error) =>
        e instanceof type && /^prepareBatch: /.test(e.message) && re.test(e.message) &&
        !e.message.includes("\n"),
      JSON.stringify(a),
    );
  }
  // The fields that moved into augment are named.
  assert.throws(
    () => checkPrepareBatch({ ...base, flip: true } as PrepareBatchParams),
    /prepareBatch: flip is a field of augment now: pass \{ augment: \{ flip \} \}/,
  );
});
