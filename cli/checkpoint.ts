// Checkpoints of a training run as one unit: the model file (the reference's state_dict names,
// loadable by PyTorch with strict=True) and, when the optimizer has state, an optimizer file
// named after the step it belongs to. The model file is written last and is the commit point: it
// names its optimizer file, and both carry the run id and step, so a reader sees either the old
// pair or the new one (a kill between the two writes leaves the old model naming the old
// optimizer file, which is removed only after the new model is in place). The model file's
// metadata also holds the whole recipe, so `--resume` restores the run.
import { basename, dirname, join } from "node:path";
import type { DatasetName } from "../data/mod.ts";
import { writeFileAtomic } from "../data/locate.ts";
import {
  decodeSafetensors,
  encodeSafetensors,
  type FitState,
  type HostStateDict,
  isPrecision,
  type Model,
  MODEL_NAMES,
  type ModelName,
  type Precision,
} from "../models/mod.ts";
import { clip } from "./_run.ts";
import { _killPoint, removeStaleTemps } from "./_outputs.ts";

/** A checkpoint that cannot be used as asked: one line naming the file and what is wrong. */
export class CheckpointError extends Error {
  override name = "CheckpointError";
}

/** The data sets of the CLI. */
export const DATASETS = ["fashion-mnist", "mnist", "cifar10", "synthetic"] as const;

/** What defines a training run, stored in its checkpoints and restored by `--resume`. */
export interface RunRecipe {
  readonly epochs: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly resize: number;
  readonly dataset: DatasetName;
  readonly limitTrain: number | null;
  readonly limitTest: number | null;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropout: number | null;
  /**
   * The augmentation as a `--augment` list in canonical order (see {@linkcode parseAugmentFlag}),
   * or `none`; checkpoints before lists stored `true` (read as `crop,flip`) or `false` (`none`).
   */
  readonly augment: string;
  readonly precision: Precision;
  /** `sgd`, `adam` or `adamw`. */
  readonly optimizer: OptimizerName;
  /** SGD Nesterov momentum. */
  readonly nesterov: boolean;
  /** `constant`, `step:E`, `multistep:E1,E2,...` (epochs), `cosine` or `onecycle`. */
  readonly schedule: string;
  /** Linear warm-up steps. */
  readonly warmup: number;
  /** Label smoothing of the loss. */
  readonly labelSmoothing: number;
}

/** The optimizers of the CLI. */
export const OPTIMIZERS = ["sgd", "adam", "adamw"] as const;
/** An optimizer of the CLI. */
export type OptimizerName = typeof OPTIMIZERS[number];

/** A `--schedule` value (see {@linkcode RunRecipe}), or undefined when it is not one. */
export function parseScheduleFlag(t: string): string | undefined {
  if (["constant", "cosine", "onecycle"].includes(t)) return t;
  const m = /^(step|multistep):(\d+(,\d+)*)$/.exec(t);
  if (!m) return undefined;
  const epochs = m[2].split(",").map(Number);
  if (m[1] === "step" && epochs.length !== 1) return undefined;
  return epochs.every((e, i) => e >= 1 && (i === 0 || e > epochs[i - 1])) ? t : undefined;
}

/** The items of a `--augment` list, in canonical order. */
export const AUGMENT_ITEMS =
  "flip, crop[:PAD], resized-crop[:LO-HI], rotate:DEG, translate:FRAC, scale:LO-HI, shear:DEG";
const AUGMENT_ORDER = ["crop", "resized-crop", "flip", "rotate", "translate", "scale", "shear"];

/**
 * What is wrong with a `--augment` list (comma-separated items, each at most once: `flip`,
 * `crop` or `crop:PAD` (padding, integer >= 1), `resized-crop` or `resized-crop:LO-HI` (area
 * fraction, 0 < LO <= HI <= 1), `rotate:DEG` (0 < DEG <= 180), `translate:FRAC` (0 < FRAC <= 1,
 * both axes), `scale:LO-HI` (0 < LO <= HI), `shear:DEG` (0 < DEG < 90); or `none`), as a phrase;
 * or its canonical form (items in the order above, numbers as JavaScript prints them).
 */
export function checkAugmentList(text: string): { list: string } | { error: string } {
  if (text === "none") return { list: "none" };
  if (text === "") return { error: `needs a list of ${AUGMENT_ITEMS} (or none)` };
  const num = "(\\d+\\.?\\d*|\\.\\d+)";
  const range = new RegExp(`^${num}-${num}$`);
  const items = new Map<string, string>();
  for (const item of text.split(",")) {
    const [name, arg, more] = item.split(":");
    const bad = (want: string) => ({ error: `item '${item}': ${want}` });
    if (!AUGMENT_ORDER.includes(name) || more !== undefined) {
      return { error: `unknown item '${item}' in '${text}'; expected ${AUGMENT_ITEMS} or none` };
    }
    if (items.has(name)) return bad("given twice");
    const value = arg === undefined ? null : decimal(arg);
    const pair = arg === undefined ? null : range.exec(arg);
    const [lo, hi] = pair ? [Number(pair[1]), Number(pair[2])] : [NaN, NaN];
    let canon: string;
    if (name === "flip") {
      if (arg !== undefined) return bad("flip takes no value");
      canon = name;
    } else if (name === "crop") {
      if (arg !== undefined && !(value !== null && Number.isInteger(value) && value >= 1)) {
        return bad("the padding must be an integer >= 1 (crop:4)");
      }
      canon = arg === undefined ? name : `crop:${value}`;
    } else if (name === "resized-crop") {
      if (arg !== undefined && !(pair && lo > 0 && lo <= hi && hi <= 1)) {
        return bad("the area range must be LO-HI with 0 < LO <= HI <= 1 (resized-crop:0.08-1)");
      }
      canon = arg === undefined ? name : `resized-crop:${lo}-${hi}`;
    } else if (name === "scale") {
      if (!(pair && lo > 0 && lo <= hi)) {
        return bad("the zoom range must be LO-HI with 0 < LO <= HI (scale:0.9-1.1)");
      }
      canon = `scale:${lo}-${hi}`;
    } else {
      const [max, open, example] = name === "rotate"
        ? [180, false, "rotate:15"]
        : name === "translate"
        ? [1, false, "translate:0.1"]
        : [90, true, "shear:10"];
      if (value === null || !(value > 0 && (open ? value < max : value <= max))) {
        return bad(`the value must be in (0, ${max}${open ? ")" : "]"} (${example})`);
      }
      canon = `${name}:${value}`;
    }
    items.set(name, canon);
  }
  return { list: AUGMENT_ORDER.filter((n) => items.has(n)).map((n) => items.get(n)).join(",") };
}

/** A `--augment` list in canonical form, or undefined when it is not one. */
export function parseAugmentFlag(text: string): string | undefined {
  const r = checkAugmentList(text);
  return "list" in r ? r.list : undefined;
}

/** How each recipe field is written in the metadata and parsed back (flags use the same). */
interface Field {
  readonly key: string;
  readonly flag: string;
  readonly parse: (text: string) => unknown;
  readonly expected: string;
}

/** A decimal number literal (no hex, no `Infinity`, no empty string); else null. */
export function decimal(text: string): number | null {
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text.trim())) return null;
  const n = Number(text);
  return Number.isFinite(n) ? n : null;
}

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => (t: string): number | undefined => {
  const n = decimal(t);
  return n !== null && Number.isInteger(n) && n >= min && n <= max ? n : undefined;
};
const real = (ok: (n: number) => boolean) => (t: string): number | undefined => {
  const n = decimal(t);
  return n !== null && ok(n) ? n : undefined;
};
const bool = (t: string): boolean | undefined =>
  t === "true" ? true : t === "false" ? false : undefined;
const optional = <T>(p: (t: string) => T | undefined) => (t: string): T | null | undefined =>
  t === "none" ? null : p(t);

/** The recipe's fields: metadata key, flag, parser (undefined: invalid) and what is expected. */
export const RECIPE_FIELDS: Readonly<Record<keyof RunRecipe, Field>> = {
  epochs: { key: "epochs", flag: "--epochs", parse: int(1), expected: "an integer >= 1" },
  batchSize: {
    key: "batch_size",
    flag: "--batch-size",
    parse: int(1),
    expected: "an integer >= 1",
  },
  lr: { key: "lr", flag: "--lr", parse: real((n) => n > 0), expected: "a number > 0" },
  momentum: {
    key: "momentum",
    flag: "--momentum",
    parse: real((n) => n >= 0 && n < 1),
    expected: "in [0, 1)",
  },
  weightDecay: {
    key: "weight_decay",
    flag: "--weight-decay",
    parse: real((n) => n >= 0),
    expected: "a number >= 0",
  },
  resize: { key: "resize", flag: "--resize", parse: int(1), expected: "an integer >= 1" },
  dataset: {
    key: "dataset",
    flag: "--dataset",
    parse: (t) =>
      (DATASETS as readonly string[]).includes(t) || /^folder:[^\n]+$/.test(t) ? t : undefined,
    expected: `one of ${DATASETS.join(", ")}, or folder:PATH (one subfolder of images per class)`,
  },
  limitTrain: {
    key: "limit_train",
    flag: "--limit-train",
    parse: optional(int(1)),
    expected: "an integer >= 1",
  },
  limitTest: {
    key: "limit_test",
    flag: "--limit-test",
    parse: optional(int(1)),
    expected: "an integer >= 1",
  },
  shuffle: { key: "shuffle", flag: "--no-shuffle", parse: bool, expected: "true or false" },
  seed: {
    key: "seed",
    flag: "--seed",
    parse: int(0, 0xffffffff),
    expected: "an integer in [0, 4294967295]",
  },
  dropout: {
    key: "dropout",
    flag: "--dropout",
    parse: optional(real((n) => n >= 0 && n < 1)),
    expected: "in [0, 1)",
  },
  augment: {
    key: "augment",
    flag: "--augment",
    // Checkpoints before lists: true (crop and flip) or false.
    parse: (t) => t === "true" ? "crop,flip" : t === "false" ? "none" : parseAugmentFlag(t),
    expected: `none or a list of ${AUGMENT_ITEMS}`,
  },
  precision: {
    key: "precision",
    flag: "--precision",
    parse: (t) => isPrecision(t) ? t : undefined,
    expected: "f32 or f16",
  },
  optimizer: {
    key: "optim",
    flag: "--optimizer",
    parse: (t) => (OPTIMIZERS as readonly string[]).includes(t) ? t : undefined,
    expected: "sgd, adam or adamw",
  },
  nesterov: { key: "nesterov", flag: "--nesterov", parse: bool, expected: "true or false" },
  schedule: {
    key: "schedule",
    flag: "--schedule",
    parse: parseScheduleFlag,
    expected: "constant, step:EPOCHS, multistep:E1,E2,... (increasing), cosine or onecycle",
  },
  warmup: { key: "warmup", flag: "--warmup", parse: int(0), expected: "an integer >= 0" },
  labelSmoothing: {
    key: "label_smoothing",
    flag: "--label-smoothing",
    parse: real((n) => n >= 0 && n <= 1),
    expected: "in [0, 1]",
  },
};

/** The state of a run at a checkpoint. */
export interface RunState {
  readonly model: ModelName;
  /** Epochs finished. */
  readonly epoch: number;
  /**
   * Optimizer steps taken (the schedule's count), f16 steps the loss scaler skipped included:
   * Adam's step count is `step - skippedSteps`.
   */
  readonly step: number;
  /** Of `step`, those the f16 loss scaler skipped (their gradients overflowed); default 0. */
  readonly skippedSteps?: number;
  /** Identifies the run (kept across resumes); pairs the model and optimizer files. */
  readonly runId: string;
  /** The f16 loss scale reached, if any. */
  readonly lossScale?: number;
  /**
   * The fit's state after the epoch (`EpochMetrics.state`: the best test accuracy so far and its
   * epoch, early stopping's counters), so that a resumed run's `--keep-best` only replaces its
   * file with a better epoch and `--patience` counts on; absent in older checkpoints (a resumed
   * run then starts them afresh).
   */
  readonly fit?: FitState;
  /**
   * The recipe: complete in checkpoints this version writes; only the fields stored by older
   * ones (none) otherwise.
   */
  readonly recipe: Partial<RunRecipe>;
  /** The optimizer file's name (in the model file's folder); null: no optimizer state. */
  readonly optimizer: string | null | undefined;
  /**
   * The class names the model was trained on, by label (`classes` in the metadata, a JSON array
   * of strings); absent in checkpoints of older versions.
   */
  readonly classes?: readonly string[];
}

/** The most classes a checkpoint names (labels are bytes), and the longest name. */
const MAX_CLASSES = 256;
const MAX_CLASS_NAME = 255;

/** A new run id. */
export function newRunId(): string {
  return crypto.randomUUID().slice(0, 13);
}

/** The name of the optimizer file of `path` at `step`. */
export function optimizerFileName(path: string, step: number): string {
  return `${basename(path).replace(/\.safetensors$/, "")}-optimizer-step${step}.safetensors`;
}

/** The metadata of a model file (all strings, as safetensors requires). */
export function runMetadata(state: RunState, recipe: RunRecipe): Record<string, string> {
  const meta: Record<string, string> = {
    format: "pt",
    model: state.model,
    epoch: String(state.epoch),
    step: String(state.step),
    run_id: state.runId,
    optimizer: state.optimizer ?? "none",
  };
  if (state.lossScale !== undefined) meta.loss_scale = String(state.lossScale);
  if (state.skippedSteps) meta.skipped_steps = String(state.skippedSteps);
  if (state.classes !== undefined) meta.classes = JSON.stringify(state.classes);
  if (state.fit?.best) {
    meta.best_test_acc = String(state.fit.best.testAcc);
    meta.best_epoch = String(state.fit.best.epoch);
  }
  if (state.fit?.stopping) {
    meta.stop_monitor = state.fit.stopping.monitor;
    meta.stop_best = String(state.fit.stopping.best);
    meta.stop_wait = String(state.fit.stopping.wait);
  }
  for (const [name, f] of Object.entries(RECIPE_FIELDS)) {
    const v = recipe[name as keyof RunRecipe];
    meta[f.key] = v === null ? "none" : String(v);
  }
  return meta;
}

/**
 * The run state in a checkpoint's metadata, validated: every value must parse as its flag
 * would (a file with `epoch: "abc"` or another model's checkpoint is refused, naming the file
 * and the key). Older checkpoints (epoch and steps only) are read as they were.
 */
export function parseRunMetadata(
  file: string,
  meta: Record<string, string>,
  model: ModelName,
): RunState {
  const bad = (key: string, expected: string): never => {
    throw new CheckpointError(
      `checkpoint ${file}: metadata '${key}' is ${
        clip(JSON.stringify(meta[key]), 80)
      }, expected ${expected}`,
    );
  };
  if (meta.model !== undefined && meta.model !== model) {
    const other = (MODEL_NAMES as readonly string[]).includes(meta.model)
      ? `a ${meta.model} checkpoint`
      : `a checkpoint of '${clip(meta.model, 40)}'`;
    throw new CheckpointError(
      `${file} is ${other}, not ${model}: name that model, or give a ${model} checkpoint`,
    );
  }
  const count = (key: string): number => {
    if (meta[key] === undefined) return 0;
    return int(0)(meta[key]) ?? bad(key, "an integer >= 0");
  };
  const epoch = count("epoch");
  const step = meta.step !== undefined ? count("step") : count("steps");
  const skippedSteps = count("skipped_steps");
  if (skippedSteps > step) bad("skipped_steps", `an integer in [0, step = ${step}]`);
  let lossScale: number | undefined;
  if (meta.loss_scale !== undefined) {
    lossScale = real((n) => n > 0 && Number.isFinite(Math.fround(n)))(meta.loss_scale) ??
      bad("loss_scale", "a finite number > 0");
  }
  const recipe: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(RECIPE_FIELDS)) {
    if (meta[f.key] === undefined) continue;
    const v = f.parse(meta[f.key]);
    recipe[name] = v === undefined ? bad(f.key, f.expected) : v;
  }
  let classes: string[] | undefined;
  if (meta.classes !== undefined) {
    const expected = `a JSON array of 1 to ${MAX_CLASSES} class names (strings of 1 to ` +
      `${MAX_CLASS_NAME} characters)`;
    try {
      classes = JSON.parse(meta.classes);
    } catch {
      bad("classes", expected);
    }
    if (
      !Array.isArray(classes) || classes.length < 1 || classes.length > MAX_CLASSES ||
      !classes.every((c) => typeof c === "string" && c.length >= 1 && c.length <= MAX_CLASS_NAME)
    ) bad("classes", expected);
  }
  // The fit's state: all keys of a part, or none of them.
  const all = (keys: string[]): boolean => {
    const n = keys.filter((k) => meta[k] !== undefined).length;
    if (n > 0 && n < keys.length) {
      const missing = keys.find((k) => meta[k] === undefined)!;
      const present = keys.filter((k) => meta[k] !== undefined);
      throw new CheckpointError(
        `checkpoint ${file}: metadata '${missing}' is missing, though ${present.join(", ")} ` +
          `${present.length > 1 ? "are" : "is"} there (${keys.join(", ")} go together)`,
      );
    }
    return n === keys.length;
  };
  let best: FitState["best"] = null;
  if (all(["best_test_acc", "best_epoch"])) {
    best = {
      testAcc: real((n) => n >= 0 && n <= 1)(meta.best_test_acc) ??
        bad("best_test_acc", "a number in [0, 1]"),
      epoch: int(1, Math.max(1, epoch))(meta.best_epoch) ??
        bad("best_epoch", `an integer in [1, epoch = ${epoch}]`),
    };
  }
  let stopping: FitState["stopping"] = null;
  if (all(["stop_monitor", "stop_best", "stop_wait"])) {
    const monitor = meta.stop_monitor;
    if (monitor !== "testAcc" && monitor !== "loss") bad("stop_monitor", "testAcc or loss");
    stopping = {
      monitor: monitor as "testAcc" | "loss",
      best: real(Number.isFinite)(meta.stop_best) ?? bad("stop_best", "a finite number"),
      wait: int(0)(meta.stop_wait) ?? bad("stop_wait", "an integer >= 0"),
    };
  }
  let optimizer: string | null | undefined;
  if (meta.optimizer !== undefined) {
    optimizer = meta.optimizer === "none" ? null : meta.optimizer;
    if (optimizer !== null && (optimizer.includes("/") || optimizer.includes("\\"))) {
      bad("optimizer", "a file name in the checkpoint's folder");
    }
  }
  return {
    model,
    epoch,
    step,
    runId: meta.run_id ?? "",
    lossScale,
    ...(skippedSteps ? { skippedSteps } : {}),
    recipe: recipe as Partial<RunRecipe>,
    optimizer,
    ...(classes ? { classes } : {}),
    ...(best || stopping ? { fit: { best, stopping } } : {}),
  };
}

/** Refuses a state dict holding Inf or NaN, naming the file and the first bad tensor. */
export function checkFinite(file: string, tensors: HostStateDict): void {
  for (const [name, t] of tensors) {
    if (!(t.data instanceof Float32Array)) continue;
    let bad = 0;
    for (const v of t.data) if (!Number.isFinite(v)) bad++;
    if (bad > 0) {
      throw new CheckpointError(
        `checkpoint ${file}: '${name}' holds ${bad} Inf/NaN values of ${t.data.length}: it comes ` +
          "from a diverged run; use an earlier checkpoint",
      );
    }
  }
}

/** The `__metadata__` of a safetensors file, reading its header only; null if unreadable. */
async function readMetadata(path: string): Promise<Record<string, string> | null> {
  try {
    using file = await Deno.open(path);
    const head = new Uint8Array(8);
    if ((await file.read(head)) !== 8) return null;
    const n = Number(new DataView(head.buffer).getBigUint64(0, true));
    if (n > 100_000_000) return null;
    const json = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const r = await file.read(json.subarray(got));
      if (r === null) return null;
      got += r;
    }
    const meta = JSON.parse(new TextDecoder().decode(json)).__metadata__;
    return meta && typeof meta === "object" ? meta : null;
  } catch {
    return null;
  }
}

/** Reads and decodes a safetensors file; errors name the file. */
export async function readCheckpoint(
  path: string,
): Promise<{ tensors: HostStateDict; metadata: Record<string, string> }> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    const e = err as Error;
    const why = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.IsADirectory || /directory/i.test(e.message)
      ? "it is a folder"
      : e.message.split(":")[0];
    throw new CheckpointError(`cannot read checkpoint ${path}: ${why}`);
  }
  return decodeSafetensors(bytes, { file: path });
}

/**
 * Loads a checkpoint's weights into `model` (all or nothing): the weights must be finite and
 * fit the model; errors are {@linkcode CheckpointError}s naming the file.
 */
export function loadWeights(model: Model, file: string, tensors: HostStateDict): void {
  checkFinite(file, tensors);
  try {
    model.loadStateDict(tensors, { source: file });
  } catch (err) {
    throw new CheckpointError(clip((err as Error).message));
  }
}

/**
 * Writes a run's checkpoint: the optimizer file for this step first (when `momentum` holds
 * state), then the model file (atomically: the commit point), then removes the optimizer files
 * of earlier steps and the temporary files of killed writes.
 */
export async function saveRun(
  model: Model,
  path: string,
  state: Omit<RunState, "optimizer">,
  recipe: RunRecipe,
  momentum: HostStateDict | null,
  kind = "sgd-momentum",
): Promise<void> {
  await removeStaleTemps(path);
  const dir = dirname(path);
  const optName = momentum ? optimizerFileName(path, state.step) : null;
  // model_file: which checkpoint this optimizer file belongs to (`ck` and `ck.safetensors` in one
  // folder share the stem of their optimizer files).
  const pair = {
    run_id: state.runId,
    step: String(state.step),
    model: state.model,
    model_file: basename(path),
  };
  if (momentum && optName) {
    const optPath = join(dir, optName);
    await removeStaleTemps(optPath);
    await writeFileAtomic(optPath, encodeSafetensors(momentum, { ...pair, kind }));
  }
  _killPoint("between-optimizer-and-model");
  const meta = runMetadata({ ...state, optimizer: optName }, recipe);
  const bytes = encodeSafetensors(await model.stateDict(), meta);
  if (Deno.env.get("MODERN_CNN_TEST_KILL_AT") === "model-temp-written") {
    await Deno.writeFile(`${path}.tmp-${Deno.pid}-killed`, bytes);
    _killPoint("model-temp-written");
  }
  await writeFileAtomic(path, bytes);
  // The new pair is in place: this model file's optimizer files of earlier steps (and of writes
  // killed before their model file) go; another checkpoint's of the same stem stay.
  const stem = basename(path).replace(/\.safetensors$/, "");
  const old = new RegExp(
    `^${stem.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-optimizer-step\\d+\\.safetensors$`,
  );
  for await (const e of Deno.readDir(dir)) {
    if (!old.test(e.name) || e.name === optName) continue;
    const meta = await readMetadata(join(dir, e.name));
    if (meta?.model_file === basename(path)) await Deno.remove(join(dir, e.name)).catch(() => {});
  }
}

/**
 * The momentum buffers stored with a checkpoint, verified to belong to it (same run id and step,
 * a tensor of the right shape for every parameter), or a {@linkcode CheckpointError} that says
 * what is wrong and that `--reset-optimizer` starts the momentum from zero instead.
 */
export async function readOptimizerState(
  model: Model,
  path: string,
  state: RunState,
  suffixes: readonly string[] = [""],
): Promise<Map<string, Float32Array>> {
  const fix = "; pass --reset-optimizer to start the momentum from zero";
  if (state.optimizer === null) {
    throw new CheckpointError(
      `${path} holds no optimizer state (it was saved without momentum) but this run uses ` +
        `momentum${fix}`,
    );
  }
  // Checkpoints of older versions name no optimizer file: theirs was FILE-optimizer.safetensors.
  const optPath = state.optimizer === undefined
    ? path.replace(/(\.safetensors)?$/, "-optimizer.safetensors")
    : join(dirname(path), state.optimizer);
  const exists = await Deno.stat(optPath).then((s) => s.isFile, () => false);
  if (!exists) {
    throw new CheckpointError(`the optimizer state of ${path} (${optPath}) is missing${fix}`);
  }
  const opt = await readCheckpoint(optPath);
  const m = opt.metadata;
  const optStep = m.step ?? m.steps;
  if (optStep !== String(state.step) || (state.runId !== "" && m.run_id !== state.runId)) {
    throw new CheckpointError(
      `the optimizer state ${optPath} (step ${optStep ?? "?"}, run ${m.run_id ?? "?"}) does not ` +
        `belong to ${path} (step ${state.step}, run ${state.runId || "?"})${fix}`,
    );
  }
  const out = new Map<string, Float32Array>();
  for (const [name, p] of model.params) {
    for (const suffix of suffixes) {
      const t = opt.tensors.get(name + suffix);
      if (!t || !(t.data instanceof Float32Array) || t.data.length !== p.value!.size) {
        throw new CheckpointError(
          `the optimizer state ${optPath} has no ${
            suffix ? suffix.slice(1) : "momentum"
          } of shape [${p.shape}] for '${name}'${fix}`,
        );
      }
      out.set(name + suffix, t.data);
    }
  }
  checkFinite(optPath, opt.tensors);
  return out;
}
