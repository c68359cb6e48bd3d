/**
 * A seeded, learnable synthetic image-classification data set: each class has its own pattern (a
 * bright blob at a class-specific place on a ring plus a class-specific stripe orientation and,
 * with colour, a class-specific hue), and each example jitters, scales and adds noise to it. A
 * small network learns it in a few epochs; it needs no files, so tests and demos run anywhere.
 *
 * Every example is a pure function of `(seed, split, index)`: a prefix of a larger data set equals
 * the smaller one, and train and test differ.
 *
 * @module
 */

import type { Dataset } from "./dataset.ts";

/** Options of {@linkcode makeSynthetic}. */
export interface SyntheticOptions {
  /** Number of examples; default 10000 for `train`, 2000 for `test`. */
  readonly count?: number;
  /** Channels; default 1. */
  readonly channels?: number;
  /** Image height; default 28. */
  readonly height?: number;
  /** Image width; default 28 (or `height` when only that is given). */
  readonly width?: number;
  /** Number of classes (2..256); default 10. */
  readonly classes?: number;
  /** Seed; default 0. */
  readonly seed?: number;
  /** Split: `train` and `test` draw different examples; default `train`. */
  readonly split?: "train" | "test";
  /** Standard deviation of the pixel noise, relative to the 0..1 range; default 0.15. */
  readonly noise?: number;
}

function fmix(h0: number): number {
  let h = h0 >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** A small counter-based generator: stream `key`, draws 0, 1, 2, ... */
class Stream {
  #key: number;
  #i = 0;
  constructor(key: number) {
    this.#key = key;
  }
  next(): number {
    return fmix((this.#key + Math.imul(++this.#i, 0x9e3779b9)) >>> 0) / 4294967296;
  }
  normal(): number {
    const u = Math.max(this.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
}

function posInt(name: string, v: number, max = Infinity): number {
  if (!Number.isInteger(v) || v < 1 || v > max) {
    throw new RangeError(`makeSynthetic: ${name} must be an integer in 1..${max}, got ${v}`);
  }
  return v;
}

/**
 * Makes the synthetic data set (class names `class 0`, `class 1`, ...).
 *
 * @example
 * ```ts
 * import { makeSynthetic } from "@modern-cnn/webgpu/data";
 * const ds = makeSynthetic({ count: 512, channels: 3, height: 32, classes: 4, seed: 1 });
 * console.log(ds.images.length, ds.labels.length, ds.classes); // 1572864 512 ["class 0", ...]
 * ```
 */
export function makeSynthetic(options: SyntheticOptions = {}): Dataset {
  const split = options.split ?? "train";
  const count = posInt("count", options.count ?? (split === "train" ? 10000 : 2000));
  const channels = posInt("channels", options.channels ?? 1);
  const height = posInt("height", options.height ?? 28);
  const width = posInt("width", options.width ?? options.height ?? 28);
  const classes = options.classes ?? 10;
  if (!Number.isInteger(classes) || classes < 2 || classes > 256) {
    throw new RangeError(`makeSynthetic: classes must be an integer in 2..256, got ${classes}`);
  }
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed)) throw new RangeError(`makeSynthetic: seed must be an integer`);
  const noise = options.noise ?? 0.15;
  if (!(noise >= 0) || !Number.isFinite(noise)) {
    throw new RangeError(`makeSynthetic: noise must be a finite number >= 0, got ${noise}`);
  }
  const base = fmix((fmix(seed >>> 0) ^ (split === "train" ? 0x1234567 : 0x7654321)) >>> 0);
  const plane = height * width;
  const images = new Uint8Array(count * channels * plane);
  const labels = new Uint8Array(count);
  const size = Math.min(height, width);
  const ring = 0.28 * size;
  const sigma = Math.max(0.12 * size, 0.75);
  const freq = (2 * Math.PI) / Math.max(size / 4, 2);
  for (let n = 0; n < count; n++) {
    const r = new Stream(fmix((base + Math.imul(n, 0x632be5ab)) >>> 0));
    const k = Math.floor(r.next() * classes);
    labels[n] = k;
    const angle = (2 * Math.PI * k) / classes;
    const jitter = 0.08 * size;
    const cy = (height - 1) / 2 + ring * Math.sin(angle) + jitter * (2 * r.next() - 1);
    const cx = (width - 1) / 2 + ring * Math.cos(angle) + jitter * (2 * r.next() - 1);
    const theta = (Math.PI * k) / classes;
    const ct = Math.cos(theta), st = Math.sin(theta);
    const phase = 2 * Math.PI * r.next();
    const amp = 0.7 + 0.3 * r.next();
    for (let c = 0; c < channels; c++) {
      const gain = channels === 1
        ? 1
        : 0.55 + 0.45 * Math.cos(angle + (2 * Math.PI * c) / channels);
      const out = images.subarray((n * channels + c) * plane, (n * channels + c + 1) * plane);
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const d2 = (y - cy) ** 2 + (x - cx) ** 2;
          const blob = Math.exp(-d2 / (2 * sigma * sigma));
          const stripes = 0.5 + 0.5 * Math.sin(freq * (x * ct + y * st) + phase);
          const v = 0.1 + amp * gain * (0.65 * blob + 0.25 * stripes) + noise * r.normal();
          out[y * width + x] = Math.max(0, Math.min(255, Math.round(v * 255)));
        }
      }
    }
  }
  return {
    name: "synthetic",
    split,
    images,
    labels,
    count,
    channels,
    height,
    width,
    classes: Array.from({ length: classes }, (_, i) => `class ${i}`),
    source: `synthetic (seed ${seed}, ${split})`,
  };
}
