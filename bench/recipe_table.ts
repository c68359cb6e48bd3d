// Test accuracy of the seed recipe against `--recipe modern`, several seeds each, on real data:
//
//   deno run -A bench/recipe_table.ts [--model lenet-bn] [--epochs 10] [--seeds 0,1,2]
//                                     [--jobs 1] [--data-dir DIR]
//
// Each run is `deno task train MODEL --recipe R --seed S --epochs E --json` in a child process
// (the CLI's code path, data set lookup and all); the table gives each run's final test accuracy
// and wall time, and per recipe the mean and the lowest. `--jobs 2` runs two at a time (the
// accuracies do not change; the times then mean less). Issue #16's target: lenet-bn, 10 epochs,
// modern >= 0.90 on Fashion-MNIST.
import { fileURLToPath } from "node:url";
import { guardScript } from "../cli/_run.ts";
import { benchCli } from "./_args.ts";

guardScript("bench:recipes");
const cli = benchCli(
  "usage: deno run -A bench/recipe_table.ts [--model NAME] [--epochs N] [--seeds 0,1,2] " +
    "[--jobs N] [--data-dir DIR]",
);

const opts = { model: "lenet-bn", epochs: 10, seeds: [0, 1, 2], jobs: 1, dataDir: "" };
cli.parse(Deno.args, {
  "--model": (value) => opts.model = value(),
  "--epochs": (value) => opts.epochs = cli.positiveInt("--epochs", value()),
  "--jobs": (value) => opts.jobs = cli.positiveInt("--jobs", value()),
  "--data-dir": (value) => opts.dataDir = value(),
  "--seeds": (value) => {
    const text = value();
    opts.seeds = text.split(",").map((s) => {
      const n = Number(s);
      if (s.trim() === "" || !Number.isSafeInteger(n) || n < 0) {
        cli.usage(`--seeds: a comma-separated list of integers >= 0, got '${text}'`);
      }
      return n;
    });
  },
});

interface Run {
  readonly recipe: string;
  readonly seed: number;
  testAcc?: number;
  seconds?: number;
}

const trainScript = fileURLToPath(new URL("../cli/train.ts", import.meta.url));

async function train(run: Run): Promise<void> {
  const args = [
    "run",
    "-A",
    trainScript,
    opts.model,
    "--recipe",
    run.recipe,
    "--seed",
    String(run.seed),
    "--epochs",
    String(opts.epochs),
    "--json",
    ...(opts.dataDir ? ["--data-dir", opts.dataDir] : []),
  ];
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" })
    .output();
  run.seconds = (performance.now() - t0) / 1000;
  const text = new TextDecoder();
  if (!out.success) {
    const err = text.decode(out.stderr).trim().split("\n").at(-1);
    throw new Error(`${run.recipe} seed ${run.seed}: the training run failed: ${err}`);
  }
  const epochs = text.decode(out.stdout).trim().split("\n").map((l) => JSON.parse(l));
  run.testAcc = epochs.at(-1).test_acc;
  console.error(
    `${run.recipe} seed ${run.seed}: test acc ${run.testAcc} (${run.seconds.toFixed(0)} s)`,
  );
}

const runs: Run[] = [];
for (const seed of opts.seeds) for (const recipe of ["seed", "modern"]) runs.push({ recipe, seed });
const queue = [...runs];
await Promise.all(
  Array.from({ length: opts.jobs }, async () => {
    for (let run = queue.shift(); run; run = queue.shift()) await train(run);
  }),
);

const fmt = (x: number) => x.toFixed(4);
console.log(`${opts.model}, ${opts.epochs} epochs, Fashion-MNIST, ${opts.jobs} run(s) at a time\n`);
console.log(`| recipe | ${opts.seeds.map((s) => `seed ${s}`).join(" | ")} | mean | lowest |`);
console.log(`| --- | ${opts.seeds.map(() => "---:").join(" | ")} | ---: | ---: |`);
for (const recipe of ["seed", "modern"]) {
  const mine = runs.filter((r) => r.recipe === recipe);
  const accs = mine.map((r) => r.testAcc!);
  const cells = mine.map((r) => `${fmt(r.testAcc!)} (${r.seconds!.toFixed(0)} s)`);
  const mean = accs.reduce((a, b) => a + b, 0) / accs.length;
  console.log(`| ${recipe} | ${cells.join(" | ")} | ${fmt(mean)} | ${fmt(Math.min(...accs))} |`);
}
