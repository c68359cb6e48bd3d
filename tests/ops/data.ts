// The data kernels for testOp (tests/_op.ts): prepareBatch and resizeBilinear against the Float64
// references of tests/cpu_ref/data.ts, the suites of tests/data_kernels_test.ts, and the helpers
// of tests/data_kernels*_test.ts (random data sets, prepareBatch run or checked on one).
import type { Gpu } from "../../gpu/mod.ts";
import type { FloatDType } from "../../kernels/_dtype.ts";
import { prepareBatch, type PrepareBatchParams, resizeBilinear } from "../../kernels/data/index.ts";
import { prepareBatchRef, resizeBilinearRef } from "../cpu_ref/data.ts";
import type { CloseOptions, Rng } from "../harness.ts";
import { checkOpCase, input, type OpCase, opCase, type OpSuite, output, runOp } from "../_op.ts";

// f32 tolerances: values are in [0, 1]; the source coordinate (up to ~32) carries f32 rounding
// (the GPU may fuse its multiply-add), about 2e-6 of a pixel step. Normalization divides the
// absolute error by std.
export const TOL: CloseOptions = { rtol: 1e-5, atol: 2e-6 };

// With RandomAffine, the kernel's matrix entries are f32 (its sin/cos to ~1e-7, the shift of the
// centre computed at coordinates up to the output size) against the reference's Float64 ones:
// the view coordinate differs by up to ~1e-6 of the largest output coordinate, and the value (a
// bilinear weight or the zero-fill ramp, slope at most 2 per view pixel, times a pixel step of
// at most 1) by twice that.
/** The f32 tolerance of x for RandomAffine cases of output size up to `size`. */
export function affineTol(size: number): CloseOptions {
  return { rtol: TOL.rtol, atol: 4e-6 * Math.max(size, 16) / 16 * 2 };
}

/** The f32 tolerance of prepareBatch's x with `p`'s augmentation and normalization. */
export function prepareTol(p: PrepareBatchParams): CloseOptions {
  const a = p.augment ?? {};
  const affine = (a.rotate ?? 0) > 0 || a.translate !== undefined || a.scale !== undefined ||
    (a.shear ?? 0) > 0;
  const tol = affine ? affineTol(Math.max(p.dstH, p.dstW)) : TOL;
  return p.std ? { rtol: tol.rtol, atol: tol.atol! / Math.min(...p.std) } : tol;
}

/** `n` random bytes. */
export function randomBytes(rng: Rng, n: number): Uint8Array {
  const a = new Uint8Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.int(256);
  return a;
}

/**
 * A case of prepareBatch: `p`, from a data set of `count` random images with labels in [0, 10)
 * (`indices`: the batch's, default drawn in [0, count)); `name` for messages.
 */
export interface PrepareCase {
  readonly name: string;
  readonly p: PrepareBatchParams;
  readonly count: number;
  readonly indices?: readonly number[];
  readonly bindingLimit?: number;
}

/**
 * prepareBatch into x (its float type set by the mix) and labels, against the Float64 reference.
 * An f16 x: the value is computed in f32 (bilinear weights of at most 4 taps, error ~2e-6 of a
 * pixel step, see TOL) and rounded once to f16; the inputs are bytes (exact). No reduction:
 * extra 0.01 covers the f32 error where it tips the rounding.
 */
export function prepareBatchOp(c: PrepareCase): OpCase {
  const { p, count } = c;
  const image = p.channels * p.srcH * p.srcW;
  return opCase({
    label: c.name,
    tensors: {
      srcLabels: input([count], (rng) => Uint8Array.from({ length: count }, () => rng.int(10)), {
        dtype: "u8",
      }),
      images: input([count, p.channels, p.srcH, p.srcW], (rng) => randomBytes(rng, count * image), {
        dtype: "u8",
      }),
      indices: input(
        [p.batch],
        (rng) => c.indices ?? Array.from({ length: p.batch }, () => rng.int(count)),
        { dtype: "u32" },
      ),
      x: output([p.batch, p.channels, p.dstH, p.dstW]),
      labels: output([p.batch], { dtype: "i32" }),
    },
    phases: [{
      gpu: ({ x, labels, images, srcLabels, indices }) =>
        prepareBatch({ x, labels, images, srcLabels, indices }, p),
      cpu: ({ images, srcLabels, indices }) =>
        prepareBatchRef(images as Uint8Array, srcLabels as Uint8Array, indices, p),
      tol: { x: prepareTol(p), labels: "exact" },
      extra: 0.01,
    }],
    bindingLimit: c.bindingLimit,
  });
}

/** A case of resizeBilinear: `n` images of `c` planes of h x w to oh x ow. */
export interface ResizeCase {
  readonly n: number;
  readonly c: number;
  readonly h: number;
  readonly w: number;
  readonly oh: number;
  readonly ow: number;
  readonly bindingLimit?: number;
}

/**
 * resizeBilinear of N(0, 1) values: four taps weighted in f32 (a reduction of length 4); an f16 y
 * adds its one rounding (extra 0.01 for the f32 error).
 */
export function resize(c: ResizeCase): OpCase {
  const { n, c: ch, h, w, oh, ow } = c;
  return opCase({
    label: `resize ${[n, ch, h, w]}->${[oh, ow]}`,
    tensors: { x: input([n, ch, h, w]), y: output([n, ch, oh, ow]) },
    phases: [{
      gpu: ({ y, x }) => resizeBilinear({ y, x }, { outH: oh, outW: ow }),
      cpu: ({ x }) => ({ y: resizeBilinearRef(x, n * ch, h, w, oh, ow) }),
      tol: { y: { rtol: 1e-5, atol: 1e-5 } },
      extra: 0.01,
    }],
    bindingLimit: c.bindingLimit,
  });
}

/** A prepareBatch case of the seed models' resizes (`batch` of 13 images). */
const resizes = (
  name: string,
  batch: number,
  c: number,
  h: number,
  w: number,
  oh: number,
  ow: number,
): PrepareCase => ({
  name,
  p: { batch, channels: c, srcH: h, srcW: w, dstH: oh, dstW: ow },
  count: 13,
});

/** The prepareBatch suites of tests/data_kernels_test.ts. */
export const PREPARE_SUITES: OpSuite<PrepareCase>[] = [{
  name: "prepareBatch on the seed models' resizes",
  op: prepareBatchOp,
  seed: 11,
  cases: [
    resizes("28->28 identity", 5, 1, 28, 28, 28, 28),
    resizes("28->96", 3, 1, 28, 28, 96, 96),
    resizes("28->224", 1, 1, 28, 28, 224, 224),
    resizes("28->13 downscale", 7, 1, 28, 28, 13, 13),
    resizes("32->40 rgb", 2, 3, 32, 32, 40, 40),
    resizes("odd 5x7->11x3", 3, 2, 5, 7, 11, 3),
    resizes("1x1 -> 3x2", 1, 3, 1, 1, 3, 2),
    resizes("9x9 -> 1x1", 2, 1, 9, 9, 1, 1),
  ],
}, {
  name: "normalization with per-channel mean/std",
  op: prepareBatchOp,
  seed: 17,
  cases: [{
    name: "cifar-style normalize",
    count: 9,
    indices: [8, 1, 4],
    p: {
      batch: 3,
      channels: 3,
      srcH: 32,
      srcW: 32,
      dstH: 40,
      dstW: 40,
      mean: [0.4914, 0.4822, 0.4465],
      std: [0.247, 0.243, 0.261],
    },
  }, {
    name: "gray normalize",
    count: 4,
    indices: [3, 3, 0],
    p: {
      batch: 3,
      channels: 1,
      srcH: 28,
      srcW: 28,
      dstH: 96,
      dstW: 96,
      mean: [0.286],
      std: [0.353],
    },
  }],
}];

/** A RandomAffine case: `batch` images of `c` x h x w (from 11) to oh x ow, with `augment`. */
const affineCase = (
  name: string,
  [batch, c, h, w, oh, ow]: readonly number[],
  augment: PrepareBatchParams["augment"],
  extra: Partial<PrepareBatchParams> = {},
): PrepareCase => ({
  name,
  p: { batch, channels: c, srcH: h, srcW: w, dstH: oh, dstW: ow, augment, seed: 21, ...extra },
  count: 11,
});

/**
 * The RandomAffine suites of tests/data_kernels_affine_test.ts: rotation, translation, zoom
 * and shear alone and with the crops and the flip, at odd sizes, gray and RGB, into f32 and f16.
 */
export const AFFINE_SUITES: OpSuite<PrepareCase>[] = [{
  name: "RandomAffine (rotate, translate, scale, shear) against the affine reference",
  op: prepareBatchOp,
  seed: 71,
  cases: [
    affineCase("rotate 30, gray 28->28", [5, 1, 28, 28, 28, 28], { rotate: 30 }),
    affineCase("rotate 180, rgb odd 9x13->17x11", [4, 3, 9, 13, 17, 11], { rotate: 180 }),
    affineCase("translate 0.2/0.1, gray 7x5->7x5", [6, 1, 7, 5, 7, 5], { translate: [0.2, 0.1] }),
    affineCase("scale 0.7-1.3, rgb 32->24", [3, 3, 32, 32, 24, 24], { scale: [0.7, 1.3] }),
    affineCase("shear 20 + rotate 10, gray 28->37", [3, 1, 28, 28, 37, 37], {
      shear: 20,
      rotate: 10,
    }),
    affineCase("all + flip + crop 3, rgb 32->32, normalized", [4, 3, 32, 32, 32, 32], {
      flip: true,
      cropPadding: 3,
      rotate: 15,
      translate: [0.1, 0.1],
      scale: [0.9, 1.1],
    }, { mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26] }),
    affineCase("all + resized crop + flip, gray 28->96", [2, 1, 28, 28, 96, 96], {
      flip: true,
      resizedCrop: { scale: [0.3, 1], ratio: [3 / 4, 4 / 3] },
      rotate: 45,
      translate: [0.15, 0.05],
      scale: [0.8, 1.2],
      shear: 10,
    }),
  ],
  mixes: [{ x: "f32" }, { x: "f16" }],
}, {
  name: "RandomAffine in ranges of 2 images (binding limit lowered)",
  op: prepareBatchOp,
  seed: 72,
  cases: [{
    ...affineCase("rotate + flip, ranges", [7, 2, 5, 7, 6, 5], { rotate: 90, flip: true }),
    bindingLimit: 200,
  }],
  mixes: [{ x: "f32" }, { x: "f16" }],
}];

/** The resizeBilinear suites of tests/data_kernels_test.ts. */
export const RESIZE_SUITES: OpSuite<ResizeCase>[] = [{
  name: "resizeBilinear on odd shapes",
  op: resize,
  seed: 5,
  cases: [
    { n: 2, c: 3, h: 7, w: 5, oh: 13, ow: 4 },
    { n: 1, c: 1, h: 1, w: 1, oh: 5, ow: 3 },
    { n: 3, c: 2, h: 28, w: 28, oh: 13, ow: 17 },
  ],
}, {
  name: "resizeBilinear in ranges of 4 planes (binding limit lowered)",
  op: resize,
  seed: 50,
  cases: [{ n: 7, c: 2, h: 3, w: 4, oh: 5, ow: 9, bindingLimit: 200 }],
}, {
  name: "f16: resizeBilinear with f16 x and/or y",
  op: resize,
  seed: 62,
  cases: [{ n: 2, c: 3, h: 7, w: 5, oh: 13, ow: 4 }, { n: 3, c: 2, h: 28, w: 28, oh: 13, ow: 17 }],
  mixes: [{ y: "f16", x: "f16" }, { y: "f16", x: "f32" }, { y: "f32", x: "f16" }],
}, {
  name: "f16: resizeBilinear in ranges of 4 planes (binding limit lowered)",
  op: resize,
  seed: 63,
  cases: [{ n: 7, c: 2, h: 3, w: 4, oh: 5, ow: 9, bindingLimit: 200 }],
  mixes: [{ y: "f16", x: "f16" }],
}];

// ------------------------------------------------------------------ helpers ----

/** A data set of u8 images and labels, as prepareBatch reads it. */
export interface Data {
  images: Uint8Array;
  labels: Uint8Array;
  count: number;
}

/** `count` random `c`x`h`x`w` images with labels in [0, 10). */
export function makeData(rng: Rng, count: number, c: number, h: number, w: number): Data {
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = rng.int(10);
  return { images: randomBytes(rng, count * c * h * w), labels, count };
}

/**
 * Runs prepareBatch on the GPU into an `x` of `dtype` (default f32); returns x and labels read
 * back.
 */
export async function runPrepare(
  gpu: Gpu,
  d: Data,
  indices: number[],
  p: PrepareBatchParams,
  options: { readonly dtype?: FloatDType } = {},
): Promise<{ x: Float32Array | Float16Array; labels: Int32Array }> {
  const out = await runOp(gpu, prepareBatchOp({ name: "", p, count: d.count }), {
    data: { images: d.images, srcLabels: d.labels, indices },
    mix: { x: options.dtype ?? "f32" },
  });
  return { x: out.x as Float32Array | Float16Array, labels: out.labels as Int32Array };
}

/** prepareBatch into an `x` of `dtype` (default f32) against the Float64 reference. */
export async function checkAgainstRef(
  gpu: Gpu,
  d: Data,
  indices: number[],
  p: PrepareBatchParams,
  what: string,
  options: { readonly dtype?: FloatDType } = {},
): Promise<void> {
  await checkOpCase(gpu, prepareBatchOp({ name: what, p, count: d.count }), {
    data: { images: d.images, srcLabels: d.labels, indices },
    mix: { x: options.dtype ?? "f32" },
  });
}

/** `batch` indices drawn in [0, count). */
export function shuffled(rng: Rng, count: number, batch: number): number[] {
  return Array.from({ length: batch }, () => rng.int(count));
}
