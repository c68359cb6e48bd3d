// deno task predict <model> --weights FILE IMAGE... : top-3 classes for PNG images.
// PNG decoding (fast-png, with the header checked first) is data/image.ts's pngToPlanes.
import { getGpu } from "../gpu/mod.ts";
import { CIFAR10_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES, pngToPlanes } from "../data/mod.ts";
import { createModel, DEFAULTS, NonFiniteError, uploadImageSet } from "../models/mod.ts";
import { checkMemory, checkResizeFlag, modelName, parseFlags } from "./common.ts";
import { CliError, runCommand, UsageError } from "./_run.ts";
import { loadWeights, parseRunMetadata, readCheckpoint, RECIPE_FIELDS } from "./checkpoint.ts";
import { predictLogits } from "./predict_core.ts";

const CLASSES: Record<string, readonly string[]> = {
  "fashion-mnist": FASHION_MNIST_CLASSES,
  "mnist": MNIST_CLASSES,
  "cifar10": CIFAR10_CLASSES,
};

const HELP = `usage: deno task predict <model> --weights FILE [flags] IMAGE.png...

  --weights FILE    safetensors checkpoint (the reference's names)
  --classes NAME    class names: fashion-mnist (default), mnist or cifar10
  --resize N        input size (default: the checkpoint's, else the model's seed recipe)
  --invert          invert gray levels (Fashion-MNIST/MNIST images are light objects on black)
  --debug           print the stack of an unexpected error
  -h, --help        this text

Images are converted to the model's channels (gray or RGB), resized bilinearly on the GPU and
scaled to [0, 1] as in training.`;

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    weights: { type: "string" },
    classes: { type: "string" },
    resize: { type: "string" },
    invert: { type: "boolean" },
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
  checkMemory(gpu, name, { resize, batchSize: 1, channels: inChannels });
  const model = createModel(gpu, { name, inChannels, numClasses: classes.length });
  loadWeights(model, values.weights, ck.tensors);
  for (const file of files) {
    const bytes = await Deno.readFile(file).catch((err) => {
      const why = err instanceof Deno.errors.NotFound
        ? "no such file"
        : err instanceof Deno.errors.IsADirectory
        ? "it is a folder"
        : (err as Error).message.split(":")[0].replace(/ \(os error \d+\)$/, "");
      throw new CliError(`cannot read image ${file}: ${why}`);
    });
    const img = pngToPlanes(bytes, {
      channels: inChannels,
      invert: values.invert,
      file,
    });
    const set = uploadImageSet(gpu, {
      images: img.data,
      labels: new Uint8Array(1),
      count: 1,
      channels: inChannels,
      height: img.height,
      width: img.width,
    });
    const logits = await predictLogits(model, set, resize);
    set.images.dispose();
    set.labels.dispose();
    if (logits.some((v) => !Number.isFinite(v))) {
      throw new NonFiniteError(
        `${file}: the model's outputs are Inf or NaN: the weights in ${values.weights} are not ` +
          "finite or too large",
      );
    }
    const m = Math.max(...logits);
    const exp = logits.map((v) => Math.exp(v - m));
    const z = exp.reduce((a, b) => a + b, 0);
    const top = [...exp.keys()].sort((a, b) => exp[b] - exp[a]).slice(0, 3);
    console.log(
      `${file}: ${top.map((k) => `${classes[k]} ${(exp[k] / z).toFixed(3)}`).join(", ")}`,
    );
  }
  return 0;
}

if (import.meta.main) await runCommand("predict", main);
