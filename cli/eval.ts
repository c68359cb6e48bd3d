// deno task eval <model> --weights FILE [--dataset D] [--data-dir DIR] [--resize N] [--limit-test N]
// Test accuracy, per-class accuracy and the confusion matrix of a checkpoint.
import { getGpu } from "../gpu/mod.ts";
import { prepareBatch } from "../kernels/data/index.ts";
import { type DatasetName, loadDataset } from "../data/mod.ts";
import { describeSource } from "../data/dataset.ts";
import {
  createModel,
  DEFAULTS,
  type Model,
  NonFiniteError,
  uploadImageSet,
} from "../models/mod.ts";
import { checkMemory, checkResizeFlag, modelName, parseFlags } from "./common.ts";
import { CliError, runCommand, UsageError } from "./_run.ts";
import { loadWeights, parseRunMetadata, readCheckpoint, RECIPE_FIELDS } from "./checkpoint.ts";

const HELP = `usage: deno task eval <model> --weights FILE [flags]

  --weights FILE      safetensors checkpoint (the reference's names), e.g. from train --save
  --dataset NAME      fashion-mnist (default), mnist, cifar10 or synthetic
  --data-dir DIR      where the data set files are
  --resize N          input size (default: the checkpoint's, else the model's seed recipe)
  --batch-size N      evaluation batch size (default 256)
  --limit-test N      use the first N test examples
  --debug             print the stack of an unexpected error
  -h, --help          this text`;

/**
 * Predicted class of every example of a GPU data set, in order (one readback); a
 * {@linkcode NonFiniteError} when an output is Inf or NaN.
 */
export async function predictAll(
  model: Model,
  set: ReturnType<typeof uploadImageSet>,
  options: { resize: number; batchSize: number },
): Promise<Int32Array> {
  const gpu = model.gpu;
  const n = set.count;
  const classes = model.arch.numClasses;
  const logits = gpu.empty([n, classes]);
  const order = gpu.tensor(Uint32Array.from({ length: n }, (_, i) => i), { shape: [n] });
  for (let s = 0; s * options.batchSize < n; s++) {
    const batch = Math.min(options.batchSize, n - s * options.batchSize);
    gpu.scope(() => {
      const indices = gpu.empty([batch], { dtype: "u32" });
      gpu.copy(order, indices, { srcOffset: s * options.batchSize * 4, bytes: batch * 4 });
      const x = gpu.empty(model.inputShape(batch, options.resize));
      const labels = gpu.empty([batch], { dtype: "i32" });
      prepareBatch({ x, labels, images: set.images, srcLabels: set.labels, indices }, {
        batch,
        channels: set.channels,
        srcH: set.height,
        srcW: set.width,
        dstH: options.resize,
        dstW: options.resize,
      });
      const { y } = model.forward(x, { gpu, training: false, seed: 0 });
      gpu.copy(y, logits, { dstOffset: s * options.batchSize * classes * 4, bytes: y.byteLength });
    });
    gpu.flush();
  }
  const all = await logits.toArray() as Float32Array;
  logits.dispose();
  order.dispose();
  const bad = all.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new NonFiniteError(
      `the model's outputs are Inf or NaN (example ${Math.floor(bad / classes)}): its weights ` +
        "are not finite or too large",
    );
  }
  const pred = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (all[i * classes + c] > all[i * classes + best]) best = c;
    pred[i] = best;
  }
  return pred;
}

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    weights: { type: "string" },
    dataset: { type: "string" },
    "data-dir": { type: "string" },
    resize: { type: "string" },
    "batch-size": { type: "string" },
    "limit-test": { type: "string" },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length > 1) {
    throw new UsageError(`one model expected, got: ${positionals.join(" ")}`);
  }
  const name = modelName(positionals[0]);
  if (!values.weights) throw new UsageError("--weights FILE is required");
  const flag = <T>(key: keyof typeof RECIPE_FIELDS, text: string | undefined): T | undefined => {
    if (text === undefined) return undefined;
    const f = RECIPE_FIELDS[key];
    const v = f.parse(text);
    if (v === undefined || v === null) {
      throw new UsageError(`${f.flag} must be ${f.expected}, got '${text}'`);
    }
    return v as T;
  };
  const batchSize = flag<number>("batchSize", values["batch-size"]) ?? 256;
  const limit = flag<number>("limitTest", values["limit-test"]);
  const dataset = flag<DatasetName>("dataset", values.dataset) ?? "fashion-mnist";
  const ck = await readCheckpoint(values.weights);
  const state = parseRunMetadata(values.weights, ck.metadata, name);
  const resize = flag<number>("resize", values.resize) ?? state.recipe.resize ??
    DEFAULTS[name].resize;
  checkResizeFlag(name, resize);
  const test = await loadDataset(dataset, { split: "test", dataDir: values["data-dir"], limit });
  if (dataset !== "synthetic") console.error(`data: ${describeSource(test)}`);
  if (test.count === 0) throw new CliError(`no test examples in ${test.name}: nothing to evaluate`);
  const gpu = await getGpu();
  checkMemory(gpu, name, {
    resize,
    batchSize: Math.min(batchSize, test.count),
    channels: test.channels,
  });
  const model = createModel(gpu, {
    name,
    inChannels: test.channels,
    numClasses: test.classes.length,
  });
  loadWeights(model, values.weights, ck.tensors);
  const pred = await predictAll(model, uploadImageSet(gpu, test), { resize, batchSize });
  const k = test.classes.length;
  const confusion = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  let right = 0;
  for (let i = 0; i < test.count; i++) {
    confusion[test.labels[i]][pred[i]]++;
    if (pred[i] === test.labels[i]) right++;
  }
  console.log(
    `${name} on ${test.name} test (${test.count} examples): test acc ${
      (right / test.count).toFixed(4)
    }`,
  );
  console.log("per-class accuracy:");
  const w = Math.max(...test.classes.map((c) => c.length));
  test.classes.forEach((c, i) => {
    const total = confusion[i].reduce((a, b) => a + b, 0);
    console.log(
      `  ${c.padEnd(w)}  ${total ? (confusion[i][i] / total).toFixed(4) : "n/a"}  (${total})`,
    );
  });
  console.log("confusion matrix (rows: true class, columns: predicted):");
  const cw = Math.max(5, String(test.count).length + 1);
  console.log(" ".repeat(w + 2) + test.classes.map((_, j) => String(j).padStart(cw)).join(""));
  confusion.forEach((row, i) => {
    console.log(
      `  ${test.classes[i].padEnd(w)}${row.map((v) => String(v).padStart(cw)).join("")}`,
    );
  });
  return 0;
}

if (import.meta.main) await runCommand("eval", main);
