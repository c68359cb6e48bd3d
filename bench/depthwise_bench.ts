// Benchmarks of the depthwise convolution kernels at MobileNet V1's depthwise layers (3x3,
// padding 1, 96x96 input: 48x48 after conv1), at batch 32 instead of the seed's 256 (a batch-256
// iteration of the largest layers takes seconds on llvmpipe; the kernels scale linearly with the
// batch). Several dispatches are recorded per `await gpu.sync()`. GB/s counts the compulsory
// traffic: forward reads x and writes y, backward-data reads dy and writes dx, backward-weight
// reads dy and x.
//
//   deno bench -A bench/depthwise_bench.ts
import { getGpu } from "../gpu/mod.ts";
import { benchBytes, fill } from "./_timing.ts";
import {
  checkDepthwise,
  depthwiseConv2dBackward,
  depthwiseConv2dForward,
  type DepthwiseParams,
} from "../kernels/depthwise/index.ts";

const gpu = await getGpu();
const BATCH = 32;

// (channels, input size, stride) of MobileNet V1's 13 depthwise layers, deduplicated
const LAYERS: [number, number, number][] = [
  [32, 48, 1],
  [64, 48, 2],
  [128, 24, 1],
  [128, 24, 2],
  [256, 12, 1],
  [256, 12, 2],
  [512, 6, 1],
  [512, 6, 2],
  [1024, 3, 1],
];

for (const [c, size, stride] of LAYERS) {
  const p: DepthwiseParams = { n: BATCH, c, h: size, w: size, kernel: 3, stride, padding: 1 };
  const yShape = checkDepthwise(p);
  const x = gpu.tensor(fill(BATCH * c * size * size), { shape: [BATCH, c, size, size] });
  const w = gpu.tensor(fill(c * 9), { shape: [c, 1, 3, 3] });
  const y = gpu.empty(yShape);
  const dx = gpu.empty(x.shape);
  const dw = gpu.empty(w.shape);
  const xb = x.byteLength, yb = y.byteLength;
  const ops: [string, number, () => void][] = [
    ["forward", xb + yb, () => depthwiseConv2dForward({ y, x, w }, p)],
    ["backward data", xb + yb, () => depthwiseConv2dBackward({ dx, dy: y, x, w }, p)],
    ["backward weight", xb + yb, () => depthwiseConv2dBackward({ dw, dy: y, x, w }, p)],
  ];
  for (const [what, bytes, record] of ops) {
    await benchBytes(
      gpu,
      `depthwise ${what} c${c} ${size}x${size} s${stride} b${BATCH}`,
      bytes,
      record,
    );
  }
}
