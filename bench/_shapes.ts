// Convolution shapes shared by bench/conv2d_bench.ts and bench/tfjs_compare.ts: layers of the
// seed models at the benches' batches (LeNet at d2l's 256; AlexNet conv1 at 128 and 32; ResNet-18
// at 96x96 and GoogLeNet's inception 1x1 branches at batch 32).
import type { Conv2dParams } from "../kernels/conv2d/index.ts";

/** A convolution to time and its label (layer, channels, geometry, input size, batch). */
export interface ConvShape {
  readonly label: string;
  readonly params: Conv2dParams;
}

/** A square convolution: batch, channels, input size, kernel, stride (default 1), padding (0). */
interface Square {
  n: number;
  cIn: number;
  cOut: number;
  hw: number;
  kernel: number;
  stride?: number;
  padding?: number;
}

/**
 * A square convolution labelled `${layer} cIn->cOut kK [sS] [pP] HWxHW bN` (stride and padding
 * only when not 1 and 0, and only then in the parameters).
 */
function square(layer: string, p: Square): ConvShape {
  const { n, cIn, cOut, hw, kernel, stride = 1, padding = 0 } = p;
  const geometry = `k${kernel}${stride > 1 ? ` s${stride}` : ""}${padding ? ` p${padding}` : ""}`;
  const params: Conv2dParams = { n, cIn, h: hw, w: hw, cOut, kernel };
  return {
    label: `${layer} ${cIn}->${cOut} ${geometry} ${hw}x${hw} b${n}`,
    params: { ...params, ...(stride !== 1 ? { stride } : {}), ...(padding ? { padding } : {}) },
  };
}

/** LeNet conv1 (1->6, k5, p2, 28x28) at batch 256. */
export const LENET_CONV1: ConvShape = square("lenet conv1", {
  n: 256,
  cIn: 1,
  cOut: 6,
  hw: 28,
  kernel: 5,
  padding: 2,
});
/** LeNet conv2 (6->16, k5, 14x14) at batch 256. */
export const LENET_CONV2: ConvShape = square("lenet conv2", {
  n: 256,
  cIn: 6,
  cOut: 16,
  hw: 14,
  kernel: 5,
});

/** AlexNet conv1 (1->96, k11, s4, p1, 224x224) at batch `n`. */
export function alexnetConv1(n: number): ConvShape {
  return square("alexnet conv1", {
    n,
    cIn: 1,
    cOut: 96,
    hw: 224,
    kernel: 11,
    stride: 4,
    padding: 1,
  });
}

/** ResNet-18's stem (1->64, k7, s2, p3) at 96x96, batch 32. */
export const RESNET18_STEM: ConvShape = square("resnet18 stem", {
  n: 32,
  cIn: 1,
  cOut: 64,
  hw: 96,
  kernel: 7,
  stride: 2,
  padding: 3,
});

/** ResNet-18's 3x3 layers of each stage and the first shortcut (96x96 input, batch 32). */
export const RESNET18_LAYERS: readonly ConvShape[] = (
  [
    ["b2", 64, 64, 24, 3, 1, 1],
    ["b3", 64, 128, 24, 3, 2, 1],
    ["b3 shortcut", 64, 128, 24, 1, 2, 0],
    ["b3", 128, 128, 12, 3, 1, 1],
    ["b4", 256, 256, 6, 3, 1, 1],
    ["b5", 512, 512, 3, 3, 1, 1],
  ] as const
).map(([name, cIn, cOut, hw, kernel, stride, padding]) =>
  square(`resnet18 ${name}`, { n: 32, cIn, cOut, hw, kernel, stride, padding })
);

/** ResNet-18's first 3x3 layer (64->64, p1, 24x24, batch 32). */
export const RESNET18_B2: ConvShape = RESNET18_LAYERS[0];

/** GoogLeNet inception 1x1 branches at 12x12 and 3x3, batch 32. */
export const GOOGLENET_1X1: readonly ConvShape[] = (
  [[12, 256, 128], [3, 832, 256]] as const
).map(([hw, cIn, cOut]) => ({
  label: `googlenet 1x1 ${cIn}->${cOut} ${hw}x${hw} b32`,
  params: { n: 32, cIn, h: hw, w: hw, cOut, kernel: 1 },
}));
