/**
 * The browser demo's training session, free of DOM code so that it can also run under Deno:
 * fetching Fashion-MNIST from the demo server, and training with the library's own
 * {@linkcode Trainer} in short chunks so that the page can draw loss and accuracy as it goes.
 *
 * Or your own images: `imageFolderFromFiles` (`folder.ts`) builds the same data from the `File`s of
 * an `<input type=file webkitdirectory>` (one subfolder per class).
 *
 * Only browser-safe parts of the package are used here (the GPU runtime, the models, the data
 * kernel, the pure IDX parser, the pure image-folder code and the class names): nothing that
 * touches a file system, a process or the environment ends up in the bundle.
 *
 * @module
 */

import type { Gpu } from "../gpu/mod.ts";
import { prepareBatch } from "../kernels/data/index.ts";
import {
  createModel,
  type GpuImageSet,
  type ImageSet,
  type Model,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { permutation } from "../models/trainer.ts";
import { FASHION_MNIST_CLASSES } from "../data/dataset.ts";
import { checkIdxPair, parseIdxImages, parseIdxLabels } from "../data/idx.ts";

/** The models the demo offers. */
export const DEMO_MODELS = ["lenet", "lenet-bn", "resnet"] as const;

/** One of {@linkcode DEMO_MODELS}. */
export type DemoModel = typeof DEMO_MODELS[number];

/**
 * Fashion-MNIST's class names, indexed by label (the package's own list; `data/dataset.ts` is
 * safe to bundle: its file-system code is only reached through `loadDataset`, which the bundler
 * drops).
 */
export const CLASS_NAMES: readonly string[] = FASHION_MNIST_CLASSES;

/** What one demo run does. */
export interface DemoConfig {
  /** The model. */
  readonly model: DemoModel;
  /** Learning rate. */
  readonly lr: number;
  /** Batch size. */
  readonly batchSize: number;
  /** Square input size the 28×28 images are resized to. */
  readonly resize: number;
  /** SGD steps to take in all. */
  readonly steps: number;
  /** Evaluate on the test set every this many steps (and at the end). */
  readonly evalEvery: number;
  /** Test images used by the evaluations during training. */
  readonly evalLimit: number;
  /** Test images used by the final evaluation (the first ones of the 10 000). */
  readonly testLimit: number;
  /** Seed of the initialization and of the shuffling. */
  readonly seed: number;
}

/**
 * Each model's defaults: d2l's recipe for the LeNets, and a small ResNet-18 run (32×32 inputs,
 * batch 32) that a software adapter can still drive.
 */
export const PRESETS: Readonly<Record<DemoModel, Omit<DemoConfig, "model">>> = {
  "lenet": {
    lr: 0.9,
    batchSize: 256,
    resize: 28,
    steps: 470,
    evalEvery: 50,
    evalLimit: 1000,
    testLimit: 10000,
    seed: 0,
  },
  "lenet-bn": {
    lr: 1.0,
    batchSize: 256,
    resize: 28,
    steps: 235,
    evalEvery: 25,
    evalLimit: 1000,
    testLimit: 10000,
    seed: 0,
  },
  "resnet": {
    lr: 0.05,
    batchSize: 32,
    resize: 32,
    steps: 200,
    evalEvery: 25,
    evalLimit: 256,
    testLimit: 1000,
    seed: 0,
  },
};

/**
 * Checks a configuration; throws RangeError naming the bad value.
 *
 * @example
 * ```ts
 * import { checkConfig, PRESETS } from "./session.ts";
 * checkConfig({ model: "lenet", ...PRESETS.lenet });
 * ```
 */
export function checkConfig(c: DemoConfig): DemoConfig {
  if (!DEMO_MODELS.includes(c.model)) {
    throw new RangeError(`demo: unknown model '${c.model}', expected ${DEMO_MODELS.join(", ")}`);
  }
  if (!(c.lr > 0) || !Number.isFinite(c.lr)) {
    throw new RangeError(`demo: lr must be > 0, got ${c.lr}`);
  }
  for (
    const k of ["batchSize", "resize", "steps", "evalEvery", "evalLimit", "testLimit"] as const
  ) {
    if (!Number.isInteger(c[k]) || c[k] < 1) {
      throw new RangeError(`demo: ${k} must be a positive integer, got ${c[k]}`);
    }
  }
  if (c.model !== "resnet" && c.resize < 28) {
    throw new RangeError(`demo: ${c.model} needs inputs of at least 28×28, got ${c.resize}`);
  }
  return c;
}

/** Fashion-MNIST in memory (or your own images): both splits as the trainer takes them. */
export interface FashionMnist {
  /** 60 000 training images. */
  readonly train: ImageSet;
  /** 10 000 test images. */
  readonly test: ImageSet;
  /** Class names by label; Fashion-MNIST's when absent. */
  readonly classes?: readonly string[];
  /** The data set's name; `Fashion-MNIST` when absent. */
  readonly name?: string;
}

/** The four files' URL paths on the demo server. */
export const DATA_PATHS: {
  readonly train: { readonly images: string; readonly labels: string };
  readonly test: { readonly images: string; readonly labels: string };
} = {
  train: { images: "data/train-images", labels: "data/train-labels" },
  test: { images: "data/test-images", labels: "data/test-labels" },
};

async function fetchBytes(url: string): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) {
    throw new Error(`GET ${url}: ${res.status} ${res.statusText} ${await res.text()}`.trim());
  }
  return new Uint8Array(await res.arrayBuffer());
}

/**
 * Fetches Fashion-MNIST's four IDX files from the demo server (gzipped or plain; gzip is inflated
 * with `DecompressionStream` by the package's IDX parser) and checks that they fit together.
 *
 * @example
 * ```ts
 * import { fetchFashionMnist } from "./session.ts";
 * const { train, test } = await fetchFashionMnist(new URL("http://127.0.0.1:8000/"));
 * console.log(train.count, test.count); // 60000 10000
 * ```
 */
export async function fetchFashionMnist(
  base: URL,
  onProgress: (what: string) => void = () => {},
): Promise<FashionMnist> {
  const load = async (split: "train" | "test"): Promise<ImageSet> => {
    const paths = DATA_PATHS[split];
    const imagesUrl = new URL(paths.images, base).href;
    const labelsUrl = new URL(paths.labels, base).href;
    onProgress(`fetching the ${split} split`);
    const [imageBytes, labelBytes] = await Promise.all([
      fetchBytes(imagesUrl),
      fetchBytes(labelsUrl),
    ]);
    onProgress(`inflating and parsing the ${split} split`);
    const images = await parseIdxImages(imageBytes, { file: imagesUrl });
    const labels = await parseIdxLabels(labelBytes, { file: labelsUrl });
    checkIdxPair(images, labels, { imagesFile: imagesUrl, labelsFile: labelsUrl, classes: 10 });
    return {
      images: images.data,
      labels,
      count: images.count,
      channels: 1,
      height: images.height,
      width: images.width,
    };
  };
  const test = await load("test");
  const train = await load("train");
  return { train, test };
}

/** What one chunk of training steps measured. */
export interface ChunkResult {
  /** Steps done so far (after this chunk). */
  readonly step: number;
  /** Epochs done so far, fractional. */
  readonly epoch: number;
  /** Mean training loss over the chunk's examples. */
  readonly loss: number;
  /** Training accuracy over the chunk's examples. */
  readonly trainAcc: number;
  /** Examples per second over the chunk (wall time, including its one readback). */
  readonly examplesPerSec: number;
  /** Examples per second over every chunk so far (evaluations not counted). */
  readonly meanExamplesPerSec: number;
}

/** What one evaluation measured. */
export interface EvalResult {
  /** Steps done when it ran. */
  readonly step: number;
  /** Test accuracy. */
  readonly testAcc: number;
  /** Test images it used. */
  readonly images: number;
}

/** Callbacks of {@linkcode DemoSession.run}. */
export interface RunHooks {
  /** After each chunk of steps. */
  readonly onChunk?: (r: ChunkResult) => void;
  /** After each evaluation. */
  readonly onEval?: (r: EvalResult) => void;
  /** Polled between chunks: return true to stop early. */
  readonly shouldStop?: () => boolean;
}

/** Aim for this long per chunk, so that the curves move about once a second. */
const CHUNK_SECONDS = 0.8;
/** Most steps in one chunk. */
const MAX_CHUNK_STEPS = 25;

/**
 * A training run of the demo: the model, the trainer and the data uploaded to the GPU.
 *
 * Each chunk gathers the next examples of the epoch's shuffled order on the CPU, uploads them
 * and trains on them with {@linkcode Trainer.trainEpoch} (one readback per chunk, which gives
 * the chunk's mean loss and accuracy); the chunk length adapts so that a chunk takes about
 * 0.8 s.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/mod.ts";
 * import { DemoSession, fetchFashionMnist, PRESETS } from "./session.ts";
 * const data = await fetchFashionMnist(new URL("http://127.0.0.1:8000/"));
 * const s = new DemoSession(await getGpu(), data, { model: "lenet", ...PRESETS.lenet, steps: 20 });
 * await s.run({ onChunk: (r) => console.log(r.step, r.loss) });
 * ```
 */
export class DemoSession {
  /** The runtime. */
  readonly gpu: Gpu;
  /** The configuration. */
  readonly config: DemoConfig;
  /** The model. */
  readonly model: Model;
  /** The trainer. */
  readonly trainer: Trainer;
  /** Steps taken. */
  step = 0;
  readonly #data: FashionMnist;
  readonly #test: GpuImageSet;
  #chunks = 0;

  /**
   * Creates the model and uploads the test set.
   *
   * @example
   * ```ts
   * import { getGpu } from "../gpu/mod.ts";
   * import { DemoSession, fetchFashionMnist, PRESETS } from "./session.ts";
   * const data = await fetchFashionMnist(new URL("http://127.0.0.1:8000/"));
   * new DemoSession(await getGpu(), data, { model: "lenet-bn", ...PRESETS["lenet-bn"] });
   * ```
   */
  constructor(gpu: Gpu, data: FashionMnist, config: DemoConfig) {
    this.gpu = gpu;
    this.config = checkConfig(config);
    this.#data = data;
    const classes = data.classes ?? CLASS_NAMES;
    if (config.batchSize > data.train.count) {
      throw new RangeError(
        `demo: batch size ${config.batchSize} is larger than the ${data.train.count} training ` +
          "images; choose a smaller batch size",
      );
    }
    if (data.test.count === 0) {
      throw new RangeError(
        "demo: there are no test images (each class keeps 20% of its images for testing, none " +
          "when it has one image); add images",
      );
    }
    this.model = createModel(gpu, {
      name: config.model,
      seed: config.seed,
      inChannels: data.train.channels,
      numClasses: classes.length,
    });
    this.trainer = new Trainer(this.model, {
      lr: config.lr,
      batchSize: config.batchSize,
      resize: config.resize,
      seed: config.seed,
    });
    this.#test = uploadImageSet(gpu, data.test);
  }

  /**
   * Trains `config.steps` steps (or until `shouldStop`), evaluating every `evalEvery` steps on
   * the first `evalLimit` test images, and at the end on the first `testLimit` (or, when stopped
   * early, `evalLimit`) test images.
   *
   * @example
   * ```ts
   * import { getGpu } from "../gpu/mod.ts";
   * import { DemoSession, fetchFashionMnist, PRESETS } from "./session.ts";
   * const data = await fetchFashionMnist(new URL("http://127.0.0.1:8000/"));
   * const s = new DemoSession(await getGpu(), data, { model: "lenet", ...PRESETS.lenet });
   * await s.run({ onEval: (e) => console.log(e.step, e.testAcc) });
   * ```
   */
  async run(hooks: RunHooks = {}): Promise<void> {
    const c = this.config;
    const train = this.#data.train;
    const pixels = train.channels * train.height * train.width;
    const perEpoch = Math.floor(train.count / c.batchSize); // full batches only
    let chunkSteps = 1;
    let nextEval = c.evalEvery;
    let order = permutation(train.count, c.seed);
    let epoch = 0;
    let pos = 0; // step within the epoch
    let examples = 0;
    let trainSeconds = 0;
    while (this.step < c.steps && !(hooks.shouldStop?.() ?? false)) {
      if (pos >= perEpoch) {
        epoch++;
        pos = 0;
        order = permutation(train.count, (c.seed * 1000003 + epoch) >>> 0);
      }
      const steps = Math.min(chunkSteps, c.steps - this.step, perEpoch - pos, nextEval - this.step);
      const n = steps * c.batchSize;
      const images = new Uint8Array(n * pixels);
      const labels = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const src = order[pos * c.batchSize + i];
        images.set(train.images.subarray(src * pixels, (src + 1) * pixels), i * pixels);
        labels[i] = train.labels[src];
      }
      const t0 = performance.now();
      const set = uploadImageSet(this.gpu, { ...train, images, labels, count: n });
      let r;
      try {
        r = await this.trainer.trainEpoch(set, { epoch: this.#chunks++, shuffle: false });
      } finally {
        set.images.dispose();
        set.labels.dispose();
      }
      const seconds = (performance.now() - t0) / 1000;
      this.step += steps;
      pos += steps;
      examples += n;
      trainSeconds += seconds;
      hooks.onChunk?.({
        step: this.step,
        epoch: epoch + pos / perEpoch,
        loss: r.loss,
        trainAcc: r.trainAcc,
        examplesPerSec: n / seconds,
        meanExamplesPerSec: examples / trainSeconds,
      });
      const perStep = seconds / steps;
      chunkSteps = Math.max(1, Math.min(MAX_CHUNK_STEPS, Math.round(CHUNK_SECONDS / perStep)));
      if (this.step >= nextEval && this.step < c.steps) {
        hooks.onEval?.(await this.evaluate(c.evalLimit));
        nextEval += c.evalEvery;
      }
      // Let the page repaint between chunks.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    const stopped = this.step < c.steps;
    hooks.onEval?.(await this.evaluate(stopped ? c.evalLimit : c.testLimit));
  }

  /**
   * Test accuracy on the first `limit` test images (evaluation mode).
   *
   * @example
   * ```ts
   * import { getGpu } from "../gpu/mod.ts";
   * import { DemoSession, fetchFashionMnist, PRESETS } from "./session.ts";
   * const data = await fetchFashionMnist(new URL("http://127.0.0.1:8000/"));
   * const s = new DemoSession(await getGpu(), data, { model: "lenet", ...PRESETS.lenet });
   * console.log((await s.evaluate(1000)).testAcc); // about 0.1 before training
   * ```
   */
  async evaluate(limit: number): Promise<EvalResult> {
    const images = Math.min(limit, this.#test.count);
    const testAcc = await this.trainer.evaluate(this.#test, { limit: images });
    return { step: this.step, testAcc, images };
  }

  /**
   * The predicted class of each of the given test images (evaluation mode, one readback).
   *
   * @example
   * ```ts
   * import { getGpu } from "../gpu/mod.ts";
   * import { DemoSession, fetchFashionMnist, PRESETS } from "./session.ts";
   * const data = await fetchFashionMnist(new URL("http://127.0.0.1:8000/"));
   * const s = new DemoSession(await getGpu(), data, { model: "lenet", ...PRESETS.lenet });
   * console.log(await s.predict([0, 1, 2])); // e.g. Uint8Array [9, 2, 1]
   * ```
   */
  async predict(indices: readonly number[]): Promise<Uint8Array> {
    const gpu = this.gpu;
    const batch = indices.length;
    const set = this.#test;
    const logits = gpu.scope(() => {
      const idx = gpu.tensor(Uint32Array.from(indices), { shape: [batch] });
      const x = gpu.empty(this.model.inputShape(batch, this.config.resize));
      const labels = gpu.empty([batch], { dtype: "i32" });
      prepareBatch({ x, labels, images: set.images, srcLabels: set.labels, indices: idx }, {
        batch,
        channels: set.channels,
        srcH: set.height,
        srcW: set.width,
        dstH: this.config.resize,
        dstW: this.config.resize,
      });
      return this.model.forward(x, { gpu, training: false, seed: 0 }).y;
    });
    const values = await logits.toArray() as Float32Array;
    logits.dispose();
    const classes = values.length / batch;
    const out = new Uint8Array(batch);
    for (let b = 0; b < batch; b++) {
      let best = 0;
      for (let k = 1; k < classes; k++) {
        if (values[b * classes + k] > values[b * classes + best]) best = k;
      }
      out[b] = best;
    }
    return out;
  }

  /**
   * Frees the GPU memory of the test set and the model's parameters.
   *
   * @example
   * ```ts
   * import { getGpu } from "../gpu/mod.ts";
   * import { DemoSession, fetchFashionMnist, PRESETS } from "./session.ts";
   * const data = await fetchFashionMnist(new URL("http://127.0.0.1:8000/"));
   * new DemoSession(await getGpu(), data, { model: "lenet", ...PRESETS.lenet }).dispose();
   * ```
   */
  dispose(): void {
    this.#test.images.dispose();
    this.#test.labels.dispose();
    this.model.dispose();
  }
}

/** Where the page is. */
export type DemoState =
  | "starting"
  | "no-webgpu"
  | "loading"
  | "ready"
  | "training"
  | "done"
  | "stopped"
  | "error";

/** The demo page's progress, published as `window.__demo` for the end-to-end test. */
export interface DemoStatus {
  /** Where the page is. */
  state: DemoState;
  /** The last notice shown (the error message in `error` / `no-webgpu`). */
  message: string;
  /** The adapter's description, e.g. `google swiftshader`. */
  adapter: string | null;
  /** The adapter's `info` fields, and whether it is a fallback (software) adapter. */
  adapterInfo: {
    vendor: string;
    architecture: string;
    device: string;
    description: string;
    isFallbackAdapter: boolean | null;
  } | null;
  /** The configuration of the current or last run. */
  config: DemoConfig | null;
  /** Steps taken. */
  steps: number;
  /** Step count at the end of each chunk (x of `losses` and `trainAcc`). */
  lossSteps: number[];
  /** Mean training loss of each chunk. */
  losses: number[];
  /** Training accuracy of each chunk. */
  trainAcc: number[];
  /** Every evaluation so far. */
  evals: EvalResult[];
  /** The last test accuracy, or null before the first evaluation. */
  testAcc: number | null;
  /** Examples per second of the last chunk. */
  examplesPerSec: number;
  /** Examples per second over the whole run so far (evaluations not counted). */
  meanExamplesPerSec: number;
  /** Seconds since training started. */
  elapsedSeconds: number;
  /** The grid's test images: index, true label and prediction (-1 before one). */
  predictions: { index: number; label: number; pred: number }[];
}
