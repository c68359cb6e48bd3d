// The data kernels' checks of tests/data_kernels_test.ts that are not op cases, shared with
// `deno task test:browser`: the exact u8/255 gather, PyTorch's F.interpolate fixtures
// (tests/fixtures/resize_bilinear.json, made by tests/fixtures/make_resize.py), the augmentations
// (crop with padding, flip, resized crop, reproducibility), labels, and batches of odd sizes. No
// Deno API, no node: module.
import type { Gpu } from "../../gpu/mod.ts";
import { prepareBatch, type PrepareBatchParams, resizeBilinear } from "../../kernels/data/index.ts";
import { augmentRef, prepareBatchRef, rnd } from "../cpu_ref/data.ts";
import assert from "../_assert.ts";
import type { KernelCheck } from "../_check.ts";
import { assertClose, Rng } from "../harness.ts";
import { checkAgainstRef, makeData, prepareTol, runPrepare, TOL } from "./data.ts";

const bits = new Uint32Array(1), float = new Float32Array(bits.buffer);
function f32Bits(v: number): number {
  float[0] = v;
  return bits[0];
}

/**
 * Whether `got` (an output pixel) is `want` (`Math.fround(u8 / 255)`, or a padding 0): exactly
 * where `gpu.description` says llvmpipe (Deno's adapter: the division is correctly rounded
 * there, and the Deno tests always asserted exact equality), within 1 f32 ulp elsewhere (WGSL
 * allows f32 division 2.5 ulp of error; SwiftShader's, under Chromium, is at times 1 ulp off).
 */
function pixelIs(gpu: Gpu, got: number, want: number): boolean {
  if (Object.is(got, want)) return true;
  if (/llvmpipe/i.test(gpu.description)) return false;
  return got >= 0 && want >= 0 && Math.abs(f32Bits(got) - f32Bits(want)) <= 1;
}

/** Throws unless `got` is the pixel `want` (see {@linkcode pixelIs}). */
function assertPixel(gpu: Gpu, got: number, want: number, what: string): void {
  if (!pixelIs(gpu, got, want)) assert.ok(false, `${what}: ${got} !== ${want}`);
}

/** A case of tests/fixtures/resize_bilinear.json. */
interface ResizeFixture {
  cases: {
    name: string;
    shape: [number, number, number, number];
    size: [number, number];
    mean: number[] | null;
    std: number[] | null;
    input: number[];
    output: number[];
  }[];
}

/** The data kernels' checks (GPU, f32). */
export const DATA_CHECKS: readonly KernelCheck[] = [
  {
    name: "28->28 without augmentation is the exact u8/255 gather",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      const d = makeData(new Rng(3), 6, 1, 28, 28);
      const indices = [5, 0, 5, 2];
      const got = await runPrepare(gpu, d, indices, {
        batch: 4,
        channels: 1,
        srcH: 28,
        srcW: 28,
        dstH: 28,
        dstW: 28,
      });
      const plane = 28 * 28;
      for (let b = 0; b < 4; b++) {
        for (let i = 0; i < plane; i++) {
          const want = Math.fround(d.images[indices[b] * plane + i] / 255);
          assertPixel(gpu, got.x[b * plane + i], want, `b ${b} pixel ${i}`);
        }
        assert.equal(got.labels[b], d.labels[indices[b]]);
      }
    },
  },
  {
    name: "resize and normalization match PyTorch's F.interpolate fixtures",
    gpu: true,
    f16: false,
    run: async (gpu, load) => {
      const fixture = await load("resize_bilinear.json") as ResizeFixture;
      assert.ok(fixture.cases.length >= 6);
      for (const fx of fixture.cases) {
        const [n, c, h, w] = fx.shape;
        const [oh, ow] = fx.size;
        const images = Uint8Array.from(fx.input);
        const d = { images, labels: new Uint8Array(n), count: n };
        const p: PrepareBatchParams = {
          batch: n,
          channels: c,
          srcH: h,
          srcW: w,
          dstH: oh,
          dstW: ow,
          ...(fx.mean && fx.std ? { mean: fx.mean, std: fx.std } : {}),
        };
        const got = await runPrepare(gpu, d, Array.from({ length: n }, (_, i) => i), p);
        assertClose(got.x, fx.output, {
          ...prepareTol(p),
          what: `prepareBatch vs torch ${fx.name}`,
        });
        // The CPU reference agrees with PyTorch too.
        const ref = prepareBatchRef(images, d.labels, Array.from({ length: n }, (_, i) => i), p);
        assertClose(ref.x, fx.output, { ...prepareTol(p), what: `cpu ref vs torch ${fx.name}` });
        if (!fx.mean) {
          // resizeBilinear on the f32 image.
          const y = await gpu.scope(async () => {
            const x = gpu.tensor(Float32Array.from(fx.input, (v) => v / 255), {
              shape: fx.shape,
            });
            const out = gpu.empty([n, c, oh, ow]);
            resizeBilinear({ y: out, x }, { outH: oh, outW: ow });
            return await out.toArray();
          });
          assertClose(y, fx.output, { ...TOL, what: `resizeBilinear vs torch ${fx.name}` });
        }
      }
    },
  },
  {
    name: "crop with zero padding places the image at the drawn offset",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      const rng = new Rng(23);
      const d = makeData(rng, 40, 1, 8, 6);
      const pad = 3;
      const p = {
        batch: 40,
        channels: 1,
        srcH: 8,
        srcW: 6,
        dstH: 8,
        dstW: 6,
        augment: { cropPadding: pad },
        seed: 99,
      };
      const indices = Array.from({ length: 40 }, (_, i) => i);
      const got = await runPrepare(gpu, d, indices, p);
      const offsets = new Set<string>();
      for (let b = 0; b < 40; b++) {
        const aug = augmentRef(p, b);
        offsets.add(`${aug.dy},${aug.dx}`);
        assert.ok(aug.dy >= 0 && aug.dy <= 2 * pad && aug.dx >= 0 && aug.dx <= 2 * pad);
        // Output pixel (y, x) shows source pixel (y + dy - pad, x + dx - pad), or zero padding.
        for (let y = 0; y < 8; y++) {
          for (let x = 0; x < 6; x++) {
            const sy = y + aug.dy - pad, sx = x + aug.dx - pad;
            const want = sy < 0 || sy >= 8 || sx < 0 || sx >= 6
              ? 0
              : Math.fround(d.images[(b * 8 + sy) * 6 + sx] / 255);
            assertPixel(gpu, got.x[(b * 8 + y) * 6 + x], want, `sample ${b} at (${y}, ${x})`);
          }
        }
      }
      assert.ok(offsets.size > 10, `offsets vary over samples (${offsets.size} distinct)`);
      // And through a resize, against the full reference.
      await checkAgainstRef(gpu, d, indices.slice(0, 9), {
        ...p,
        batch: 9,
        dstH: 17,
        dstW: 11,
      }, "pad-crop + resize");
    },
  },
  {
    name: "horizontal flip mirrors exactly the samples the RNG picks",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      const rng = new Rng(29);
      const d = makeData(rng, 64, 3, 5, 7);
      const p: PrepareBatchParams = {
        batch: 64,
        channels: 3,
        srcH: 5,
        srcW: 7,
        dstH: 5,
        dstW: 7,
        augment: { flip: true },
        seed: 4,
      };
      const indices = Array.from({ length: 64 }, (_, i) => i);
      const got = await runPrepare(gpu, d, indices, p);
      let flipped = 0;
      for (let b = 0; b < 64; b++) {
        const f = (rnd(4, b, 0) & 1) === 1;
        if (f) flipped++;
        for (let c = 0; c < 3; c++) {
          for (let y = 0; y < 5; y++) {
            for (let x = 0; x < 7; x++) {
              const sx = f ? 6 - x : x;
              const want = Math.fround(d.images[((b * 3 + c) * 5 + y) * 7 + sx] / 255);
              assertPixel(
                gpu,
                got.x[((b * 3 + c) * 5 + y) * 7 + x],
                want,
                `sample ${b} c ${c} (${y},${x})`,
              );
            }
          }
        }
      }
      assert.ok(flipped > 16 && flipped < 48, `about half flipped: ${flipped} of 64`);
      await checkAgainstRef(gpu, d, [3, 9, 60, 2, 2], {
        ...p,
        batch: 5,
        dstH: 12,
        dstW: 9,
        augment: { flip: true, cropPadding: 2 },
      }, "flip + pad-crop + resize");
    },
  },
  {
    name: "augmentation is reproducible: same seed and index, same result",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      const rng = new Rng(31);
      const d = makeData(rng, 20, 1, 28, 28);
      const p: PrepareBatchParams = {
        batch: 6,
        channels: 1,
        srcH: 28,
        srcW: 28,
        dstH: 32,
        dstW: 32,
        augment: {
          cropPadding: 4,
          flip: true,
          resizedCrop: { scale: [0.3, 1], ratio: [0.75, 4 / 3] },
        },
        seed: 1234,
      };
      const a = await runPrepare(gpu, d, [1, 2, 3, 4, 5, 6], p);
      const b = await runPrepare(gpu, d, [6, 5, 4, 3, 2, 1], p); // other positions
      const plane = 32 * 32;
      for (let i = 0; i < 6; i++) {
        const j = 5 - i;
        assert.deepEqual(
          a.x.subarray(i * plane, (i + 1) * plane),
          b.x.subarray(j * plane, (j + 1) * plane),
          `example ${i + 1} in position ${i} and ${j}`,
        );
      }
      const again = await runPrepare(gpu, d, [1, 2, 3, 4, 5, 6], p);
      assert.deepEqual(again.x, a.x);
      const other = await runPrepare(gpu, d, [1, 2, 3, 4, 5, 6], { ...p, seed: 1235 });
      // (node:assert's notDeepEqual: some element differs.)
      assert.ok(
        other.x.length !== a.x.length || other.x.some((v, i) => !Object.is(v, a.x[i])),
        "another seed gives other augmentations",
      );
    },
  },
  {
    name: "resized crop matches the reference; boxes follow torchvision's rule",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      const rng = new Rng(37);
      const d = makeData(rng, 30, 3, 32, 32);
      const p: PrepareBatchParams = {
        batch: 30,
        channels: 3,
        srcH: 32,
        srcW: 32,
        dstH: 24,
        dstW: 24,
        augment: { resizedCrop: { scale: [0.08, 1], ratio: [3 / 4, 4 / 3] }, flip: true },
        seed: 77,
      };
      const indices = Array.from({ length: 30 }, (_, i) => i);
      await checkAgainstRef(gpu, d, indices, p, "resized crop 32->24");
      const areas = new Set<number>();
      for (const n of indices) {
        const [i, j, h, w] = augmentRef(p, n).box;
        assert.ok(i >= 0 && j >= 0 && h > 0 && w > 0 && i + h <= 32 && j + w <= 32);
        areas.add(h * w);
      }
      assert.ok(areas.size > 10, "crop sizes vary");
      // Impossible ratios force the centre-crop fallback.
      const q: PrepareBatchParams = {
        ...p,
        batch: 4,
        channels: 1,
        srcH: 9,
        srcW: 20,
        dstH: 7,
        dstW: 5,
        augment: { flip: true, resizedCrop: { scale: [0.9, 1], ratio: [0.2, 0.25] } },
      };
      const g = makeData(rng, 4, 1, 9, 20);
      // in_ratio 20/9 > 0.25: h = 9, w = round(9 * 0.25) = 2, centred at j = (20 - 2) / 2.
      assert.deepEqual(augmentRef(q, 0).box, [0, 9, 9, 2], "fallback centre crop");
      await checkAgainstRef(gpu, g, [0, 1, 2, 3], q, "resized-crop fallback");
    },
  },
  {
    name: "labels are gathered; an out-of-range index gives zeros and -1",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      const d = makeData(new Rng(41), 7, 1, 4, 4);
      const got = await runPrepare(gpu, d, [6, 7, 0, 100], {
        batch: 4,
        channels: 1,
        srcH: 4,
        srcW: 4,
        dstH: 3,
        dstW: 3,
      });
      assert.deepEqual([...got.labels], [d.labels[6], -1, d.labels[0], -1]);
      assert.deepEqual([...got.x.subarray(9, 18)], new Array(9).fill(0));
      assert.deepEqual([...got.x.subarray(27, 36)], new Array(9).fill(0));
    },
  },
  {
    name: "one dispatch, no submit; the batch of odd sizes 1 and 3",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      const rng = new Rng(43);
      const d = makeData(rng, 5, 1, 28, 28);
      await gpu.sync();
      const s0 = { ...gpu.stats };
      const images = gpu.tensor(d.images, { shape: [5, 1, 28, 28] });
      const srcLabels = gpu.tensor(d.labels, { shape: [5] });
      const indices = gpu.tensor(new Uint32Array([4]), { shape: [1] });
      const x = gpu.empty([1, 1, 96, 96]);
      const labels = gpu.empty([1], { dtype: "i32" });
      gpu.flush();
      const s1 = { ...gpu.stats };
      prepareBatch({ x, labels, images, srcLabels, indices }, {
        batch: 1,
        channels: 1,
        srcH: 28,
        srcW: 28,
        dstH: 96,
        dstW: 96,
      });
      assert.equal(gpu.stats.dispatches, s1.dispatches + 1);
      assert.equal(gpu.stats.submits, s1.submits);
      assert.equal(gpu.stats.readbacks, s0.readbacks);
      const ref = prepareBatchRef(d.images, d.labels, [4], {
        batch: 1,
        channels: 1,
        srcH: 28,
        srcW: 28,
        dstH: 96,
        dstW: 96,
      });
      assertClose(await x.toArray(), ref.x, { ...TOL, what: "batch 1" });
      for (const t of [images, srcLabels, indices, x, labels]) t.dispose();
      await checkAgainstRef(gpu, d, [2, 2, 1], {
        batch: 3,
        channels: 1,
        srcH: 28,
        srcW: 28,
        dstH: 13,
        dstW: 29,
        augment: { flip: true, cropPadding: 1 },
        seed: 5,
      }, "batch 3");
    },
  },
];
