// The commands as users run them (subprocesses): train's flags, eval, predict, summary.
import assert from "node:assert/strict";
import { join } from "node:path";
import { encode } from "fast-png";
import { decodeSafetensors, encodeSafetensors } from "../models/mod.ts";
import { run } from "./_cli.ts";

const SYN = ["--dataset", "synthetic", "--limit-train", "256", "--limit-test", "128"];

Deno.test("train: bad flags give one clear line and exit code 2 before any work", async () => {
  const cases: [string[], RegExp][] = [
    [["nope"], /unknown model 'nope'/],
    [["lenet", "--epochs", "-1"], /--epochs must be an integer >= 1/],
    [["alexnet", "--resize", "96"], /alexnet needs 224x224 inputs/],
    [["nin", "--resize", "32"], /too small/],
    [
      ["lenet", "--batch-size", "64", "--limit-train", "32"],
      /--batch-size 64 is larger than the training data/,
    ],
    [["lenet", "--frobnicate"], /frobnicate/],
    [
      ["lenet", "--dataset", "imagenet"],
      /--dataset must be one of fashion-mnist, .*got 'imagenet'/,
    ],
    [["lenet", "--dropout", "1.5"], /--dropout must be in \[0, 1\)/],
    [["lenet", "--precision", "f8"], /--precision must be f32 or f16, got 'f8'/],
    [[], /no model given/],
  ];
  for (const [args, re] of cases) {
    const r = await run("train.ts", args);
    assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}, stderr ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
    assert.equal(r.stdout, "");
  }
  const help = await run("train.ts", ["--help"]);
  assert.equal(help.code, 0);
  for (const flag of ["--epochs", "--no-shuffle", "--resume", "--plot", "--json", "--augment"]) {
    assert.match(help.stdout, new RegExp(flag));
  }
});

Deno.test("train: --json, --save, --resume, --plot, --init and the other flags on synthetic data", async () => {
  const dir = await Deno.makeTempDir();
  const ck = join(dir, "lenet.safetensors");
  const plot = join(dir, "curves.svg");
  const first = await run("train.ts", [
    "lenet-bn",
    ...SYN,
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--lr",
    "0.5",
    "--json",
    "--save",
    ck,
    "--plot",
    plot,
    "--momentum",
    "0.9",
    "--weight-decay",
    "1e-4",
    "--seed",
    "3",
    "--augment",
  ]);
  assert.equal(first.code, 0, first.stderr);
  const lines = first.stdout.trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 1);
  assert.deepEqual(Object.keys(lines[0]).sort(), [
    "epoch",
    "examples_per_sec",
    "loss",
    "lr",
    "seconds",
    "test_acc",
    "train_acc",
  ]);
  assert.equal(lines[0].epoch, 1);
  const saved = decodeSafetensors(await Deno.readFile(ck), { file: ck });
  assert.equal(saved.metadata.epoch, "1");
  assert.ok(saved.tensors.has("1.num_batches_tracked"));
  assert.equal((saved.tensors.get("1.num_batches_tracked")!.data as BigInt64Array)[0], 4n);
  assert.equal(saved.metadata.optimizer, "lenet-optimizer-step4.safetensors");
  assert.ok((await Deno.stat(join(dir, saved.metadata.optimizer))).isFile);
  assert.match(await Deno.readTextFile(plot), /<svg[\s\S]*train loss[\s\S]*<\/svg>/);
  // Resume: continues at epoch 2 with the saved weights, momentum and step count.
  const second = await run("train.ts", [
    "lenet-bn",
    ...SYN,
    "--epochs",
    "2",
    "--batch-size",
    "64",
    "--lr",
    "0.5",
    "--json",
    "--resume",
    ck,
    "--momentum",
    "0.9",
    "--weight-decay",
    "1e-4",
    "--seed",
    "3",
  ]);
  assert.equal(second.code, 0, second.stderr);
  const epochs = second.stdout.trim().split("\n").map((l) => JSON.parse(l).epoch);
  assert.deepEqual(epochs, [2]);
  // Resuming a finished run says so and trains nothing.
  const done = await run("train.ts", [
    "lenet-bn",
    ...SYN,
    "--epochs",
    "1",
    "--resume",
    ck,
    "--json",
  ]);
  assert.equal(done.code, 0, done.stderr);
  assert.equal(done.stdout, "");
  assert.match(done.stderr, /already finished epoch 1/);
  // Human output with d2l's closing lines; --init, --no-shuffle and --dropout.
  const third = await run("train.ts", [
    "lenet-bn",
    ...SYN,
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--init",
    ck,
    "--no-shuffle",
    "--dropout",
    "0",
  ]);
  assert.equal(third.code, 0, third.stderr);
  assert.match(
    third.stdout,
    /^epoch 1: loss [\d.]+, train acc [\d.]+, test acc [\d.]+, [\d.]+ examples\/sec$/m,
  );
  assert.match(third.stdout, /^loss [\d.]+, train acc [\d.]+, test acc [\d.]+$/m);
  assert.match(third.stdout, /^[\d.]+ examples\/sec on .+$/m);
  // A checkpoint of another model names the offending keys.
  const bad = await run("train.ts", [
    "lenet",
    ...SYN,
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--init",
    ck,
  ]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /lenet\.safetensors is a lenet-bn checkpoint, not lenet/);
  // Without a model in its metadata (as PyTorch writes them), the keys say what is wrong.
  const bare = decodeSafetensors(await Deno.readFile(ck));
  const plain = join(dir, "plain.safetensors");
  await Deno.writeFile(plain, encodeSafetensors(bare.tensors));
  const keys = await run("train.ts", ["lenet", ...SYN, "--epochs", "1", "--init", plain]);
  assert.equal(keys.code, 1);
  assert.match(
    keys.stderr,
    /cannot load state from .*plain\.safetensors.*(missing|unexpected) keys/,
  );
  assert.equal(keys.stderr.trim().split("\n").length, 1, keys.stderr);
  await Deno.remove(dir, { recursive: true });
});

/** Writes a tiny MNIST-format data set (IDX, gzipped) to `dir`. */
async function writeTinyIdx(dir: string, count: number): Promise<void> {
  const idx = (magic: number, dims: number[], body: Uint8Array) => {
    const head = new DataView(new ArrayBuffer(4 + 4 * dims.length));
    head.setUint32(0, magic);
    dims.forEach((d, i) => head.setUint32(4 + 4 * i, d));
    const out = new Uint8Array(head.byteLength + body.length);
    out.set(new Uint8Array(head.buffer));
    out.set(body, head.byteLength);
    return out;
  };
  const gzip = async (bytes: Uint8Array) =>
    new Uint8Array(
      await new Response(
        new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
          new CompressionStream("gzip"),
        ),
      ).arrayBuffer(),
    );
  for (const split of ["train", "t10k"]) {
    const images = new Uint8Array(count * 784);
    const labels = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      labels[i] = i % 10;
      for (let p = 0; p < 784; p++) {
        images[i * 784 + p] = Math.floor(p / 78.4) === i % 10 ? 220 : 10;
      }
    }
    await Deno.writeFile(
      join(dir, `${split}-images-idx3-ubyte.gz`),
      await gzip(idx(0x803, [count, 28, 28], images)),
    );
    await Deno.writeFile(
      join(dir, `${split}-labels-idx1-ubyte.gz`),
      await gzip(idx(0x801, [count], labels)),
    );
  }
}

Deno.test("train --precision f16 reports, saves and resumes the loss scale", async () => {
  const dir = await Deno.makeTempDir();
  const ck = join(dir, "lenet-bn.safetensors");
  const r = await run("train.ts", [
    "lenet-bn",
    ...SYN,
    "--epochs",
    "1",
    "--precision",
    "f16",
    "--save",
    ck,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /1 epochs, f16, /);
  assert.match(r.stdout, /epoch 1: loss [\d.]+, .* \(loss scale 65536, 0 steps skipped so far\)/);
  const saved = decodeSafetensors(await Deno.readFile(ck));
  assert.equal(saved.metadata.loss_scale, "65536");
  // Edit the checkpoint's scale to 2^40: the resumed run must start there, overflow, back off.
  saved.metadata.loss_scale = String(2 ** 40);
  await Deno.writeFile(ck, encodeSafetensors(saved.tensors, saved.metadata));
  const again = await run("train.ts", [
    "lenet-bn",
    ...SYN,
    "--epochs",
    "2",
    "--precision",
    "f16",
    "--resume",
    ck,
  ]);
  assert.equal(again.code, 0, again.stderr);
  const m = again.stdout.match(/epoch 2: .* \(loss scale (\d+), (\d+) steps skipped so far\)/);
  assert.ok(m, again.stdout);
  const skipped = Number(m[2]);
  assert.ok(skipped >= 1, `an overflowing scale skips steps: ${again.stdout}`);
  assert.equal(Number(m[1]), 2 ** (40 - skipped), "each skipped step halved the scale");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train --optimizer adam --precision f16 resumes the steps the scaler skipped", async () => {
  // Adam's bias correction counts applied updates only (step - skipped_steps): the count must
  // travel through the checkpoint and on into the resumed run and its next checkpoint.
  const dir = await Deno.makeTempDir();
  const ck = join(dir, "a.safetensors"), ck2 = join(dir, "b.safetensors");
  const common = [
    ...["lenet-bn", ...SYN, "--batch-size", "16", "--precision", "f16"],
    ...["--optimizer", "adam", "--lr", "0.001"],
  ];
  const first = await run("train.ts", [...common, "--epochs", "1", "--save", ck]);
  assert.equal(first.code, 0, first.stderr);
  const saved = decodeSafetensors(await Deno.readFile(ck));
  const stepsPerEpoch = Number(saved.metadata.step);
  assert.equal(saved.metadata.skipped_steps, undefined, "nothing skipped at 65536");
  saved.metadata.loss_scale = String(2 ** 40); // overflows: the resumed run skips steps
  await Deno.writeFile(ck, encodeSafetensors(saved.tensors, saved.metadata));
  const second = await run("train.ts", [...common, "--epochs", "2", "--resume", ck, "--save", ck2]);
  assert.equal(second.code, 0, second.stderr);
  const m = second.stdout.match(/epoch 2: .* \(loss scale (\d+), (\d+) steps skipped so far\)/);
  assert.ok(m, second.stdout);
  const skipped = Number(m[2]);
  assert.ok(skipped >= 1, second.stdout);
  const meta2 = decodeSafetensors(await Deno.readFile(ck2)).metadata;
  assert.equal(meta2.skipped_steps, String(skipped));
  assert.equal(Number(meta2.step), 2 * stepsPerEpoch);
  // Resumed once more: the count starts from the checkpoint's, and Adam's moments load with it.
  const third = await run("train.ts", [...common, "--epochs", "3", "--resume", ck2]);
  assert.equal(third.code, 0, third.stderr);
  const m3 = third.stdout.match(/epoch 3: .* \(loss scale (\d+), (\d+) steps skipped so far\)/);
  assert.ok(m3, third.stdout);
  assert.ok(Number(m3[2]) >= skipped, `the skipped count carried on: ${third.stdout}`);
  assert.doesNotMatch(third.stderr, /reset|moments start from zero/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train --precision f16 on an adapter without shader-f16 says so", async () => {
  // Deno's GL backend exposes no shader-f16 on llvmpipe; elsewhere it may, or may not run.
  const probe = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      "const a = await navigator.gpu.requestAdapter(); console.log(a ? a.features.has('shader-f16') : 'none')",
    ],
    env: { DENO_WEBGPU_BACKEND: "gl", XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdout: "piped",
    stderr: "null",
  }).output();
  if (new TextDecoder().decode(probe.stdout).trim() !== "false") return; // nothing to test here
  const gl = await run("train.ts", ["lenet", ...SYN, "--precision", "f16"], {
    DENO_WEBGPU_BACKEND: "gl",
  });
  assert.equal(gl.code, 2, gl.stderr);
  assert.match(gl.stderr, /--precision f16 needs the adapter's 'shader-f16' feature/);
  assert.equal(gl.stdout, "");
});

Deno.test("train, eval and predict on tiny IDX files written by the test", async () => {
  const dir = await Deno.makeTempDir();
  await writeTinyIdx(dir, 200);
  const ck = join(dir, "w.safetensors");
  const t = await run("train.ts", [
    "lenet-bn",
    "--dataset",
    "mnist",
    "--data-dir",
    dir,
    "--epochs",
    "3",
    "--batch-size",
    "50",
    "--lr",
    "1",
    "--save",
    ck,
  ]);
  assert.equal(t.code, 0, t.stderr);
  const acc = Number(/test acc ([\d.]+)$/m.exec(t.stdout)![1]);
  assert.ok(acc > 0.5, `learned the bars: test acc ${acc}`);
  const e = await run("eval.ts", [
    "lenet-bn",
    "--weights",
    ck,
    "--dataset",
    "mnist",
    "--data-dir",
    dir,
  ]);
  assert.equal(e.code, 0, e.stderr);
  assert.match(e.stdout, /test acc [\d.]+/);
  assert.match(e.stdout, /per-class accuracy/);
  assert.match(e.stdout, /confusion matrix/);
  // predict: a PNG of class 3's bar (rows 23..31 bright).
  const gray = new Uint8Array(784).map((_, p) => (Math.floor(p / 78.4) === 3 ? 220 : 10));
  const png = join(dir, "three.png");
  await Deno.writeFile(png, encode({ width: 28, height: 28, data: gray, channels: 1, depth: 8 }));
  const p = await run("predict.ts", ["lenet-bn", "--weights", ck, "--classes", "mnist", png]);
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stdout, /three\.png: \S+ [\d.]+, \S+ [\d.]+, \S+ [\d.]+/);
  const missing = await run("predict.ts", ["lenet-bn", png]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--weights FILE is required/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("summary prints the walk-through for every model", async () => {
  const r = await run("summary.ts", ["resnet"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /parameters: 11,178,378 trainable, 7,808 non-trainable/);
  assert.match(r.stdout, /^7 Linear\s+\[1, 10\]\s+5,130\s+0\s+10,240$/m);
  assert.match(r.stdout, /^ {4}1\.0\.conv1 Conv2d\s+\[1, 64, 24, 24\]/m); // default depth 3
  const shallow = await run("summary.ts", ["resnet", "--depth", "1"]);
  assert.equal(shallow.code, 0, shallow.stderr);
  assert.match(shallow.stdout, /^1 Sequential\s+\[1, 64, 24, 24\]/m);
  assert.doesNotMatch(shallow.stdout, /Residual|1\.0/);
  const depth2 = await run("summary.ts", ["googlenet", "--depth", "2"]);
  assert.match(depth2.stdout, /^ {2}\S+ Inception\s+\[1, 256, /m);
  assert.doesNotMatch(depth2.stdout, /p1_1/);
  const badDepth = await run("summary.ts", ["resnet", "--depth", "0"]);
  assert.equal(badDepth.code, 2);
  assert.match(badDepth.stderr, /--depth must be an integer >= 1, got '0'/);
  const bad = await run("summary.ts", ["alexnet", "--resize", "96"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /needs 224x224/);
});

Deno.test("typos get the nearest flag or model; --plot must be SVG; --resize must be a number", async () => {
  const cases: [string, string[], RegExp][] = [
    ["train.ts", ["lenet", "--epoch", "1"], /unknown flag --epoch; did you mean --epochs\?/],
    ["train.ts", ["lenett"], /unknown model 'lenett'; did you mean lenet\?/],
    [
      "eval.ts",
      ["lenet", "--weight", "w.safetensors"],
      /unknown flag --weight; did you mean --weights\?/,
    ],
    ["summary.ts", ["resnett"], /unknown model 'resnett'; did you mean resnet\?/],
    ["summary.ts", ["lenet", "--resize", "abc"], /--resize must be an integer >= 1, got 'abc'/],
    [
      "train.ts",
      ["lenet", "--plot", "curves.png"],
      /--plot curves\.png: the plot is an SVG drawing; give a \.svg path/,
    ],
  ];
  for (const [script, args, re] of cases) {
    const r = await run(script, args);
    assert.equal(r.code, 2, `${script} ${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.equal(r.stdout, "", "nothing printed before the error");
  }
});

Deno.test("every deno task has a one-line description", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  for (const [name, task] of Object.entries(config.tasks)) {
    const t = task as { description?: string; command?: string };
    assert.equal(typeof t.command, "string", name);
    assert.ok(t.description && !t.description.includes("\n"), `${name} has a description`);
  }
});

Deno.test("train: --optimizer adamw with a schedule saves its moments and resumes them", async () => {
  const dir = await Deno.makeTempDir();
  const half = join(dir, "half.safetensors");
  const first = await run("train.ts", [
    "lenet",
    ...SYN,
    "--batch-size",
    "64",
    "--lr",
    "0.002",
    "--optimizer",
    "adamw",
    "--schedule",
    "step:1",
    "--warmup",
    "3",
    "--label-smoothing",
    "0.1",
    "--json",
    "--epochs",
    "1",
    "--save",
    half,
  ]);
  assert.equal(first.code, 0, first.stderr);
  const saved = decodeSafetensors(await Deno.readFile(half), { file: half });
  assert.deepEqual(
    [saved.metadata.optim, saved.metadata.schedule, saved.metadata.warmup],
    ["adamw", "step:1", "3"],
  );
  assert.equal(saved.metadata.label_smoothing, "0.1");
  const opt = decodeSafetensors(await Deno.readFile(join(dir, saved.metadata.optimizer)));
  assert.equal(opt.metadata.kind, "adam-moments");
  const avg = opt.tensors.get("0.weight.exp_avg")!.data as Float32Array;
  assert.ok(opt.tensors.has("0.weight.exp_avg_sq") && avg.some((v) => v !== 0));
  // The recipe (optimizer, schedule, warm-up, smoothing) and the moments come back from the
  // checkpoint: the resumed run needs the optimizer file, and saves the same recipe.
  await Deno.rename(join(dir, saved.metadata.optimizer), join(dir, "moved"));
  const lost = await run("train.ts", ["lenet", ...SYN, "--epochs", "2", "--resume", half]);
  assert.equal(lost.code, 1, lost.stderr);
  assert.match(lost.stderr, /optimizer state .* is missing/);
  await Deno.rename(join(dir, "moved"), join(dir, saved.metadata.optimizer));
  const second = await run("train.ts", [
    "lenet",
    ...SYN,
    "--epochs",
    "2",
    "--resume",
    half,
    "--save",
    half,
  ]);
  assert.equal(second.code, 0, second.stderr);
  const again = decodeSafetensors(await Deno.readFile(half), { file: half });
  assert.deepEqual(
    [again.metadata.optim, again.metadata.schedule, again.metadata.step],
    ["adamw", "step:1", "8"],
  );
});

Deno.test("train: bad --optimizer, --schedule, --warmup, --label-smoothing and --nesterov exit 2", async () => {
  for (
    const [flags, want] of [
      [["--optimizer", "rmsprop"], /--optimizer must be sgd, adam or adamw, got 'rmsprop'/],
      [["--schedule", "step:0"], /--schedule must be constant, step:EPOCHS/],
      [["--schedule", "multistep:30,20"], /--schedule must be/],
      [["--schedule", "linear"], /--schedule must be/],
      [["--warmup", "-1"], /--warmup must be an integer >= 0/],
      [["--label-smoothing", "1.5"], /--label-smoothing must be in \[0, 1\]/],
      [["--nesterov"], /--nesterov needs --optimizer sgd and --momentum > 0/],
    ] as const
  ) {
    const r = await run("train.ts", ["lenet", ...SYN, ...flags]);
    assert.equal(r.code, 2, `${flags.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, want);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

Deno.test("train: --keep-best writes the best epoch; --patience stops early", async () => {
  const dir = await Deno.makeTempDir();
  const best = join(dir, "best.safetensors");
  const last = join(dir, "last.safetensors");
  const r = await run("train.ts", [
    "lenet-bn",
    ...SYN,
    "--epochs",
    "5",
    "--batch-size",
    "64",
    "--lr",
    "0.5",
    "--json",
    "--keep-best",
    best,
    "--save",
    last,
    "--patience",
    "1",
    "--min-delta",
    "100",
    "--monitor",
    "loss",
    "--momentum",
    "0.9",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
  // The first epoch improves on Infinity; no loss falls by 100, so the second stops the run.
  assert.deepEqual(lines.map((l) => l.epoch), [1, 2]);
  assert.match(r.stderr, /early stopping after epoch 2/);
  const accs = lines.map((l) => l.test_acc as number);
  const bestEpoch = accs.indexOf(Math.max(...accs)) + 1;
  assert.match(r.stderr, new RegExp(`best.safetensors holds epoch ${bestEpoch}`));
  const kept = decodeSafetensors(await Deno.readFile(best), { file: best });
  const saved = decodeSafetensors(await Deno.readFile(last), { file: last });
  assert.equal(kept.metadata.epoch, String(bestEpoch));
  assert.equal(saved.metadata.epoch, "2");
  assert.ok((await Deno.stat(join(dir, kept.metadata.optimizer))).isFile, "its momentum file");
  const w = (ck: typeof kept) => [...(ck.tensors.get("1.weight")!.data as Float32Array)];
  if (bestEpoch === 2) assert.deepEqual(w(kept), w(saved));
  else assert.notDeepEqual(w(kept), w(saved));
  // Resumable as a --save checkpoint.
  const resumed = await run("train.ts", ["lenet-bn", ...SYN, "--epochs", "3", "--resume", best]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, new RegExp(`resuming .* after epoch ${bestEpoch}`));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train: a resumed run's --keep-best replaces its file only with a better epoch; --patience counts on", async () => {
  const dir = await Deno.makeTempDir();
  const best = join(dir, "best.safetensors");
  const last = join(dir, "last.safetensors");
  const common = ["lenet", ...SYN, "--batch-size", "64", "--json", "--keep-best", best];
  const stopping = ["--patience", "2", "--min-delta", "100", "--monitor", "loss"];
  const r = await run("train.ts", [...common, "--epochs", "1", "--save", last, ...stopping]);
  assert.equal(r.code, 0, r.stderr);
  const acc1 = JSON.parse(r.stdout.trim()).test_acc as number;
  const saved = decodeSafetensors(await Deno.readFile(last), { file: last });
  assert.equal(saved.metadata.best_test_acc, String(acc1));
  assert.equal(saved.metadata.best_epoch, "1");
  assert.deepEqual(
    [saved.metadata.stop_monitor, saved.metadata.stop_wait],
    ["loss", "0"],
    "early stopping's counters",
  );
  // Say the first epoch reached an accuracy no later epoch can beat.
  await Deno.writeFile(
    last,
    encodeSafetensors(saved.tensors, { ...saved.metadata, best_test_acc: "1" }),
  );
  const kept = await Deno.readFile(best);
  const resumed = await run("train.ts", [
    ...common,
    "--epochs",
    "4",
    "--resume",
    last,
    "--save",
    last,
    ...stopping,
  ]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(
    resumed.stderr,
    /is written when an epoch beats test accuracy 1\.000 \(epoch 1, before the resume\)/,
  );
  assert.match(
    resumed.stderr,
    /no epoch beat test accuracy 1\.000 \(epoch 1, before the resume\): \S+best\.safetensors was not written/,
  );
  assert.deepEqual(
    await Deno.readFile(best),
    kept,
    "the kept best is not replaced by a worse epoch",
  );
  // Patience 2, epoch 1's loss the best to beat: epochs 2 and 3 do not improve on it by 100, so
  // the run stops after epoch 3 (a count started afresh would have run to epoch 4).
  const epochs = resumed.stdout.trim().split("\n").map((l) => JSON.parse(l).epoch);
  assert.deepEqual(epochs, [2, 3], "early stopping counted the epoch before the resume");
  const after = decodeSafetensors(await Deno.readFile(last), { file: last });
  assert.deepEqual(
    [after.metadata.best_test_acc, after.metadata.best_epoch, after.metadata.stop_wait],
    ["1", "1", "2"],
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train: bad --keep-best, --patience, --min-delta and --monitor exit 2", async () => {
  const cases: [string[], RegExp][] = [
    [["lenet", "--patience", "0"], /--patience must be an integer >= 1, got '0'/],
    [["lenet", "--patience", "1.5"], /--patience must be an integer >= 1/],
    [["lenet", "--patience", "2", "--min-delta", "-1"], /--min-delta must be a number >= 0/],
    [["lenet", "--patience", "2", "--min-delta", "x"], /--min-delta must be a number >= 0/],
    [["lenet", "--min-delta", "0.1"], /--min-delta goes with --patience/],
    [["lenet", "--monitor", "loss"], /--monitor goes with --patience/],
    [["lenet", "--patience", "1", "--monitor", "acc"], /--monitor must be test-acc or loss/],
    [["lenet", "--keep-best", ""], /--keep-best needs a path/],
    [
      ["lenet", "--keep-best", "a.safetensors", "--save", "a.safetensors"],
      /--save and --keep-best name the same file/,
    ],
    [
      ["lenet", "--keep-best", "a.safetensors", "--resume", "a.safetensors"],
      /--keep-best and --resume name the same file/,
    ],
  ];
  for (const [args, re] of cases) {
    const r = await run("train.ts", args);
    assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}, stderr ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
    assert.equal(r.stdout, "");
  }
});
