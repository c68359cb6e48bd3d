// deno task predict <model> --weights FILE [--top K] [--json] IMAGE... : the top classes of images.
// One call of the library's model.predict for all the images (batched on the GPU, one readback);
// decoding (the header checked first) is data/image.ts's.
import { getGpu } from "../gpu/mod.ts";
import { CIFAR10_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES } from "../data/mod.ts";
import { createModel, DEFAULTS } from "../models/mod.ts";
import { checkMemory, checkResizeFlag, modelName, parseFlags } from "./common.ts";
import { CliError, runCommand, UsageError } from "./_run.ts";
import { loadWeights, parseRunMetadata, readCheckpoint, RECIPE_FIELDS } from "./checkpoint.ts";

const CLASSES: Record<string, readonly string[]> = {
  "fashion-mnist": FASHION_MNIST_CLASSES,
  "mnist": MNIST_CLASSES,
  "cifar10": CIFAR10_CLASSES,
};

/** Images per forward pass. */
const BATCH = 32;

const HELP = `usage: deno task predict <model> --weights FILE [flags] IMAGE...

  --weights FILE    safetensors checkpoint (the reference's names)
  --classes NAME    class names: fashion-mnist (default), mnist or cifar10
  --top K           how many classes to show per image, best first (default 3)
  --json            print one JSON document: per image, the top classes and probabilities
  --resize N        input size (default: the checkpoint's, else the model's seed recipe)
  --invert          invert gray levels (Fashion-MNIST/MNIST images are light objects on black)
  --debug           print the stack of an unexpected error
  -h, --help        this text

Images are PNG or JPEG files of any size, gray or color: converted to the model's channels (gray
or RGB), resized bilinearly on the GPU and scaled to [0, 1] as in training, all in one batch.`;

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    weights: { type: "string" },
    classes: { type: "string" },
    resize: { type: "string" },
    invert: { type: "boolean" },
    top: { type: "string" },
    json: { type: "boolean" },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const name = modelName(positionals[0]);
  const files = positionals.slice(1);
  if (files.length === 0) throw new UsageError("no images given");
  if (!values.weights) throw new UsageError("--weights FILE is required");
  const classes = CLASSES[values.classes ?? "fashion-mnist"];
  if (!classes) throw new UsageError(`--classes: one of ${Object.keys(CLASSES).join(", ")}`);
  let topK = 3;
  if (values.top !== undefined) {
    topK = /^\d+$/.test(values.top) ? Number(values.top) : NaN;
    if (!(topK >= 1 && topK <= classes.length)) {
      throw new UsageError(
        `--top must be an integer in [1, ${classes.length}] (the classes), got '${values.top}'`,
      );
    }
  }
  const ck = await readCheckpoint(values.weights);
  const state = parseRunMetadata(values.weights, ck.metadata, name);
  let resize = state.recipe.resize ?? DEFAULTS[name].resize;
  if (values.resize !== undefined) {
    const f = RECIPE_FIELDS.resize;
    const r = f.parse(values.resize) as number | undefined;
    if (r === undefined) {
      throw new UsageError(`--resize must be ${f.expected}, got '${values.resize}'`);
    }
    resize = r;
  }
  checkResizeFlag(name, resize);
  const inChannels = values.classes === "cifar10" ? 3 : 1;
  const gpu = await getGpu();
  const batchSize = Math.min(BATCH, files.length);
  checkMemory(gpu, name, { resize, batchSize, channels: inChannels });
  const model = createModel(gpu, { name, inChannels, numClasses: classes.length });
  loadWeights(model, values.weights, ck.tensors);
  const images: Uint8Array[] = [];
  for (const file of files) {
    images.push(
      await Deno.readFile(file).catch((err) => {
        const why = err instanceof Deno.errors.NotFound
          ? "no such file"
          : err instanceof Deno.errors.IsADirectory
          ? "it is a folder"
          : (err as Error).message.split(":")[0].replace(/ \(os error \d+\)$/, "");
        throw new CliError(`cannot read image ${file}: ${why}`);
      }),
    );
  }
  const predictions = await model.predict(images, {
    topK,
    classes,
    resize,
    batchSize,
    invert: values.invert,
    imageNames: files,
  });
  if (values.json) {
    const doc = {
      model: name,
      weights: values.weights,
      resize,
      images: files.map((file, i) => ({
        file,
        top: predictions[i].top.map((t) => ({
          index: t.index,
          name: t.name,
          probability: Number(t.probability.toFixed(6)),
        })),
      })),
    };
    console.log(JSON.stringify(doc));
    return 0;
  }
  files.forEach((file, i) => {
    const top = predictions[i].top;
    console.log(`${file}: ${top.map((t) => `${t.name} ${t.probability.toFixed(3)}`).join(", ")}`);
  });
  return 0;
}

if (import.meta.main) await runCommand("predict", main);
