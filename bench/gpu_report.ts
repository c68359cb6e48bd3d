// One command for the day a GPU is lent: the adapter, the test suite on it, the training
// throughput of every model at its seed recipe (f32 and f16), PyTorch's on the same GPU when it
// has CUDA, and one real epoch of ResNet on Fashion-MNIST, in one markdown report:
//
//   deno task gpu-report [--quick] [--out FILE]     (default FILE: out/gpu-report.md)
//
// Parts, and what each costs on an H100 (the whole must fit 8 minutes; estimated from FLOPs, at
// ASSUMED_FLOPS, a conservative rate for our f32 WGSL GEMMs there, ~10% of the H100's 67 TFLOP/s
// of f32 FMA, and printed before the run starts):
// 1. the test suite (`tests/run.ts`, one process per file on 16 cores): its time is the CPU
//    references and pipeline compiles, not GPU work: ~3 minutes (CI's llvmpipe run takes ~7 on 2
//    cores, most of it in CPU-side references that scale with cores);
// 2. `bench:train`'s steps (bench/_train.ts): per model and precision one untimed step (compiles
//    its pipelines: ~5 s a model the first time) then enough timed steps for ~2 s of work
//    (3·forward FLOPs·batch per step, 3 to 20 steps): 20 runs, ~2 minutes;
// 3. PyTorch eager FP32 (TF32 off) on the reference module trees (tests/fixtures/d2l_nets.py)
//    by bench/torch_steps.py --device cuda with the same batches, resizes and step counts:
//    ~1 minute;
// 4. `deno task train resnet --epochs 1` on the real Fashion-MNIST (60000 + 10000 images at
//    96x96: 3·0.67 GFLOP·60000 + 0.67 GFLOP·10000 ≈ 128 TFLOP): ~40 s;
// 5. where the device time of a step goes (`bench:train --profile`, bench/_profile.ts: GPU
//    timestamps per dispatch, by kernel family) for MobileNet, ResNet, DenseNet and GoogLeNet in
//    f32 at their bench batch, 3 steps each: a few seconds. For the models with batch norms also
//    the batch norm's fusions with its producers (kernels/batchnorm/fusion_mode.ts: on by default
//    on GPUs, unmeasured there so far) against both forced off, alternating: what they save.
//
// `--quick` (CI runs it, so that this script never rots; ~1-2 minutes on llvmpipe): three test
// files, LeNet and LeNet-BN at batch 32 for 3 steps in f32 and f16, LeNet-BN's profile, no
// PyTorch and no epoch.
//
// Errors are one line (cli/_run.ts); `--out` is checked before any work.
import { getGpu, type Gpu } from "../gpu/mod.ts";
import { defaultTuningCachePath, loadTuningCache } from "../kernels/mod.ts";
import { DEFAULTS, MODEL_NAMES, type ModelName, type Precision } from "../models/mod.ts";
import { runCommand } from "../cli/_run.ts";
import { checkOutputFile } from "../cli/_outputs.ts";
import { benchCli } from "./_args.ts";
import { benchBatch, forwardFlops, setupRun, timeSteps, warmUp } from "./_train.ts";
import { profileMarkdown, profileSteps, type StepProfile } from "./_profile.ts";
import { setBnFusionMode } from "../kernels/batchnorm/fusion_mode.ts";

/** The rate the step counts and time estimates assume on a GPU adapter (FLOP/s). */
const ASSUMED_FLOPS = 4e12;
/** Seconds of timed work per model and precision on a GPU. */
const TIMED_SECONDS = 2;
/** The test files of `--quick`: the limits of real GPUs, workgroup memory, import cycles. */
const QUICK_TESTS = ["limits", "workgroup_memory", "imports"];
/** The models, batch and steps of `--quick`. */
const QUICK_MODELS: ModelName[] = ["lenet", "lenet-bn"];
const QUICK_BATCH = 32, QUICK_STEPS = 3;
/** The models profiled (f32, at the row's batch, 3 steps), and those of `--quick`. */
const PROFILED: ModelName[] = ["mobilenet", "resnet", "densenet", "googlenet"];
const QUICK_PROFILED: ModelName[] = ["lenet-bn"];

const root = new URL("..", import.meta.url).pathname;
const cli = benchCli("usage: deno task gpu-report [--quick] [--out FILE]");

interface Options {
  quick: boolean;
  out: string;
}

/** One model at one precision: its shape and what ours and PyTorch measured. */
interface Row {
  model: ModelName;
  precision: Precision;
  batch: number;
  resize: number;
  steps: number;
  ours?: { examplesPerSec: number; peakBytes: number };
  torch?: { examplesPerSec: number; peakBytes: number };
  error?: string;
}

function parseArgs(args: string[]): Options {
  const o: Options = { quick: false, out: "out/gpu-report.md" };
  cli.parse(args, {
    "--quick": () => o.quick = true,
    "--out": (value) => o.out = value(),
  });
  return o;
}

/** Runs a command of this repository; its output, exit code and seconds. */
async function run(
  cmd: string,
  args: string[],
  options: { stdin?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string; seconds: number }> {
  const t0 = performance.now();
  try {
    const child = new Deno.Command(cmd, {
      args,
      cwd: root,
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1", ...options.env },
    }).spawn();
    if (options.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(options.stdin));
      await w.close();
    }
    const out = await child.output();
    const dec = new TextDecoder();
    return {
      code: out.code,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      seconds: (performance.now() - t0) / 1000,
    };
  } catch (e) {
    return { code: 127, stdout: "", stderr: (e as Error).message, seconds: 0 };
  }
}

/** The test suite (or the quick subset) in child processes: its summary lines and counts. */
async function runTests(quick: boolean) {
  const filters = quick ? QUICK_TESTS : [""];
  let passed = 0, failed = 0, seconds = 0;
  const failures: string[] = [];
  for (const f of filters) {
    console.error(`gpu-report: tests ${f || "(all)"} ...`);
    const r = await run(Deno.execPath(), ["run", "-A", "tests/run.ts", ...(f ? [f] : [])]);
    const text = r.stdout + r.stderr;
    const m = text.match(/^(?:ok|FAILED) \| (\d+) passed[^\n]*?\| (\d+) failed/m);
    passed += Number(m?.[1] ?? 0);
    failed += Number(m?.[2] ?? (r.code === 0 ? 0 : 1));
    seconds += r.seconds;
    if (r.code !== 0) {
      failures.push(
        ...text.split("\n").filter((l) => /FAILED|failed/.test(l) && !/^ok/.test(l)).slice(0, 20),
      );
    }
  }
  return { passed, failed, seconds, failures, files: quick ? QUICK_TESTS.join(", ") : "all" };
}

/** The models, batches and step counts of this run, sized from FLOPs. */
function plan(gpu: Gpu, quick: boolean): Row[] {
  const rows: Row[] = [];
  for (const model of quick ? QUICK_MODELS : MODEL_NAMES) {
    const resize = DEFAULTS[model].resize;
    const batch = quick ? QUICK_BATCH : benchBatch(gpu, model, resize).batch;
    const stepFlops = 3 * forwardFlops(model, resize) * batch;
    const steps = quick
      ? QUICK_STEPS
      : Math.max(3, Math.min(20, Math.ceil(TIMED_SECONDS * ASSUMED_FLOPS / stepFlops)));
    for (const precision of ["f32", "f16"] as const) {
      rows.push({ model, precision, batch, resize, steps });
    }
  }
  return rows;
}

/** Our steps of every row (`bench:train`'s functions). */
async function benchOurs(gpu: Gpu, rows: Row[]): Promise<void> {
  for (const row of rows) {
    if (row.precision === "f16" && !gpu.features.f16) {
      row.error = "no shader-f16";
      continue;
    }
    console.error(`gpu-report: bench ${row.model} ${row.precision} x${row.steps} ...`);
    try {
      const r = setupRun(gpu, row.model, row);
      await warmUp(r);
      const t = await timeSteps(gpu, r);
      row.ours = { examplesPerSec: t.examplesPerSec, peakBytes: t.peakBytes };
      if (!Number.isFinite(t.loss)) row.error = `loss ${t.loss}`;
      r.trainer.model.dispose();
      r.set.images.dispose();
      r.set.labels.dispose();
    } catch (e) {
      row.error = (e instanceof Error ? e.message : String(e)).split("\n")[0].slice(0, 120);
    }
    gpu.trimPool();
  }
}

/** Device time per kernel of a few f32 steps of the profiled models, as markdown lines. */
async function profiles(gpu: Gpu, rows: Row[], quick: boolean): Promise<string[]> {
  if (!gpu.features.timestamps) return ["No `timestamp-query` on this adapter: no profiles."];
  const lines: string[] = [];
  for (const model of quick ? QUICK_PROFILED : PROFILED) {
    const row = rows.find((r) => r.model === model && r.precision === "f32");
    if (!row) continue;
    console.error(`gpu-report: profile ${model} ...`);
    const title = `${model}, batch ${row.batch}, ${row.resize}x${row.resize}`;
    try {
      const profile = async () => {
        const r = setupRun(gpu, model, { ...row, steps: 3 });
        try {
          return await profileSteps(gpu, r);
        } finally {
          r.trainer.model.dispose();
          r.set.images.dispose();
          r.set.labels.dispose();
        }
      };
      const p = await profile();
      lines.push(...profileMarkdown(title, p, 8), "");
      if (p.times.some((t) => t.family.startsWith("batchnorm"))) {
        lines.push(...await bnFusionSideBySide(gpu, profile, p), "");
      }
    } catch (e) {
      const msg = (e instanceof Error ? e.message : String(e)).split("\n")[0].slice(0, 120);
      lines.push(`### ${title}: failed: ${msg}`, "");
    }
    gpu.trimPool();
  }
  return lines;
}

/**
 * The batch norm's fusions with its producers (statistics gathered in the producer's store, the
 * backward's gradient sums in the store of the batch norm's output gradient; planned `auto`: on
 * wherever a kernel can on a GPU, unmeasured there before this report) against both forced off,
 * alternating (on, off, on, off after the first profile `p`): the device time a step saves or
 * loses, and the batch-norm and GEMM/direct-convolution families' share of it.
 */
async function bnFusionSideBySide(
  gpu: Gpu,
  profile: () => Promise<StepProfile>,
  p: StepProfile,
): Promise<string[]> {
  const on: StepProfile[] = [p], off: StepProfile[] = [];
  for (let round = 0; round < 2; round++) {
    const before = [
      setBnFusionMode(gpu, "batchStats", "off"),
      setBnFusionMode(gpu, "gradSums", "off"),
    ];
    try {
      off.push(await profile());
    } finally {
      setBnFusionMode(gpu, "batchStats", before[0]);
      setBnFusionMode(gpu, "gradSums", before[1]);
    }
    if (round === 0) on.push(await profile());
  }
  const ms = (q: StepProfile, f: (family: string) => boolean) =>
    q.times.filter((t) => f(t.family)).reduce((a, t) => a + t.ms, 0) / q.steps;
  const best = (qs: StepProfile[], f: (family: string) => boolean) =>
    Math.min(...qs.map((q) => ms(q, f)));
  const groups: [string, (f: string) => boolean][] = [
    ["whole step", () => true],
    ["batch norm kernels", (f) => f.startsWith("batchnorm")],
    ["GEMM kernels", (f) => f.startsWith("gemm")],
    ["direct convolutions", (f) => f.startsWith("conv2d_direct")],
  ];
  return [
    "Batch-norm fusions (auto) against both forced off, device ms/step, best of the alternating " +
    `profiles (${on.length} on, ${off.length} off):`,
    "",
    "| kernels | fusions auto | fusions off | saved |",
    "| --- | ---: | ---: | ---: |",
    ...groups.map(([name, f]) => {
      const a = best(on, f), b = best(off, f);
      return `| ${name} | ${a.toFixed(2)} | ${b.toFixed(2)} | ${(b - a).toFixed(2)} |`;
    }),
  ];
}

/** PyTorch's steps of the f32 rows, when python3 has torch with CUDA; else why not. */
async function benchTorch(rows: Row[]): Promise<string> {
  const probe = await run("python3", ["-c", "import torch; assert torch.cuda.is_available()"]);
  if (probe.code !== 0) return "PyTorch with CUDA is not available here: skipped";
  const jobs = rows.filter((r) => r.precision === "f32").map((r) => ({
    model: r.model,
    batch: r.batch,
    resize: r.resize,
    steps: r.steps,
    lr: DEFAULTS[r.model].lr,
  }));
  console.error(`gpu-report: PyTorch on ${jobs.length} models ...`);
  const r = await run("python3", ["bench/torch_steps.py", "--device", "cuda"], {
    stdin: JSON.stringify(jobs),
  });
  for (const line of r.stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    const o = JSON.parse(line) as {
      model: ModelName;
      examples_per_sec?: number;
      peak_bytes?: number;
      error?: string;
    };
    const row = rows.find((x) => x.model === o.model && x.precision === "f32");
    if (row && o.examples_per_sec !== undefined) {
      row.torch = { examplesPerSec: o.examples_per_sec, peakBytes: o.peak_bytes ?? 0 };
    }
  }
  const info = r.stderr.split("\n").find((l) => l.startsWith("torch")) ?? "";
  return r.code === 0 ? info : `PyTorch failed: ${r.stderr.trim().split("\n").at(-1)}`;
}

/** One epoch of ResNet on the real Fashion-MNIST: its last JSON line, or why not. */
async function resnetEpoch(): Promise<string> {
  console.error("gpu-report: resnet, 1 epoch of Fashion-MNIST ...");
  const r = await run(Deno.execPath(), [
    "run",
    "-A",
    "cli/train.ts",
    "resnet",
    "--epochs",
    "1",
    "--json",
  ]);
  const last = r.stdout.split("\n").filter((l) => l.startsWith("{")).at(-1);
  if (r.code !== 0 || !last) {
    return `failed (exit ${r.code}): ${r.stderr.trim().split("\n").at(-1) ?? ""}`;
  }
  const o = JSON.parse(last);
  const f = (x: number | null) => (x === null ? "-" : x.toFixed(4));
  return `loss ${f(o.loss)}, train acc ${f(o.train_acc)}, test acc ${f(o.test_acc)}, ` +
    `${o.examples_per_sec.toFixed(0)} examples/s, ${r.seconds.toFixed(0)} s in all`;
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

function report(
  gpu: Gpu,
  o: Options,
  parts: {
    tests: Awaited<ReturnType<typeof runTests>>;
    rows: Row[];
    torch: string;
    epoch: string;
    profiles: string[];
    seconds: Record<string, number>;
    estimate: number;
  },
): string {
  const t = parts.tests;
  const lines = [
    `# GPU report${o.quick ? " (--quick)" : ""}`,
    "",
    `- Adapter: ${gpu.description}${gpu.isCpu ? " (CPU adapter)" : ""}; shader-f16: ` +
    `${gpu.features.f16 ? "yes" : "no"}; max binding ` +
    `${mib(gpu.limits.maxStorageBufferBindingSize)}, max buffer ${mib(gpu.limits.maxBufferSize)}`,
    `- Date: ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC; Deno ` +
    `${Deno.version.deno}`,
    `- Tests (${t.files}): ${t.passed} passed, ${t.failed} failed (${t.seconds.toFixed(0)} s)`,
    ...t.failures.map((f) => `  - ${f.trim()}`),
    `- PyTorch: ${parts.torch}`,
    `- ResNet, 1 epoch of Fashion-MNIST: ${parts.epoch}`,
    `- Time: ${
      Object.entries(parts.seconds).map(([k, s]) => `${k} ${s.toFixed(0)} s`).join(", ")
    } (estimated from FLOPs before the run: ${parts.estimate.toFixed(0)} s of GPU work)`,
    "",
    "| model | precision | batch | resize | steps | ours ex/s | PyTorch ex/s | ratio | peak memory (ours) | peak memory (PyTorch) |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of parts.rows) {
    const ours = r.ours ? r.ours.examplesPerSec.toFixed(1) : r.error ?? "-";
    const torch = r.torch ? r.torch.examplesPerSec.toFixed(1) : "-";
    const ratio = r.ours && r.torch
      ? `${(r.ours.examplesPerSec / r.torch.examplesPerSec).toFixed(2)}`
      : "-";
    lines.push(
      `| ${r.model} | ${r.precision} | ${r.batch} | ${r.resize} | ${r.steps} | ${ours} | ` +
        `${torch} | ${ratio} | ${r.ours ? mib(r.ours.peakBytes) : "-"} | ` +
        `${r.torch ? mib(r.torch.peakBytes) : "-"} |`,
    );
  }
  lines.push(
    "",
    "ratio: ours / PyTorch (PyTorch eager FP32, TF32 off, on the same batch and resize; f16 rows " +
      "compare our f16 step with PyTorch's FP32 one, so they have no ratio). Peak memory: our " +
      "buffer pool's live bytes, PyTorch's `max_memory_allocated`.",
    "",
    "## Where a step's device time goes (f32, GPU timestamps per dispatch)",
    "",
    ...parts.profiles,
  );
  return lines.join("\n") + "\n";
}

await runCommand("gpu-report", async (argv) => {
  const o = parseArgs(argv);
  await checkOutputFile("--out", o.out);
  const start = performance.now();
  const seconds: Record<string, number> = {};
  const gpu = await getGpu();
  console.log(
    `gpu-report: adapter ${gpu.description}${gpu.isCpu ? " (CPU adapter)" : ""}` +
      `${gpu.features.f16 ? ", shader-f16" : ""}`,
  );
  const rows = plan(gpu, o.quick);
  const workFlops = rows.reduce(
    (s, r) => s + 3 * forwardFlops(r.model, r.resize) * r.batch * (r.steps + 1),
    0,
  );
  // The epoch: 60000 training images (3x forward) and 10000 test images (forward), ResNet at 96.
  const epochFlops = o.quick ? 0 : 70000 * 3 * forwardFlops("resnet", 96);
  const estimate = (2 * workFlops + epochFlops) / ASSUMED_FLOPS; // ours and PyTorch's steps
  console.error(
    `gpu-report: ~${estimate.toFixed(0)} s of GPU work at ${ASSUMED_FLOPS / 1e12} TFLOP/s`,
  );

  let t0 = performance.now();
  const tests = await runTests(o.quick);
  seconds.tests = (performance.now() - t0) / 1000;
  console.log(`gpu-report: tests ${tests.passed} passed, ${tests.failed} failed`);

  t0 = performance.now();
  const path = defaultTuningCachePath();
  await loadTuningCache(gpu, path);
  await benchOurs(gpu, rows);
  seconds.bench = (performance.now() - t0) / 1000;

  t0 = performance.now();
  const torch = o.quick ? "skipped (--quick)" : await benchTorch(rows);
  seconds.pytorch = (performance.now() - t0) / 1000;

  t0 = performance.now();
  const epoch = o.quick ? "skipped (--quick)" : await resnetEpoch();
  seconds.epoch = (performance.now() - t0) / 1000;

  t0 = performance.now();
  const profiled = await profiles(gpu, rows, o.quick);
  seconds.profiles = (performance.now() - t0) / 1000;
  seconds.total = (performance.now() - start) / 1000;

  const text = report(gpu, o, {
    tests,
    rows,
    torch,
    epoch,
    profiles: profiled,
    seconds,
    estimate,
  });
  await Deno.writeTextFile(o.out, text);
  console.log(text);
  console.log(`gpu-report: written to ${o.out}`);
  return tests.failed > 0 || rows.some((r) => r.error && r.error !== "no shader-f16") ? 1 : 0;
});
