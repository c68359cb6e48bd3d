// Tests of the autotuner (kernels/autotune/): the recording (gemmStrided's hook, the conv2d
// runner's observer), tuning a small GEMM and a conv2d pass, table entries steering gemmStrided
// and conv2d's plans, and the cache file.
import assert from "node:assert/strict";
import type { Gpu } from "../gpu/mod.ts";
import {
  conv2dBackward,
  conv2dForward,
  defaultTuningCachePath,
  gemm,
  type GemmParams,
  loadTuningCache,
  recordProblems,
  saveTuningCache,
  type TunedChoice,
  tuneProblems,
  type TuningTable,
  tuningTable,
} from "../kernels/mod.ts";
import { adapterKey } from "../kernels/autotune/index.ts";
import { makeSynthetic } from "../data/mod.ts";
import { createModel, Trainer, uploadImageSet } from "../models/mod.ts";
import { parseTrainArgs } from "../cli/_train_args.ts";
import { conv2dRef } from "./cpu_ref/conv2d.ts";
import { gemmRef } from "./cpu_ref/gemm.ts";
import { assertClose, f32, GPU_TEST, Rng, testGpu } from "./harness.ts";
import { conv2dPlansOf, kernelsOfAsync } from "./kernels_of.ts";

/** A GPU test run with an empty tuning table, which it leaves empty. */
function tableTest(name: string, fn: (gpu: Gpu, table: TuningTable) => Promise<void>): void {
  Deno.test(name, GPU_TEST, async () => {
    const gpu = await testGpu();
    const table = tuningTable(gpu);
    table.clear();
    try {
      await fn(gpu, table);
    } finally {
      table.clear();
    }
  });
}

/** A {@linkcode tableTest} with a temporary directory for cache files, removed afterwards. */
function cacheTest(
  name: string,
  fn: (gpu: Gpu, table: TuningTable, dir: string) => Promise<void>,
): void {
  tableTest(name, async (gpu, table) => {
    const dir = await Deno.makeTempDir();
    try {
      await fn(gpu, table, dir);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

/** A GEMM on random operands; returns its problems' tools and a checker against the reference. */
async function gemmCase(gpu: Gpu, p: GemmParams, seed: number) {
  const rng = new Rng(seed);
  const a = rng.uniformArray(p.m * p.k), b = rng.uniformArray(p.k * p.n);
  const bias = rng.uniformArray(p.n);
  const ta = gpu.tensor(f32(a), { shape: p.transA ? [p.k, p.m] : [p.m, p.k] });
  const tb = gpu.tensor(f32(b), { shape: p.transB ? [p.n, p.k] : [p.k, p.n] });
  const tbias = gpu.tensor(f32(bias), { shape: [p.n] });
  const tc = gpu.empty([p.m, p.n]);
  const run = () => gemm({ c: tc, a: ta, b: tb, bias: tbias }, p);
  const expected = gemmRef(a, b, p, undefined, bias);
  const check = async (what: string) => {
    gpu.clear(tc);
    run();
    assertClose(await tc.toArray(), expected, { rtol: 1e-4, atol: 1e-4, what });
  };
  const [problem] = await recordProblems(gpu, run);
  const dispose = () => [ta, tb, tc, tbias].forEach((t) => t.dispose());
  return { run, check, key: problem.key, problem, dispose };
}

Deno.test(
  "autotune: the hook records the GEMM and conv2d problems of a LeNet step",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const batch = 2;
    const trainer = new Trainer(createModel(gpu, { name: "lenet" }), {
      lr: 0.1,
      batchSize: batch,
      resize: 28,
    });
    const set = uploadImageSet(
      gpu,
      makeSynthetic({ count: batch, channels: 1, height: 28, seed: 1 }),
    );
    const problems = await recordProblems(
      gpu,
      () => trainer.trainEpoch(set, { epoch: 0, shuffle: false }),
    );
    const convs = problems.filter((p) => p.op === "conv2d").map((p) => p.key).sort();
    assert.deepEqual(convs, [
      "conv2d:forward:2,1,28,28,6,5,5,1,1,2,2,1,1,1",
      "conv2d:forward:2,6,14,14,16,5,5,1,1,0,0,1,1,1",
      "conv2d:inputGrad:2,6,14,14,16,5,5,1,1,0,0,1,1,1", // conv1 needs no input gradient
      "conv2d:weightGrad:2,1,28,28,6,5,5,1,1,2,2,1,1,1",
      "conv2d:weightGrad:2,6,14,14,16,5,5,1,1,0,0,1,1,1",
    ]);
    // m x n x k of every GEMM: the im2col path of both convolutions (forward, dW; dcol of conv2)
    // and the three linear layers (forward, dx, dW).
    const gemms = problems.filter((p) => p.op === "gemm").map((p) => p.label.split(" ")[1]).sort();
    assert.deepEqual(gemms, [
      "10x84x2", // fc3 dW
      "120x400x2", // fc1 dW
      "150x200x16", // conv2 dcol
      "16x150x200", // conv2 dW
      "16x200x150", // conv2 forward
      "2x10x84", // fc3 forward
      "2x120x400", // fc1 forward
      "2x120x84", // fc2 dx
      "2x400x120", // fc1 dx
      "2x84x10", // fc3 dx
      "2x84x120", // fc2 forward
      "6x1568x25", // conv1 forward
      "6x25x1568", // conv1 dW
      "84x120x2", // fc2 dW
    ]);
    for (const p of problems) {
      assert.equal(p.count, 1, p.label);
      assert.ok(p.flops > 0, p.label);
    }
    const fc1 = problems.find((p) => p.label.startsWith("gemm 2x120x400 "))!;
    assert.match(fc1.label, / nt bias-col/);
    // Recording again: the trainer kept the step as a tape (replaying it would plan nothing);
    // recording drops it, so the step is recorded for real and computes the same problems.
    const again = await recordProblems(
      gpu,
      () => trainer.trainEpoch(set, { epoch: 0, shuffle: false }),
    );
    assert.deepEqual(again.map((p) => p.key), problems.map((p) => p.key));
    // Recording is off afterwards, and GEMMs whose caller forced a configuration are not recorded.
    const a = gpu.zeros([8, 8]), c = gpu.empty([8, 8]);
    assert.deepEqual(
      await recordProblems(gpu, () => gemm({ c, a, b: a }, { m: 8, n: 8, k: 8, tile: [4, 4] })),
      [],
    );
    for (const t of [a, c, set.images, set.labels]) t.dispose();
    trainer.model.dispose();
  },
);

tableTest(
  "autotune: tuning a small GEMM keeps a legal choice and correct results",
  async (gpu, table) => {
    const g = await gemmCase(gpu, { m: 37, n: 70, k: 300, transB: true }, 3);
    assert.equal(g.problem.label, "gemm 37x70x300 nt bias-col");
    const [r] = await tuneProblems(gpu, [g.problem], {
      minSampleMs: 5,
      samples: 1,
      maxCandidates: 4,
      minProblemMs: 0,
      budgetSeconds: 60,
    });
    assert.equal(r.problem, g.problem);
    assert.ok(r.candidates >= 1 && r.candidates <= 4, `${r.candidates} candidates`);
    assert.ok(r.costModelMs > 0 && r.tunedMs > 0, `${r.costModelMs} ${r.tunedMs}`);
    assert.match(r.costModel, /^reg \d+x\d+/);
    assert.match(r.tuned, /^(reg (1|2|4|8|16)x(4|8|16)( swap)?|shared)( split\d+)?$/);
    const entry = table.get(g.key);
    if (r.changed) {
      assert.ok(r.speedup >= 1.05, `speedup ${r.speedup}`);
      assert.equal(entry?.op, "gemm");
    } else {
      assert.equal(entry, undefined);
      assert.equal(r.tuned, r.costModel);
    }
    await g.check(`tuned gemm (${r.tuned})`);
    g.dispose();
  },
);

tableTest(
  "autotune: table entries choose the GEMM kernel (shared, a tile, split-K)",
  async (gpu, table) => {
    const g = await gemmCase(gpu, { m: 37, n: 70, k: 300 }, 4);
    const plain = await kernelsOfAsync(gpu, () => g.check("cost model"));
    assert.ok(plain.every((n) => !n.startsWith("gemm_smem")), plain.join());
    assert.ok(!plain.some((n) => /^gemm_reg_.*_1x4/.test(n)), plain.join());
    const entries: [TunedChoice, RegExp][] = [
      [{ op: "gemm", tuning: { variant: "shared", splitK: 1 } }, /^gemm_smem_/],
      [
        { op: "gemm", tuning: { variant: "register", tile: [1, 4], swap: false, splitK: 1 } },
        /^gemm_reg_nn_1x4/,
      ],
      [
        { op: "gemm", tuning: { variant: "register", tile: [1, 4], swap: false, splitK: 3 } },
        /^gemm_splitk_epilogue/,
      ],
      // Swapped: C^T = B^T A^T, so the kernel reads both operands transposed.
      [
        { op: "gemm", tuning: { variant: "register", tile: [4, 8], swap: true, splitK: 1 } },
        /^gemm_reg_tt_4x8/,
      ],
    ];
    for (const [choice, want] of entries) {
      table.set(g.key, choice);
      const names = await kernelsOfAsync(gpu, () => g.check(JSON.stringify(choice)));
      assert.ok(names.some((n) => want.test(n)), `${JSON.stringify(choice)}: ${names.join()}`);
    }
    // A forced configuration wins over the table.
    table.set(g.key, entries[0][0]);
    const forced = await kernelsOfAsync(
      gpu,
      () =>
        gemm({ c: gpu.empty([37, 70]), a: gpu.zeros([37, 300]), b: gpu.zeros([300, 70]) }, {
          m: 37,
          n: 70,
          k: 300,
          variant: "register",
        }),
    );
    assert.ok(
      forced.every((n) => !n.startsWith("gemm_smem")),
      forced.join(),
    );
    g.dispose();
  },
);

tableTest("autotune: a table entry chooses conv2d's direct kernel", async (gpu, table) => {
  const p = { n: 2, cIn: 2, h: 9, w: 11, cOut: 3, kernel: 3, padding: 1 };
  const rng = new Rng(5);
  const x = rng.uniformArray(2 * 2 * 9 * 11), w = rng.uniformArray(3 * 2 * 9);
  const b = rng.uniformArray(3);
  const tx = gpu.tensor(f32(x), { shape: [2, 2, 9, 11] });
  const tw = gpu.tensor(f32(w), { shape: [3, 2, 3, 3] });
  const tb = gpu.tensor(f32(b), { shape: [3] });
  const y = gpu.empty([2, 3, 9, 11]);
  const run = () => conv2dForward({ y, x: tx, w: tw, b: tb }, p);
  const problems = await recordProblems(gpu, run);
  const conv = problems.find((q) => q.op === "conv2d")!;
  assert.equal(conv.key, "conv2d:forward:2,2,9,11,3,3,3,1,1,1,1,1,1,1");
  const expected = conv2dRef(p, x, w, b);
  const [plain] = conv2dPlansOf(gpu, run);
  assert.equal(plain.forward?.path, "im2col");
  table.set(conv.key, { op: "conv2d", direct: true });
  const [tuned] = conv2dPlansOf(gpu, run);
  assert.equal(tuned.forward?.path, "direct");
  assert.deepEqual(tuned.steps.map((s) => s.kind), ["direct"]);
  assertClose(await y.toArray(), expected, { rtol: 1e-4, atol: 1e-5, what: "direct conv2d" });
  for (const t of [tx, tw, tb, y]) t.dispose();
});

tableTest("autotune: tuning a conv2d pass times its candidate plans", async (gpu, table) => {
  const p = { n: 2, cIn: 2, h: 9, w: 11, cOut: 3, kernel: 3, padding: 1 };
  const x = gpu.zeros([2, 2, 9, 11]), w = gpu.zeros([3, 2, 3, 3]), y = gpu.empty([2, 3, 9, 11]);
  const problems = await recordProblems(gpu, () => conv2dForward({ y, x, w }, p));
  const conv = problems.find((q) => q.op === "conv2d")!;
  const options = { minSampleMs: 5, samples: 1, minProblemMs: 0, budgetSeconds: 60 };
  const [r] = await tuneProblems(gpu, [conv], options);
  assert.equal(r.problem, conv);
  assert.equal(r.costModel, "im2col");
  assert.equal(r.candidates, 1, JSON.stringify(r));
  assert.ok(r.costModelMs > 0 && r.tunedMs > 0, `${r.costModelMs} ${r.tunedMs}`);
  if (r.changed) {
    assert.equal(r.tuned, "direct");
    assert.deepEqual(table.get(conv.key), { op: "conv2d", direct: true });
  } else {
    assert.equal(r.tuned, "im2col");
    assert.equal(table.get(conv.key), undefined);
  }
  // A stride-2 input gradient has no direct kernel: nothing to time.
  const q = { ...p, stride: 2 };
  const dy = gpu.zeros([2, 3, 5, 6]), dx = gpu.empty([2, 2, 9, 11]);
  const [dxProblem] = await recordProblems(gpu, () => conv2dBackward({ dx, dy, x, w }, q));
  assert.equal(dxProblem.key, "conv2d:inputGrad:2,2,9,11,3,3,3,2,2,1,1,1,1,1");
  const [s] = await tuneProblems(gpu, [dxProblem], options);
  assert.equal(s.note, "no direct kernel for this pass");
  assert.equal(s.candidates, 0);
  for (const t of [x, w, y, dy, dx]) t.dispose();
});

tableTest(
  "autotune: tuning a conv2d pass times the direct kernel's grouped and plain blockings",
  async (gpu, table) => {
    // 3x3, 32 -> 32 channels: the grouped blocking (tx 4, co 16 in groups of 4) differs from the
    // plain one (tx 2, co 32); small enough that the cost model picks im2col.
    const p = { n: 1, cIn: 32, h: 4, w: 4, cOut: 32, kernel: 3, padding: 1 };
    const x = gpu.zeros([1, 32, 4, 4]), w = gpu.zeros([32, 32, 3, 3]);
    const y = gpu.empty([1, 32, 4, 4]);
    const problems = await recordProblems(gpu, () => conv2dForward({ y, x, w }, p));
    const conv = problems.find((q) => q.op === "conv2d")!;
    const options = { minSampleMs: 5, samples: 1, minProblemMs: 0, budgetSeconds: 120 };
    const [r] = await tuneProblems(gpu, [conv], options);
    assert.equal(r.costModel, "im2col");
    // Both direct blockings were timed (and ran right: no failure notes).
    assert.equal(r.candidates, 2, JSON.stringify(r));
    assert.ok(!/failed|wrong/.test(r.note ?? ""), r.note);
    const entries: Record<string, TunedChoice | undefined> = {
      "im2col": undefined,
      "direct grouped": { op: "conv2d", direct: true, groups: true },
      "direct plain": { op: "conv2d", direct: true, groups: false },
    };
    assert.ok(r.tuned in entries, r.tuned);
    assert.equal(r.changed, r.tuned !== "im2col");
    assert.deepEqual(table.get(conv.key), entries[r.tuned]);
    // The recorded choice steers the plan, with the matching blocking.
    const [plan] = conv2dPlansOf(gpu, () => conv2dForward({ y, x, w }, p));
    const tile = plan.forward?.path === "direct" ? plan.forward.tile : undefined;
    assert.equal(
      tile === undefined ? "im2col" : "cg" in tile ? "direct grouped" : "direct plain",
      r.tuned,
    );
    for (const t of [x, w, y]) t.dispose();
  },
);

const GEMM_KEY = "gemm:37x70x300:b1:nn:beta0:bias-col:rows:al1111111011111";
const CONV_KEY = "conv2d:forward:2,2,9,11,3,3,3,1,1,1,1,1,1,1";
const CONV_DX_KEY = "conv2d:inputGrad:8,64,24,24,64,3,3,1,1,1,1,1,1,1";

/** Runs `fn` with console.error captured; returns what it printed. */
async function stderrOf(fn: () => Promise<unknown>): Promise<string[]> {
  const lines: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  try {
    await fn();
  } finally {
    console.error = original;
  }
  return lines;
}

/** Loads the cache file with console.error captured: the entries loaded and the lines printed. */
async function loadLogged(gpu: Gpu, path: string): Promise<{ n: number | null; lines: string[] }> {
  let n: number | null = -1;
  const lines = await stderrOf(async () => n = await loadTuningCache(gpu, path));
  return { n, lines };
}

cacheTest(
  "autotune: the cache file round-trips, keeps other adapters, writes atomically",
  async (gpu, table, dir) => {
    const path = `${dir}/sub/autotune.json`;
    assert.equal(await loadTuningCache(gpu, path), null); // no file: nothing, no warning
    const gemmChoice: TunedChoice = {
      op: "gemm",
      tuning: { variant: "register", tile: [4, 8], swap: true, splitK: 2 },
    };
    table.set(GEMM_KEY, gemmChoice);
    table.set(CONV_KEY, { op: "conv2d", direct: true });
    table.set(CONV_DX_KEY, { op: "conv2d", direct: true, groups: false });
    assert.equal(await saveTuningCache(gpu, path), 3);
    assert.deepEqual([...Deno.readDirSync(`${dir}/sub`)].map((e) => e.name), ["autotune.json"]);
    const file = JSON.parse(await Deno.readTextFile(path));
    assert.equal(file.format, "modern-cnn-autotune");
    assert.equal(file.version, 1);
    assert.deepEqual(Object.keys(file.adapters), [adapterKey(gpu)]);
    table.clear();
    assert.equal(await loadTuningCache(gpu, path), 3);
    assert.deepEqual(table.get(GEMM_KEY), gemmChoice);
    assert.deepEqual(table.get(CONV_KEY), { op: "conv2d", direct: true });
    assert.deepEqual(table.get(CONV_DX_KEY), { op: "conv2d", direct: true, groups: false });
    // A file written before "groups" existed (same version) loads: its entries mean the default.
    const old = {
      format: "modern-cnn-autotune",
      version: 1,
      adapters: {
        [adapterKey(gpu)]: { entries: { [CONV_DX_KEY]: { op: "conv2d", direct: true } } },
      },
    };
    await Deno.writeTextFile(path, JSON.stringify(old));
    table.clear();
    assert.deepEqual(await loadLogged(gpu, path), { n: 1, lines: [] });
    assert.deepEqual(table.get(CONV_DX_KEY), { op: "conv2d", direct: true });

    // Another adapter's entries are ignored on load and kept on save.
    const other = {
      entries: { [GEMM_KEY]: { op: "gemm", tuning: { variant: "shared", splitK: 1 } } },
    };
    file.adapters["Some Other GPU"] = other;
    delete file.adapters[adapterKey(gpu)];
    await Deno.writeTextFile(path, JSON.stringify(file));
    table.clear();
    assert.equal(await loadTuningCache(gpu, path), 0);
    assert.equal(table.size, 0);
    table.set(CONV_KEY, { op: "conv2d", direct: false });
    assert.equal(await saveTuningCache(gpu, path), 1);
    const again = JSON.parse(await Deno.readTextFile(path));
    assert.deepEqual(again.adapters["Some Other GPU"], other);
    assert.deepEqual(again.adapters[adapterKey(gpu)].entries, {
      [CONV_KEY]: { op: "conv2d", direct: false },
    });
    assert.deepEqual([...Deno.readDirSync(`${dir}/sub`)].map((e) => e.name), ["autotune.json"]);
  },
);

cacheTest(
  "autotune: a corrupt cache file or entry warns, naming the file, and is ignored",
  async (gpu, table, dir) => {
    const path = `${dir}/autotune.json`;
    table.set(CONV_KEY, { op: "conv2d", direct: true });
    const cases: [string, RegExp][] = [
      ["{ not json", /not valid JSON/],
      ['{"format": "something else", "version": 1, "adapters": {}}', /not a modern-cnn-autotune/],
      ['{"format": "modern-cnn-autotune", "version": 99, "adapters": {}}', /format version 99/],
      ['{"format": "modern-cnn-autotune", "version": 1, "adapters": []}', /"adapters" is not/],
    ];
    for (const [text, reason] of cases) {
      await Deno.writeTextFile(path, text);
      const { n, lines } = await loadLogged(gpu, path);
      assert.equal(n, 0, text);
      assert.equal(lines.length, 1, lines.join("\n"));
      assert.ok(lines[0].includes(path), lines[0]);
      assert.match(lines[0], reason);
      assert.equal(table.size, 1); // the table is untouched
    }
    // Invalid entries are skipped with one warning; valid ones load.
    const file = {
      format: "modern-cnn-autotune",
      version: 1,
      adapters: {
        [adapterKey(gpu)]: {
          entries: {
            [GEMM_KEY]: { op: "gemm", tuning: { variant: "register", tile: [3, 5], splitK: 1 } },
            "gemm:1x1x1": { op: "conv2d", direct: true },
            "conv2d:forward:1,1,1,1,1,1,1,1,1,0,0,1,1,1": { op: "conv2d", direct: false },
          },
        },
      },
    };
    await Deno.writeTextFile(path, JSON.stringify(file));
    table.clear();
    const { n, lines } = await loadLogged(gpu, path);
    assert.equal(n, 1);
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(
      lines[0],
      /ignoring 2 invalid entries \(first: gemm:37x70x300.*bad tile \[3,5\]\)/,
    );
    assert.ok(lines[0].includes(path), lines[0]);
    // Saving over a corrupt file replaces it.
    await Deno.writeTextFile(path, "garbage");
    const saved = await stderrOf(() => saveTuningCache(gpu, path));
    assert.match(saved.join("\n"), /not valid JSON/);
    table.clear();
    assert.equal(await loadTuningCache(gpu, path), 1);
    // A "groups" that is not a boolean: one line naming the entry and the field.
    const badGroups = { op: "conv2d", direct: true, groups: "yes" };
    file.adapters[adapterKey(gpu)].entries = { [CONV_DX_KEY]: badGroups } as never;
    await Deno.writeTextFile(path, JSON.stringify(file));
    table.clear();
    const g = await loadLogged(gpu, path);
    assert.equal(g.n, 0);
    assert.equal(g.lines.length, 1, g.lines.join("\n"));
    assert.match(
      g.lines[0],
      /ignoring 1 invalid entry \(first: conv2d:inputGrad:.*"groups" is not a boolean\)/,
    );
  },
);

Deno.test("autotune: the default cache path, and the commands' flags", async () => {
  const before = Deno.env.get("MODERN_CNN_CACHE_DIR");
  try {
    Deno.env.set("MODERN_CNN_CACHE_DIR", "/tmp/mcnn-cache/");
    assert.equal(defaultTuningCachePath(), "/tmp/mcnn-cache/autotune.json");
    Deno.env.delete("MODERN_CNN_CACHE_DIR");
    assert.match(defaultTuningCachePath(), /modern-cnn\/autotune\.json$/);
  } finally {
    if (before === undefined) Deno.env.delete("MODERN_CNN_CACHE_DIR");
    else Deno.env.set("MODERN_CNN_CACHE_DIR", before);
  }
  const train = parseTrainArgs(["lenet", "--no-autotune"]);
  assert.ok(train !== "help" && train.autotune === false);
  const train2 = parseTrainArgs(["lenet"]);
  assert.ok(train2 !== "help" && train2.autotune === true);
  const run = async (args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../cli/tune.ts", import.meta.url).pathname, ...args],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /usage: deno task tune <model>/);
  const bad = await run(["nosuchnet"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^tune: unknown model 'nosuchnet'/);
  const badBudget = await run(["lenet", "--budget", "-3"]);
  assert.equal(badBudget.code, 2, badBudget.stderr);
});
