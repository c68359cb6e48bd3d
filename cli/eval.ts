// deno task eval <model> --weights FILE [--dataset D] [--data-dir DIR] [--resize N] [--limit-test N]
// [--json]. Test accuracy, per-class accuracy and the confusion matrix of a checkpoint, from the
// library's predictAll (models/predict.ts).
import { getGpu } from "../gpu/mod.ts";
import { type DatasetName, loadDataset } from "../data/mod.ts";
import { describeSource } from "../data/dataset.ts";
import { createModel, DEFAULTS, predictAll, uploadImageSet } from "../models/mod.ts";
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
  --json              print one JSON document: accuracy, per-class accuracy, confusion matrix
  --debug             print the stack of an unexpected error
  -h, --help          this text`;

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    weights: { type: "string" },
    dataset: { type: "string" },
    "data-dir": { type: "string" },
    resize: { type: "string" },
    "batch-size": { type: "string" },
    "limit-test": { type: "string" },
    json: { type: "boolean" },
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
  const { predicted: pred } = await predictAll(model, uploadImageSet(gpu, test), {
    resize,
    batchSize,
  });
  const k = test.classes.length;
  const confusion = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  let right = 0;
  for (let i = 0; i < test.count; i++) {
    confusion[test.labels[i]][pred[i]]++;
    if (pred[i] === test.labels[i]) right++;
  }
  if (values.json) {
    const doc = {
      model: name,
      weights: values.weights,
      dataset: test.name,
      examples: test.count,
      resize,
      accuracy: right / test.count,
      classes: test.classes,
      per_class: test.classes.map((c, i) => {
        const total = confusion[i].reduce((a, b) => a + b, 0);
        return {
          index: i,
          name: c,
          accuracy: total ? confusion[i][i] / total : null,
          count: total,
        };
      }),
      confusion,
    };
    console.log(JSON.stringify(doc));
    return 0;
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
