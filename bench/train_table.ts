// Training throughput per model at the seed recipe, as a markdown table:
//
//   deno run -A bench/train_table.ts [--models lenet,resnet] [--steps N] [--batch N] [--resize N]
//                                    [--no-autotune] [--precision f32|f16] [--host-only]
//                                    [--replay on|off|both]
//                                    [--vs-torch [--rounds N]] [--profile]
//
// Each model trains on a synthetic Fashion-MNIST-shaped set (1x28x28, 10 classes; no data set
// needed), resized on the GPU to the recipe's size. One untimed step compiles the pipelines, then
// N steps are timed as `Trainer.trainEpoch` runs them (batch preparation, forward, softmax
// cross-entropy, backward and SGD recorded into one submit per step, one readback at the end);
// the best of 3 such epochs is reported (other processes sharing the CPU only slow runs down).
// Peak GPU memory is the buffer pool's peak of live bytes during the timed steps (parameters,
// gradients, the data set and every activation).
//
// Batch and input size default to the recipe's (`DEFAULTS` in models/zoo.ts). On a CPU adapter
// (llvmpipe), models whose step at the recipe's batch would take more than ~20 GFLOP train at a
// reduced batch (the largest power of two within that budget, marked in the table), for 3 timed
// steps (unless `--steps` says otherwise) in a single epoch.
//
// The kernel choices cached by `deno task tune` for this adapter are loaded first, unless
// `--no-autotune` is given. `--precision f16` trains in f16 (f16 activations, gradients and
// weight copies, f32 master weights, dynamic loss scaling; the adapter needs `shader-f16`).
//
// Host ms/step is the JavaScript recording of a step, `encoder.finish` and the `queue.submit`
// call: the median time between two steps (the trainer never reads back in between). Where the
// device is slower than the host (llvmpipe), submits wait for earlier steps and this approaches
// ms/step, and the device's threads share the CPU with the recording. `--host-only`
// measures it alone, at the recipe's batch and size on any adapter: real steps are recorded and
// finished but their command buffers are dropped instead of submitted (nothing executes), and the
// table prints, per model, the dispatches, the dispatches planned (the rest replayed from a
// recorded step) and bind groups created per step and the issue #15 target (the host time that
// allows twice d2l's V100 throughput).
//
// `--replay off` records every step from scratch instead of replaying a recorded one
// (`TrainerOptions.replay`); `--replay both` (with `--host-only`) measures both, interleaved
// epoch by epoch on the same model, and prints the host ms/step without replay beside it.
//
// `--vs-torch` sets PyTorch's CPU steps beside ours (f32), interleaved, with each model's
// effective GFLOP/s and the adapter's GEMM peak: see bench/_vs_torch.ts.
//
// `--profile` times every dispatch of a few steps on the device (GPU timestamps) and prints, per
// model, the device time by kernel family and the longest kernels: see bench/_profile.ts.
import { getGpu } from "../gpu/mod.ts";
import { defaultTuningCachePath, loadTuningCache } from "../kernels/mod.ts";
import {
  DEFAULTS,
  isPrecision,
  MODEL_NAMES,
  type ModelName,
  type Precision,
  precisionUnsupported,
} from "../models/mod.ts";
import { guardScript } from "../cli/_run.ts";
import { benchCli } from "./_args.ts";
import {
  benchBatch,
  hostSteps,
  type HostTiming,
  setupRun,
  type StepTiming,
  timeSteps,
  warmUp,
} from "./_train.ts";
import { vsTorchTable } from "./_vs_torch.ts";
import { profileTable } from "./_profile.ts";

guardScript("bench:train");
const cli = benchCli(
  "usage: deno task bench:train [--models lenet,resnet] [--steps N] [--batch N] " +
    "[--resize N] [--no-autotune] [--precision f32|f16] [--host-only] [--replay on|off|both] " +
    "[--vs-torch [--rounds N]] [--profile]",
);

function parseArgs(args: string[]) {
  const out: {
    models?: ModelName[];
    steps?: number;
    batch?: number;
    resize?: number;
    autotune: boolean;
    precision: Precision;
    hostOnly: boolean;
    replay: "on" | "off" | "both";
    vsTorch: boolean;
    rounds?: number;
    profile: boolean;
  } = {
    autotune: true,
    precision: "f32",
    hostOnly: false,
    replay: "on",
    vsTorch: false,
    profile: false,
  };
  cli.parse(args, {
    "--models": (value) => {
      const names = value().split(",").map((s) => s.trim()).filter((s) => s);
      for (const n of names) {
        if (!(MODEL_NAMES as readonly string[]).includes(n)) {
          cli.usage(`unknown model '${n}' (one of ${MODEL_NAMES.join(", ")})`);
        }
      }
      out.models = names as ModelName[];
    },
    "--steps": (value) => out.steps = cli.positiveInt("--steps", value()),
    "--batch": (value) => out.batch = cli.positiveInt("--batch", value()),
    "--resize": (value) => out.resize = cli.positiveInt("--resize", value()),
    "--no-autotune": () => out.autotune = false,
    "--host-only": () => out.hostOnly = true,
    "--replay": (value) => {
      const v = value();
      if (v !== "on" && v !== "off" && v !== "both") {
        cli.usage(`--replay must be on, off or both, got '${v}'`);
      }
      out.replay = v as "on" | "off" | "both";
    },
    "--vs-torch": () => out.vsTorch = true,
    "--rounds": (value) => out.rounds = cli.positiveInt("--rounds", value()),
    "--profile": () => out.profile = true,
    "--precision": (value) => {
      const p = value();
      out.precision = isPrecision(p) ? p : cli.usage(`--precision must be f32 or f16, got '${p}'`);
    },
  });
  if (out.replay === "both" && !out.hostOnly) cli.usage("--replay both needs --host-only");
  if (out.vsTorch && out.hostOnly) cli.usage("--vs-torch times executed steps: drop --host-only");
  if (out.vsTorch && out.precision !== "f32") {
    cli.usage("--vs-torch compares f32 steps (PyTorch's are FP32): drop --precision");
  }
  if (out.rounds !== undefined && !out.vsTorch) cli.usage("--rounds needs --vs-torch");
  if (out.profile && (out.hostOnly || out.vsTorch)) {
    cli.usage("--profile times the device alone: drop --host-only and --vs-torch");
  }
  return out;
}

const args = parseArgs(Deno.args);
const gpu = await getGpu();
const unsupported = precisionUnsupported(gpu, args.precision);
if (unsupported) cli.usage(`--${unsupported}`);
let tuned = "autotune off";
if (args.autotune) {
  const path = defaultTuningCachePath();
  const n = await loadTuningCache(gpu, path);
  if (n !== null) {
    console.error(`autotune: ${n} tuned entries for this adapter loaded from ${path}`);
  }
  tuned = `autotune: ${n ?? 0} cached entries`;
}
const models = args.models ?? [...MODEL_NAMES];
const rows: string[] = [];
const notes = new Set<string>();

/** Issue #15's host ms/step targets at the seed recipe (twice d2l's V100 throughput). */
const HOST_TARGET_MS: Partial<Record<ModelName, number>> = {
  "lenet": 1.5,
  "lenet-bn": 2.1,
  "alexnet": 15,
  "vgg": 25,
  "nin": 20,
  "googlenet": 18,
  "resnet": 27,
  "densenet": 23,
  "mobilenet": 25,
};

/** One row of the `--host-only` table: steps recorded at the recipe's batch, never executed. */
async function hostRow(name: ModelName): Promise<string> {
  const recipe = DEFAULTS[name];
  const resize = args.resize ?? recipe.resize;
  const batch = args.batch ?? recipe.batchSize;
  const steps = args.steps ?? 10;
  try {
    const run = setupRun(gpu, name, { batch, resize, steps, precision: args.precision });
    const modes = args.replay === "both" ? [false, true] : [args.replay === "on"];
    // A whole epoch first (per mode): it compiles the pipelines and brings the pool (whose free
    // buffers depend on the epoch's size) and the bind group cache to their steady state.
    let epoch = 0;
    for (const replay of modes) {
      run.trainer.replay = replay;
      await hostSteps(gpu, run, { epoch: epoch++ });
    }
    // Best of 2 per mode, the modes interleaved.
    const best = new Map<boolean, HostTiming>();
    for (let r = 0; r < 2; r++) {
      for (const replay of modes) {
        run.trainer.replay = replay;
        const t = await hostSteps(gpu, run, { epoch: epoch++ });
        const b = best.get(replay);
        if (!b || t.hostMsPerStep < b.hostMsPerStep) best.set(replay, t);
      }
    }
    const main = best.get(modes.at(-1)!)!;
    const plain = args.replay === "both" ? best.get(false)!.hostMsPerStep.toFixed(2) : "-";
    run.trainer.model.dispose();
    run.set.images.dispose();
    run.set.labels.dispose();
    const target = HOST_TARGET_MS[name];
    const ratio = target === undefined ? "" : `${(main.hostMsPerStep / target).toFixed(2)}x`;
    return `| ${name} | ${batch} | ${resize} | ${main.dispatches.toFixed(0)} | ` +
      `${main.planned} | ${main.bindGroups.toFixed(1)} | ` +
      `${main.hostMsPerStep.toFixed(2)} | ${plain} | ${target ?? "-"} | ${ratio} | ` +
      `best of 2 x ${steps} |`;
  } catch (e) {
    const msg = (e instanceof Error ? e.message : String(e)).split("\n")[0].slice(0, 120);
    return `| ${name} | ${batch} | ${resize} | failed: ${msg} | | | | | | | |`;
  }
}

/** The `--host-only` table. */
async function hostTable(): Promise<void> {
  for (const name of models) {
    rows.push(await hostRow(name));
    gpu.trimPool();
    console.error(`done: ${name}`);
  }
  console.log(
    `Adapter: ${gpu.description}${gpu.isCpu ? " (CPU adapter)" : ""}; ${tuned}; ` +
      `precision ${args.precision}; replay ${args.replay}; host only (steps recorded, never ` +
      "executed)\n",
  );
  console.log(
    "| model | batch | resize | dispatches/step | planned/step | bind groups/step | host ms/step | " +
      "no replay ms/step | target ms | host/target | timed steps |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) console.log(r);
}

/** The full table: steps executed at the bench batch. */
async function fullTable(): Promise<void> {
  for (const name of models) {
    const recipe = DEFAULTS[name];
    const resize = args.resize ?? recipe.resize;
    const auto = args.batch === undefined
      ? benchBatch(gpu, name, resize)
      : { batch: args.batch, reduced: false };
    const steps = args.steps ?? (auto.reduced ? 3 : 10);
    const batchCell = auto.reduced ? `${auto.batch}*` : `${auto.batch}`;
    if (auto.reduced) {
      notes.add(
        `\\* reduced from the recipe's batch on this CPU adapter (a step at the recipe's batch ` +
          `would exceed ~20 GFLOP); pass --batch to override.`,
      );
    }
    try {
      const run = setupRun(gpu, name, {
        batch: auto.batch,
        resize,
        steps,
        precision: args.precision,
      });
      run.trainer.replay = args.replay === "on";
      await warmUp(run);
      // Best of a few epochs: other processes sharing the CPU only ever slow a run down.
      const rounds = auto.reduced ? 1 : 3;
      let best: StepTiming | undefined;
      let peak = 0;
      for (let r = 0; r < rounds; r++) {
        const t = await timeSteps(gpu, run, r + 1);
        if (!Number.isFinite(t.loss)) notes.add(`${name}: the loss was not finite (${t.loss}).`);
        peak = Math.max(peak, t.peakBytes);
        if (!best || t.examplesPerSec > best.examplesPerSec) best = t;
      }
      rows.push(
        `| ${name} | ${batchCell} | ${resize} | ${best!.examplesPerSec.toFixed(1)} | ` +
          `${best!.msPerStep.toFixed(1)} | ${best!.hostMsPerStep.toFixed(2)} | ` +
          `${(peak / 2 ** 20).toFixed(1)} MiB | ` +
          `${rounds > 1 ? `best of ${rounds} x ` : ""}${steps} |`,
      );
      run.trainer.model.dispose();
      run.set.images.dispose();
      run.set.labels.dispose();
    } catch (e) {
      const msg = (e instanceof Error ? e.message : String(e)).split("\n")[0].slice(0, 120);
      rows.push(`| ${name} | ${batchCell} | ${resize} | failed: ${msg} | | | | |`);
    }
    gpu.trimPool();
    console.error(`done: ${name}`);
  }

  console.log(
    `Adapter: ${gpu.description}${gpu.isCpu ? " (CPU adapter)" : ""}; ${tuned}; ` +
      `precision ${args.precision}; replay ${args.replay}\n`,
  );
  console.log(
    "| model | batch | resize | examples/s | ms/step | host ms/step | peak GPU memory | timed steps |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) console.log(r);
  if (notes.size) console.log();
  for (const n of notes) console.log(n);
}

const header = `Adapter: ${gpu.description}${gpu.isCpu ? " (CPU adapter)" : ""}; ${tuned}`;
if (args.hostOnly) await hostTable();
else if (args.profile) await profileTable(gpu, { ...args, models, header });
else if (args.vsTorch) await vsTorchTable(gpu, { ...args, models, header });
else await fullTable();
