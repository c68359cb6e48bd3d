// deno task train <model> [flags]: d2l's train_ch6 on the GPU. See `--help`.
import { getGpu, type Gpu } from "../gpu/mod.ts";
import { defaultTuningCachePath, loadTuningCache } from "../kernels/mod.ts";
import { type Dataset, type DatasetName, loadDataset, writeFileAtomic } from "../data/mod.ts";
import {
  createModel,
  DEFAULTS,
  isPrecision,
  MODEL_NAMES,
  type ModelName,
  type Precision,
  precisionUnsupported,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { renderPlot } from "./plot.ts";
import {
  checkResizeFlag,
  optimizerPath,
  parseModelCommand,
  parseOrExit,
  readCheckpoint,
  saveCheckpoint,
  UsageError,
} from "./common.ts";

const DATASETS = ["fashion-mnist", "mnist", "cifar10", "synthetic"] as const;

export const HELP = `usage: deno task train <model> [flags]

models: ${MODEL_NAMES.join(", ")}

flags (defaults: the seed recipe of each model):
  --epochs N          epochs (default 10)
  --batch-size N      batch size
  --lr X              learning rate
  --resize N          input size (images are resized bilinearly on the GPU)
  --dataset NAME      fashion-mnist (default), mnist, cifar10 or synthetic
  --data-dir DIR      where the data set files are
  --limit-train N     use the first N training examples
  --limit-test N      use the first N test examples
  --no-shuffle        keep file order (default: reshuffle each epoch from --seed)
  --seed N            seed of initialization, shuffling, augmentation and dropout (default 0)
  --dropout P         override every dropout probability (0 disables dropout)
  --momentum X        SGD momentum (default 0: plain SGD)
  --weight-decay X    SGD weight decay (default 0)
  --augment           random crop and horizontal flip
  --init FILE         start from a safetensors checkpoint with the reference's names
  --save FILE         write weights at each epoch end (atomically; momentum in FILE-optimizer.safetensors)
  --resume FILE       continue from a checkpoint written by --save (weights, optimizer state, epoch)
  --json              one JSON object per epoch on stdout
  --plot FILE         SVG of train loss, train acc and test acc per epoch
  --no-autotune       ignore the kernel choices cached by \`deno task tune\`
  --precision P       f32 (default) or f16: f16 activations, gradients and weight copies with f32
                      master weights and dynamic loss scaling (needs the adapter's shader-f16)
  -h, --help          this text`;

/** The parsed, validated command line. */
export interface TrainArgs {
  model: ModelName;
  epochs: number;
  batchSize: number;
  lr: number;
  resize: number;
  dataset: DatasetName;
  dataDir?: string;
  limitTrain?: number;
  limitTest?: number;
  shuffle: boolean;
  seed: number;
  dropout?: number;
  momentum: number;
  weightDecay: number;
  augment: boolean;
  init?: string;
  save?: string;
  resume?: string;
  json: boolean;
  plot?: string;
  autotune: boolean;
  precision: Precision;
}

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    throw new UsageError(`--${name} must be an integer >= ${min}, got '${v}'`);
  }
  return n;
}

function num(
  name: string,
  v: string | undefined,
  ok: (n: number) => boolean,
  what: string,
): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || !ok(n)) throw new UsageError(`--${name} must be ${what}, got '${v}'`);
  return n;
}

/** Parses and validates the command line; throws {@linkcode UsageError}. */
export function parseTrainArgs(argv: string[]): TrainArgs | "help" {
  // `--epochs -1` is a negative number, not an option: join it as `--epochs=-1`.
  const args0: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (/^--[a-z-]+$/.test(argv[i]) && /^-\d/.test(argv[i + 1] ?? "")) {
      args0.push(`${argv[i]}=${argv[++i]}`);
    } else args0.push(argv[i]);
  }
  const parsed = parseModelCommand(args0, {
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
    "augment": { type: "boolean" },
    "init": { type: "string" },
    "save": { type: "string" },
    "resume": { type: "string" },
    "json": { type: "boolean" },
    "plot": { type: "string" },
    "no-autotune": { type: "boolean" },
    "precision": { type: "string" },
  });
  if (parsed === "help") return "help";
  const { model, values: v } = parsed;
  const dataset = (v.dataset ?? "fashion-mnist") as DatasetName;
  if (!DATASETS.includes(dataset as typeof DATASETS[number])) {
    throw new UsageError(`unknown dataset '${dataset}'; choose one of: ${DATASETS.join(", ")}`);
  }
  const recipe = DEFAULTS[model];
  const args: TrainArgs = {
    model,
    epochs: int("epochs", v.epochs, 1) ?? recipe.epochs,
    batchSize: int("batch-size", v["batch-size"], 1) ?? recipe.batchSize,
    lr: num("lr", v.lr, (n) => n > 0, "a number > 0") ?? recipe.lr,
    resize: int("resize", v.resize, 1) ?? recipe.resize,
    dataset,
    dataDir: v["data-dir"],
    limitTrain: int("limit-train", v["limit-train"], 1),
    limitTest: int("limit-test", v["limit-test"], 1),
    shuffle: !v["no-shuffle"],
    seed: int("seed", v.seed, 0) ?? 0,
    dropout: num("dropout", v.dropout, (n) => n >= 0 && n < 1, "in [0, 1)"),
    momentum: num("momentum", v.momentum, (n) => n >= 0 && n < 1, "in [0, 1)") ?? 0,
    weightDecay: num("weight-decay", v["weight-decay"], (n) => n >= 0, "a number >= 0") ?? 0,
    augment: v.augment ?? false,
    init: v.init,
    save: v.save,
    resume: v.resume,
    json: v.json ?? false,
    plot: v.plot,
    autotune: !v["no-autotune"],
    precision: (v.precision ?? "f32") as Precision,
  };
  if (!isPrecision(args.precision)) {
    throw new UsageError(`--precision must be f32 or f16, got '${args.precision}'`);
  }
  if (args.init && args.resume) throw new UsageError("--init and --resume cannot be combined");
  checkResizeFlag(model, args.resize);
  if (args.limitTrain !== undefined && args.batchSize > args.limitTrain) {
    throw new UsageError(
      `--batch-size ${args.batchSize} is larger than the training data (--limit-train ${args.limitTrain})`,
    );
  }
  return args;
}

function progressBar(label: string): ((done: number, total: number) => void) | undefined {
  if (!Deno.stderr.isTerminal()) return undefined;
  const t0 = performance.now();
  let last = 0;
  const enc = new TextEncoder();
  return (done, total) => {
    const now = performance.now();
    if (done < total && now - last < 250) return;
    last = now;
    const frac = done / total;
    const eta = frac > 0 ? ((now - t0) / 1000) * (1 - frac) / frac : 0;
    const width = 30;
    const bar = "#".repeat(Math.round(frac * width)).padEnd(width, ".");
    Deno.stderr.writeSync(
      enc.encode(
        `\r${label} [${bar}] ${done}/${total} steps, ETA ${eta.toFixed(0)}s   ${
          done === total ? "\n" : ""
        }`,
      ),
    );
  };
}

/** Loads the kernel choices `deno task tune` cached for this adapter, saying how many. */
async function loadTuned(gpu: Gpu): Promise<void> {
  const path = defaultTuningCachePath();
  const n = await loadTuningCache(gpu, path);
  if (n !== null) {
    console.error(`autotune: ${n} tuned entries for this adapter loaded from ${path}`);
  }
}

function dataError(err: unknown): never {
  console.error(`train: ${(err as Error).message}`);
  Deno.exit(1);
}

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const args = parseOrExit("train", HELP, () => parseTrainArgs(argv));
  if (typeof args === "number") return args;
  const load = (split: "train" | "test", limit?: number): Promise<Dataset> =>
    loadDataset(args.dataset, {
      split,
      dataDir: args.dataDir,
      limit,
      synthetic: { seed: args.seed },
    }).catch(dataError);
  const trainSet = await load("train", args.limitTrain);
  const testSet = await load("test", args.limitTest);
  if (args.batchSize > trainSet.count) {
    console.error(
      `train: --batch-size ${args.batchSize} is larger than the training data (${trainSet.count} examples) (see --help)`,
    );
    return 2;
  }
  const gpu = await getGpu();
  const unsupported = precisionUnsupported(gpu, args.precision);
  if (unsupported) {
    console.error(`train: --${unsupported}; use --precision f32`);
    return 2;
  }
  if (args.autotune) await loadTuned(gpu);
  const model = createModel(gpu, {
    name: args.model,
    seed: args.seed,
    inChannels: trainSet.channels,
    numClasses: Math.max(trainSet.classes.length, 1),
  });
  let startEpoch = 0, steps = 0;
  let resumedScale: number | undefined;
  if (args.init) {
    const ck = await readCheckpoint(args.init);
    model.loadStateDict(ck.tensors, { source: args.init });
  }
  if (args.resume) {
    const ck = await readCheckpoint(args.resume);
    model.loadStateDict(ck.tensors, { source: args.resume });
    startEpoch = Number(ck.metadata.epoch ?? 0);
    steps = Number(ck.metadata.steps ?? 0);
    // An f16 run goes on at the loss scale it had reached (GradScaler's state, less its growth
    // tracker); written by --save below.
    if (ck.metadata.loss_scale !== undefined) resumedScale = Number(ck.metadata.loss_scale);
    const opt = optimizerPath(args.resume);
    if (args.momentum > 0) {
      const m = await readCheckpoint(opt).catch(() => null);
      if (m) {
        for (const [name, p] of model.params) {
          const t = m.tensors.get(name);
          if (!t) throw new Error(`optimizer state ${opt} lacks '${name}'`);
          p.momentum ??= gpu.zeros(p.shape);
          gpu.write(p.momentum, t.data as Float32Array);
        }
      }
    }
  }
  const trainer = new Trainer(model, {
    lr: args.lr,
    batchSize: args.batchSize,
    resize: args.resize,
    momentum: args.momentum,
    weightDecay: args.weightDecay,
    augment: args.augment,
    dropout: args.dropout,
    seed: args.seed,
    precision: args.precision,
    lossScale: resumedScale === undefined ? undefined : { initScale: resumedScale },
  });
  trainer.steps = steps;
  const train = uploadImageSet(gpu, trainSet);
  const test = uploadImageSet(gpu, testSet);
  if (!args.json) {
    console.log(
      `${args.model} on ${trainSet.name} (${trainSet.count} train / ${testSet.count} test, ` +
        `${args.resize}x${args.resize}), batch ${args.batchSize}, lr ${args.lr}, ${args.epochs} epochs, ` +
        `${args.precision}, ${gpu.description}`,
    );
  }
  if (startEpoch >= args.epochs) {
    console.error(
      `train: ${args.resume} already finished epoch ${startEpoch}; pass --epochs N > ${startEpoch} to go on`,
    );
    return 0;
  }
  const history: { epoch: number; loss: number; trainAcc: number; testAcc: number }[] = [];
  let examples = 0, seconds = 0;
  let last = { loss: NaN, trainAcc: NaN, testAcc: NaN };
  for (let epoch = startEpoch; epoch < args.epochs; epoch++) {
    const r = await trainer.trainEpoch(train, {
      epoch,
      shuffle: args.shuffle,
      onStep: progressBar(`epoch ${epoch + 1}/${args.epochs}`),
    });
    const testAcc = await trainer.evaluate(test);
    examples += r.examples;
    seconds += r.seconds;
    last = { loss: r.loss, trainAcc: r.trainAcc, testAcc };
    history.push({ epoch: epoch + 1, ...last });
    const eps = r.examples / r.seconds;
    if (args.json) {
      console.log(JSON.stringify({
        epoch: epoch + 1,
        loss: r.loss,
        train_acc: r.trainAcc,
        test_acc: testAcc,
        examples_per_sec: eps,
        ...(r.lossScale === undefined
          ? {}
          : { loss_scale: r.lossScale, skipped_steps: r.skippedSteps }),
      }));
    } else {
      console.log(
        `epoch ${epoch + 1}: loss ${r.loss.toFixed(3)}, train acc ${r.trainAcc.toFixed(3)}, ` +
          `test acc ${testAcc.toFixed(3)}, ${eps.toFixed(1)} examples/sec` +
          (r.lossScale === undefined
            ? ""
            : ` (loss scale ${r.lossScale}, ${r.skippedSteps} steps skipped so far)`),
      );
    }
    if (args.save) {
      await saveCheckpoint(model, args.save, {
        model: args.model,
        epoch: String(epoch + 1),
        steps: String(trainer.steps),
        format: "pt",
        ...(r.lossScale === undefined ? {} : { loss_scale: String(r.lossScale) }),
      });
    }
    if (args.plot) {
      await writeFileAtomic(
        args.plot,
        new TextEncoder().encode(renderPlot(history, { title: args.model })),
      );
    }
  }
  if (!args.json) {
    console.log(
      `loss ${last.loss.toFixed(3)}, train acc ${last.trainAcc.toFixed(3)}, test acc ${
        last.testAcc.toFixed(3)
      }`,
    );
    console.log(`${(examples / seconds).toFixed(1)} examples/sec on ${gpu.description}`);
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
