// TF.js's side of bench/tfjs_compare.ts: its WebGPU backend set up (flags, GPU errors captured,
// a wait for the GPU without a readback), the first calls of an op on both sides checked against
// each other, and d2l's LeNet training step in tfjs-core ops with the backward pass written out.
import * as tf from "@tensorflow/tfjs-core";
import "@tensorflow/tfjs-backend-webgpu";
import { type Checked, timed } from "./_interleave.ts";

/** The members of TF.js's WebGPUBackend this script uses (all public in its typings). */
export interface TfWebGpuBackend {
  readonly device: GPUDevice;
  readonly queue: GPUQueue;
  readonly adapterInfo: unknown;
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
}

/** TF.js's WebGPU backend, ready, and what the comparison needs of it. */
export interface TfjsWebGpu {
  /** The backend. */
  readonly backend: TfWebGpuBackend;
  /** GPU errors TF.js's device raised (TF.js does not report them itself). */
  readonly errors: string[];
  /** Submits TF.js's recorded work and waits for the GPU (`tensor.data()` without the copy). */
  readonly sync: () => Promise<void>;
}

/**
 * Sets TF.js's flags (WEBGPU_CPU_FORWARD=false, then `flags`, values parsed as booleans or
 * numbers where they read as such) and makes its webgpu backend the current one.
 */
export async function setupTfjs(flags: readonly [string, string][]): Promise<TfjsWebGpu> {
  tf.env().set("WEBGPU_CPU_FORWARD", false);
  for (const [name, v] of flags) {
    tf.env().set(
      name,
      v === "true" ? true : v === "false" ? false : isNaN(Number(v)) ? v : Number(v),
    );
  }
  if (!(await tf.setBackend("webgpu"))) {
    throw new Error("tfjs_compare: TF.js has no webgpu backend");
  }
  await tf.ready();
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`tfjs_compare: TF.js backend is '${tf.getBackend()}', not 'webgpu'`);
  }
  const backend = tf.backend() as unknown as TfWebGpuBackend;
  const errors: string[] = [];
  backend.device.addEventListener("uncapturederror", (ev) => {
    errors.push((ev as GPUUncapturedErrorEvent).error.message.split("\n")[0]);
  });
  const sync = async (): Promise<void> => {
    backend.ensureCommandEncoderReady();
    backend.endComputePassEncoder();
    backend.submitQueue();
    await backend.queue.onSubmittedWorkDone();
  };
  return { backend, errors, sync };
}

// --------------------------------------------------------------------------- check ----

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Our side of an op: `run` records it, `read` reads its results back, `sync` waits for the GPU. */
export interface OursOp {
  readonly run: () => void;
  readonly read: () => Promise<ArrayLike<number>[]>;
  readonly sync: () => Promise<void>;
}

/** TF.js's side of the same op: `run` runs it, `inOurLayout` converts its results to ours. */
export interface TfjsOp {
  readonly tfjs: TfjsWebGpu;
  readonly run: () => tf.Tensor[];
  readonly inOurLayout: (r: tf.Tensor[]) => tf.Tensor[];
}

/**
 * Compares our results with TF.js's (already read back, so TF.js's GPU errors have arrived):
 * the max abs difference of each (of the max abs value), and "ok", "TF.js GPU error: ..." or
 * "differ" (a difference above 1e-3 of the max abs value, far above float32 rounding here).
 */
function checkResults(
  errors: string[],
  parts: [string, ArrayLike<number>, ArrayLike<number>][],
): { err: string; check: string } {
  const texts: string[] = [];
  let differ = false;
  for (const [name, mine, ref] of parts) {
    const diff = maxAbsDiff(mine, ref), scale = maxAbs(ref);
    differ ||= !(diff <= 1e-3 * scale) || scale === 0;
    texts.push(`${name ? `${name} ` : ""}${diff.toExponential(1)} (of ${scale.toPrecision(2)})`);
  }
  const raised = errors.splice(0);
  const check = raised.length > 0
    ? `TF.js GPU error: ${raised[0]}`
    : differ
    ? "differ (see notes)"
    : "ok";
  return { err: texts.join(", "), check };
}

/**
 * Runs each side's op once (untimed: compiles pipelines), reads both results back and compares
 * them (see `checkResults`). Returns the timing sides (TF.js's null after a GPU error) and the
 * durations of these first calls.
 */
export async function checkFirstCalls(
  ours: OursOp,
  theirs: TfjsOp,
  names: string[],
): Promise<Checked & { err: string; check: string }> {
  const [mine, firstOurs] = await timed(async () => {
    ours.run();
    return await ours.read();
  });
  const [refs, firstTf] = await timed(async () => {
    const r = tf.tidy(() => theirs.inOurLayout(theirs.run()));
    const data = await Promise.all(r.map((t) => t.data()));
    tf.dispose(r);
    return data;
  });
  const result = checkResults(theirs.tfjs.errors, names.map((n, i) => [n, mine[i], refs[i]]));
  return {
    ours: { run: ours.run, sync: ours.sync },
    theirs: result.check.startsWith("TF.js GPU error")
      ? null
      : { run: () => tf.tidy(() => void theirs.run()), sync: theirs.tfjs.sync },
    firstOurs,
    firstTf,
    ...result,
  };
}

// ----------------------------------------------------------------------- LeNet step ----

/** A training step of LeNet in TF.js, on one batch of random data uploaded once. */
export interface TfjsLenet {
  /** One step (forward, backward, SGD update); returns the loss (a scalar kept out of the tidy). */
  readonly step: () => tf.Tensor;
  /** Frees the variables, the data and the optimizer. */
  readonly dispose: () => void;
}

/**
 * d2l's LeNet (sigmoid, average pooling, softmax cross-entropy, SGD lr 0.9) on 28x28 inputs,
 * batch `batch`.
 */
export function tfjsLenet(batch: number): TfjsLenet {
  // TF.js: d2l's LeNet in tfjs-core ops (NHWC), data uploaded once. tfjs-core registers no
  // gradients (the @tensorflow/tfjs bundle does), so the backward pass is written out with the
  // kernels TF.js's autodiff would run (Conv2DBackpropFilter, conv2dTranspose = Conv2DBackprop-
  // Input, AvgPoolGrad, matMul, sums); `tf.train.sgd(0.9).applyGradients` updates.
  const init = (name: string, shape: number[], fanIn: number) =>
    tf.variable(tf.randomUniform(shape, -1 / Math.sqrt(fanIn), 1 / Math.sqrt(fanIn)), true, name);
  const zeros = (name: string, n: number) => tf.variable(tf.zeros([n]), true, name);
  const v = {
    w1: init("lenet_w1", [5, 5, 1, 6], 25),
    b1: zeros("lenet_b1", 6),
    w2: init("lenet_w2", [5, 5, 6, 16], 150),
    b2: zeros("lenet_b2", 16),
    w3: init("lenet_w3", [400, 120], 400),
    b3: zeros("lenet_b3", 120),
    w4: init("lenet_w4", [120, 84], 120),
    b4: zeros("lenet_b4", 84),
    w5: init("lenet_w5", [84, 10], 84),
    b5: zeros("lenet_b5", 10),
  };
  const xs: tf.Tensor4D = tf.randomUniform([batch, 28, 28, 1]);
  const labels = tf.tidy(() => tf.oneHot(tf.randomUniform([batch], 0, 10, "int32"), 10));
  const opt = tf.train.sgd(0.9);
  const sigmoidGrad = (dy: tf.Tensor, y: tf.Tensor) => tf.mul(dy, tf.mul(y, tf.sub(1, y)));
  const avgPoolGrad = (dy: tf.Tensor, input: tf.Tensor) =>
    tf.engine().runKernel("AvgPoolGrad", { dy, input }, {
      filterSize: 2,
      strides: 2,
      pad: "valid",
    }) as tf.Tensor4D;
  const filterGrad = (x: tf.Tensor, dy: tf.Tensor, shape: number[], pad: number) =>
    tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, {
      strides: 1,
      pad,
      dataFormat: "NHWC",
      filterShape: shape,
    }) as tf.Tensor4D;
  const tfStep = () =>
    tf.tidy(() => {
      const a1: tf.Tensor4D = tf.sigmoid(tf.add(tf.conv2d(xs, v.w1 as tf.Tensor4D, 1, 2), v.b1));
      const p1 = tf.avgPool(a1, 2, 2, "valid") as tf.Tensor4D;
      const a2: tf.Tensor4D = tf.sigmoid(
        tf.add(tf.conv2d(p1, v.w2 as tf.Tensor4D, 1, "valid"), v.b2),
      );
      const p2 = tf.avgPool(a2, 2, 2, "valid") as tf.Tensor4D;
      const f = tf.reshape(p2, [batch, 400]) as tf.Tensor2D;
      const a3 = tf.sigmoid(tf.add(tf.matMul(f, v.w3), v.b3)) as tf.Tensor2D;
      const a4 = tf.sigmoid(tf.add(tf.matMul(a3, v.w4), v.b4)) as tf.Tensor2D;
      const logits = tf.add(tf.matMul(a4, v.w5), v.b5) as tf.Tensor2D;
      const loss = tf.losses.softmaxCrossEntropy(labels, logits);
      // Backward: d loss / d logits of the mean softmax cross-entropy.
      const dz5 = tf.div(tf.sub(tf.softmax(logits), labels), batch) as tf.Tensor2D;
      const dz4 = sigmoidGrad(tf.matMul(dz5, v.w5, false, true), a4) as tf.Tensor2D;
      const dz3 = sigmoidGrad(tf.matMul(dz4, v.w4, false, true), a3) as tf.Tensor2D;
      const dp2 = tf.reshape(tf.matMul(dz3, v.w3, false, true), p2.shape);
      const dz2 = sigmoidGrad(avgPoolGrad(dp2, a2), a2) as tf.Tensor4D;
      const dp1 = tf.conv2dTranspose(dz2, v.w2 as tf.Tensor4D, p1.shape, 1, "valid");
      const dz1 = sigmoidGrad(avgPoolGrad(dp1, a1), a1) as tf.Tensor4D;
      opt.applyGradients({
        lenet_w5: tf.matMul(a4, dz5, true, false),
        lenet_b5: tf.sum(dz5, 0),
        lenet_w4: tf.matMul(a3, dz4, true, false),
        lenet_b4: tf.sum(dz4, 0),
        lenet_w3: tf.matMul(f, dz3, true, false),
        lenet_b3: tf.sum(dz3, 0),
        lenet_w2: filterGrad(p1, dz2, [5, 5, 6, 16], 0),
        lenet_b2: tf.sum(dz2, [0, 1, 2]),
        lenet_w1: filterGrad(xs, dz1, [5, 5, 1, 6], 2),
        lenet_b1: tf.sum(dz1, [0, 1, 2]),
      });
      return loss;
    });
  return {
    step: tfStep,
    dispose: () => {
      tf.dispose([...Object.values(v), xs, labels]);
      opt.dispose();
    },
  };
}
