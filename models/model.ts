/**
 * A materialized model: an architecture whose parameters, gradients and running statistics live
 * on the GPU, with d2l's initialization, PyTorch-compatible state dicts and checkpoints.
 *
 * @module
 */

import { formatShape, type Gpu, type Shape, type Tensor } from "../gpu/mod.ts";
import {
  type Ctx,
  type Forward,
  type Layer,
  namedParams,
  type Param,
  stateEntries,
  type StateEntry,
} from "../layers/mod.ts";
import { ParamArena } from "./arena.ts";
import type { HostStateDict, HostTensor } from "./safetensors.ts";
import { type Architecture, buildArchitecture, type ModelName, type ModelOptions } from "./zoo.ts";
import { customArchitecture, type CustomModelSpec } from "./custom.ts";
import {
  predict as predictImages,
  type PredictInput,
  type Prediction,
  type PredictOptions,
} from "./predict.ts";

/**
 * Storage type of a model's activations, their gradients and the weights its kernels read:
 * `f32`, or `f16` (f16 working copies of the weights; master weights, biases, BatchNorm
 * parameters and statistics and every parameter gradient stay f32).
 */
export type Precision = "f32" | "f16";

/** The precisions, in the order the CLIs list them. */
export const PRECISIONS: readonly Precision[] = ["f32", "f16"];

/**
 * Whether a string names a precision.
 *
 * @example
 * ```ts
 * import { isPrecision } from "@modern-cnn/webgpu/models";
 * isPrecision("f16"); // true
 * ```
 */
export function isPrecision(v: unknown): v is Precision {
  return (PRECISIONS as readonly unknown[]).includes(v);
}

/**
 * Why `gpu` cannot run `precision` (a sentence naming the adapter), or null when it can.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { precisionUnsupported } from "@modern-cnn/webgpu/models";
 * console.log(precisionUnsupported(await getGpu(), "f16") ?? "f16 runs here");
 * ```
 */
export function precisionUnsupported(gpu: Gpu, precision: Precision): string | null {
  return precision === "f16" && !gpu.features.f16
    ? `precision f16 needs the adapter's 'shader-f16' feature, which '${gpu.description}' lacks`
    : null;
}

/** Options of {@linkcode createModel}. */
export interface CreateModelOptions extends ModelOptions {
  /** Seed of the initialization; default 0. */
  readonly seed?: number;
  /** Precision (see {@linkcode Model.setPrecision}); default f32. */
  readonly precision?: Precision;
}

/**
 * A seeded generator for initialization (SplitMix32 over a counter): reproducible for a seed.
 */
function initRng(seed: number): () => number {
  let state = (seed ^ 0x5bd1e995) >>> 0;
  return () => {
    let z = (state = (state + 0x9e3779b9) >>> 0);
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}

/**
 * Initial values of a parameter as d2l's `train_ch6` sets them: Xavier-uniform conv and linear
 * weights (bound √(6/(fan_in+fan_out))), biases as PyTorch's default (uniform ±1/√fan_in),
 * BatchNorm weight 1 and bias 0.
 *
 * @example
 * ```ts
 * import { initialValues } from "./model.ts";
 * import { param } from "@modern-cnn/webgpu/layers";
 * const w = initialValues(param("weight", [4, 3], { init: "xavier-uniform", fanIn: 3, fanOut: 4 }), () => 0.5);
 * ```
 */
export function initialValues(p: Param, random: () => number): Float32Array {
  const n = p.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  let bound = 0;
  switch (p.init) {
    case "ones":
      return out.fill(1);
    case "zeros":
      return out;
    case "xavier-uniform":
      bound = Math.sqrt(6 / (p.fanIn + p.fanOut));
      break;
    case "bias-uniform":
      bound = 1 / Math.sqrt(p.fanIn);
      break;
  }
  for (let i = 0; i < n; i++) out[i] = (random() * 2 - 1) * bound;
  return out;
}

/**
 * Builds an architecture and allocates and initializes its parameters, gradients and running
 * statistics on the GPU: a zoo model by its name (`{ name: "lenet" }`), or a model of your own
 * from any layer tree, a name and an input shape (`{ name: "my-cnn", net, inputShape: [1, 28, 28] }`,
 * see {@linkcode CustomModelSpec}; the zoo's options other than seed and precision do not apply).
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { conv2d, flatten, linear, sequential } from "@modern-cnn/webgpu/layers";
 * import { createModel } from "@modern-cnn/webgpu/models";
 * const gpu = await getGpu();
 * const model = createModel(gpu, { name: "lenet", seed: 1 });
 * console.log(model.parameterCount); // 61706
 * const net = sequential([
 *   conv2d({ inChannels: 1, outChannels: 4, kernel: 3, padding: 1 }),
 *   flatten(),
 *   linear({ inFeatures: 4 * 28 * 28, outFeatures: 10 }),
 * ]);
 * const mine = createModel(gpu, { name: "my-cnn", net, inputShape: [1, 28, 28] });
 * console.log(mine.parameterCount); // 31410
 * ```
 */
export function createModel(
  gpu: Gpu,
  options: CreateModelOptions & ({ name: ModelName } | CustomModelSpec),
): Model {
  const arch = "net" in options && options.net !== undefined
    ? customArchitecture(options as CustomModelSpec)
    : buildArchitecture(options.name as ModelName, options);
  const model = new Model(gpu, { arch, seed: options.seed ?? 0 });
  if (options.precision !== undefined) model.setPrecision(options.precision);
  return model;
}

/**
 * A model on the GPU. Forward/backward record work only; the state dict reads back on request.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { createModel } from "@modern-cnn/webgpu/models";
 * const gpu = await getGpu();
 * const model = createModel(gpu, { name: "lenet" });
 * const x = gpu.zeros([2, 1, 28, 28]);
 * const { y } = model.forward(x, { gpu, training: false, seed: 0 });
 * console.log(y.shape); // [2, 10]
 * ```
 */
export class Model {
  /** The runtime. */
  readonly gpu: Gpu;
  /** The architecture. */
  readonly arch: Architecture;
  /** The layer tree. */
  readonly net: Layer;
  /** Every (state-dict name, parameter). */
  readonly params: readonly (readonly [string, Param])[];
  /** Every state entry (parameters, running stats, counters), in state-dict order. */
  readonly state: readonly StateEntry[];
  #precision: Precision = "f32";
  #arena: ParamArena;

  /**
   * Materializes an architecture on `gpu` with a seeded initialization.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { buildArchitecture, Model } from "@modern-cnn/webgpu/models";
   * const m = new Model(await getGpu(), { arch: buildArchitecture("nin"), seed: 3 });
   * ```
   */
  constructor(gpu: Gpu, options: { arch: Architecture; seed?: number }) {
    this.gpu = gpu;
    this.arch = options.arch;
    this.net = options.arch.net;
    this.params = namedParams(this.net);
    this.state = stateEntries(this.net);
    const random = initRng(options.seed ?? 0);
    // Initial values are drawn parameter by parameter, in state-dict order.
    this.#arena = new ParamArena(gpu, this.params, { initial: (p) => initialValues(p, random) });
    for (const e of this.state) {
      if (e.kind === "param") {
        // A layer tree materialized again drops the optimizer state and copies of before.
        e.param.momentum?.dispose();
        e.param.half?.dispose();
        e.param.momentum = e.param.half = null;
      } else if (e.kind === "buffer") {
        e.buffer.value?.dispose();
        const v = new Float32Array(e.buffer.shape.reduce((a, b) => a * b, 1));
        if (e.buffer.init === "ones") v.fill(1);
        e.buffer.value = gpu.tensor(v, { shape: e.buffer.shape });
      } else {
        e.counter.value = 0;
      }
    }
  }

  /**
   * The parameters, gradients, SGD momentum and f16 copies, each in one buffer that every
   * parameter's tensors view ({@linkcode ParamArena}): zeroing the gradients, the SGD update, the
   * copies and the Inf/NaN check are one operation each for the whole model.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const m = createModel(await getGpu(), { name: "lenet" });
   * console.log(m.arena.slots.length, m.arena.values.shape); // 10 [62336] (61706 and padding)
   * ```
   */
  get arena(): ParamArena {
    return this.#arena;
  }

  /**
   * The precision set by {@linkcode Model.setPrecision} (default f32).
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).precision; // "f32"
   * ```
   */
  get precision(): Precision {
    return this.#precision;
  }

  /**
   * Chooses the storage precision. `f16` gives every weight (parameters of rank >= 2) an f16
   * working copy, cast from the f32 master value now and rewritten by the optimizer after each
   * step (see {@linkcode Model.syncHalf}); layers read it when their input is f16, so feed inputs of
   * dtype `model.precision`. Biases, BatchNorm parameters and statistics and all gradients
   * stay f32. `f32` frees the copies.
   *
   * @throws {RangeError} for a precision other than f32/f16.
   * @throws {TypeError} for f16 when the device lacks the `shader-f16` feature.
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const gpu = await getGpu();
   * const m = createModel(gpu, { name: "lenet" });
   * if (gpu.features.f16) m.setPrecision("f16");
   * ```
   */
  setPrecision(precision: Precision): void {
    if (!isPrecision(precision)) {
      throw new RangeError(`${this.arch.name}: precision must be f32 or f16, got ${precision}`);
    }
    const unsupported = precisionUnsupported(this.gpu, precision);
    if (unsupported) throw new TypeError(`${this.arch.name}: ${unsupported} (use f32)`);
    this.#precision = precision;
    if (precision === "f16") this.#arena.enableHalves((p) => p.shape.length >= 2);
    else this.#arena.disableHalves();
  }

  /**
   * Rewrites every weight's f16 working copy from its f32 master value (records one cast over
   * the arena; no-op in f32). The trainer's SGD step does this itself; call it after changing
   * master values directly.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).syncHalf();
   * ```
   */
  syncHalf(): void {
    this.#arena.syncHalves();
  }

  /**
   * Number of trainable parameters.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "resnet" }).parameterCount; // 11178378
   * ```
   */
  get parameterCount(): number {
    return this.params.reduce((s, [, p]) => s + p.shape.reduce((a, b) => a * b, 1), 0);
  }

  /**
   * The input shape for a batch and a square size; throws if the size does not fit.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).inputShape(256, 28); // [256, 1, 28, 28]
   * ```
   */
  inputShape(batch: number, size: number): Shape {
    return [batch, this.arch.inChannels, size, size];
  }

  /**
   * Records the forward pass; returns the logits (owned by the caller) and the cache.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const gpu = await getGpu();
   * const m = createModel(gpu, { name: "lenet" });
   * const f = m.forward(gpu.zeros([1, 1, 28, 28]), { gpu, training: true, seed: 1 });
   * ```
   */
  forward(x: Tensor, ctx: Ctx): Forward<unknown> {
    if (x.shape.length !== 4 || x.shape[1] !== this.arch.inChannels) {
      throw new TypeError(
        `${this.arch.name}: input ${
          formatShape(x.shape)
        }, expected [n, ${this.arch.inChannels}, h, w]`,
      );
    }
    return this.net.forward(x, ctx);
  }

  /**
   * Records the backward pass from the logits' gradient; accumulates every parameter's gradient.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const gpu = await getGpu();
   * const m = createModel(gpu, { name: "lenet" });
   * const ctx = { gpu, training: true, seed: 1 };
   * const f = m.forward(gpu.zeros([1, 1, 28, 28]), ctx);
   * m.backward(gpu.zeros([1, 10]), { cache: f.cache, ctx });
   * ```
   */
  backward(dy: Tensor, options: { cache: unknown; ctx: Ctx }): void {
    const dx = this.net.backward(dy, { cache: options.cache, ctx: options.ctx, needDx: false });
    dx?.dispose();
  }

  /**
   * Records zero-filling of every gradient (one clear of the gradient arena).
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).zeroGrad();
   * ```
   */
  zeroGrad(): void {
    this.#arena.zeroGrad();
  }

  /**
   * Predicts the classes of images in evaluation mode, in one call with one readback: PNG or JPEG bytes,
   * u8 or f32 planes with their shape, `ImageData` or `ImageBitmap`, converted to the model's
   * channels, resized to `options.resize` (default the model's input size; give a checkpoint's
   * `resize`) and normalized on the GPU as in training. Returns per image the probabilities and
   * the `topK` classes with their names. See the function `predict` for the details.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { FASHION_MNIST_CLASSES } from "@modern-cnn/webgpu/data";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const model = createModel(await getGpu(), { name: "lenet" });
   * const image = { data: new Uint8Array(28 * 28), shape: [1, 28, 28] };
   * const [p] = await model.predict([image], { topK: 3, classes: FASHION_MNIST_CLASSES });
   * console.log(p.top.map((t) => t.name)); // e.g. ["sandal", "pullover", "dress"]
   * ```
   */
  predict(images: PredictInput, options: PredictOptions = {}): Promise<Prediction[]> {
    return predictImages(this, images, options);
  }

  /**
   * Reads the whole state to the CPU with the reference's names, shapes and dtypes.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const sd = await createModel(await getGpu(), { name: "lenet" }).stateDict();
   * console.log([...sd.keys()][0]); // "0.weight"
   * ```
   */
  async stateDict(): Promise<HostStateDict> {
    const out: HostStateDict = new Map();
    for (const e of this.state) {
      if (e.kind === "counter") {
        out.set(e.name, {
          dtype: "I64",
          shape: [],
          data: new BigInt64Array([BigInt(e.counter.value)]),
        });
      } else {
        const t = e.kind === "param" ? e.param.value! : e.buffer.value!;
        out.set(e.name, {
          dtype: "F32",
          shape: [...t.shape],
          data: await t.toArray() as Float32Array,
        });
      }
    }
    return out;
  }

  /**
   * Loads a state dict. Every key must match (names, shapes, dtypes) or nothing is loaded and one
   * `TypeError` names every missing key, unexpected key and mismatch.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * const gpu = await getGpu();
   * const a = createModel(gpu, { name: "lenet", seed: 1 });
   * const b = createModel(gpu, { name: "lenet", seed: 2 });
   * b.loadStateDict(await a.stateDict());
   * ```
   */
  loadStateDict(sd: HostStateDict, options: { source?: string } = {}): void {
    const problems: string[] = [];
    const names = new Set(this.state.map((e) => e.name));
    const missing = this.state.filter((e) => !sd.has(e.name)).map((e) => e.name);
    const unexpected = [...sd.keys()].filter((k) => !names.has(k));
    if (missing.length) problems.push(`missing keys: ${missing.join(", ")}`);
    if (unexpected.length) problems.push(`unexpected keys: ${unexpected.join(", ")}`);
    for (const e of this.state) {
      const t = sd.get(e.name);
      if (!t) continue;
      const wantShape = e.kind === "counter"
        ? []
        : e.kind === "param"
        ? e.param.shape
        : e.buffer.shape;
      const wantDtype = e.kind === "counter" ? "I64" : "F32";
      if (t.dtype !== wantDtype) {
        problems.push(`${e.name}: dtype ${t.dtype}, expected ${wantDtype}`);
      }
      if (!sameDims(t.shape, wantShape)) {
        problems.push(
          `${e.name}: shape ${formatShape(t.shape)}, expected ${formatShape(wantShape)}`,
        );
      }
    }
    if (problems.length) {
      throw new TypeError(
        `${this.arch.name}: cannot load state${options.source ? ` from ${options.source}` : ""} ` +
          `(nothing was loaded): ${problems.join("; ")}`,
      );
    }
    for (const e of this.state) {
      const t = sd.get(e.name)! as HostTensor;
      if (e.kind === "counter") e.counter.value = Number((t.data as BigInt64Array)[0]);
      else {this.gpu.write(
          e.kind === "param" ? e.param.value! : e.buffer.value!,
          t.data as Float32Array,
        );}
    }
    this.syncHalf();
  }

  /**
   * Frees every tensor of the model (parameters, gradients, momentum, running stats).
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { createModel } from "@modern-cnn/webgpu/models";
   * createModel(await getGpu(), { name: "lenet" }).dispose();
   * ```
   */
  dispose(): void {
    this.#arena.dispose();
    for (const e of this.state) {
      if (e.kind === "buffer") {
        e.buffer.value?.dispose();
        e.buffer.value = null;
      }
    }
  }
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
