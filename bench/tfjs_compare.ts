// Our conv2d and GEMM kernels side by side with TensorFlow.js's WebGPU backend (tfjs-core and
// tfjs-backend-webgpu 4.22.0, pinned in deno.json) at the shapes of bench/conv2d_bench.ts and
// bench/gemm_bench.ts, on the same adapter (both request `navigator.gpu`'s high-performance one):
//
//   deno task bench:tfjs [--shapes SUBSTRING[,SUBSTRING...]] [--rounds N] [--tfjs-flag NAME=VALUE]
//
// Not a `*_bench.ts` file, so `deno bench` stays ours only; bench/ is not published.
//
// For each shape and op, both sides get the same random inputs (TF.js's in its NHWC layout and
// [kh, kw, cIn, cOut] filters, converted once outside the timing). One untimed call of each
// compiles its pipelines and checks that both compute the same thing: the max abs difference
// after converting TF.js's result to our layout, and a "check" column: ok, "differ" (above 1e-3
// of the largest value) or "TF.js GPU error" (TF.js reports none itself; it is then not timed).
// A sample records R calls and waits for the GPU once (ours: `gpu.sync()`; TF.js: its pending
// command encoder submitted, then `queue.onSubmittedWorkDone()`, which is what `tensor.data()`
// waits for minus the copy); R is picked per side so a sample takes >= ~0.25 s. Samples of the
// two sides alternate (the side that goes first alternates too) for N rounds (at most 3 when a
// sample takes over 2 s); the table reports the median of each side. Shapes and batches are the
// bench files' (their forced-variant duplicates left out), plus AlexNet conv1 forward and
// backward-weight at b32: at the bench's b128 TF.js exceeds the 128 MiB binding limit.
//
// What each op computes (the same work on both sides, as the bench files time it):
// - conv fwd: y = conv2d(x, w) + b (ours: `conv2dForward`; TF.js: `tf.fused.conv2d` with bias);
//   conv fwd+relu (the shapes of conv2d_bench.ts's fusion benches): the same with a fused ReLU
//   epilogue on both sides (`activation: "relu"`).
// - conv bwd-data: dx (ours: `conv2dBackward` with only dx; TF.js: `tf.conv2dTranspose`, i.e. the
//   `Conv2DBackpropInput` kernel).
// - conv bwd-weight: dw and db (ours: `conv2dBackward` with dw and db; TF.js: the
//   `Conv2DBackpropFilter` kernel, which `tf.grad` of conv2d runs for the filter, plus
//   `tf.sum(dy, [0, 1, 2])` for db).
// - GEMM: C = op(A) op(B) (+ bias when not batched) (ours: `gemm`; TF.js: `tf.fused.matMul` with
//   the same transposes and bias, or `tf.matMul` on 3-D tensors for the batched shape).
// GFLOP/s count 2 * MACs of the direct convolution / product (bias and db not counted).
//
// TF.js runs with its defaults except WEBGPU_CPU_FORWARD=false: by default it computes ops whose
// inputs still sit on the CPU and are small (< 1000 elements) with its CPU kernels, which would
// time JavaScript instead of WebGPU. `--tfjs-flag` sets other TF.js flags (e.g.
// WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE=false for its matmul-based backward-data kernel).
// No shim is needed: Deno's WebGPU has everything TF.js's backend uses (adapter.info, limits,
// compute pipelines, mapAsync, onSubmittedWorkDone).
//
// Last row ("lenet b256 train step", examples/s): a whole LeNet training step at batch 256 (d2l's
// LeNet: sigmoid, average pooling, softmax cross-entropy, SGD lr 0.9) on synthetic 28x28 data
// uploaded once; a sample is 4 steps and one wait. Ours: the Trainer (bench/_train.ts). TF.js:
// tfjs-core ops with the backward pass written out (tfjs-core alone registers no gradients; the
// @tensorflow/tfjs bundle does) using the kernels its autodiff would run, and
// `tf.train.sgd(0.9).applyGradients`.
//
// The interleaved timing is bench/_interleave.ts; TF.js's setup, the check of both sides' first
// calls and TF.js's LeNet step are bench/_tfjs.ts.
import * as tf from "@tensorflow/tfjs-core";
import { getGpu, type Tensor } from "../gpu/mod.ts";
import { checkConv2d, conv2dBackward, conv2dForward } from "../kernels/conv2d/index.ts";
import { gemm, type GemmParams } from "../kernels/gemm/index.ts";
import { benchCli } from "./_args.ts";
import { type Checked, compare, median } from "./_interleave.ts";
import * as shapes from "./_shapes.ts";
import { checkFirstCalls, setupTfjs, tfjsLenet } from "./_tfjs.ts";
import { setupRun, timeSteps, warmUp } from "./_train.ts";
import { guardScript } from "../cli/_run.ts";

// ------------------------------------------------------------------------------ args ----

guardScript("bench:tfjs");
const cli = benchCli(
  "usage: deno task bench:tfjs [--shapes SUBSTRING[,SUBSTRING...]] [--rounds N] " +
    "[--tfjs-flag NAME=VALUE]...",
);

function parseArgs(args: string[]) {
  const out = { shapes: [] as string[], rounds: 5, flags: [] as [string, string][] };
  cli.parse(args, {
    "--shapes": (value) => {
      out.shapes = value().split(",").map((s) => s.trim().toLowerCase()).filter((s) => s);
    },
    "--rounds": (value) => out.rounds = cli.positiveInt("--rounds", value()),
    "--tfjs-flag": (value) => {
      const v = value();
      const eq = v.indexOf("=");
      if (eq < 1) cli.usage(`--tfjs-flag needs NAME=VALUE, got '${v}'`);
      out.flags.push([v.slice(0, eq), v.slice(eq + 1)]);
    },
  });
  return out;
}

const args = parseArgs(Deno.args);
const selected = (name: string) =>
  args.shapes.length === 0 || args.shapes.some((s) => name.toLowerCase().includes(s));

// ------------------------------------------------------------------------ backends ----

const gpu = await getGpu();
const tfjs = await setupTfjs(args.flags);

// ------------------------------------------------------------------------- helpers ----

function randomData(size: number): Float32Array {
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = Math.random() - 0.5;
  return data;
}

interface Row {
  shape: string;
  op: string;
  unit: string;
  ours: number;
  tfjs: number;
  reps: string;
  err: string;
  check: string;
}
const rows: Row[] = [];

function report(row: Row): void {
  rows.push(row);
  const ratio = row.ours / row.tfjs;
  console.error(
    `  ${row.shape} ${row.op}: ours ${row.ours.toFixed(2)} ${row.unit}, TF.js ` +
      `${row.tfjs.toFixed(2)} (${ratio.toFixed(2)}x; reps ${row.reps}; ${row.err}; ${row.check})`,
  );
}

const oursSync = () => gpu.sync();

/** Times a checked pair ({@linkcode compare}) and reports it in GFLOP/s (`flops` per call). */
async function compareGflops(
  row: { shape: string; op: string },
  flops: number,
  checked: Checked & { err: string; check: string },
): Promise<void> {
  const t = await compare(checked, args.rounds);
  report({
    ...row,
    unit: "GFLOP/s",
    ours: flops / t.ours / 1e9,
    tfjs: flops / t.tfjs / 1e9,
    reps: t.reps,
    err: checked.err,
    check: checked.check,
  });
}

// -------------------------------------------------------------------------- conv2d ----

type Pass = "fwd" | "fwd+relu" | "bwd-data" | "bwd-weight";
const ALL: Pass[] = ["fwd", "bwd-data", "bwd-weight"];

async function compareConv(shape: shapes.ConvShape, passes: Pass[]): Promise<void> {
  const { label, params: p } = shape;
  passes = passes.filter((pass) => selected(`${label} conv ${pass}`));
  if (passes.length === 0) return;
  const ys = [...checkConv2d(p)];
  const [kh, kw] = typeof p.kernel === "number" ? [p.kernel, p.kernel] : p.kernel;
  const [sh, sw] = p.stride === undefined
    ? [1, 1]
    : typeof p.stride === "number"
    ? [p.stride, p.stride]
    : p.stride;
  const [ph, pw] = p.padding === undefined
    ? [0, 0]
    : typeof p.padding === "number"
    ? [p.padding, p.padding]
    : p.padding;
  if ((p.groups ?? 1) !== 1) throw new Error("tfjs_compare: grouped convolutions not compared");
  const [n, cOut, oh, ow] = ys;
  const xData = randomData(p.n * p.cIn * p.h * p.w);
  const wData = randomData(cOut * p.cIn * kh * kw);
  const bData = randomData(cOut);
  const dyData = randomData(n * cOut * oh * ow);
  const flops = 2 * n * cOut * oh * ow * p.cIn * kh * kw;

  // Ours (NCHW, weights [cOut, cIn, kh, kw]).
  const x = gpu.tensor(xData, { shape: [p.n, p.cIn, p.h, p.w] });
  const w = gpu.tensor(wData, { shape: [cOut, p.cIn, kh, kw] });
  const b = gpu.tensor(bData, { shape: [cOut] });
  const dy = gpu.tensor(dyData, { shape: ys });
  const owned: Tensor[] = [x, w, b, dy];

  // TF.js (NHWC, filter [kh, kw, cIn, cOut]), converted once on its GPU.
  const tx: tf.Tensor4D = tf.tidy(() =>
    tf.transpose(tf.tensor4d(xData, [p.n, p.cIn, p.h, p.w]), [0, 2, 3, 1])
  );
  const tw: tf.Tensor4D = tf.tidy(() =>
    tf.transpose(tf.tensor4d(wData, [cOut, p.cIn, kh, kw]), [2, 3, 1, 0])
  );
  const tb = tf.tensor1d(bData);
  const tdy: tf.Tensor4D = tf.tidy(() =>
    tf.transpose(tf.tensor4d(dyData, [n, cOut, oh, ow]), [0, 2, 3, 1])
  );
  const pad = ph === 0 && pw === 0 ? "valid" as const : [[0, 0], [ph, ph], [pw, pw], [0, 0]] as [
    [number, number],
    [number, number],
    [number, number],
    [number, number],
  ];
  const strides: [number, number] = [sh, sw];

  for (const pass of passes) {
    // Per pass: our op, TF.js's op, and how to read both results in our layout for the check.
    let oursRun: () => void, tfRun: () => tf.Tensor[];
    let oursRead: () => Promise<ArrayLike<number>[]>,
      tfInOurLayout: (r: tf.Tensor[]) => tf.Tensor[];
    let names = [""];
    if (pass === "fwd" || pass === "fwd+relu") {
      const y = gpu.empty(ys);
      owned.push(y);
      const relu = pass === "fwd+relu";
      const pr = relu ? { ...p, activation: "relu" as const } : p;
      oursRun = () => conv2dForward({ y, x, w, b }, pr);
      oursRead = async () => [await y.toArray()];
      tfRun = () => [
        tf.fused.conv2d({
          x: tx,
          filter: tw,
          strides,
          pad,
          bias: tb,
          activation: relu ? "relu" : "linear",
        }),
      ];
      tfInOurLayout = ([t]) => [tf.transpose(t, [0, 3, 1, 2])];
    } else if (pass === "bwd-data") {
      const dx = gpu.empty(x.shape);
      owned.push(dx);
      oursRun = () => conv2dBackward({ dx, dy, x, w }, p);
      oursRead = async () => [await dx.toArray()];
      tfRun = () => [tf.conv2dTranspose(tdy, tw, [p.n, p.h, p.w, p.cIn], strides, pad)];
      tfInOurLayout = ([t]) => [tf.transpose(t, [0, 3, 1, 2])];
    } else {
      const dw = gpu.empty(w.shape), db = gpu.empty(b.shape);
      owned.push(dw, db);
      oursRun = () => conv2dBackward({ dw, db, dy, x, w }, p);
      oursRead = async () => [await dw.toArray(), await db.toArray()];
      tfRun = () => [
        tf.engine().runKernel("Conv2DBackpropFilter", { x: tx, dy: tdy }, {
          strides,
          pad,
          dataFormat: "NHWC",
          filterShape: [kh, kw, p.cIn, cOut],
        }) as tf.Tensor,
        tf.sum(tdy, [0, 1, 2]),
      ];
      tfInOurLayout = ([tw, tb]) => [tf.transpose(tw, [3, 2, 0, 1]), tb];
      names = ["dw", "db"];
    }
    const checked = await checkFirstCalls(
      { run: oursRun, read: oursRead, sync: oursSync },
      { tfjs, run: tfRun, inOurLayout: tfInOurLayout },
      names,
    );
    await compareGflops({ shape: label, op: `conv ${pass}` }, flops, checked);
  }
  for (const t of owned) t.dispose();
  tf.dispose([tx, tw, tb, tdy]);
}

// ---------------------------------------------------------------------------- GEMM ----

async function compareGemm(label: string, p: GemmParams): Promise<void> {
  const ops = `${p.transA ? "T" : "N"}${p.transB ? "T" : "N"}`;
  const shape = `${label} ${p.m}x${p.n}x${p.k} ${ops}`;
  if (!selected(`${shape} gemm`)) return;
  const batch = p.batch ?? 1;
  const aData = randomData(batch * p.m * p.k);
  const bData = randomData(batch * p.k * p.n);
  const biasData = p.batch === undefined ? randomData(p.n) : undefined;
  const flops = 2 * batch * p.m * p.n * p.k;

  const a = gpu.tensor(aData, { shape: [aData.length] });
  const b = gpu.tensor(bData, { shape: [bData.length] });
  const c = gpu.empty([batch * p.m * p.n]);
  const bias = biasData ? gpu.tensor(biasData, { shape: [p.n] }) : undefined;

  const aShape = p.transA ? [p.k, p.m] : [p.m, p.k];
  const bShape = p.transB ? [p.n, p.k] : [p.k, p.n];
  const lead = p.batch === undefined ? [] : [batch];
  const ta = tf.tensor(aData, [...lead, ...aShape]);
  const tb = tf.tensor(bData, [...lead, ...bShape]);
  const tbias = biasData ? tf.tensor1d(biasData) : undefined;
  const tfGemm = () =>
    tbias
      ? tf.fused.matMul({
        a: ta,
        b: tb,
        transposeA: !!p.transA,
        transposeB: !!p.transB,
        bias: tbias,
      })
      : tf.matMul(ta, tb, !!p.transA, !!p.transB);

  const checked = await checkFirstCalls(
    {
      run: () => gemm({ c, a, b, bias }, p),
      read: async () => [await c.toArray()],
      sync: oursSync,
    },
    { tfjs, run: () => [tfGemm()], inOurLayout: (r) => r },
    [""],
  );
  await compareGflops({ shape, op: "gemm" }, flops, checked);
  for (const t of [a, b, c, bias]) t?.dispose();
  tf.dispose([ta, tb, ...(tbias ? [tbias] : [])]);
}

// --------------------------------------------------------------------- LeNet step ----

async function compareLenetTraining(batch: number, steps: number): Promise<void> {
  const label = `lenet b${batch}`;
  if (!selected(`${label} train step`)) return;
  // Ours: the Trainer on synthetic data (bench/_train.ts); one sample = one epoch of `steps`.
  const run = setupRun(gpu, "lenet", { batch, resize: 28, steps });
  await warmUp(run);
  let oursLoss = NaN;
  const oursEpoch = async () => {
    const r = await timeSteps(gpu, run);
    oursLoss = r.loss;
    return r.examplesPerSec;
  };

  // TF.js: d2l's LeNet in tfjs-core ops, data uploaded once (bench/_tfjs.ts).
  const tfLenet = tfjsLenet(batch);
  const tfStep = tfLenet.step;
  const firstLoss = tfStep();
  const first = (await firstLoss.data())[0];
  firstLoss.dispose();
  let tfLoss = NaN;
  const tfEpoch = async () => {
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) {
      const loss = tfStep();
      if (s < steps - 1) loss.dispose();
      else {
        await tfjs.sync();
        tfLoss = (await loss.data())[0];
        loss.dispose();
      }
    }
    return (batch * steps) / ((performance.now() - t0) / 1000);
  };
  const a: number[] = [], b: number[] = [];
  for (let round = 0; round < args.rounds; round++) {
    if (round % 2 === 0) {
      a.push(await oursEpoch());
      b.push(await tfEpoch());
    } else {
      b.push(await tfEpoch());
      a.push(await oursEpoch());
    }
  }
  const errors = tfjs.errors.splice(0);
  report({
    shape: label,
    op: "train step",
    unit: "examples/s",
    ours: median(a),
    tfjs: median(b),
    reps: `${steps}/${steps}`,
    // The same model on different (random) data and init: the losses only show both learn.
    err: `loss: ours ${oursLoss.toFixed(3)}, TF.js ${first.toFixed(3)} -> ${tfLoss.toFixed(3)}`,
    check: errors.length ? `TF.js GPU error: ${errors[0]}` : "-",
  });
  tfLenet.dispose();
}

// -------------------------------------------------------------------------- shapes ----

const started = performance.now();
console.error(
  `ours: ${gpu.description}; TF.js ${tf.version_core} backend ${tf.getBackend()}: ${
    JSON.stringify(tfjs.backend.adapterInfo)
  }`,
);

// LeNet (28x28, batch 256).
await compareConv(shapes.LENET_CONV1, ["fwd", "bwd-weight"]);
await compareConv(shapes.LENET_CONV2, [...ALL, "fwd+relu"]);
// AlexNet conv1 (224x224): b128 forward / backward-weight, b32 backward-data (as the bench).
await compareConv(shapes.alexnetConv1(128), ["fwd", "bwd-weight"]);
// fwd and bwd-weight at b32 too: at b128 TF.js exceeds the 128 MiB binding limit.
await compareConv(shapes.alexnetConv1(32), ALL);
// ResNet-18 at 96x96 (batch 32).
await compareConv(shapes.RESNET18_STEM, ["fwd", "bwd-weight"]);
for (const shape of shapes.RESNET18_LAYERS) {
  await compareConv(shape, shape === shapes.RESNET18_B2 ? [...ALL, "fwd+relu"] : ALL);
}
// GoogLeNet inception 1x1 branches (our default path; the bench also times forced variants).
for (const shape of shapes.GOOGLENET_1X1) await compareConv(shape, ["fwd", "bwd-data"]);

// GEMM (bench/gemm_bench.ts; its tuning variants are not repeated).
await compareGemm("lenet fc1 fwd b256", { m: 256, n: 120, k: 400, transB: true });
await compareGemm("lenet fc1 dx b256", { m: 256, n: 400, k: 120 });
await compareGemm("lenet fc1 dw b256", { m: 120, n: 400, k: 256, transA: true });
await compareGemm("lenet fc2 fwd b256", { m: 256, n: 84, k: 120, transB: true });
await compareGemm("lenet fc3 fwd b256", { m: 256, n: 10, k: 84, transB: true });
await compareGemm("alexnet fc1 fwd b32", { m: 32, n: 4096, k: 6400, transB: true });
await compareGemm("alexnet fc1 dx b32", { m: 32, n: 6400, k: 4096 });
await compareGemm("alexnet fc1 dw b32", { m: 4096, n: 6400, k: 32, transA: true });
await compareGemm("alexnet fc2 fwd b32", { m: 32, n: 4096, k: 4096, transB: true });
await compareGemm("alexnet fc3 fwd b32", { m: 32, n: 10, k: 4096, transB: true });
await compareGemm("resnet fc fwd b256", { m: 256, n: 10, k: 512, transB: true });
await compareGemm("square", { m: 512, n: 512, k: 512 });
await compareGemm("batched b32", { m: 64, n: 49, k: 576, batch: 32 });

// A whole LeNet training step (the TF.js figure: ~280 examples/s on this adapter).
await compareLenetTraining(256, 4);

// -------------------------------------------------------------------------- report ----

const flags = [["WEBGPU_CPU_FORWARD", "false"], ...args.flags].map(([k, v]) => `${k}=${v}`);
console.log(
  `\n${gpu.description}, Deno ${Deno.version.deno}, TF.js ${tf.version_core} webgpu ` +
    `(${flags.join(", ")}); median of ${args.rounds} interleaved rounds; ` +
    `${((performance.now() - started) / 1000).toFixed(0)} s\n`,
);
const table = [
  [
    "shape",
    "op",
    "ours",
    "TF.js",
    "ours / TF.js",
    "calls/sample ours/TF.js",
    "max abs diff (of max abs)",
    "check",
  ],
  ...rows.map((r) => [
    r.shape,
    r.op,
    `${r.ours.toFixed(2)} ${r.unit}`,
    isNaN(r.tfjs) ? "-" : `${r.tfjs.toFixed(2)} ${r.unit}`,
    isNaN(r.tfjs) ? "-" : `${(r.ours / r.tfjs).toFixed(2)}x${r.ours / r.tfjs < 2 ? " (< 2x)" : ""}`,
    r.reps,
    r.err,
    r.check,
  ]),
];
const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
const line = (cells: string[]) =>
  `| ${
    cells.map((c, i) => (i >= 2 && i <= 5 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join(" | ")
  } |`;
console.log(line(table[0]));
console.log(
  `| ${
    widths.map((w, i) => (i >= 2 && i <= 5 ? "-".repeat(w - 1) + ":" : "-".repeat(w))).join(" | ")
  } |`,
);
for (const row of table.slice(1)) console.log(line(row));
if (rows.some((r) => r.check.startsWith("differ"))) {
  console.log(
    "\ndiffer: TF.js's result is not ours (ours matches the Float64 CPU references of tests/). " +
      "Seen here: TF.js's Conv2DBackpropFilter loops over n*oh*ow in one invocation, and " +
      "llvmpipe ends any shader loop after 65535 iterations without an error, so TF.js skips " +
      "part of the sum (and of the work: its figure is then an overestimate).",
  );
}
if (rows.some((r) => r.check.startsWith("TF.js GPU error"))) {
  console.log(
    "\nTF.js GPU error: TF.js could not run the op (it binds a whole tensor; ours splits the " +
      "batch into chunks that fit the device's binding limits); its time is not measured.",
  );
}
