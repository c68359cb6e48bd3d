// `deno task bench:train --vs-torch` (bench/train_table.ts): our training steps beside PyTorch's
// on the CPU, per model, at the same batch and input size, interleaved in one run.
//
// PyTorch runs in one process for the whole table (bench/torch_steps.py --serve, Debian's
// python3-torch: /usr/bin/python3 first, then python3 on the PATH), eager FP32 on 2 threads with
// its defaults (oneDNN), the same steps as ours: the batch resized from 1x28x28 uint8 images,
// forward, cross-entropy, backward, plain SGD at the recipe's learning rate. Per model, both sides
// warm up once, then R rounds (default 3) each time S steps of ours and S of PyTorch's, the side
// that goes first alternating; each side's best round is reported (other processes sharing the
// CPU only slow a round down).
//
// Effective GFLOP/s: examples/s x 3 x the forward FLOPs of one example (`forwardFlops`, the
// layers' `flops` as models/summary.ts totals them: 2 per multiply-add of the convolutions and
// linear layers, nothing for the rest), the x3 standing for the forward, the data gradient and the
// weight gradient. It is set beside the adapter's GEMM peak: the best GFLOP/s of our `gemm` on a
// large square problem (1024^3 on a CPU adapter, 4096^3 on a GPU), over its kernel families,
// measured once at the start.
import type { Gpu } from "../gpu/mod.ts";
import { gemm, type GemmTuning } from "../kernels/gemm/index.ts";
import { DEFAULTS, type ModelName } from "../models/mod.ts";
import { alternate } from "./_interleave.ts";
import { benchBatch, forwardFlops, setupRun, timeSteps, warmUp } from "./_train.ts";

/** One PyTorch job: a model's steps at a batch and input size. */
interface TorchJob {
  readonly model: ModelName;
  readonly batch: number;
  readonly resize: number;
  readonly steps: number;
  readonly lr: number;
}

/** A running `bench/torch_steps.py --serve`. */
interface TorchProcess {
  /** Times `job`'s steps (set up and warmed up at its first call): examples per second. */
  time(job: TorchJob): Promise<number>;
  /** Ends the process; returns the torch/device line it printed first (or its last error). */
  close(): Promise<string>;
}

const PYTHONS = ["/usr/bin/python3", "python3"];
const SCRIPT = new URL("./torch_steps.py", import.meta.url).pathname;

/** The first of PYTHONS that imports torch, or null. */
async function findPython(): Promise<string | null> {
  for (const python of PYTHONS) {
    try {
      const r = await new Deno.Command(python, {
        args: ["-c", "import torch"],
        stdout: "null",
        stderr: "null",
      }).output();
      if (r.success) return python;
    } catch {
      // not installed
    }
  }
  return null;
}

/** The lines of a byte stream. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    rest += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = rest.indexOf("\n")) >= 0) {
      yield rest.slice(0, i);
      rest = rest.slice(i + 1);
    }
  }
  if (rest) yield rest;
}

/** Starts PyTorch's side on the CPU with `threads` threads, or says why it cannot. */
async function startTorch(threads: number): Promise<TorchProcess | string> {
  const python = await findPython();
  if (!python) {
    return `PyTorch: no python3 with torch here (tried ${PYTHONS.join(", ")}; Debian's ` +
      "python3-torch provides it), so the table has no PyTorch columns.";
  }
  const child = new Deno.Command(python, {
    args: [SCRIPT, "--serve", "--device", "cpu", "--threads", String(threads)],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const out = lines(child.stdout);
  const err = new Response(child.stderr).text();
  const encoder = new TextEncoder();
  return {
    async time(job) {
      await writer.write(encoder.encode(JSON.stringify(job) + "\n"));
      const line = await out.next();
      if (line.done) {
        const tail = (await err).trim().split("\n").at(-1) ?? "";
        throw new Error(`bench/torch_steps.py exited: ${tail}`);
      }
      const o = JSON.parse(line.value) as { examples_per_sec?: number; error?: string };
      if (o.examples_per_sec === undefined) throw new Error(o.error ?? line.value);
      return o.examples_per_sec;
    },
    async close() {
      await writer.close().catch(() => {});
      await child.status;
      const text = await err;
      return text.split("\n").find((l) => l.startsWith("torch")) ??
        `PyTorch failed: ${text.trim().split("\n").at(-1)}`;
    },
  };
}

/** The adapter's GEMM peak: the best GFLOP/s of `gemm` on an n^3 problem, over its families. */
export async function gemmPeak(gpu: Gpu): Promise<{ gflops: number; label: string }> {
  const n = gpu.isCpu ? 1024 : 4096;
  const random = () => Float32Array.from({ length: n * n }, () => Math.random() - 0.5);
  const a = gpu.tensor(random(), { shape: [n * n] });
  const b = gpu.tensor(random(), { shape: [n * n] });
  const c = gpu.empty([n * n]);
  const flops = 2 * n ** 3;
  let best = { gflops: 0, label: "" };
  const families: [string, GemmTuning][] = [
    ["planned", {}],
    ["register", { variant: "register" }],
    ["shared", { variant: "shared" }],
  ];
  for (const [name, tuning] of families) {
    const call = () => gemm({ c, a, b }, { m: n, n, k: n, ...tuning });
    call(); // compiles
    await gpu.sync();
    let t0 = performance.now();
    call();
    await gpu.sync();
    const reps = Math.max(1, Math.ceil(300 / (performance.now() - t0)));
    for (let s = 0; s < 3; s++) {
      t0 = performance.now();
      for (let r = 0; r < reps; r++) call();
      await gpu.sync();
      const gflops = flops * reps / ((performance.now() - t0) / 1000) / 1e9;
      if (gflops > best.gflops) best = { gflops, label: `gemm ${n}^3, ${name}` };
    }
  }
  for (const t of [a, b, c]) t.dispose();
  return best;
}

/** Options of the `--vs-torch` table (bench:train's flags). */
export interface VsTorchOptions {
  readonly models: readonly ModelName[];
  readonly steps?: number;
  readonly batch?: number;
  readonly resize?: number;
  /** Rounds per model (default 3). */
  readonly rounds?: number;
  /** The header's description of the adapter and the tuning cache. */
  readonly header: string;
}

const first = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0];

/** Prints the `--vs-torch` table (f32 steps; see the top of this file). */
export async function vsTorchTable(gpu: Gpu, o: VsTorchOptions): Promise<void> {
  const gemmBest = await gemmPeak(gpu);
  const peak = gemmBest.gflops;
  console.error(`GEMM peak: ${peak.toFixed(1)} GFLOP/s (${gemmBest.label})`);
  const started = await startTorch(2);
  const hasTorch = typeof started !== "string";
  let torch = hasTorch ? started : null;
  const rounds = o.rounds ?? 3;
  const rows: string[] = [];
  const notes = new Set<string>();
  const gf = (exPerSec: number, flops: number) => (exPerSec * flops / 1e9).toFixed(2);
  // Examples/s: one decimal, three significant digits below 10 (reduced batches on a CPU).
  const ex = (x: number) => x < 10 ? x.toPrecision(3) : x.toFixed(1);
  for (const name of o.models) {
    const resize = o.resize ?? DEFAULTS[name].resize;
    const auto = o.batch === undefined
      ? benchBatch(gpu, name, resize)
      : { batch: o.batch, reduced: false };
    const steps = o.steps ?? (auto.reduced ? 3 : 10);
    const batchCell = auto.reduced ? `${auto.batch}*` : `${auto.batch}`;
    if (auto.reduced) {
      notes.add(
        "\\* reduced from the recipe's batch on this CPU adapter (a step at the recipe's batch " +
          "would exceed ~20 GFLOP); pass --batch to override. PyTorch runs the same batch.",
      );
    }
    const flops = 3 * forwardFlops(name, resize);
    const job = { model: name, batch: auto.batch, resize, steps, lr: DEFAULTS[name].lr };
    let theirsError = "";
    const theirs = torch
      ? async () => {
        if (theirsError) return NaN;
        try {
          return await torch!.time(job);
        } catch (e) {
          theirsError = first(e).slice(0, 100);
          return NaN;
        }
      }
      : null;
    let cells: string[];
    try {
      const run = setupRun(gpu, name, { batch: auto.batch, resize, steps, precision: "f32" });
      await warmUp(run);
      let epoch = 1;
      const r = await alternate(rounds, async () => {
        const t = await timeSteps(gpu, run, epoch++);
        if (!Number.isFinite(t.loss)) notes.add(`${name}: our loss was not finite (${t.loss}).`);
        return t.examplesPerSec;
      }, theirs);
      run.trainer.model.dispose();
      run.set.images.dispose();
      run.set.labels.dispose();
      const ours = Math.max(...r.ours);
      cells = [
        ex(ours),
        gf(ours, flops),
        `${(100 * ours * flops / 1e9 / peak).toFixed(0)}%`,
      ];
      if (theirsError) cells.push(`failed: ${theirsError}`, "", "");
      else if (torch) {
        const best = Math.max(...r.theirs);
        cells.push(ex(best), gf(best, flops), `${(ours / best).toFixed(2)}x`);
      } else cells.push("-", "-", "-");
    } catch (e) {
      cells = [`failed: ${first(e).slice(0, 120)}`, "", "", "", "", ""];
    }
    if (!hasTorch) cells = cells.slice(0, 3);
    const cols = [
      name,
      batchCell,
      resize,
      (flops / 1e9).toPrecision(3),
      ...cells,
      `${rounds} x ${steps}`,
    ];
    rows.push(`| ${cols.join(" | ")} |`);
    gpu.trimPool();
    console.error(`done: ${name}`);
    if (theirsError.startsWith("bench/torch_steps.py exited")) {
      notes.add(`PyTorch's process ended at ${name}: ${theirsError}`);
      await torch?.close();
      torch = null;
    }
  }
  const torchLine = typeof started === "string" ? started : `PyTorch: ${await started.close()}`;
  console.log(
    `${o.header}; precision f32; GEMM peak ${peak.toFixed(1)} GFLOP/s (${gemmBest.label})`,
  );
  console.log(`${torchLine}\n`);
  const torchCols = !hasTorch
    ? ["", ""]
    : [" PyTorch ex/s | PyTorch GFLOP/s | ours/PyTorch |", " ---: | ---: | ---: |"];
  console.log(
    "| model | batch | resize | GFLOP/example (fwd+bwd) | ours ex/s | ours GFLOP/s | " +
      `of GEMM peak |${torchCols[0]} rounds x steps |`,
  );
  console.log(`| --- | ---: | ---: | ---: | ---: | ---: | ---: |${torchCols[1]} ---: |`);
  for (const r of rows) console.log(r);
  const timing = hasTorch
    ? "Interleaved: per model, rounds of our steps and PyTorch's (same batch, input size and " +
      "steps; the side going first alternates), each side's best round."
    : "Our best round per model.";
  console.log(
    `\n${timing} GFLOP/s: examples/s x 3 x the forward FLOPs per example ` +
      "(models/summary.ts), i.e. forward + data gradient + weight gradient.",
  );
  for (const n of notes) console.log(n);
}
