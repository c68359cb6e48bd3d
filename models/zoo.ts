/**
 * The architectures of the seed documents, built from layers with exactly the module trees (and
 * so the state-dict names) of d2l's PyTorch code, mirrored in `tests/fixtures/d2l_nets.py`.
 *
 * One file of about 500 lines on purpose: the ten builders read in d2l's chapter order, next to
 * the names, recipes and the one switch that maps them; split by family, a reader would go back
 * and forth between three files to follow one model.
 *
 * @module
 */

import {
  activation,
  avgPool2d,
  batchNorm,
  chain,
  conv2d,
  denseBlock,
  dropout,
  flatten,
  globalAvgPool,
  inception,
  type Layer,
  linear,
  localResponseNorm,
  maxPool2d,
  residual,
  sequential,
} from "../layers/mod.ts";

/** The model names, as the reference's `BUILDERS`. */
export const MODEL_NAMES = [
  "lenet",
  "lenet-bn",
  "alexnet",
  "alexnet-lrn",
  "vgg",
  "nin",
  "googlenet",
  "resnet",
  "densenet",
  "mobilenet",
] as const;

/** One of {@linkcode MODEL_NAMES}. */
export type ModelName = typeof MODEL_NAMES[number];

/** The seed recipe of a model (the reference's `DEFAULTS`). */
export interface Recipe {
  /** Learning rate. */
  readonly lr: number;
  /** Epochs. */
  readonly epochs: number;
  /** Batch size. */
  readonly batchSize: number;
  /** Input resize (square). */
  readonly resize: number;
}

/** Each model's seed recipe: (lr, epochs, batch size, resize) as the reference's `DEFAULTS`. */
export const DEFAULTS: Readonly<Record<ModelName, Recipe>> = {
  "lenet": { lr: 0.9, epochs: 10, batchSize: 256, resize: 28 },
  "lenet-bn": { lr: 1.0, epochs: 10, batchSize: 256, resize: 28 },
  "alexnet": { lr: 0.01, epochs: 10, batchSize: 128, resize: 224 },
  "alexnet-lrn": { lr: 0.01, epochs: 10, batchSize: 128, resize: 224 },
  "vgg": { lr: 0.05, epochs: 10, batchSize: 128, resize: 224 },
  "nin": { lr: 0.1, epochs: 10, batchSize: 128, resize: 224 },
  "googlenet": { lr: 0.1, epochs: 10, batchSize: 128, resize: 96 },
  "resnet": { lr: 0.05, epochs: 10, batchSize: 256, resize: 96 },
  "densenet": { lr: 0.1, epochs: 10, batchSize: 256, resize: 96 },
  "mobilenet": { lr: 0.1, epochs: 10, batchSize: 256, resize: 96 },
};

/** Options shared by every builder. */
export interface ModelOptions {
  /** Input channels; default 1 (Fashion-MNIST). */
  readonly inChannels?: number;
  /** Classes; default 10. */
  readonly numClasses?: number;
  /** VGG: (convs, channels) per block; default VGG-11. */
  readonly convArch?: readonly (readonly [number, number])[];
  /** VGG: every width divided by this; default 4 (as the seed trains it). */
  readonly ratio?: number;
  /** ResNet: residual blocks per stage; default [2, 2, 2, 2] (ResNet-18; [3, 4, 6, 3] is ResNet-34). */
  readonly blocks?: readonly number[];
  /** DenseNet: growth rate; default 32. */
  readonly growthRate?: number;
  /** DenseNet: convs per dense block; default [4, 4, 4, 4]. */
  readonly blockSizes?: readonly number[];
  /** MobileNet: width multiplier; default 1. */
  readonly alpha?: number;
  /** MobileNet: `relu` (the seed) or `relu6`; default `relu`. */
  readonly activation?: "relu" | "relu6";
}

/**
 * A built architecture: its layer tree and what input it takes. The zoo's come from
 * {@linkcode buildArchitecture}, a model of your own from `customArchitecture`.
 */
export interface Architecture {
  /** The model name: one of {@linkcode MODEL_NAMES}, or any name of a model of your own. */
  readonly name: string;
  /** The layer tree (root), whose state-dict names equal the reference's. */
  readonly net: Layer;
  /** Input channels. */
  readonly inChannels: number;
  /** Classes. */
  readonly numClasses: number;
  /** The only input size the architecture accepts, when a Linear layer fixes it. */
  readonly fixedSize: number | null;
  /** The top-level blocks shown by the summary: name and layer. */
  readonly blocks: readonly (readonly [string, Layer])[];
  /** One example's input shape `[channels, height, width]` (the zoo: its seed recipe's resize). */
  readonly inputShape: readonly [number, number, number];
}

/** VGG-11's (convs, channels) per block. */
export const VGG11: readonly (readonly [number, number])[] = [
  [1, 64],
  [1, 128],
  [2, 256],
  [2, 512],
  [2, 512],
];

const relu = () => activation("relu");
const sigmoid = () => activation("sigmoid");

function lenet(cin: number, classes: number): Layer {
  return sequential([
    conv2d({ inChannels: cin, outChannels: 6, kernel: 5, padding: 2 }),
    sigmoid(),
    avgPool2d({ kernel: 2, stride: 2 }),
    conv2d({ inChannels: 6, outChannels: 16, kernel: 5 }),
    sigmoid(),
    avgPool2d({ kernel: 2, stride: 2 }),
    flatten(),
    linear({ inFeatures: 16 * 5 * 5, outFeatures: 120 }),
    sigmoid(),
    linear({ inFeatures: 120, outFeatures: 84 }),
    sigmoid(),
    linear({ inFeatures: 84, outFeatures: classes }),
  ]);
}

function lenetBn(cin: number, classes: number): Layer {
  return sequential([
    conv2d({ inChannels: cin, outChannels: 6, kernel: 5 }),
    batchNorm({ channels: 6 }),
    sigmoid(),
    avgPool2d({ kernel: 2, stride: 2 }),
    conv2d({ inChannels: 6, outChannels: 16, kernel: 5 }),
    batchNorm({ channels: 16 }),
    sigmoid(),
    avgPool2d({ kernel: 2, stride: 2 }),
    flatten(),
    linear({ inFeatures: 256, outFeatures: 120 }),
    batchNorm({ channels: 120, dims: 1 }),
    sigmoid(),
    linear({ inFeatures: 120, outFeatures: 84 }),
    batchNorm({ channels: 84, dims: 1 }),
    sigmoid(),
    linear({ inFeatures: 84, outFeatures: classes }),
  ]);
}

function alexnet(cin: number, classes: number, lrn: boolean): Layer {
  const norm = () => (lrn ? [localResponseNorm({ size: 5, alpha: 1e-4, beta: 0.75, k: 2 })] : []);
  return sequential([
    conv2d({ inChannels: cin, outChannels: 96, kernel: 11, stride: 4, padding: 1 }),
    relu(),
    ...norm(),
    maxPool2d({ kernel: 3, stride: 2 }),
    conv2d({ inChannels: 96, outChannels: 256, kernel: 5, padding: 2 }),
    relu(),
    ...norm(),
    maxPool2d({ kernel: 3, stride: 2 }),
    conv2d({ inChannels: 256, outChannels: 384, kernel: 3, padding: 1 }),
    relu(),
    conv2d({ inChannels: 384, outChannels: 384, kernel: 3, padding: 1 }),
    relu(),
    conv2d({ inChannels: 384, outChannels: 256, kernel: 3, padding: 1 }),
    relu(),
    maxPool2d({ kernel: 3, stride: 2 }),
    ...denseClassifier(6400, classes),
  ]);
}

/**
 * AlexNet's and VGG's classifier (d2l's): flatten, then two fully connected layers of 4096 with
 * ReLU and dropout 0.5, then the output layer. Spread into the model's sequential, so that its
 * layers keep their indices there (and so their state-dict names).
 */
function denseClassifier(inFeatures: number, classes: number): Layer[] {
  return [
    flatten(),
    linear({ inFeatures, outFeatures: 4096 }),
    relu(),
    dropout(0.5),
    linear({ inFeatures: 4096, outFeatures: 4096 }),
    relu(),
    dropout(0.5),
    linear({ inFeatures: 4096, outFeatures: classes }),
  ];
}

function vgg(
  cin: number,
  classes: number,
  arch: readonly (readonly [number, number])[],
  ratio: number,
): Layer {
  const blocks: Layer[] = [];
  let c = cin;
  for (const [convs, width] of arch) {
    const out = Math.floor(width / ratio);
    const layers: Layer[] = [];
    for (let i = 0; i < convs; i++) {
      layers.push(conv2d({ inChannels: c, outChannels: out, kernel: 3, padding: 1 }), relu());
      c = out;
    }
    layers.push(maxPool2d({ kernel: 2, stride: 2 }));
    blocks.push(sequential(layers));
  }
  return sequential([
    ...blocks,
    ...denseClassifier(c * 7 * 7, classes),
  ]);
}

function ninBlock(
  cin: number,
  cout: number,
  kernel: number,
  stride: number,
  padding: number,
): Layer {
  return sequential([
    conv2d({ inChannels: cin, outChannels: cout, kernel, stride, padding }),
    relu(),
    conv2d({ inChannels: cout, outChannels: cout, kernel: 1 }),
    relu(),
    conv2d({ inChannels: cout, outChannels: cout, kernel: 1 }),
    relu(),
  ]);
}

function nin(cin: number, classes: number): Layer {
  return sequential([
    ninBlock(cin, 96, 11, 4, 0),
    maxPool2d({ kernel: 3, stride: 2 }),
    ninBlock(96, 256, 5, 1, 2),
    maxPool2d({ kernel: 3, stride: 2 }),
    ninBlock(256, 384, 3, 1, 1),
    maxPool2d({ kernel: 3, stride: 2 }),
    dropout(0.5),
    ninBlock(384, classes, 3, 1, 1),
    globalAvgPool(),
    flatten(),
  ]);
}

function googlenet(cin: number, classes: number): Layer {
  const pool = () => maxPool2d({ kernel: 3, stride: 2, padding: 1 });
  const inc = (
    i: number,
    c1: number,
    c2: [number, number],
    c3: [number, number],
    c4: number,
  ) => inception({ inChannels: i, c1, c2, c3, c4 });
  const b1 = sequential([
    conv2d({ inChannels: cin, outChannels: 64, kernel: 7, stride: 2, padding: 3 }),
    relu(),
    pool(),
  ]);
  const b2 = sequential([
    conv2d({ inChannels: 64, outChannels: 64, kernel: 1 }),
    relu(),
    conv2d({ inChannels: 64, outChannels: 192, kernel: 3, padding: 1 }),
    relu(),
    pool(),
  ]);
  const b3 = sequential([
    inc(192, 64, [96, 128], [16, 32], 32),
    inc(256, 128, [128, 192], [32, 96], 64),
    pool(),
  ]);
  const b4 = sequential([
    inc(480, 192, [96, 208], [16, 48], 64),
    inc(512, 160, [112, 224], [24, 64], 64),
    inc(512, 128, [128, 256], [24, 64], 64),
    inc(512, 112, [144, 288], [32, 64], 64),
    inc(528, 256, [160, 320], [32, 128], 128),
    pool(),
  ]);
  const b5 = sequential([
    inc(832, 256, [160, 320], [32, 128], 128),
    inc(832, 384, [192, 384], [48, 128], 128),
    globalAvgPool(),
    flatten(),
  ]);
  return sequential([b1, b2, b3, b4, b5, linear({ inFeatures: 1024, outFeatures: classes })]);
}

function resnet(cin: number, classes: number, blocks: readonly number[]): Layer {
  const b1 = sequential([
    conv2d({ inChannels: cin, outChannels: 64, kernel: 7, stride: 2, padding: 3 }),
    batchNorm({ channels: 64 }),
    relu(),
    maxPool2d({ kernel: 3, stride: 2, padding: 1 }),
  ]);
  const stages: Layer[] = [];
  let c = 64;
  blocks.forEach((count, stage) => {
    const width = 64 * 2 ** stage;
    const list: Layer[] = [];
    for (let i = 0; i < count; i++) {
      if (i === 0 && stage !== 0) {
        list.push(residual({ inChannels: c, channels: width, use1x1: true, stride: 2 }));
      } else {
        list.push(residual({ inChannels: width, channels: width }));
      }
      c = width;
    }
    stages.push(sequential(list));
  });
  return sequential([
    b1,
    ...stages,
    globalAvgPool(),
    flatten(),
    linear({ inFeatures: c, outFeatures: classes }),
  ]);
}

function transition(cin: number, cout: number): Layer {
  return sequential([
    batchNorm({ channels: cin }),
    relu(),
    conv2d({ inChannels: cin, outChannels: cout, kernel: 1 }),
    avgPool2d({ kernel: 2, stride: 2 }),
  ]);
}

function densenet(cin: number, classes: number, growth: number, sizes: readonly number[]): Layer {
  const b1 = sequential([
    conv2d({ inChannels: cin, outChannels: 64, kernel: 7, stride: 2, padding: 3 }),
    batchNorm({ channels: 64 }),
    relu(),
    maxPool2d({ kernel: 3, stride: 2, padding: 1 }),
  ]);
  const blks: Layer[] = [];
  let c = 64;
  sizes.forEach((convs, i) => {
    blks.push(denseBlock({ numConvs: convs, inChannels: c, growth }));
    c += convs * growth;
    if (i !== sizes.length - 1) {
      blks.push(transition(c, Math.floor(c / 2)));
      c = Math.floor(c / 2);
    }
  });
  return sequential([
    b1,
    ...blks,
    batchNorm({ channels: c }),
    relu(),
    globalAvgPool(),
    flatten(),
    linear({ inFeatures: c, outFeatures: classes }),
  ]);
}

function mobilenet(cin: number, classes: number, alpha: number, act: "relu" | "relu6"): Layer {
  const w = (c: number) => Math.max(8, Math.floor(c * alpha));
  const cfg: [number, number, number][] = [
    [32, 64, 1],
    [64, 128, 2],
    [128, 128, 1],
    [128, 256, 2],
    [256, 256, 1],
    [256, 512, 2],
    [512, 512, 1],
    [512, 512, 1],
    [512, 512, 1],
    [512, 512, 1],
    [512, 512, 1],
    [512, 1024, 2],
    [1024, 1024, 1],
  ];
  const separable = (i: number, o: number, s: number) =>
    chain([
      [
        "depthwise",
        conv2d({
          inChannels: i,
          outChannels: i,
          kernel: 3,
          stride: s,
          padding: 1,
          groups: i,
          bias: false,
        }),
      ],
      ["bn1", batchNorm({ channels: i })],
      ["relu1", activation(act)],
      ["pointwise", conv2d({ inChannels: i, outChannels: o, kernel: 1, bias: false })],
      ["bn2", batchNorm({ channels: o })],
      ["relu2", activation(act)],
    ], { kind: "DepthwiseSeparableConv" });
  return chain([
    [
      "conv1",
      conv2d({
        inChannels: cin,
        outChannels: w(32),
        kernel: 3,
        stride: 2,
        padding: 1,
        bias: false,
      }),
    ],
    ["bn1", batchNorm({ channels: w(32) })],
    ["relu1", activation(act)],
    ["layers", sequential(cfg.map(([i, o, s]) => separable(w(i), w(o), s)))],
    ["avgpool", globalAvgPool()],
    [null, flatten()],
    ["fc", linear({ inFeatures: w(1024), outFeatures: classes })],
  ], { kind: "MobileNetV1" });
}

/**
 * Builds an architecture by name, with the reference's module tree and state-dict names.
 *
 * @example
 * ```ts
 * import { buildArchitecture } from "@modern-cnn/webgpu/models";
 * const arch = buildArchitecture("resnet", { blocks: [3, 4, 6, 3] }); // ResNet-34
 * console.log(arch.net.outputShape([1, 1, 96, 96])); // [1, 10]
 * ```
 */
export function buildArchitecture(name: ModelName, options: ModelOptions = {}): Architecture {
  const cin = options.inChannels ?? 1;
  const classes = options.numClasses ?? 10;
  if (!Number.isInteger(cin) || cin < 1) throw new RangeError(`${name}: inChannels must be >= 1`);
  if (!Number.isInteger(classes) || classes < 1) {
    throw new RangeError(`${name}: numClasses must be >= 1`);
  }
  let net: Layer;
  let fixedSize: number | null = null;
  switch (name) {
    case "lenet":
      net = lenet(cin, classes);
      fixedSize = 28;
      break;
    case "lenet-bn":
      net = lenetBn(cin, classes);
      fixedSize = 28;
      break;
    case "alexnet":
    case "alexnet-lrn":
      net = alexnet(cin, classes, name === "alexnet-lrn");
      fixedSize = 224;
      break;
    case "vgg":
      net = vgg(cin, classes, options.convArch ?? VGG11, options.ratio ?? 4);
      fixedSize = 224;
      break;
    case "nin":
      net = nin(cin, classes);
      break;
    case "googlenet":
      net = googlenet(cin, classes);
      break;
    case "resnet":
      net = resnet(cin, classes, options.blocks ?? [2, 2, 2, 2]);
      break;
    case "densenet":
      net = densenet(cin, classes, options.growthRate ?? 32, options.blockSizes ?? [4, 4, 4, 4]);
      break;
    case "mobilenet":
      net = mobilenet(cin, classes, options.alpha ?? 1, options.activation ?? "relu");
      break;
    default:
      throw new RangeError(
        `unknown model '${name}'; choose one of: ${MODEL_NAMES.join(", ")}`,
      );
  }
  const size = DEFAULTS[name].resize;
  return {
    name,
    net,
    inChannels: cin,
    numClasses: classes,
    fixedSize,
    blocks: net.children,
    inputShape: [cin, size, size],
  };
}

/**
 * Checks that an input size fits an architecture; throws a `RangeError` that says which size is
 * needed (for a fixed-size model) or why the size is too small.
 *
 * @example
 * ```ts
 * import { buildArchitecture, checkInputSize } from "./zoo.ts";
 * checkInputSize(buildArchitecture("resnet"), 96); // ok
 * // checkInputSize(buildArchitecture("alexnet"), 96) throws: alexnet needs 224x224 inputs ...
 * ```
 */
export function checkInputSize(arch: Architecture, size: number): void {
  if (!Number.isInteger(size) || size < 1) {
    throw new RangeError(`${arch.name}: input size must be a positive integer, got ${size}`);
  }
  try {
    arch.net.outputShape([1, arch.inChannels, size, size]);
  } catch (err) {
    const why = (err as Error).message;
    if (arch.fixedSize !== null) {
      throw new RangeError(
        `${arch.name} needs ${arch.fixedSize}x${arch.fixedSize} inputs (a Linear layer fixes the ` +
          `size), got ${size}x${size}: ${why}`,
      );
    }
    throw new RangeError(`${arch.name}: input ${size}x${size} is too small: ${why}`);
  }
}
