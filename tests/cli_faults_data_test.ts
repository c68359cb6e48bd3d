// The CLI fault suite (see tests/_faults.ts), inputs: --data-dir is authoritative, gzip bombs are
// stopped, an empty test split says so; an image folder that is missing, has no classes, an empty
// class or a bad image is one line; huge, empty and corrupt PNGs are one line; an unexpected
// error says it is a bug.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  assertFailed,
  type Failure,
  lines,
  pool,
  type RunResult,
  shown,
  snapshot,
} from "./_cli.ts";
import { chunk, concat, ihdr, PNG_SIGNATURE } from "./_png.ts";
import { assertOk, goodPng, lit, sandbox, TINY } from "./_faults.ts";

// ------------------------------------------------------------------ file builders ----

/** A gzip of `parts` (streamed: a part may be a count of zero bytes). */
async function gzip(parts: (Uint8Array | number)[]): Promise<Uint8Array> {
  const queue = [...parts];
  const block = new Uint8Array(1 << 20);
  const source = new ReadableStream<Uint8Array<ArrayBuffer>>({
    pull(c) {
      const p = queue.shift();
      if (p === undefined) return c.close();
      if (typeof p !== "number") return c.enqueue(p.slice());
      for (let left = p; left > 0; left -= block.length) {
        c.enqueue(block.slice(0, Math.min(left, block.length)));
      }
    },
  });
  return new Uint8Array(
    await new Response(source.pipeThrough(new CompressionStream("gzip"))).arrayBuffer(),
  );
}

/** An IDX header: magic, then one big-endian u32 per dimension. */
function idxHeader(magic: number, dims: number[]): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, magic);
  dims.forEach((d, i) => v.setUint32(4 + 4 * i, d));
  return out;
}

/** Writes a gzipped MNIST-format split (`train` or `t10k`) of `count` examples into `dir`. */
async function writeIdxSplit(dir: string, split: string, count: number): Promise<void> {
  const images = new Uint8Array(count * 784).map((_, i) => (i * 7) % 251);
  const labels = new Uint8Array(count).map((_, i) => i % 10);
  await Deno.writeFile(
    join(dir, `${split}-images-idx3-ubyte.gz`),
    await gzip([idxHeader(0x803, [count, 28, 28]), images]),
  );
  await Deno.writeFile(
    join(dir, `${split}-labels-idx1-ubyte.gz`),
    await gzip([idxHeader(0x801, [count]), labels]),
  );
}

async function deflate(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(
    await new Response(
      new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
        new CompressionStream("deflate"),
      ),
    ).arrayBuffer(),
  );
}

// ------------------------------------------------------------------ 6, 9, 10: data ----

interface DataCase {
  name: string;
  script: string;
  args: string[];
  code: number;
  stderr: RegExp;
  lines?: number;
  maxSeconds?: number;
  ignore?: boolean;
  check?: (r: RunResult) => void;
}

Deno.test("--data-dir is authoritative; bombs are stopped; an empty test split says so", async () => {
  const sb = await sandbox();
  try {
    const d = (name: string) => join(sb.dir, name);
    await Deno.mkdir(d("empty"));
    await Deno.writeTextFile(d("a-file"), "not a folder");
    await Deno.symlink(d("loop"), d("loop"));
    // 9. Gzip bombs: a test split whose header claims 60000 images; one whose data inflates to
    // 64 MiB past its header's 32 images.
    for (const name of ["bomb-header", "bomb-inflate", "no-test"]) {
      await Deno.mkdir(d(name));
      await writeIdxSplit(d(name), "train", 64);
      await writeIdxSplit(d(name), "t10k", name === "no-test" ? 0 : 32);
    }
    await Deno.writeFile(
      join(d("bomb-header"), "t10k-images-idx3-ubyte.gz"),
      await gzip([idxHeader(0x803, [60000, 28, 28]), new Uint8Array(4096)]),
    );
    await Deno.writeFile(
      join(d("bomb-inflate"), "t10k-images-idx3-ubyte.gz"),
      await gzip([idxHeader(0x803, [32, 28, 28]), 64 << 20]),
    );
    const ck = d("w.safetensors");
    assertOk("the checkpoint", await sb.cli("train.ts", ["lenet", ...TINY, "--save", ck]));
    const MN = ["--limit-train", "64", "--limit-test", "32", "--batch-size", "32", "--epochs", "1"];
    const trainIn = (dir: string, dataset = "fashion-mnist") => [
      "lenet",
      "--dataset",
      dataset,
      "--data-dir",
      dir,
      ...MN,
    ];
    const evalIn = (dir: string) => [
      "lenet",
      "--weights",
      ck,
      "--dataset",
      "mnist",
      "--data-dir",
      dir,
    ];
    const needs = (dir: string) =>
      `${lit(dir)}.*train-images-idx3-ubyte(\\[)?\\.gz.*train-labels-idx1-ubyte(\\[)?\\.gz`;
    const system = "/usr/share/datasets/fashion-mnist";
    const hasSystem = await Deno.stat(system).then((s) => s.isDirectory, () => false);
    const cases: DataCase[] = [
      {
        name: "--data-dir /does-not-exist",
        script: "train.ts",
        args: trainIn("/does-not-exist"),
        code: 1,
        stderr: new RegExp(`--data-dir ${lit("/does-not-exist")} does not exist; .*${needs("")}`),
      },
      {
        name: "--data-dir an empty folder",
        script: "train.ts",
        args: trainIn(d("empty")),
        code: 1,
        stderr: new RegExp(`--data-dir ${needs(d("empty"))}`),
      },
      {
        name: "--data-dir a file",
        script: "train.ts",
        args: trainIn(d("a-file")),
        code: 1,
        stderr: new RegExp(`--data-dir ${lit(d("a-file"))} is a file, not a folder; ${needs("")}`),
      },
      {
        name: "--data-dir a symbolic link loop",
        script: "train.ts",
        args: trainIn(d("loop")),
        code: 1,
        stderr: new RegExp(`--data-dir ${lit(d("loop"))} is a symbolic link loop; ${needs("")}`),
      },
      {
        name: "no --data-dir: one line says where fashion-mnist came from",
        script: "train.ts",
        args: [
          "lenet",
          "--limit-train",
          "256",
          "--limit-test",
          "64",
          "--epochs",
          "1",
          "--batch-size",
          "64",
        ],
        code: 0,
        stderr: /^data: fashion-mnist train \(256 examples\) from \//, // the system package or the cache
        ignore: !hasSystem,
        check: (r) => assert.match(r.stdout, /^epoch 1: /m),
      },
      {
        name: "train: a test split whose header claims 60000 images",
        script: "train.ts",
        args: trainIn(d("bomb-header"), "mnist"),
        code: 1,
        stderr:
          /bomb-header\/t10k-images-idx3-ubyte\.gz: the header declares 60000 images; at most 10000/,
        maxSeconds: 10,
      },
      {
        name: "eval: a test split whose header claims 60000 images",
        script: "eval.ts",
        args: evalIn(d("bomb-header")),
        code: 1,
        stderr: /bomb-header\/t10k-images-idx3-ubyte\.gz: the header declares 60000 images/,
        maxSeconds: 10,
      },
      {
        name: "train: a test split inflating past its header",
        script: "train.ts",
        args: trainIn(d("bomb-inflate"), "mnist"),
        code: 1,
        stderr:
          /bomb-inflate\/t10k-images-idx3-ubyte\.gz: inflates to more than the 25104 bytes its header declares/,
        maxSeconds: 10,
      },
      {
        name: "eval: a test split inflating past its header",
        script: "eval.ts",
        args: evalIn(d("bomb-inflate")),
        code: 1,
        stderr: /bomb-inflate\/t10k-images-idx3-ubyte\.gz: inflates to more than/,
        maxSeconds: 10,
      },
      {
        // 10. An empty test split: train reports no test accuracy (never NaN).
        name: "train: a test split of 0 examples",
        script: "train.ts",
        args: [...trainIn(d("no-test"), "mnist"), "--epochs", "2"],
        code: 0,
        stderr: /^train: no test examples in mnist: test accuracy is not reported$/m,
        lines: 2,
        check: (r) => {
          assert.match(r.stdout, /^epoch 2: .*test acc n\/a/m);
          assert.doesNotMatch(r.stdout + r.stderr, /NaN/i);
        },
      },
      {
        name: "train --json: a test split of 0 examples",
        script: "train.ts",
        args: [...trainIn(d("no-test"), "mnist"), "--json"],
        code: 0,
        stderr: /^train: no test examples in mnist/m,
        lines: 2,
        check: (r) => {
          assert.equal(JSON.parse(lines(r.stdout)[0]).test_acc, null);
          assert.doesNotMatch(r.stdout + r.stderr, /NaN/i);
        },
      },
      {
        name: "eval: a test split of 0 examples",
        script: "eval.ts",
        args: evalIn(d("no-test")),
        code: 1,
        stderr: /^eval: no test examples in mnist: nothing to evaluate$/m,
        lines: 2, // "data: ... from DIR (--data-dir)" first
      },
    ];
    await pool(cases.filter((c) => !c.ignore), async (c) => {
      const before = await snapshot(sb.dir);
      const r = await sb.cli(c.script, c.args);
      if (c.code === 0) {
        assertOk(c.name, r);
        assert.match(r.stderr, c.stderr, `${c.name}\n${shown(r)}`);
        assert.equal(lines(r.stderr).length, c.lines ?? 1, `${c.name}\n${shown(r)}`);
      } else {
        assertFailed(c.name, r, {
          code: c.code,
          command: c.script.replace(".ts", ""),
          stderr: c.stderr,
          lines: c.lines,
          maxSeconds: c.maxSeconds,
        });
      }
      c.check?.(r);
      if (c.code !== 0) {
        assert.deepEqual(await snapshot(sb.dir), before, `${c.name}: files changed`);
      }
    }, 2);
  } finally {
    await sb.done();
  }
});

// ------------------------------------------------------------------ image folders ----

Deno.test("--dataset folder:PATH: a missing folder, no classes, an empty class, a bad image", async () => {
  const sb = await sandbox();
  try {
    const d = (name: string) => join(sb.dir, name);
    await Deno.mkdir(d("loose"));
    await Deno.writeFile(join(d("loose"), "a.png"), goodPng());
    for (const c of ["cat", "dog"]) {
      await Deno.mkdir(join(d("empty-class"), c), { recursive: true });
    }
    await Deno.writeFile(join(d("empty-class"), "cat", "1.png"), goodPng());
    for (const c of ["cat", "dog"]) await Deno.mkdir(join(d("bad-image"), c), { recursive: true });
    await Deno.writeFile(join(d("bad-image"), "cat", "1.png"), goodPng());
    await Deno.writeFile(join(d("bad-image"), "dog", "1.jpg"), new Uint8Array([0xff, 0xd8, 0xff]));
    const ck = d("w.safetensors");
    assertOk("the checkpoint", await sb.cli("train.ts", ["lenet", ...TINY, "--save", ck]));
    const trainOn = (folder: string) => [
      "lenet",
      "--dataset",
      `folder:${folder}`,
      "--batch-size",
      "1",
      "--epochs",
      "1",
    ];
    const cases: DataCase[] = [
      {
        name: "train: a folder that does not exist",
        script: "train.ts",
        args: trainOn(d("nope")),
        code: 1,
        stderr: new RegExp(
          `^train: ${lit(d("nope"))}: does not exist; an image folder holds one subfolder of PNG ` +
            "or JPEG images per class$",
          "m",
        ),
      },
      {
        name: "eval: a folder that does not exist",
        script: "eval.ts",
        args: ["lenet", "--weights", ck, "--dataset", `folder:${d("nope")}`],
        code: 1,
        stderr: new RegExp(`^eval: ${lit(d("nope"))}: does not exist`, "m"),
      },
      {
        name: "train: images but no class subfolders",
        script: "train.ts",
        args: trainOn(d("loose")),
        code: 1,
        stderr: new RegExp(`${lit(d("loose"))}: has no class subfolders with images; .*CLASS`),
      },
      {
        name: "train: a class folder with no images",
        script: "train.ts",
        args: trainOn(d("empty-class")),
        code: 1,
        stderr: new RegExp(
          `${lit(join(d("empty-class"), "dog"))}: is a class folder with no PNG or JPEG images; ` +
            "add its images, or remove the folder",
        ),
      },
      {
        name: "train: an image that cannot be decoded",
        script: "train.ts",
        args: trainOn(d("bad-image")),
        code: 1,
        stderr: new RegExp(
          `${lit(join(d("bad-image"), "dog", "1.jpg"))}: is 3 bytes, a truncated JPEG`,
        ),
      },
      {
        name: "train: folder: without a path",
        script: "train.ts",
        args: ["lenet", "--dataset", "folder:"],
        code: 2,
        stderr: /--dataset must be one of .*, or folder:PATH/,
      },
      {
        name: "train: --data-dir with a folder",
        script: "train.ts",
        args: [...trainOn(d("loose")), "--data-dir", d("loose")],
        code: 2,
        stderr: /--data-dir has no effect with --dataset folder:PATH/,
      },
    ];
    await pool(cases, async (c) => {
      const before = await snapshot(sb.dir);
      const r = await sb.cli(c.script, c.args);
      assertFailed(c.name, r, {
        code: c.code,
        command: c.script.replace(".ts", ""),
        stderr: c.stderr,
        lines: c.lines,
      });
      assert.deepEqual(await snapshot(sb.dir), before, `${c.name}: files changed`);
    }, 2);
  } finally {
    await sb.done();
  }
});

// ------------------------------------------------------------------ 9, 11: images, bugs ----

Deno.test("predict: huge, empty and corrupt PNGs are one line; an unexpected error says it is a bug", async () => {
  const sb = await sandbox();
  try {
    const ck = join(sb.dir, "w.safetensors");
    assertOk("the checkpoint", await sb.cli("train.ts", ["lenet", ...TINY, "--save", ck]));
    const huge = join(sb.dir, "huge.png");
    await Deno.writeFile(
      huge,
      concat([PNG_SIGNATURE, ihdr(20000, 20000, 8, 0), new Uint8Array(4096).fill(0x5a)]),
    );
    const zero = join(sb.dir, "zero-width.png");
    await Deno.writeFile(
      zero,
      concat([
        PNG_SIGNATURE,
        ihdr(0, 28, 8, 0),
        chunk("IDAT", await deflate(new Uint8Array(28))),
        chunk("IEND", new Uint8Array(0)),
      ]),
    );
    const palette = join(sb.dir, "palette.png");
    await Deno.writeFile(
      palette,
      concat([
        PNG_SIGNATURE,
        ihdr(3, 1, 8, 3),
        chunk("PLTE", new Uint8Array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])),
        chunk("IDAT", await deflate(new Uint8Array([0, 0, 7, 1]))),
        chunk("IEND", new Uint8Array(0)),
      ]),
    );
    const digit = join(sb.dir, "digit.png");
    await Deno.writeFile(digit, goodPng());
    const cases: (Failure & { name: string; args: string[]; env?: Record<string, string> })[] = [
      {
        name: "a PNG whose header claims 20000x20000",
        args: ["lenet", "--weights", ck, huge],
        code: 1,
        command: "predict",
        stderr: /huge\.png: 20000x20000 pixels is too large to decode .*; resize it first/,
        maxSeconds: 10,
      },
      {
        name: "a PNG of zero width",
        args: ["lenet", "--weights", ck, zero],
        code: 1,
        command: "predict",
        stderr: /zero-width\.png: is 0x28 pixels: an empty image \(zero width\)/,
      },
      {
        name: "a PNG with a palette index past its palette",
        args: ["lenet", "--weights", ck, palette],
        code: 1,
        command: "predict",
        stderr: /palette\.png: palette index 7 past the palette of 4 colours/,
      },
      {
        // Reached through the runner's fault injection (tests only): no user input is known to
        // cause an unexpected error.
        name: "an unexpected error: two lines, 'this is a bug', exit 70, no stack",
        args: ["lenet", "--weights", ck, digit],
        env: { MODERN_CNN_TEST_FAULT: "unexpected" },
        code: 70,
        command: "predict",
        stderr:
          /^predict: unexpected TypeError: an injected fault \(MODERN_CNN_TEST_FAULT\)\npredict: this is a bug in modern-cnn; please report it \(rerun with --debug or MODERN_CNN_DEBUG=1 for the stack\)\n$/,
        lines: 2,
      },
    ];
    await pool(cases, async (c) => {
      const before = await snapshot(sb.dir);
      const r = await sb.cli("predict.ts", c.args, c.env);
      assertFailed(c.name, r, c);
      assert.doesNotMatch(r.stderr, /split the data ?set/i, c.name);
      assert.deepEqual(await snapshot(sb.dir), before, `${c.name}: files changed`);
    });
    // With --debug or MODERN_CNN_DEBUG=1, the stack follows.
    const args = ["lenet", "--weights", ck, digit];
    const fault = { MODERN_CNN_TEST_FAULT: "unexpected" };
    await pool([
      { name: "--debug", args: [...args, "--debug"], env: fault as Record<string, string> },
      { name: "MODERN_CNN_DEBUG=1", args, env: { ...fault, MODERN_CNN_DEBUG: "1" } },
    ], async (c) => {
      const r = await sb.cli("predict.ts", c.args, c.env);
      assert.equal(r.code, 70, `${c.name}\n${shown(r)}`);
      assert.match(
        r.stderr,
        /this is a bug in modern-cnn; please report it with the stack below\n/,
      );
      assert.match(r.stderr, /^\s+at /m, `${c.name}: the stack\n${shown(r)}`);
    });
  } finally {
    await sb.done();
  }
});
