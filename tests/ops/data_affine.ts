// prepareBatch's affine form (kernels/data/) checked on the GPU beyond its op suites, shared by
// tests/data_kernels_affine_test.ts and `deno task test:browser`: the equivalence with the
// special-case kernel it replaced (./data_legacy.ts) where they overlap, an identity RandomAffine,
// whole-pixel shifts with zero fill. No Deno API.
import type { Gpu } from "../../gpu/mod.ts";
import type { FloatDType } from "../../kernels/_dtype.ts";
import {
  type AugmentParams,
  prepareBatch,
  type PrepareBatchParams,
} from "../../kernels/data/index.ts";
import { augmentRef } from "../cpu_ref/data.ts";
import assert from "../_assert.ts";
import type { KernelCheck } from "../_check.ts";
import { Rng } from "../harness.ts";
import { type Data, makeData, runPrepare } from "./data.ts";
import { legacyPrepareBatch } from "./data_legacy.ts";

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

/** A case of the equivalence with the special-case kernel. */
export interface EquivCase {
  readonly name: string;
  readonly shape: readonly [number, number, number, number, number, number]; // c h w oh ow, batch
  readonly augment?: AugmentParams;
  readonly norm?: boolean;
  /** Bit for bit (else within the bound below). */
  readonly exact: boolean;
}

/** RandomResizedCrop's defaults. */
const RRC = { scale: [0.08, 1], ratio: [3 / 4, 4 / 3] } as const;
/** Where the affine kernel and the special-case one overlap. */
export const EQUIV: EquivCase[] = [
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

/** The GPU checks of tests/data_kernels_affine_test.ts that are not op suites. */
export const AFFINE_CHECKS: readonly KernelCheck[] = [
  {
    name: "the affine kernel gives the special-case kernel's outputs where they overlap",
    gpu: true,
    f16: false,
    run: async (gpu) => {
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
  },
  {
    name: "an identity RandomAffine is bit for bit no RandomAffine",
    gpu: true,
    f16: false,
    run: async (gpu) => {
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
    },
  },
  {
    name: "whole-pixel shifts move the image and fill zeros, exactly",
    gpu: true,
    f16: false,
    run: async (gpu) => {
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
      // The unshifted batch from the same adapter: u8 / 255 is a WGSL division (2.5 ulp allowed;
      // SwiftShader is 1 ulp off the correctly rounded value), so the shift is checked against
      // the adapter's own conversion, bit for bit.
      const plain = await runPrepare(gpu, d, indices, { ...p, augment: undefined });
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
                : plain.x[((b * 2 + c) * 9 + sy) * 11 + sx];
              assert.equal(got.x[((b * 2 + c) * 9 + y) * 11 + x], want, `sample ${b} (${y}, ${x})`);
            }
          }
        }
      }
      assert.ok(shifts.size > 10, `shifts vary (${shifts.size} distinct)`);
    },
  },
];
