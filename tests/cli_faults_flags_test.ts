// The CLI fault suite (see tests/_faults.ts), command lines: an unknown or malformed flag and an
// output that cannot be written are one line and exit 2 before any work; --help for every
// command; --resize past the device's limits in eval and predict; the result-line pattern.
import assert from "node:assert/strict";
import { join } from "node:path";
import { encodeSafetensors, type HostStateDict } from "../models/mod.ts";
import { augmentOption, defaultRecipe, parseTrainArgs } from "../cli/_train_args.ts";
import { checkAugmentList, parseRunMetadata, runMetadata } from "../cli/checkpoint.ts";
import { assertFailed, type Failure, pool, RESULT_LINE, ROOT, shown } from "./_cli.ts";
import { goodPng, lit, sandbox, snapshotOf, TINY } from "./_faults.ts";

// ------------------------------------------------------------------ 5, 11: command lines ----

interface LineCase extends Failure {
  name: string;
  script: string;
  args: string[];
  env?: Record<string, string>;
  /** A folder or file that must be left as it was. */
  keep?: string;
}

Deno.test("bad command lines and unwritable outputs: one line, exit 2, before any work", async () => {
  const sb = await sandbox();
  try {
    const folder = join(sb.dir, "out-folder");
    await Deno.mkdir(folder);
    await Deno.writeFile(join(folder, "inside.txt"), new TextEncoder().encode("kept"));
    const file = join(sb.dir, "a-file");
    await Deno.writeTextFile(file, "a regular file");
    const unknown = (script: string, command: string, args: string[]): LineCase => ({
      name: `${command}: an unknown flag`,
      script,
      args: [...args, "--frobnicate"],
      code: 2,
      command,
      stderr: /unknown flag --frobnicate\b/,
    });
    const cases: LineCase[] = [
      // 11. One handler everywhere: an unknown flag is one line naming it, exit 2.
      unknown("train.ts", "train", ["lenet"]),
      unknown("eval.ts", "eval", ["lenet"]),
      unknown("predict.ts", "predict", ["lenet"]),
      unknown("summary.ts", "summary", ["lenet"]),
      unknown("tune.ts", "tune", ["lenet"]),
      unknown("demo.ts", "demo", []),
      unknown("bench/train_table.ts", "bench:train", []),
      {
        name: "train --lr 0x10 (hex is not a decimal)",
        script: "train.ts",
        args: ["lenet", ...TINY, "--lr", "0x10"],
        code: 2,
        command: "train",
        stderr: /--lr must be a number > 0, got '0x10'/,
      },
      {
        name: "train --seed 4294967296 (past u32)",
        script: "train.ts",
        args: ["lenet", ...TINY, "--seed", "4294967296"],
        code: 2,
        command: "train",
        stderr: /--seed must be an integer in \[0, 4294967295\], got '4294967296'/,
      },
      {
        name: "train --augment flop (an unknown item)",
        script: "train.ts",
        args: ["lenet", ...TINY, "--augment", "flip,flop"],
        code: 2,
        command: "train",
        stderr:
          /--augment: unknown item 'flop' in 'flip,flop'; expected flip, crop\[:PAD\], resized-crop/,
      },
      {
        name: "train --augment rotate:200 (out of range)",
        script: "train.ts",
        args: ["lenet", ...TINY, "--augment", "rotate:200"],
        code: 2,
        command: "train",
        stderr: /--augment: item 'rotate:200': the value must be in \(0, 180\] \(rotate:15\)/,
      },
      {
        name: "train --augment scale:1.2-0.8 (a reversed range)",
        script: "train.ts",
        args: ["lenet", ...TINY, "--augment=scale:1.2-0.8"],
        code: 2,
        command: "train",
        stderr: /--augment: item 'scale:1.2-0.8': the zoom range must be LO-HI with 0 < LO <= HI/,
      },
      {
        name: "train resnet --resize 10000: over the device's limit, no RangeError",
        script: "train.ts",
        args: [
          "resnet",
          "--resize",
          "10000",
          "--batch-size",
          "1",
          "--dataset",
          "synthetic",
          "--limit-train",
          "2",
          "--limit-test",
          "2",
        ],
        code: 2,
        command: "train",
        stderr:
          /^train: --resize 10000 --batch-size 1: .* over this device's (binding|buffer) limit \d+ MiB; use a smaller --resize/m,
        maxSeconds: 20,
      },
      {
        name: "predict --top 0 (below 1)",
        script: "predict.ts",
        args: ["lenet", "--weights", join(sb.dir, "none.safetensors"), "--top", "0", "a.png"],
        code: 2,
        command: "predict",
        stderr: /--top must be an integer in \[1, 10\] \(the classes\), got '0'/,
        maxSeconds: 20,
      },
      {
        name: "predict --top 11 (more than the classes)",
        script: "predict.ts",
        args: ["lenet", "--weights", join(sb.dir, "none.safetensors"), "--top", "11", "a.png"],
        code: 2,
        command: "predict",
        stderr: /--top must be an integer in \[1, 10\] \(the classes\), got '11'/,
        maxSeconds: 20,
      },
      {
        name: "predict --top x (not a number)",
        script: "predict.ts",
        args: ["lenet", "--weights", join(sb.dir, "none.safetensors"), "--top", "x", "a.png"],
        code: 2,
        command: "predict",
        stderr: /--top must be an integer in \[1, 10\] \(the classes\), got 'x'/,
        maxSeconds: 20,
      },
      {
        name: "predict --top 2.5 (not an integer)",
        script: "predict.ts",
        args: ["lenet", "--weights", join(sb.dir, "none.safetensors"), "--top", "2.5", "a.png"],
        code: 2,
        command: "predict",
        stderr: /--top must be an integer in \[1, 10\] \(the classes\), got '2\.5'/,
        maxSeconds: 20,
      },
      // 5. Outputs are checked before any work (well under a training's time; no epoch line).
      {
        name: "train --save an existing folder",
        script: "train.ts",
        args: ["lenet", ...TINY, "--save", folder],
        code: 2,
        command: "train",
        stderr: new RegExp(`--save ${lit(folder)} is a folder; give a file path in it`),
        maxSeconds: 20,
        keep: folder,
      },
      {
        name: "train --save under /proc (its folder cannot be created)",
        script: "train.ts",
        args: ["lenet", ...TINY, "--save", "/proc/modern-cnn-x/ck.safetensors"],
        code: 2,
        command: "train",
        stderr:
          /--save \/proc\/modern-cnn-x\/ck\.safetensors: cannot create the folder \/proc\/modern-cnn-x/,
        maxSeconds: 20,
      },
      {
        name: "train --save in /proc (no file can be created there)",
        script: "train.ts",
        args: ["lenet", ...TINY, "--save", "/proc/ck.safetensors"],
        code: 2,
        command: "train",
        stderr: /--save \/proc\/ck\.safetensors: cannot write in \/proc/,
        maxSeconds: 20,
      },
      {
        name: "train --plot under a regular file",
        script: "train.ts",
        args: ["lenet", ...TINY, "--plot", join(file, "sub", "curves.svg")],
        code: 2,
        command: "train",
        stderr: new RegExp(
          `--plot ${lit(join(file, "sub", "curves.svg"))}: ${lit(file)} is a file, not a folder`,
        ),
        maxSeconds: 20,
        keep: file,
      },
      {
        name: "tune with MODERN_CNN_CACHE_DIR=/proc/nope",
        script: "tune.ts",
        args: ["lenet", "--budget", "1"],
        env: { MODERN_CNN_CACHE_DIR: "/proc/nope" },
        code: 2,
        command: "tune",
        stderr: /\/proc\/nope\/autotune\.json: cannot create the folder \/proc\/nope/,
        maxSeconds: 20,
      },
    ];
    await pool(cases, async (c) => {
      const before = c.keep ? await snapshotOf(c.keep) : null;
      const r = await sb.cli(c.script, c.args, c.env);
      assertFailed(c.name, r, c);
      if (c.keep) {
        assert.deepEqual(await snapshotOf(c.keep), before, `${c.name}: ${c.keep} changed`);
      }
    });
    // --help: the usage on stdout, exit 0, for every command.
    const helps = [
      ["train", "train.ts"],
      ["eval", "eval.ts"],
      ["predict", "predict.ts"],
      ["summary", "summary.ts"],
      ["tune", "tune.ts"],
      ["demo", "demo.ts"],
      ["bench:train", "bench/train_table.ts"],
    ].map(([name, script]) => ({ name: `${name} --help`, script }));
    await pool(helps, async (c) => {
      const r = await sb.cli(c.script, ["--help"]);
      assert.equal(r.code, 0, `${c.name}\n${shown(r)}`);
      assert.match(r.stdout, /^usage: deno task /im, `${c.name}\n${shown(r)}`);
      assert.equal(r.stderr, "", `${c.name}: nothing on stderr\n${shown(r)}`);
    });
  } finally {
    await sb.done();
  }
});

// ------------------------------------------------------------------ --resize past the device ----

/** A ResNet checkpoint of zeros with the reference's names and shapes (no GPU needed). */
async function zeroResnet(): Promise<Uint8Array> {
  const fixture = JSON.parse(
    await Deno.readTextFile(join(ROOT, "tests", "fixtures", "model_resnet.json")),
  ) as { state: [string, number[], string][] };
  const sd: HostStateDict = new Map();
  for (const [name, shape, dtype] of fixture.state) {
    const n = shape.reduce((a, b) => a * b, 1);
    sd.set(
      name,
      dtype === "int64"
        ? { dtype: "I64", shape, data: new BigInt64Array(n) }
        : { dtype: "F32", shape, data: new Float32Array(n) },
    );
  }
  return encodeSafetensors(sd, { model: "resnet" });
}

/** --resize past the device's limits in eval and predict. */
async function resizeOverLimit(script: "eval.ts" | "predict.ts"): Promise<void> {
  const sb = await sandbox();
  try {
    const resnet = join(sb.dir, "resnet.safetensors");
    await Deno.writeFile(resnet, await zeroResnet());
    const digit = join(sb.dir, "digit.png");
    await Deno.writeFile(digit, goodPng());
    const command = script.replace(".ts", "");
    const args = script === "eval.ts"
      ? ["resnet", "--weights", resnet, "--dataset", "synthetic", "--limit-test", "2"]
      : ["resnet", "--weights", resnet];
    const r = await sb.cli(script, [
      ...args,
      "--resize",
      "10000",
      ...(script === "eval.ts" ? ["--batch-size", "1"] : [digit]),
    ]);
    assertFailed(`${command} resnet --resize 10000`, r, {
      code: 2,
      command,
      stderr: /--resize 10000\b.* this device's (binding|buffer) limit/,
    });
    assert.doesNotMatch(r.stderr, /RangeError|this is a bug/);
  } finally {
    await sb.done();
  }
}

Deno.test({
  name: "eval resnet --resize 10000: exit 2, one line about the device's limit",
  fn: () => resizeOverLimit("eval.ts"),
});

Deno.test({
  name: "predict resnet --resize 10000: exit 2, one line about the device's limit",
  fn: () => resizeOverLimit("predict.ts"),
});

// Keep RESULT_LINE's meaning in one place: a check of the check.
Deno.test("the result-line pattern matches what successful runs print", () => {
  for (
    const line of [
      "epoch 1: loss 2.904, train acc 0.109, test acc 0.125, 96.9 examples/sec",
      '{"epoch":1,"loss":2.8}',
      "three.png: Dress 0.300, Coat 0.200, Bag 0.100",
      "lenet on synthetic test (32 examples): test acc 0.1250",
    ]
  ) assert.match(line, RESULT_LINE);
  assert.doesNotMatch("lenet on synthetic (64 train / 32 test, 28x28), batch 32", RESULT_LINE);
});

Deno.test("--augment LIST: the grammar, bare --augment, and checkpoints before lists", () => {
  const given = (argv: string[]) => {
    const r = parseTrainArgs(argv);
    assert.ok(r !== "help");
    return r.given.augment;
  };
  // Alone (at the end, before a flag or before the model): crop and flip, as before lists.
  assert.equal(given(["lenet", "--augment"]), "crop,flip");
  assert.equal(given(["lenet", "--augment", "--epochs", "1"]), "crop,flip");
  assert.equal(given(["--augment", "lenet"]), "crop,flip");
  assert.equal(given(["lenet"]), undefined);
  // Canonical order and numbers.
  assert.equal(
    given(["lenet", "--augment", "scale:0.90-1.1,flip,rotate:15.0,crop:4,translate:.1"]),
    "crop:4,flip,rotate:15,translate:0.1,scale:0.9-1.1",
  );
  assert.equal(given(["lenet", "--augment=resized-crop,shear:10"]), "resized-crop,shear:10");
  assert.equal(given(["lenet", "--augment", "none"]), "none");
  for (
    const [text, re] of [
      ["", /needs a list/],
      ["flip,flip", /item 'flip': given twice/],
      ["flip:1", /flip takes no value/],
      ["crop:0", /padding must be an integer >= 1/],
      ["crop:2.5", /padding must be an integer >= 1/],
      ["resized-crop:0.5-2", /area range must be LO-HI with 0 < LO <= HI <= 1/],
      ["rotate", /the value must be in \(0, 180\]/],
      ["translate:0x1", /the value must be in \(0, 1\]/],
      ["shear:90", /the value must be in \(0, 90\)/],
      ["scale:1e-3-2", /zoom range must be LO-HI/],
      ["rotate:15:3", /unknown item 'rotate:15:3'/],
    ] as const
  ) {
    const r = checkAugmentList(text);
    assert.ok("error" in r && re.test(r.error), `${text}: ${JSON.stringify(r)}`);
  }
  // What the Trainer gets.
  assert.deepEqual(augmentOption("crop,flip", 28), { cropPadding: 4, flip: true });
  assert.deepEqual(augmentOption("crop:2,resized-crop:0.5-1,scale:0.8-1.2,translate:0.1", 32), {
    cropPadding: 2,
    resizedCrop: { scale: [0.5, 1], ratio: [3 / 4, 4 / 3] },
    scale: [0.8, 1.2],
    translate: [0.1, 0.1],
  });
  assert.equal(augmentOption("none", 28), undefined);
  // Checkpoints before lists stored true/false; lists round-trip; a bad one names the key.
  const read = (augment: string) => parseRunMetadata("ck", { augment }, "lenet").recipe.augment;
  assert.equal(read("true"), "crop,flip");
  assert.equal(read("false"), "none");
  assert.equal(read("flip,rotate:10"), "flip,rotate:10");
  assert.throws(
    () => read("wobble"),
    /checkpoint ck: metadata 'augment' is "wobble", expected none/,
  );
});

Deno.test("checkpoints store the f16 steps skipped (Adam's step count leaves them out)", () => {
  const recipe = defaultRecipe("lenet");
  const state = {
    model: "lenet",
    epoch: 1,
    step: 10,
    runId: "r",
    optimizer: null,
    recipe,
  } as const;
  const meta = runMetadata({ ...state, skippedSteps: 3, lossScale: 256 }, recipe);
  assert.equal(meta.skipped_steps, "3");
  assert.equal(parseRunMetadata("ck", meta, "lenet").skippedSteps, 3);
  // None skipped (or an older checkpoint): nothing stored, 0 read.
  const none = runMetadata({ ...state, skippedSteps: 0 }, recipe);
  assert.equal(none.skipped_steps, undefined);
  assert.equal(parseRunMetadata("ck", none, "lenet").skippedSteps ?? 0, 0);
  assert.throws(
    () => parseRunMetadata("ck", { ...meta, skipped_steps: "11" }, "lenet"),
    /checkpoint ck: metadata 'skipped_steps' is "11", expected an integer in \[0, step = 10\]/,
  );
});
