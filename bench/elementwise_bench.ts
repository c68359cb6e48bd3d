// Benchmarks of the memory-bound kernels at the seed models' shapes: activations (ResNet b1 ReLU,
// LeNet sigmoid), the residual add (+ReLU) and its backward, gradient accumulation, channel
// concat / split (DenseNet block 1, GoogLeNet inception 3a), dropout (AlexNet classifier),
// softmax cross-entropy (batch 256, 10 classes) and SGD (all ResNet-18 parameters as one tensor).
// Several dispatches are recorded per `await gpu.sync()`. GB/s counts the bytes each kernel must
// read and write (e.g. 8 B/element for y = relu(x), 20 B/element for SGD with momentum).
//
// Batch sizes are reduced where the real tensor would exceed the 128 MiB storage binding limit
// of llvmpipe (ResNet b1 at batch 256 is 144 MiB): the name says so.
//
//   deno bench -A bench/elementwise_bench.ts
import { getGpu, type Shape } from "../gpu/mod.ts";
import { activationBackward, activationForward } from "../kernels/activation.ts";
import { dropoutBackward, dropoutForward, dropoutMaskWords } from "../kernels/dropout.ts";
import { accumulate, addBackwardRelu, addForward } from "../kernels/elementwise.ts";
import { concatChannels, splitChannels } from "../kernels/concat.ts";
import { softmaxCrossEntropy } from "../kernels/softmax_ce/index.ts";
import { sgdUpdate } from "../kernels/sgd.ts";

const gpu = await getGpu();
/** Calls per sync: enough that a sync moves >= ~400 MB, so the ~11 ms wait does not dominate. */
const callsPerSync = (bytes: number) => Math.min(64, Math.max(4, Math.ceil(4e8 / bytes)));

const numel = (s: Shape) => s.reduce((a, b) => a * b, 1);
const f = (s: Shape) => gpu.zeros(s);

interface Case {
  name: string;
  /** Bytes read + written by one call of `op`. */
  bytes: number;
  /** Allocates the tensors; returns the op recording one call. */
  setup: () => () => void;
}

const RESNET_B1: Shape = [64, 64, 48, 48]; // batch 64 of 256
const LENET_C1: Shape = [256, 6, 28, 28];
const RESNET_B2: Shape = [256, 64, 24, 24];
const ALEX_FC: Shape = [128, 4096];
const RESNET18_PARAMS = 11_178_378; // resnet18() of d2l_nets.py: 1 input channel, 10 classes

const CASES: Case[] = [
  {
    name: `relu forward ResNet b1 [${RESNET_B1}] (batch 64 of 256)`,
    bytes: 8 * numel(RESNET_B1),
    setup: () => {
      const x = f(RESNET_B1), y = f(RESNET_B1);
      return () => activationForward({ y, x }, { kind: "relu" });
    },
  },
  {
    name: `relu forward in place ResNet b1 [${RESNET_B1}] (batch 64 of 256)`,
    bytes: 8 * numel(RESNET_B1),
    setup: () => {
      const x = f(RESNET_B1);
      return () => activationForward({ y: x, x }, { kind: "relu" });
    },
  },
  {
    name: `relu backward ResNet b1 [${RESNET_B1}] (batch 64 of 256)`,
    bytes: 12 * numel(RESNET_B1),
    setup: () => {
      const dy = f(RESNET_B1), y = f(RESNET_B1), dx = f(RESNET_B1);
      return () => activationBackward({ dx, dy, y }, { kind: "relu" });
    },
  },
  {
    name: `sigmoid forward LeNet c1 [${LENET_C1}]`,
    bytes: 8 * numel(LENET_C1),
    setup: () => {
      const x = f(LENET_C1), y = f(LENET_C1);
      return () => activationForward({ y, x }, { kind: "sigmoid" });
    },
  },
  {
    name: `tanh forward LeNet c1 [${LENET_C1}]`,
    bytes: 8 * numel(LENET_C1),
    setup: () => {
      const x = f(LENET_C1), y = f(LENET_C1);
      return () => activationForward({ y, x }, { kind: "tanh" });
    },
  },
  {
    name: `sigmoid backward LeNet c1 [${LENET_C1}]`,
    bytes: 12 * numel(LENET_C1),
    setup: () => {
      const dy = f(LENET_C1), y = f(LENET_C1), dx = f(LENET_C1);
      return () => activationBackward({ dx, dy, y }, { kind: "sigmoid" });
    },
  },
  {
    name: `add+relu ResNet b2 residual [${RESNET_B2}]`,
    bytes: 12 * numel(RESNET_B2),
    setup: () => {
      const a = f(RESNET_B2), b = f(RESNET_B2);
      return () => addForward({ y: a, a, b }, { relu: true });
    },
  },
  {
    name: `add+relu backward ResNet b2 residual [${RESNET_B2}]`,
    bytes: 12 * numel(RESNET_B2),
    setup: () => {
      const dy = f(RESNET_B2), y = f(RESNET_B2), dx = f(RESNET_B2);
      return () => addBackwardRelu({ dx, dy, y });
    },
  },
  {
    name: `accumulate ResNet b2 [${RESNET_B2}]`,
    bytes: 12 * numel(RESNET_B2),
    setup: () => {
      const y = f(RESNET_B2), x = f(RESNET_B2);
      return () => accumulate({ y, x });
    },
  },
  {
    name: "concat DenseNet block 1 [256, 64|32, 24, 24] -> [256, 96, 24, 24] (2 calls)",
    bytes: 8 * 256 * 96 * 576,
    setup: () => {
      const y = f([256, 96, 24, 24]), a = f([256, 64, 24, 24]), b = f([256, 32, 24, 24]);
      return () => {
        concatChannels({ y, x: a }, { n: 256, hw: 576, cTotal: 96, cOffset: 0, c: 64 });
        concatChannels({ y, x: b }, { n: 256, hw: 576, cTotal: 96, cOffset: 64, c: 32 });
      };
    },
  },
  {
    name: "split (+=) DenseNet block 1 [256, 96, 24, 24] -> [256, 64|32, 24, 24] (2 calls)",
    bytes: 12 * 256 * 96 * 576,
    setup: () => {
      const dy = f([256, 96, 24, 24]), a = f([256, 64, 24, 24]), b = f([256, 32, 24, 24]);
      const p = { n: 256, hw: 576, cTotal: 96, accumulate: true };
      return () => {
        splitChannels({ dx: a, dy }, { ...p, cOffset: 0, c: 64 });
        splitChannels({ dx: b, dy }, { ...p, cOffset: 64, c: 32 });
      };
    },
  },
  {
    name: "concat GoogLeNet 3a [128, 64|128|32|32, 12, 12] -> [128, 256, 12, 12] (4 calls)",
    bytes: 8 * 128 * 256 * 144,
    setup: () => {
      const y = f([128, 256, 12, 12]);
      const cs = [64, 128, 32, 32];
      const xs = cs.map((c) => f([128, c, 12, 12]));
      return () => {
        let off = 0;
        cs.forEach((c, k) => {
          concatChannels({ y, x: xs[k] }, { n: 128, hw: 144, cTotal: 256, cOffset: off, c });
          off += c;
        });
      };
    },
  },
  {
    name: `dropout forward AlexNet fc [${ALEX_FC}] p=0.5`,
    bytes: 8.125 * numel(ALEX_FC),
    setup: () => {
      const x = f(ALEX_FC), y = f(ALEX_FC);
      const mask = gpu.empty([dropoutMaskWords(numel(ALEX_FC))], { dtype: "u32" });
      let seed = 0;
      return () => dropoutForward({ y, mask, x }, { p: 0.5, seed: seed++ });
    },
  },
  {
    name: `dropout backward AlexNet fc [${ALEX_FC}] p=0.5`,
    bytes: 8.125 * numel(ALEX_FC),
    setup: () => {
      const dy = f(ALEX_FC), dx = f(ALEX_FC);
      const mask = gpu.zeros([dropoutMaskWords(numel(ALEX_FC))], { dtype: "u32" });
      return () => dropoutBackward({ dx, dy, mask }, { p: 0.5 });
    },
  },
  {
    name: "softmax CE [256, 10] (one workgroup)",
    bytes: 256 * 10 * 8 + 256 * 4,
    setup: () => {
      const logits = f([256, 10]), dlogits = f([256, 10]);
      const labels = gpu.zeros([256], { dtype: "i32" });
      const lossSum = f([1]), correct = gpu.zeros([1], { dtype: "u32" });
      return () =>
        softmaxCrossEntropy({ dlogits, lossSum, correct, logits, labels }, { n: 256, c: 10 });
    },
  },
  {
    name: `SGD ResNet-18 ${RESNET18_PARAMS} params, plain`,
    bytes: 12 * RESNET18_PARAMS,
    setup: () => {
      const param = f([RESNET18_PARAMS]), grad = f([RESNET18_PARAMS]);
      return () => sgdUpdate({ param, grad }, { lr: 0.05 });
    },
  },
  {
    name: `SGD ResNet-18 ${RESNET18_PARAMS} params, momentum 0.9 + weight decay`,
    bytes: 20 * RESNET18_PARAMS,
    setup: () => {
      const param = f([RESNET18_PARAMS]), grad = f([RESNET18_PARAMS]);
      const momentumBuf = f([RESNET18_PARAMS]);
      return () =>
        sgdUpdate({ param, grad, momentumBuf }, { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 });
    },
  },
];

function runner(op: () => void, calls: number): () => Promise<void> {
  return async () => {
    for (let i = 0; i < calls; i++) op();
    await gpu.sync();
  };
}

// A timed run per case, printed as ms/call and GB/s (Deno.bench below reports the times). The
// tensors of a case stay alive for its Deno.bench.
const runs: (() => Promise<void>)[] = [];
for (const c of CASES) {
  const calls = callsPerSync(c.bytes);
  const run = runner(c.setup(), calls);
  runs.push(run);
  await run(); // compile + warm up
  const reps = 3;
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) await run();
  const sec = (performance.now() - t0) / 1000 / (reps * calls);
  console.log(
    `${c.name}: ${(sec * 1e3).toFixed(3)} ms/call, ${(c.bytes / sec / 1e9).toFixed(2)} GB/s ` +
      `(${gpu.description})`,
  );
}

CASES.forEach((c, k) => {
  Deno.bench(`${c.name} (x${callsPerSync(c.bytes)} per sync)`, { n: 3, warmup: 1 }, runs[k]);
});
