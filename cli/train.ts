// deno task train <model> [flags]: d2l's train_ch6 on the GPU. See `--help`.
import { getGpu, type Gpu } from "../gpu/mod.ts";
import { defaultTuningCachePath, loadTuningCache } from "../kernels/mod.ts";
import { type Dataset, loadDataset } from "../data/mod.ts";
import { describeSource } from "../data/dataset.ts";
import { writeFileAtomic } from "../data/locate.ts";
import {
  createModel,
  DEFAULTS,
  DivergenceError,
  type EpochMetrics,
  type FitOptions,
  type FitResult,
  NonFiniteError,
  precisionUnsupported,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { renderPlot } from "./plot.ts";
import { checkMemory, checkResizeFlag, parseOrExit } from "./common.ts";
import { CliError, runCommand, UsageError } from "./_run.ts";
import { checkOutputFile, lockOutput, writeFailed } from "./_outputs.ts";
import {
  loadWeights,
  newRunId,
  parseRunMetadata,
  readCheckpoint,
  readOptimizerState,
  type RunState,
  saveRun,
} from "./checkpoint.ts";
import {
  augmentOption,
  defaultRecipe,
  HELP,
  parseTrainArgs,
  resolveRecipe,
  type TrainArgs,
} from "./_train_args.ts";
import {
  lrSchedule,
  MOMENTS,
  momentsState,
  momentumState,
  writeMoments,
} from "./_optimizer_state.ts";

export { defaultRecipe, HELP, lrSchedule, parseTrainArgs, resolveRecipe, type TrainArgs };

/**
 * The progress bar on a terminal: steps, ETA, and the running loss and accuracy the trainer
 * reads asynchronously (absent until the first read arrives).
 */
function progressBar(epochs: number): FitOptions["onStep"] {
  if (!Deno.stderr.isTerminal()) return undefined;
  let t0 = performance.now(), last = 0, epoch = -1;
  const enc = new TextEncoder();
  return ({ epoch: e, done, total }, running) => {
    const now = performance.now();
    if (e !== epoch) [epoch, t0] = [e, now];
    if (done < total && now - last < 250) return;
    last = now;
    const frac = done / total;
    const eta = frac > 0 ? ((now - t0) / 1000) * (1 - frac) / frac : 0;
    const width = 30;
    const bar = "#".repeat(Math.round(frac * width)).padEnd(width, ".");
    const metrics = running
      ? `, loss ${running.loss.toFixed(3)}, acc ${running.trainAcc.toFixed(3)}`
      : "";
    Deno.stderr.writeSync(
      enc.encode(
        `\repoch ${epoch + 1}/${epochs} [${bar}] ${done}/${total} steps, ETA ${
          eta.toFixed(0)
        }s${metrics}   ${done === total ? "\n" : ""}`,
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
  const outputs = [["--save", args.save], ["--keep-best", args.keepBest], ["--plot", args.plot]];
  for (const [flag, path] of outputs as [string, string | undefined][]) {
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
    augment: augmentOption(recipe.augment, trainSet.height),
    dropout: recipe.dropout ?? undefined,
    seed: recipe.seed,
    precision: recipe.precision,
    // The scale reached and the steps skipped (Adam's step count leaves them out).
    lossScale: { initScale: state?.lossScale, skippedSteps: state?.skippedSteps },
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
  /** The epoch this run wrote to --keep-best, if any. */
  let kept: number | null = null;
  let examples = 0, seconds = 0, epoch = startEpoch;
  let last = { loss: NaN, trainAcc: NaN, testAcc: NaN };
  const save = async (path: string, flag: string, r: EpochMetrics): Promise<void> => {
    const momentum = adam
      ? await momentsState(model)
      : recipe.momentum > 0
      ? await momentumState(model)
      : null;
    await saveRun(
      model,
      path,
      {
        model: args.model,
        epoch: r.epoch,
        step: trainer.steps,
        skippedSteps: trainer.skippedSteps,
        runId,
        lossScale: r.lossScale,
        fit: r.state,
        recipe,
        classes: trainSet.classes,
      },
      recipe,
      momentum,
      adam ? "adam-moments" : "sgd-momentum",
    ).catch((err) => {
      throw writeFailed(flag, path, err);
    });
  };
  const onEpochEnd = async (r: EpochMetrics): Promise<void> => {
    epoch = r.epoch;
    const testAcc = r.testAcc ?? NaN;
    examples += r.examples;
    seconds += r.seconds;
    last = { loss: r.loss, trainAcc: r.trainAcc, testAcc };
    history.push({ epoch: r.epoch, ...last });
    if (args.json) {
      console.log(JSON.stringify({
        epoch: r.epoch,
        loss: r.loss,
        train_acc: r.trainAcc,
        test_acc: r.testAcc,
        examples_per_sec: r.examplesPerSec,
        lr: r.lr,
        seconds: r.seconds,
        ...(r.lossScale === undefined
          ? {}
          : { loss_scale: r.lossScale, skipped_steps: r.skippedSteps }),
      }));
    } else {
      console.log(
        `epoch ${r.epoch}: loss ${r.loss.toFixed(3)}, train acc ${r.trainAcc.toFixed(3)}, ` +
          `test acc ${fmtAcc(testAcc)}, ${r.examplesPerSec.toFixed(1)} examples/sec` +
          (r.lossScale === undefined
            ? ""
            : ` (loss scale ${r.lossScale}, ${r.skippedSteps} steps skipped so far)`),
      );
    }
    if (args.save) await save(args.save, "--save", r);
    if (args.keepBest && r.best) {
      await save(args.keepBest, "--keep-best", r);
      kept = r.epoch;
    }
    if (args.plot) {
      await writeFileAtomic(
        args.plot,
        new TextEncoder().encode(renderPlot(history, { title: args.model })),
      ).catch((err) => {
        throw writeFailed("--plot", args.plot!, err);
      });
    }
  };
  if (args.keepBest && !test) {
    console.error(`train: --keep-best: no test examples, so no best epoch: nothing is written`);
  }
  const resumedBest = state?.fit?.best;
  if (args.keepBest && test && resumedBest) {
    console.error(
      `train: --keep-best: ${args.keepBest} is written when an epoch beats test accuracy ` +
        `${fmtAcc(resumedBest.testAcc)} (epoch ${resumedBest.epoch}, before the resume)`,
    );
  }
  const monitor = args.monitor ?? (test ? "testAcc" : "loss");
  if (monitor === "testAcc" && args.patience !== undefined && !test) {
    throw new UsageError("--monitor test-acc needs test examples; use --monitor loss");
  }
  let fit: FitResult;
  try {
    fit = await trainer.fit(train, {
      epochs: recipe.epochs,
      startEpoch,
      state: state?.fit,
      test: test ?? undefined,
      shuffle: recipe.shuffle,
      onStep: progressBar(recipe.epochs),
      onEpochEnd,
      earlyStopping: args.patience === undefined
        ? undefined
        : { monitor, patience: args.patience, minDelta: args.minDelta },
    });
  } catch (err) {
    if (err instanceof NonFiniteError) throw divergence(err, args, recipe.lr, epoch);
    throw err;
  }
  if (fit.stoppedEarly) {
    console.error(
      `train: early stopping after epoch ${epoch}: ${
        monitor === "loss" ? "the training loss" : "the test accuracy"
      } did not improve by more than ${args.minDelta} for ${args.patience} epochs`,
    );
  }
  if (args.keepBest && kept !== null) {
    console.error(`train: ${args.keepBest} holds epoch ${kept} (best test accuracy)`);
  } else if (args.keepBest && resumedBest) {
    console.error(
      `train: --keep-best: no epoch beat test accuracy ${fmtAcc(resumedBest.testAcc)} (epoch ` +
        `${resumedBest.epoch}, before the resume): ${args.keepBest} was not written`,
    );
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
