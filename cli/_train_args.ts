// The command line of `deno task train`: its help text, the parsed and validated flags, and the
// recipe of a run (the model's seed recipe, a checkpoint's, and the flags that override them).
// Apart from cli/train.ts so that the command reads top to bottom as what a run does.
import { resolve } from "node:path";
import { DEFAULTS, MODEL_NAMES, type ModelName } from "../models/mod.ts";
import { checkResizeFlag, parseModelCommand } from "./common.ts";
import { UsageError } from "./_run.ts";
import type { AugmentParams } from "../kernels/data/index.ts";
import { checkAugmentList, decimal, RECIPE_FIELDS, type RunRecipe } from "./checkpoint.ts";

/** The help text of `deno task train`. */
export const HELP = `usage: deno task train <model> [flags]

models: ${MODEL_NAMES.join(", ")}

flags (defaults: the seed recipe of each model):
  --recipe NAME       seed (default: d2l's recipe of the model) or modern: AdamW (lr 0.01, decay
                      0.05), batch 128, cosine schedule after 469 warm-up steps, label smoothing
                      0.1; flags given override its values
  --epochs N          epochs (default 10)
  --batch-size N      batch size
  --lr X              learning rate
  --resize N          input size (images are resized bilinearly on the GPU)
  --dataset NAME      fashion-mnist (default), mnist, cifar10, synthetic, or folder:PATH: your
                      images, one subfolder of PNG/JPEG files per class (or train/ and test/
                      folders of those; else 20% of each class is the test set)
  --data-dir DIR      where the data set files are
  --limit-train N     use the first N training examples
  --limit-test N      use the first N test examples
  --no-shuffle        keep file order (default: reshuffle each epoch from --seed)
  --seed N            seed of initialization, shuffling, augmentation and dropout (default 0)
  --dropout P         override every dropout probability (0 disables dropout)
  --optimizer NAME    sgd (default), adam or adamw (torch.optim's; their --lr defaults to
                      0.001, torch.optim's, not the seed recipe's SGD rate)
  --momentum X        SGD momentum (default 0: plain SGD)
  --nesterov          SGD Nesterov momentum (needs --momentum)
  --weight-decay X    weight decay (default 0; AdamW's is decoupled)
  --schedule S        learning-rate schedule per step: constant (default), step:E (x0.1 every E
                      epochs), multistep:E1,E2 (x0.1 at each), cosine (to 0 at the end) or
                      onecycle (up to --lr and down)
  --warmup N          linear warm-up over the first N steps, then the schedule
  --label-smoothing X label smoothing of the cross-entropy loss, in [0, 1] (default 0)
  --augment [LIST]    augmentation on the GPU, comma-separated: flip, crop[:PAD] (zero padding
                      PAD, default size/7: 4 at 28), resized-crop[:LO-HI] (area fraction, default
                      0.08-1), rotate:DEG, translate:FRAC, scale:LO-HI, shear:DEG (torchvision's
                      RandomHorizontalFlip, RandomCrop, RandomResizedCrop, RandomAffine); alone:
                      crop,flip
  --init FILE         start from a safetensors checkpoint with the reference's names
  --save FILE         write weights at each epoch end (atomically, with the recipe; momentum in
                      FILE-optimizer-stepN.safetensors beside it). Locked while the run lasts
  --keep-best FILE    write the checkpoint of the epoch with the best test accuracy so far (as
                      --save: atomically, with the recipe; locked while the run lasts)
  --patience N        stop early after N epochs without improvement of the --monitor metric
  --min-delta X       the least change that counts as an improvement (default 0)
  --monitor M         test-acc (default; loss without test examples) or loss (training loss)
  --resume FILE       continue the run a --save checkpoint holds (weights, momentum, epoch, step
                      and recipe; flags given override the recipe)
  --reset-optimizer   with --resume: start the momentum from zero when the checkpoint has none
  --json              one JSON object per epoch on stdout
  --plot FILE.svg     SVG of train loss, train acc and test acc per epoch
  --no-autotune       ignore the kernel choices cached by \`deno task tune\`
  --precision P       f32 (default) or f16: f16 activations, gradients and weight copies with f32
                      master weights and dynamic loss scaling (needs the adapter's shader-f16)
  --debug             print the stack of an unexpected error
  -h, --help          this text`;

/** The parsed, validated command line. */
export interface TrainArgs {
  model: ModelName;
  /** The recipe flags given on the command line (the rest comes from a checkpoint or defaults). */
  given: Partial<RunRecipe>;
  dataDir?: string;
  init?: string;
  save?: string;
  keepBest?: string;
  resume?: string;
  /** Early stopping: epochs without improvement (undefined: never stop early). */
  patience?: number;
  minDelta: number;
  monitor?: "testAcc" | "loss";
  resetOptimizer: boolean;
  json: boolean;
  plot?: string;
  autotune: boolean;
}

/** Parses and validates the command line; throws {@linkcode UsageError}. */
export function parseTrainArgs(argv: string[]): TrainArgs | "help" {
  // `--epochs -1` is a negative number, not an option: join it as `--epochs=-1`.
  const args0: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (/^--[a-z-]+$/.test(argv[i]) && /^-\d/.test(argv[i + 1] ?? "")) {
      args0.push(`${argv[i]}=${argv[++i]}`);
    } else if (argv[i] === "--augment" && _bareAugment(argv[i + 1])) {
      args0.push("--augment=crop,flip"); // alone, as before lists
    } else args0.push(argv[i]);
  }
  const parsed = parseModelCommand(args0, {
    "recipe": { type: "string" },
    "epochs": { type: "string" },
    "batch-size": { type: "string" },
    "lr": { type: "string" },
    "resize": { type: "string" },
    "dataset": { type: "string" },
    "data-dir": { type: "string" },
    "limit-train": { type: "string" },
    "limit-test": { type: "string" },
    "no-shuffle": { type: "boolean" },
    "seed": { type: "string" },
    "dropout": { type: "string" },
    "momentum": { type: "string" },
    "weight-decay": { type: "string" },
    "optimizer": { type: "string" },
    "nesterov": { type: "boolean" },
    "schedule": { type: "string" },
    "warmup": { type: "string" },
    "label-smoothing": { type: "string" },
    "augment": { type: "string" },
    "init": { type: "string" },
    "save": { type: "string" },
    "keep-best": { type: "string" },
    "patience": { type: "string" },
    "min-delta": { type: "string" },
    "monitor": { type: "string" },
    "resume": { type: "string" },
    "reset-optimizer": { type: "boolean" },
    "json": { type: "boolean" },
    "plot": { type: "string" },
    "no-autotune": { type: "boolean" },
    "precision": { type: "string" },
  });
  if (parsed === "help") return "help";
  const { model, values: v } = parsed;
  const given: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(RECIPE_FIELDS)) {
    if (["shuffle", "augment", "nesterov"].includes(name)) continue;
    const text = (v as Record<string, string | undefined>)[f.flag.slice(2)];
    if (text === undefined) continue;
    const value = text === "none" ? undefined : f.parse(text);
    if (value === undefined || value === null) {
      throw new UsageError(`${f.flag} must be ${f.expected}, got '${text}'`);
    }
    given[name] = value;
  }
  if (v["no-shuffle"]) given.shuffle = false;
  if (v.augment !== undefined) {
    const r = checkAugmentList(v.augment);
    if ("error" in r) throw new UsageError(`--augment: ${r.error}`);
    given.augment = r.list;
  }
  if (v.nesterov) given.nesterov = true;
  if (v.recipe !== undefined) {
    const preset = RECIPES[v.recipe as RecipeName];
    if (!Object.hasOwn(RECIPES, v.recipe)) {
      throw new UsageError(
        `--recipe must be one of ${Object.keys(RECIPES).join(", ")}, got '${v.recipe}'`,
      );
    }
    for (const [name, value] of Object.entries(preset)) {
      if (!(name in given)) given[name] = value;
    }
  }
  const args: TrainArgs = {
    model,
    given: given as Partial<RunRecipe>,
    dataDir: v["data-dir"],
    init: v.init,
    save: v.save,
    keepBest: v["keep-best"],
    resume: v.resume,
    patience: v.patience === undefined ? undefined : _patience(v.patience),
    minDelta: v["min-delta"] === undefined ? 0 : _minDelta(v["min-delta"]),
    monitor: v.monitor === undefined ? undefined : _monitor(v.monitor),
    resetOptimizer: v["reset-optimizer"] ?? false,
    json: v.json ?? false,
    plot: v.plot,
    autotune: !v["no-autotune"],
  };
  if (args.init && args.resume) throw new UsageError("--init and --resume cannot be combined");
  if (args.resetOptimizer && !args.resume) {
    throw new UsageError("--reset-optimizer goes with --resume");
  }
  if (v["min-delta"] !== undefined && args.patience === undefined) {
    throw new UsageError("--min-delta goes with --patience");
  }
  if (v.monitor !== undefined && args.patience === undefined) {
    throw new UsageError("--monitor goes with --patience");
  }
  const outputs: [string, string | undefined][] = [
    ["--save", args.save],
    ["--keep-best", args.keepBest],
    ["--plot", args.plot],
  ];
  const inputs: [string, string | undefined][] = [["--init", args.init], ["--resume", args.resume]];
  for (const [of, o] of outputs) {
    for (const [other, p] of [...inputs, ...outputs]) {
      if (o === undefined || p === undefined || of === other) continue;
      if (
        resolve(o) === resolve(p) &&
        !(of === "--save" && (other === "--init" || other === "--resume"))
      ) {
        throw new UsageError(`${of} and ${other} name the same file ${o}; give ${of} its own path`);
      }
    }
  }
  if (args.plot !== undefined && !/\.svg$/i.test(args.plot)) {
    throw new UsageError(`--plot ${args.plot}: the plot is an SVG drawing; give a .svg path`);
  }
  for (const flag of ["init", "save", "keep-best", "resume", "plot", "data-dir"] as const) {
    if (v[flag] === "") throw new UsageError(`--${flag} needs a path`);
  }
  if (args.dataDir !== undefined && args.given.dataset === "synthetic") {
    throw new UsageError("--data-dir has no effect with --dataset synthetic (made in memory)");
  }
  args.given = { ...args.given, ...folderDataset(args.given.dataset, args.dataDir) };
  if (args.given.resize !== undefined) checkResizeFlag(model, args.given.resize);
  const { batchSize, limitTrain } = args.given;
  if (batchSize !== undefined && limitTrain != null && batchSize > limitTrain) {
    throw new UsageError(
      `--batch-size ${batchSize} is larger than the training data (--limit-train ${limitTrain})`,
    );
  }
  return args;
}

/**
 * `--dataset folder:PATH`: the path made absolute (so that `--resume` finds it from anywhere);
 * `--data-dir` has no effect with it.
 */
function folderDataset(
  dataset: string | undefined,
  dataDir: string | undefined,
): Partial<RunRecipe> {
  if (dataset === undefined || !dataset.startsWith("folder:")) return {};
  if (dataDir !== undefined) {
    throw new UsageError(
      "--data-dir has no effect with --dataset folder:PATH (the folder is named in it)",
    );
  }
  return { dataset: `folder:${resolve(dataset.slice(7))}` };
}

/** `--patience N`: an integer >= 1. */
function _patience(text: string): number {
  const n = decimal(text);
  if (n === null || n < 1 || !Number.isSafeInteger(n)) {
    throw new UsageError(`--patience must be an integer >= 1, got '${text}'`);
  }
  return n;
}

/** `--min-delta X`: a number >= 0. */
function _minDelta(text: string): number {
  const x = decimal(text);
  if (x === null || x < 0) {
    throw new UsageError(`--min-delta must be a number >= 0, got '${text}'`);
  }
  return x;
}

/** `--monitor test-acc|loss`. */
function _monitor(text: string): "testAcc" | "loss" {
  if (text === "test-acc") return "testAcc";
  if (text === "loss") return "loss";
  throw new UsageError(`--monitor must be test-acc or loss, got '${text}'`);
}

/** The learning rate of Adam and AdamW when neither the flags nor a checkpoint give one. */
export const ADAM_DEFAULT_LR = 0.001;

/** The names `--recipe` takes. */
export type RecipeName = "seed" | "modern";

/**
 * Named recipes: the recipe fields `--recipe NAME` sets, under the flags given. `seed` is d2l's
 * recipe of each model (the defaults). `modern` is what a practitioner would use today: AdamW
 * with decoupled weight decay, a larger step count (batch 128), a cosine schedule after a linear
 * warm-up of one Fashion-MNIST epoch (469 steps at batch 128) and label smoothing. Measured on
 * real Fashion-MNIST, lenet-bn, 10 epochs: see bench/RESULTS.md ("A modern recipe").
 */
export const RECIPES: Readonly<Record<RecipeName, Readonly<Partial<RunRecipe>>>> = {
  seed: {},
  modern: {
    optimizer: "adamw",
    lr: 0.01,
    batchSize: 128,
    weightDecay: 0.05,
    schedule: "cosine",
    warmup: 469,
    labelSmoothing: 0.1,
  },
};

/** Whether `--augment` followed by `next` stands alone (no list: the end, a flag or the model). */
function _bareAugment(next: string | undefined): boolean {
  return next === undefined || next.startsWith("-") ||
    (MODEL_NAMES as readonly string[]).includes(next);
}

/**
 * The Trainer's augmentation of a canonical `--augment` list (see `checkAugmentList`) for
 * images of `size` pixels: `crop` pads by `max(1, round(size / 7))` (4 at 28, as before lists),
 * `resized-crop` takes torchvision's default ratio 3/4-4/3; undefined for `none`.
 */
export function augmentOption(list: string, size: number): AugmentParams | undefined {
  if (list === "none") return undefined;
  const a: { -readonly [K in keyof AugmentParams]: AugmentParams[K] } = {};
  for (const item of list.split(",")) {
    const [name, arg] = item.split(":");
    const range = (): [number, number] => arg.split("-").map(Number) as [number, number];
    if (name === "flip") a.flip = true;
    else if (name === "crop") {
      a.cropPadding = arg === undefined ? Math.max(1, Math.round(size / 7)) : Number(arg);
    } else if (name === "resized-crop") {
      a.resizedCrop = { scale: arg === undefined ? [0.08, 1] : range(), ratio: [3 / 4, 4 / 3] };
    } else if (name === "rotate") a.rotate = Number(arg);
    else if (name === "translate") a.translate = [Number(arg), Number(arg)];
    else if (name === "scale") a.scale = range();
    else if (name === "shear") a.shear = Number(arg);
  }
  return a;
}

/** The recipe of a fresh run: the model's seed recipe and the CLI's defaults. */
export function defaultRecipe(model: ModelName): RunRecipe {
  const d = DEFAULTS[model];
  return {
    epochs: d.epochs,
    batchSize: d.batchSize,
    lr: d.lr,
    momentum: 0,
    weightDecay: 0,
    resize: d.resize,
    dataset: "fashion-mnist",
    limitTrain: null,
    limitTest: null,
    shuffle: true,
    seed: 0,
    dropout: null,
    augment: "none",
    precision: "f32",
    optimizer: "sgd",
    nesterov: false,
    schedule: "constant",
    warmup: 0,
    labelSmoothing: 0,
  };
}

/**
 * The recipe of a run: defaults, then what the checkpoint stored, then the flags given; and a
 * description of what the flags changed from the checkpoint's values, for the header.
 */
export function resolveRecipe(
  model: ModelName,
  stored: Partial<RunRecipe>,
  given: Partial<RunRecipe>,
): { recipe: RunRecipe; overrides: string[] } {
  const recipe = { ...defaultRecipe(model), ...stored, ...given };
  // The seed recipes' learning rates are plain SGD's (up to 0.9); Adam and AdamW without an lr
  // start from torch.optim's default instead.
  if (recipe.optimizer !== "sgd" && given.lr === undefined && stored.lr === undefined) {
    recipe.lr = ADAM_DEFAULT_LR;
  }
  const overrides: string[] = [];
  for (const [name, value] of Object.entries(given)) {
    const key = name as keyof RunRecipe;
    if (key in stored && stored[key] !== value) {
      overrides.push(`${RECIPE_FIELDS[key].flag} ${value} (checkpoint: ${stored[key]})`);
    }
  }
  return { recipe, overrides };
}
