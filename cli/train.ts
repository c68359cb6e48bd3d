// deno task train <model> [flags]: d2l's train_ch6 on the GPU. See `--help`.
import { resolve } from "node:path";
import { getGpu, type Gpu } from "../gpu/mod.ts";
import { defaultTuningCachePath, loadTuningCache } from "../kernels/mod.ts";
import { type Dataset, loadDataset } from "../data/mod.ts";
import { describeSource } from "../data/dataset.ts";
import { writeFileAtomic } from "../data/locate.ts";
import {
  createModel,
  DEFAULTS,
  DivergenceError,
  type EpochResult,
  type HostStateDict,
  type LrSchedule,
  type Model,
  MODEL_NAMES,
  type ModelName,
  NonFiniteError,
  precisionUnsupported,
  type Schedule,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { renderPlot } from "./plot.ts";
import { checkMemory, checkResizeFlag, parseModelCommand, parseOrExit } from "./common.ts";
import { CliError, runCommand, UsageError } from "./_run.ts";
import { checkOutputFile, lockOutput, writeFailed } from "./_outputs.ts";
import {
  loadWeights,
  newRunId,
  parseRunMetadata,
  readCheckpoint,
  readOptimizerState,
  RECIPE_FIELDS,
  type RunRecipe,
  type RunState,
  saveRun,
} from "./checkpoint.ts";

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
  --optimizer NAME    sgd (default), adam or adamw (torch.optim's; Adam wants a smaller --lr,
                      e.g. 0.001)
  --momentum X        SGD momentum (default 0: plain SGD)
  --nesterov          SGD Nesterov momentum (needs --momentum)
  --weight-decay X    weight decay (default 0; AdamW's is decoupled)
  --schedule S        learning-rate schedule per step: constant (default), step:E (x0.1 every E
                      epochs), multistep:E1,E2 (x0.1 at each), cosine (to 0 at the end) or
                      onecycle (up to --lr and down)
  --warmup N          linear warm-up over the first N steps, then the schedule
  --label-smoothing X label smoothing of the cross-entropy loss, in [0, 1] (default 0)
  --augment           random crop and horizontal flip
  --init FILE         start from a safetensors checkpoint with the reference's names
  --save FILE         write weights at each epoch end (atomically, with the recipe; momentum in
                      FILE-optimizer-stepN.safetensors beside it). Locked while the run lasts
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
  resume?: string;
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
    "optimizer": { type: "string" },
    "nesterov": { type: "boolean" },
    "schedule": { type: "string" },
    "warmup": { type: "string" },
    "label-smoothing": { type: "string" },
    "augment": { type: "boolean" },
    "init": { type: "string" },
    "save": { type: "string" },
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
  if (v.augment) given.augment = true;
  if (v.nesterov) given.nesterov = true;
  const args: TrainArgs = {
    model,
    given: given as Partial<RunRecipe>,
    dataDir: v["data-dir"],
    init: v.init,
    save: v.save,
    resume: v.resume,
    resetOptimizer: v["reset-optimizer"] ?? false,
    json: v.json ?? false,
    plot: v.plot,
    autotune: !v["no-autotune"],
  };
  if (args.init && args.resume) throw new UsageError("--init and --resume cannot be combined");
  if (args.resetOptimizer && !args.resume) {
    throw new UsageError("--reset-optimizer goes with --resume");
  }
  const outputs: [string, string | undefined][] = [["--save", args.save], ["--plot", args.plot]];
  const inputs: [string, string | undefined][] = [["--init", args.init], ["--resume", args.resume]];
  for (const [of, o] of outputs) {
    for (const [other, p] of [...inputs, ...outputs]) {
      if (o === undefined || p === undefined || of === other) continue;
      if (resolve(o) === resolve(p) && !(of === "--save" && other !== "--plot")) {
        throw new UsageError(`${of} and ${other} name the same file ${o}; give ${of} its own path`);
      }
    }
  }
  if (args.plot !== undefined && !/\.svg$/i.test(args.plot)) {
    throw new UsageError(`--plot ${args.plot}: the plot is an SVG drawing; give a .svg path`);
  }
  for (const flag of ["init", "save", "resume", "plot", "data-dir"] as const) {
    if (v[flag] === "") throw new UsageError(`--${flag} needs a path`);
  }
  if (args.dataDir !== undefined && args.given.dataset === "synthetic") {
    throw new UsageError("--data-dir has no effect with --dataset synthetic (made in memory)");
  }
  if (args.given.resize !== undefined) checkResizeFlag(model, args.given.resize);
  const { batchSize, limitTrain } = args.given;
  if (batchSize !== undefined && limitTrain != null && batchSize > limitTrain) {
    throw new UsageError(
      `--batch-size ${batchSize} is larger than the training data (--limit-train ${limitTrain})`,
    );
  }
  return args;
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
    augment: false,
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
  const overrides: string[] = [];
  for (const [name, value] of Object.entries(given)) {
    const key = name as keyof RunRecipe;
    if (key in stored && stored[key] !== value) {
      overrides.push(`${RECIPE_FIELDS[key].flag} ${value} (checkpoint: ${stored[key]})`);
    }
  }
  return { recipe, overrides };
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

/** Runs the command; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const args = parseOrExit(HELP, () => parseTrainArgs(argv));
  if (typeof args === "number") return args;
  // Outputs first: a run that cannot write its results must not start (nor lose them at the end).
  for (const [flag, path] of [["--save", args.save], ["--plot", args.plot]] as const) {
    if (path === undefined) continue;
    await checkOutputFile(flag, path);
    await lockOutput(flag, path);
  }
  let state: RunState | null = null;
  let resumed: Awaited<ReturnType<typeof readCheckpoint>> | null = null;
  if (args.resume) {
    resumed = await readCheckpoint(args.resume);
    state = parseRunMetadata(args.resume, resumed.metadata, args.model);
  }
  const { recipe, overrides } = resolveRecipe(args.model, state?.recipe ?? {}, args.given);
  if (state && args.given.resize === undefined) checkResizeFlag(args.model, recipe.resize);
  if (recipe.nesterov && (recipe.optimizer !== "sgd" || !(recipe.momentum > 0))) {
    throw new UsageError("--nesterov needs --optimizer sgd and --momentum > 0");
  }
  const load = (split: "train" | "test", limit: number | null): Promise<Dataset> =>
    loadDataset(recipe.dataset, {
      split,
      dataDir: args.dataDir,
      limit: limit ?? undefined,
      synthetic: { seed: recipe.seed },
    });
  const trainSet = await load("train", recipe.limitTrain);
  const testSet = await load("test", recipe.limitTest);
  if (recipe.dataset !== "synthetic") console.error(`data: ${describeSource(trainSet)}`);
  if (trainSet.count === 0) {
    throw new CliError(`the training set of ${trainSet.name} has no examples`);
  }
  if (recipe.batchSize > trainSet.count) {
    throw new UsageError(
      `--batch-size ${recipe.batchSize} is larger than the training data (${trainSet.count} examples)`,
    );
  }
  const gpu = await getGpu();
  const unsupported = precisionUnsupported(gpu, recipe.precision);
  if (unsupported) throw new UsageError(`--${unsupported}; use --precision f32`);
  checkMemory(gpu, args.model, { ...recipe, channels: trainSet.channels });
  if (args.autotune) await loadTuned(gpu);
  const model = createModel(gpu, {
    name: args.model,
    seed: recipe.seed,
    inChannels: trainSet.channels,
    numClasses: Math.max(trainSet.classes.length, 1),
  });
  if (args.init) {
    const ck = await readCheckpoint(args.init);
    parseRunMetadata(args.init, ck.metadata, args.model); // the model named in it must be ours
    loadWeights(model, args.init, ck.tensors);
  }
  const startEpoch = state?.epoch ?? 0;
  const adam = recipe.optimizer !== "sgd";
  if (args.resume && resumed && state) {
    loadWeights(model, args.resume, resumed.tensors);
    if (adam) {
      if (args.resetOptimizer) {
        console.error(`train: --reset-optimizer: Adam's moments start from zero`);
      } else {
        const saved = await readOptimizerState(model, args.resume, state, MOMENTS);
        writeMoments(model, saved);
      }
    } else if (recipe.momentum > 0) {
      if (args.resetOptimizer) {
        console.error(`train: --reset-optimizer: the momentum starts from zero`);
      } else {
        const momentum = await readOptimizerState(model, args.resume, state);
        model.arena.ensureMomentum();
        for (const [name, p] of model.params) gpu.write(p.momentum!, momentum.get(name)!);
      }
    }
  }
  const trainer = new Trainer(model, {
    lr: recipe.lr,
    batchSize: recipe.batchSize,
    resize: recipe.resize,
    momentum: recipe.momentum,
    weightDecay: recipe.weightDecay,
    optimizer: recipe.optimizer,
    nesterov: recipe.nesterov,
    labelSmoothing: recipe.labelSmoothing,
    schedule: lrSchedule(recipe, Math.ceil(trainSet.count / recipe.batchSize)),
    augment: recipe.augment,
    dropout: recipe.dropout ?? undefined,
    seed: recipe.seed,
    precision: recipe.precision,
    lossScale: state?.lossScale === undefined ? undefined : { initScale: state.lossScale },
  });
  trainer.steps = state?.step ?? 0;
  const runId = state?.runId || newRunId();
  const train = uploadImageSet(gpu, trainSet);
  const test = testSet.count > 0 ? uploadImageSet(gpu, testSet) : null;
  if (!args.json) {
    console.log(
      `${args.model} on ${trainSet.name} (${trainSet.count} train / ${testSet.count} test, ` +
        `${recipe.resize}x${recipe.resize}), batch ${recipe.batchSize}, lr ${recipe.lr}, ` +
        `${recipe.epochs} epochs, ${recipe.precision}, ${gpu.description}`,
    );
  }
  if (args.resume && state) {
    const stored = Object.keys(state.recipe).length > 0;
    console.error(
      `train: resuming ${args.resume} after epoch ${startEpoch} (step ${state.step})` +
        (stored
          ? `: momentum ${recipe.momentum}, weight decay ${recipe.weightDecay}, ` +
            `seed ${recipe.seed} and the rest of its recipe restored`
          : " (it stores no recipe)") +
        (overrides.length ? `; overridden by flags: ${overrides.join(", ")}` : ""),
    );
  }
  if (!test) {
    console.error(`train: no test examples in ${testSet.name}: test accuracy is not reported`);
  }
  if (startEpoch >= recipe.epochs) {
    console.error(
      `train: ${args.resume} already finished epoch ${startEpoch}; pass --epochs N > ${startEpoch} to go on`,
    );
    return 0;
  }
  const history: { epoch: number; loss: number; trainAcc: number; testAcc: number }[] = [];
  let examples = 0, seconds = 0;
  let last = { loss: NaN, trainAcc: NaN, testAcc: NaN };
  for (let epoch = startEpoch; epoch < recipe.epochs; epoch++) {
    let r: EpochResult, testAcc: number;
    try {
      r = await trainer.trainEpoch(train, {
        epoch,
        shuffle: recipe.shuffle,
        onStep: progressBar(`epoch ${epoch + 1}/${recipe.epochs}`),
      });
      testAcc = test ? await trainer.evaluate(test) : NaN;
    } catch (err) {
      if (err instanceof NonFiniteError) throw divergence(err, args, recipe.lr, epoch);
      throw err;
    }
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
        test_acc: test ? testAcc : null,
        examples_per_sec: eps,
        ...(r.lossScale === undefined
          ? {}
          : { loss_scale: r.lossScale, skipped_steps: r.skippedSteps }),
      }));
    } else {
      console.log(
        `epoch ${epoch + 1}: loss ${r.loss.toFixed(3)}, train acc ${r.trainAcc.toFixed(3)}, ` +
          `test acc ${fmtAcc(testAcc)}, ${eps.toFixed(1)} examples/sec` +
          (r.lossScale === undefined
            ? ""
            : ` (loss scale ${r.lossScale}, ${r.skippedSteps} steps skipped so far)`),
      );
    }
    if (args.save) {
      const momentum = adam
        ? await momentsState(model)
        : recipe.momentum > 0
        ? await momentumState(model)
        : null;
      await saveRun(
        model,
        args.save,
        {
          model: args.model,
          epoch: epoch + 1,
          step: trainer.steps,
          runId,
          lossScale: r.lossScale,
          recipe,
        },
        recipe,
        momentum,
        adam ? "adam-moments" : "sgd-momentum",
      ).catch((err) => {
        throw writeFailed("--save", args.save!, err);
      });
    }
    if (args.plot) {
      await writeFileAtomic(
        args.plot,
        new TextEncoder().encode(renderPlot(history, { title: args.model })),
      ).catch((err) => {
        throw writeFailed("--plot", args.plot!, err);
      });
    }
  }
  if (!args.json) {
    console.log(
      `loss ${last.loss.toFixed(3)}, train acc ${last.trainAcc.toFixed(3)}, test acc ${
        fmtAcc(last.testAcc)
      }`,
    );
    console.log(`${(examples / seconds).toFixed(1)} examples/sec on ${gpu.description}`);
  }
  return 0;
}

/** Whether `path` is an existing file. */
function existsFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** An accuracy for the log ("n/a" without test examples). */
function fmtAcc(acc: number): string {
  return Number.isNaN(acc) ? "n/a" : acc.toFixed(3);
}

/** The tensor-name suffixes of Adam's moments in an optimizer file. */
const MOMENTS = [".exp_avg", ".exp_avg_sq"] as const;

/**
 * The schedule of a recipe over optimizer steps: its epochs become steps (`stepsPerEpoch` each);
 * cosine and one-cycle span the run after the warm-up.
 */
export function lrSchedule(recipe: RunRecipe, stepsPerEpoch: number): LrSchedule {
  const warmup = recipe.warmup;
  const span = Math.max(1, recipe.epochs * stepsPerEpoch - warmup);
  const [kind, arg] = recipe.schedule.split(":");
  const epochs = arg ? arg.split(",").map((e) => Number(e) * stepsPerEpoch) : [];
  const schedule: Schedule = kind === "step"
    ? { kind, stepSize: epochs[0] }
    : kind === "multistep"
    ? { kind, milestones: epochs }
    : kind === "cosine"
    ? { kind, tMax: span }
    : kind === "onecycle"
    ? { kind, totalSteps: span }
    : { kind: "constant" };
  return { schedule, warmup };
}

/** Adam's moments of the model, read back for a checkpoint (one readback per arena). */
async function momentsState(model: Model): Promise<HostStateDict> {
  const out: HostStateDict = new Map();
  const moments = model.arena.ensureAdamMoments();
  const [avg, sq] = [await moments.expAvg.toArray(), await moments.expAvgSq.toArray()];
  const names = new Map(model.params.map(([name, p]) => [p, name]));
  for (const slot of model.arena.slots) {
    const name = names.get(slot.param)!;
    for (const [suffix, all] of [[MOMENTS[0], avg], [MOMENTS[1], sq]] as const) {
      const data = all.slice(slot.offset, slot.offset + slot.size) as Float32Array;
      out.set(name + suffix, { dtype: "F32", shape: [...slot.param.shape], data });
    }
  }
  return out;
}

/** Writes Adam's moments read from a checkpoint into the model's arenas (one upload each). */
function writeMoments(model: Model, saved: Map<string, Float32Array>): void {
  const arena = model.arena;
  const moments = arena.ensureAdamMoments();
  const names = new Map(model.params.map(([name, p]) => [p, name]));
  const [avg, sq] = [new Float32Array(arena.size), new Float32Array(arena.size)];
  for (const slot of arena.slots) {
    const name = names.get(slot.param)!;
    avg.set(saved.get(name + MOMENTS[0])!, slot.offset);
    sq.set(saved.get(name + MOMENTS[1])!, slot.offset);
  }
  model.gpu.write(moments.expAvg, avg);
  model.gpu.write(moments.expAvgSq, sq);
}

/** The model's SGD momentum buffers, read back for a checkpoint. */
async function momentumState(model: Model): Promise<HostStateDict> {
  const out: HostStateDict = new Map();
  for (const [name, p] of model.params) {
    if (!p.momentum) continue;
    const data = await p.momentum.toArray() as Float32Array;
    out.set(name, { dtype: "F32", shape: [...p.shape], data });
  }
  return out;
}

/** The one line of a diverged run: where, that nothing was written, and what to try. */
function divergence(err: NonFiniteError, args: TrainArgs, lr: number, epoch: number): CliError {
  const where = err instanceof DivergenceError
    ? `training diverged in epoch ${err.epoch + 1} at step ${err.epochStep + 1} of the epoch ` +
      `(step ${err.step + 1} of the run): the ${
        err.what === "loss" ? "loss" : "parameters after the update"
      } became Inf or NaN`
    : `epoch ${epoch + 1}: ${err.message}`;
  const kept = args.save && existsFile(args.save)
    ? ` (${args.save} keeps the last good epoch)`
    : "";
  const recipe = DEFAULTS[args.model].lr;
  return new CliError(
    `${where}; nothing was written${kept}; try a lower --lr (this run: ${lr}` +
      `${lr > recipe ? `; ${args.model}'s recipe: ${recipe}` : ""})`,
  );
}

if (import.meta.main) await runCommand("train", main);
