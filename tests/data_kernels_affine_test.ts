// Tests of prepareBatch's affine form (kernels/data/): the equivalence with the special-case
// kernel it replaced (tests/ops/data_legacy.ts) where they overlap, the affine reference against
// the step-by-step one, the RandomAffine suites of tests/ops/data.ts (against the Float64 affine
// reference, f32 and f16), exact properties (an identity RandomAffine, whole-pixel shifts with
// zero fill), the draws, and checkAugment's errors.
// The GPU checks beyond the op suites are in tests/ops/data_affine.ts (shared with
// `deno task test:browser`).
import assert from "node:assert/strict";
import {
  type AugmentParams,
  checkAugment,
  checkPrepareBatch,
  type PrepareBatchParams,
} from "../kernels/data/index.ts";
import { assertClose, Rng } from "./harness.ts";
import { augmentRef, prepareBatchRef, prepareBatchStepsRef } from "./cpu_ref/data.ts";
import { testCheck } from "./_check.ts";
import { testOp } from "./_op.ts";
import { AFFINE_SUITES, makeData, TOL } from "./ops/data.ts";
import { AFFINE_CHECKS, EQUIV } from "./ops/data_affine.ts";

for (const suite of AFFINE_SUITES) testOp(suite);
for (const check of AFFINE_CHECKS) testCheck(check);

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
