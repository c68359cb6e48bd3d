// The commands under faults, as users meet them (subprocesses): a diverging run, a kill between
// the two files of a checkpoint, a second run on the same file, outputs that cannot be written,
// a --data-dir that is wrong, checkpoints with bad metadata or malformed safetensors, data and
// image files that would exhaust memory, NaN weights, bad flags. Each case asserts the exit code,
// the one error line (what file or flag, what is wrong), no stack trace, no result line on stdout
// and, where work could be lost, that the files are byte-identical and nothing was left behind.
// The kill points and the unexpected error are injected through environment hooks of the commands
// that only tests set (MODERN_CNN_TEST_KILL_AT, MODERN_CNN_TEST_FAULT).
import assert from "node:assert/strict";
import { join } from "node:path";
import { encode } from "fast-png";
import { decodeSafetensors, encodeSafetensors, type HostStateDict } from "../models/mod.ts";
import {
  assertFailed,
  assertNoStack,
  type Failure,
  lines,
  listDir,
  pool,
  RESULT_LINE,
  ROOT,
  run,
  type RunResult,
  sha256,
  shown,
  snapshot,
  start,
  type Started,
  waitFor,
} from "./_cli.ts";
import { chunk, concat, ihdr, PNG_SIGNATURE } from "./_png.ts";

// ------------------------------------------------------------------ setup ----

/** The tiny training every case uses: 2 steps of LeNet on synthetic data. */
const SYN = ["--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32"];
const TINY = [...SYN, "--batch-size", "32", "--epochs", "1"];
/** A run long enough to act on while it trains (give --limit-train). */
const LONG = [
  "--dataset",
  "synthetic",
  "--limit-test",
  "32",
  "--batch-size",
  "32",
  "--epochs",
  "3",
];

/**
 * A temporary folder, and the environment that keeps the commands away from this user's tuning
 * cache (no "autotune: ..." line) and $MODERN_CNN_DATA. (XDG_CACHE_HOME stays: Deno's and Mesa's
 * caches live there, and a cold one costs minutes.)
 */
async function sandbox(): Promise<{
  dir: string;
  cli: (script: string, args: string[], env?: Record<string, string>) => Promise<RunResult>;
  start: (script: string, args: string[]) => Started;
  done: () => Promise<void>;
}> {
  const dir = await Deno.makeTempDir({ prefix: "modern-cnn-faults-" });
  const env = {
    MODERN_CNN_CACHE_DIR: join(dir, ".tune"),
    MODERN_CNN_DATA: "",
    MODERN_CNN_DEBUG: "",
  };
  await Deno.mkdir(env.MODERN_CNN_CACHE_DIR, { recursive: true });
  return {
    dir,
    cli: (script, args, extra = {}) => run(script, args, { ...env, ...extra }),
    start: (script, args) => start(script, args, env),
    done: () => Deno.remove(dir, { recursive: true }),
  };
}

/** A folder made for one case. */
async function caseDir(root: string, name: string): Promise<string> {
  const dir = join(root, name.replace(/[^a-z0-9]+/gi, "-").replace(/^-|-$/g, ""));
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}

/** Asserts that a run succeeded. */
function assertOk(name: string, r: RunResult): void {
  assert.equal(r.code, 0, `${name}\n${shown(r)}`);
  assertNoStack(name, r);
}

/** A regex matching `text` literally. */
function lit(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// ------------------------------------------------------------------ file builders ----

/** A safetensors file's JSON header and data bytes. */
function splitSafetensors(
  bytes: Uint8Array,
): { header: Record<string, unknown>; data: Uint8Array } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  return {
    header: JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))),
    data: bytes.subarray(8 + n),
  };
}

/** Safetensors bytes of a header written by hand (any JSON) and data bytes. */
function joinSafetensors(header: unknown, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = new TextEncoder().encode(
    typeof header === "string" ? header : JSON.stringify(header),
  );
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** A checkpoint's bytes with its header edited by `edit`. */
function editHeader(bytes: Uint8Array, edit: (h: Record<string, unknown>) => void): Uint8Array {
  const { header, data } = splitSafetensors(bytes);
  edit(header);
  return joinSafetensors(header, data);
}

/** A checkpoint's bytes with some metadata values replaced. */
function withMetadata(bytes: Uint8Array, patch: Record<string, string>): Uint8Array {
  const ck = decodeSafetensors(bytes);
  return encodeSafetensors(ck.tensors, { ...ck.metadata, ...patch });
}

/** The header entry `name` of a header. */
function entry(h: Record<string, unknown>, name: string): Record<string, unknown> {
  return h[name] as Record<string, unknown>;
}

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

/** A valid 28x28 gray PNG. */
function goodPng(): Uint8Array {
  const data = new Uint8Array(784).map((_, p) => (Math.floor(p / 78.4) === 3 ? 220 : 10));
  return encode({ width: 28, height: 28, data, channels: 1, depth: 8 });
}

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

/** A snapshot of a folder, or of one file (its hash). */
async function snapshotOf(path: string): Promise<Record<string, string>> {
  const st = await Deno.stat(path);
  return st.isDirectory ? await snapshot(path) : { [path]: await sha256(path) };
}

// ------------------------------------------------------------------ 7, 8, 10, 11: checkpoints ----

/** How each command is given a checkpoint file `f` (in the case's folder `dir`). */
const LOADERS: Record<
  string,
  { script: string; command: string; args: (f: string, dir: string) => string[] }
> = {
  "train --init": {
    script: "train.ts",
    command: "train",
    args: (f, dir) => ["lenet", ...TINY, "--init", f, "--save", join(dir, "out.safetensors")],
  },
  "train --resume": {
    // Resumed into the same file: a refused checkpoint must survive byte for byte.
    script: "train.ts",
    command: "train",
    args: (
      f,
    ) => ["lenet", ...SYN, "--batch-size", "32", "--epochs", "2", "--resume", f, "--save", f],
  },
  "eval": {
    script: "eval.ts",
    command: "eval",
    args: (f) => ["lenet", "--weights", f, "--dataset", "synthetic", "--limit-test", "32"],
  },
  "predict": {
    script: "predict.ts",
    command: "predict",
    args: (f, dir) => ["lenet", "--weights", f, join(dir, "digit.png")],
  },
};

interface FileCase {
  /** The checkpoint's file name (it appears in the message). */
  file: string;
  bytes: Uint8Array;
  stderr: RegExp;
  lines?: number;
  /** The longest stderr allowed, characters. */
  maxChars?: number;
  loaders: string[];
}

Deno.test("checkpoints with bad metadata, malformed safetensors or NaN: refused by name, kept", async () => {
  const sb = await sandbox();
  try {
    const goodPath = join(sb.dir, "good.safetensors");
    assertOk("the good run", await sb.cli("train.ts", ["lenet", ...TINY, "--save", goodPath]));
    const good = await Deno.readFile(goodPath);
    const all = Object.keys(LOADERS);
    const pair = ["eval", "train --init"];
    const meta = (key: string, value: string, expected: string): FileCase => ({
      file: `${key}-${value.replace(/[^a-z0-9]+/gi, "_")}.safetensors`,
      bytes: withMetadata(good, { [key]: value }),
      stderr: new RegExp(
        `checkpoint \\S+${key}-\\S+\\.safetensors: metadata '${key}' is "${lit(value)}", ` +
          `expected ${lit(expected)}`,
      ),
      loaders: all,
    });
    const torchLines = (file: string, kind: string) =>
      new RegExp(
        `${lit(file)}: is a PyTorch ${lit(kind)} file, not safetensors; convert a state_dict ` +
          `with this Python.*\\n\\s+import torch\\n\\s+from safetensors\\.torch import save_file\\n` +
          `\\s+save_file\\(torch\\.load\\("\\S+${lit(file)}", map_location="cpu"\\), ` +
          `"\\S+\\.safetensors"\\)`,
      );
    const nan = (() => {
      const ck = decodeSafetensors(good);
      const t = ck.tensors.get("3.weight")!;
      const data = (t.data as Float32Array).slice();
      data[7] = NaN;
      ck.tensors.set("3.weight", { ...t, data });
      return encodeSafetensors(ck.tensors, ck.metadata);
    })();
    const cases: FileCase[] = [
      // 7. Metadata validated.
      {
        file: "meta-null.safetensors",
        bytes: editHeader(good, (h) => h.__metadata__ = null),
        stderr: /meta-null\.safetensors: __metadata__ is null, not an object of strings/,
        loaders: all,
      },
      meta("epoch", "abc", "an integer >= 0"),
      meta("epoch", "-3", "an integer >= 0"),
      meta("step", "1.5", "an integer >= 0"),
      meta("lr", "0x10", "a number > 0"),
      meta(
        "optimizer",
        "../elsewhere/ck-optimizer-step2.safetensors",
        "a file name in the checkpoint's folder",
      ),
      {
        file: "model-resnet.safetensors",
        bytes: withMetadata(good, { model: "resnet" }),
        stderr: /model-resnet\.safetensors is a resnet checkpoint, not lenet/,
        loaders: all,
      },
      // 8. Strict safetensors.
      {
        file: "overlap.safetensors",
        bytes: editHeader(good, (h) => entry(h, "0.bias").data_offsets = [0, 24]),
        stderr: /overlap\.safetensors: entry '0\.\w+' \(bytes \d+\.\.\d+\) overlaps entry '0\.\w+'/,
        loaders: pair,
      },
      {
        file: "offsets-strings.safetensors",
        bytes: editHeader(good, (h) => entry(h, "0.bias").data_offsets = ["600", "624"]),
        stderr:
          /offsets-strings\.safetensors: entry '0\.bias' has data_offsets \["600", "624"\]; expected two non-negative integers/,
        loaders: pair,
      },
      {
        file: "shape-string.safetensors",
        bytes: editHeader(good, (h) => entry(h, "0.bias").shape = ["6"]),
        stderr:
          /shape-string\.safetensors: entry '0\.bias' has shape \["6"\]: dimension 0 \("6"\) is not a non-negative integer/,
        loaders: pair,
      },
      {
        file: "header-100mb.safetensors",
        bytes: (() => {
          const b = new Uint8Array(64).fill(0x20);
          new DataView(b.buffer).setBigUint64(0, 100_000_001n, true);
          return b;
        })(),
        stderr:
          /header-100mb\.safetensors: the header length field says 100000001 bytes, more than the format's limit of 100000000/,
        loaders: pair,
      },
      {
        file: "rank-1e6.safetensors",
        bytes: editHeader(good, (h) => entry(h, "0.bias").shape = new Array(1e6).fill(1)),
        stderr: /rank-1e6\.safetensors: entry '0\.bias' has a shape of 1000000 dimensions/,
        maxChars: 500,
        loaders: pair,
      },
      {
        file: "model.pt",
        bytes: new Uint8Array([0x50, 0x4b, 0x03, 0x04, 0x14, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]),
        stderr: torchLines("model.pt", "torch.save (zip)"),
        lines: 4,
        loaders: pair,
      },
      {
        file: "legacy.pt",
        bytes: new Uint8Array([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a]),
        stderr: torchLines("legacy.pt", "legacy pickle"),
        lines: 4,
        loaders: pair,
      },
      // 10. Non-finite weights.
      {
        file: "nan.safetensors",
        bytes: nan,
        stderr: /checkpoint \S+nan\.safetensors: '3\.weight' holds 1 Inf\/NaN values of 2400/,
        loaders: all,
      },
    ];
    const runs = cases.flatMap((c) =>
      c.loaders.map((loader) => ({ name: `${loader} ${c.file}`, c, loader }))
    );
    // 11. A folder given as the checkpoint.
    const folderCases = ["eval", "train --init"].map((loader) => ({
      name: `${loader} a folder`,
      c: {
        file: "ck-folder",
        bytes: new Uint8Array(0),
        stderr: /cannot read checkpoint \S+ck-folder: it is a folder/,
        loaders: [],
      } as FileCase,
      loader,
    }));
    await pool([...runs, ...folderCases], async ({ name, c, loader }) => {
      const dir = await caseDir(sb.dir, name);
      const f = join(dir, c.file);
      if (c.file === "ck-folder") await Deno.mkdir(f);
      else await Deno.writeFile(f, c.bytes);
      if (loader === "predict") await Deno.writeFile(join(dir, "digit.png"), goodPng());
      const before = await snapshot(dir);
      const l = LOADERS[loader];
      const r = await sb.cli(l.script, l.args(f, dir));
      assertFailed(name, r, { code: 1, command: l.command, stderr: c.stderr, lines: c.lines });
      if (c.maxChars) {
        assert.ok(r.stderr.length < c.maxChars, `${name}: ${r.stderr.length} chars on stderr`);
      }
      assert.deepEqual(await snapshot(dir), before, `${name}: files changed or left behind`);
    });
  } finally {
    await sb.done();
  }
});

// ------------------------------------------------------------------ 1: divergence ----

Deno.test("a diverging run writes nothing: the last good checkpoint and plot stay", async () => {
  const sb = await sandbox();
  try {
    const base = await caseDir(sb.dir, "base");
    const good = join(base, "good.safetensors");
    assertOk("the good run", await sb.cli("train.ts", ["lenet", ...TINY, "--save", good]));
    const DIVERGE = [
      "--dataset",
      "synthetic",
      "--limit-train",
      "512",
      "--limit-test",
      "64",
      "--epochs",
      "3",
      "--lr",
      "1e38",
    ];
    const diverged = (epoch: number) =>
      new RegExp(
        `^train: training diverged in epoch ${epoch} at step \\d+ of the epoch \\(step \\d+ of ` +
          `the run\\): .* became Inf or NaN; nothing was written.*; try a lower --lr ` +
          `\\(this run: 1e\\+38`,
        "m",
      );
    const cases = [
      { name: "resumed, --save over its checkpoint", json: false },
      { name: "resumed, --save over its checkpoint, --json and --plot", json: true },
    ];
    await pool([
      ...cases,
      { name: "fresh run with --save", json: false },
    ], async (c) => {
      const dir = await caseDir(sb.dir, c.name);
      const fresh = c.name.startsWith("fresh");
      const save = join(dir, fresh ? "fresh.safetensors" : "good.safetensors");
      if (!fresh) await Deno.copyFile(good, save);
      const plot = join(dir, "curves.svg");
      if (c.json) await Deno.writeTextFile(plot, "<svg><!-- an earlier run's plot --></svg>");
      const before = await snapshot(dir);
      const r = await sb.cli("train.ts", [
        "lenet",
        ...DIVERGE,
        ...(fresh ? [] : ["--resume", save]),
        "--save",
        save,
        ...(c.json ? ["--json", "--plot", plot] : []),
      ]);
      assertFailed(c.name, r, {
        code: 1,
        command: "train",
        stderr: diverged(fresh ? 1 : 2),
        lines: fresh ? 1 : 2, // resumed: the "resuming ..." line first
      });
      if (c.json) assert.equal(r.stdout, "", `${c.name}: no JSON line\n${shown(r)}`);
      // Byte-identical checkpoint and plot; a fresh run's --save file does not exist; no lock
      // or temporary file is left.
      assert.deepEqual(await snapshot(dir), before, `${c.name}: files changed or left behind`);
    });
  } finally {
    await sb.done();
  }
});

Deno.test({
  name: "a fresh diverging run does not claim that its never-written --save file keeps an epoch",
  fn: async () => {
    const sb = await sandbox();
    try {
      const save = join(sb.dir, "fresh.safetensors");
      const r = await sb.cli("train.ts", [
        "lenet",
        "--dataset",
        "synthetic",
        "--limit-train",
        "512",
        "--limit-test",
        "64",
        "--epochs",
        "3",
        "--lr",
        "1e38",
        "--save",
        save,
      ]);
      assertFailed("fresh", r, { code: 1, command: "train", stderr: /diverged in epoch 1/ });
      assert.doesNotMatch(r.stderr, /keeps the last good epoch/, shown(r));
      assert.deepEqual(await listDir(sb.dir), [".tune"]);
    } finally {
      await sb.done();
    }
  },
});

// ------------------------------------------------------------------ 2: checkpoint as a unit ----

/** The metadata of a checkpoint file. */
async function metadataOf(path: string): Promise<Record<string, string>> {
  return decodeSafetensors(await Deno.readFile(path), { file: path }).metadata;
}

Deno.test("checkpoint and optimizer state are one unit: kills, missing and foreign optimizer files", async () => {
  const sb = await sandbox();
  try {
    const MOM = ["lenet", ...TINY, "--momentum", "0.9"];
    const dirA = await caseDir(sb.dir, "killed-between");
    const dirB = await caseDir(sb.dir, "other-run");
    const dirC = await caseDir(sb.dir, "source");
    const [a, b, c] = [dirA, dirB, dirC].map((d) => join(d, "ck.safetensors"));
    await pool([
      { name: "good run A", args: [...MOM, "--save", a] },
      { name: "good run B (2 epochs)", args: [...MOM, "--epochs", "2", "--save", b] },
      { name: "good run C", args: [...MOM, "--save", c] },
    ], async (s) => assertOk(s.name, await sb.cli("train.ts", s.args)));
    assert.deepEqual(await listDir(dirA), ["ck-optimizer-step2.safetensors", "ck.safetensors"]);
    assert.deepEqual(await listDir(dirB), ["ck-optimizer-step4.safetensors", "ck.safetensors"]);
    const optA = await Deno.readFile(join(dirA, "ck-optimizer-step2.safetensors"));
    const optB = await Deno.readFile(join(dirB, "ck-optimizer-step4.safetensors"));
    /** A copy of C in a new folder, its optimizer file replaced by `opt` (null: deleted). */
    const copyOfC = async (name: string, opt: Uint8Array | null) => {
      const dir = await caseDir(sb.dir, name);
      await Deno.copyFile(c, join(dir, "ck.safetensors"));
      if (opt) await Deno.writeFile(join(dir, "ck-optimizer-step2.safetensors"), opt);
      return dir;
    };
    const refusal = (name: string, dir: string, re: RegExp) => ({
      name,
      fn: async () => {
        const before = await snapshot(dir);
        const ck = join(dir, "ck.safetensors");
        const r = await sb.cli("train.ts", [
          "lenet",
          "--epochs",
          "2",
          "--resume",
          ck,
          "--save",
          ck,
        ]);
        assertFailed(name, r, { code: 1, command: "train", stderr: re });
        assert.deepEqual(await snapshot(dir), before, `${name}: files changed or left behind`);
        return { dir, ck };
      },
    });
    const tracks = [
      {
        // (a) kill -9 after the optimizer file of the next step is written, before the model.
        name: "(a) killed between the optimizer file and the model file",
        fn: async () => {
          const before = await snapshot(dirA);
          const killed = await sb.cli(
            "train.ts",
            ["lenet", "--epochs", "2", "--resume", a, "--save", a],
            { MODERN_CNN_TEST_KILL_AT: "between-optimizer-and-model" },
          );
          assert.equal(killed.signal, "SIGKILL", `killed\n${shown(killed)}`);
          const after = await snapshot(dirA);
          for (const f of Object.keys(before)) {
            assert.equal(after[f], before[f], `${f} unchanged by the killed run`);
          }
          assert.ok(after["ck-optimizer-step4.safetensors"], "the killed step's optimizer file");
          // The old pair still resumes: the model of epoch 1 with its optimizer file.
          const resumed = await sb.cli("train.ts", ["lenet", "--epochs", "2", "--resume", a]);
          assertOk("resume after the kill", resumed);
          assert.match(resumed.stderr, /resuming \S+ after epoch 1 \(step 2\): momentum 0\.9/);
          assert.match(resumed.stdout, /^epoch 2: loss [\d.]+/m);
          assert.equal(await sha256(a), before["ck.safetensors"]);
          // A further run (another batch size: step 2 + 4 = 6) cleans the orphan of step 4.
          const further = await sb.cli("train.ts", [
            "lenet",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--resume",
            a,
            "--save",
            a,
          ]);
          assertOk("the run after the kill", further);
          assert.deepEqual(await listDir(dirA), [
            "ck-optimizer-step6.safetensors",
            "ck.safetensors",
          ]);
          const m = await metadataOf(a);
          assert.equal(m.optimizer, "ck-optimizer-step6.safetensors");
          assert.equal(m.step, "6");
          assert.equal(m.epoch, "2");
        },
      },
      {
        // (b) kill -9 with the model's temporary file written: the next --save removes it (a
        // temporary file of a live process, here pid 1, is not touched).
        name: "(b) killed with the model's temporary file written",
        fn: async () => {
          const dir = await caseDir(sb.dir, "killed-temp");
          const ck = join(dir, "ck.safetensors");
          const killed = await sb.cli("train.ts", ["lenet", ...TINY, "--save", ck], {
            MODERN_CNN_TEST_KILL_AT: "model-temp-written",
          });
          assert.equal(killed.signal, "SIGKILL", `killed\n${shown(killed)}`);
          const left = (await listDir(dir)).filter((n) =>
            /^ck\.safetensors\.tmp-\d+-killed$/.test(n)
          );
          assert.equal(left.length, 1, `the killed write's temporary file: ${await listDir(dir)}`);
          await Deno.writeTextFile(join(dir, "ck.safetensors.tmp-1-live"), "pid 1 is alive");
          assertOk("the next --save", await sb.cli("train.ts", ["lenet", ...TINY, "--save", ck]));
          assert.deepEqual(await listDir(dir), ["ck.safetensors", "ck.safetensors.tmp-1-live"]);
          assert.equal((await metadataOf(ck)).epoch, "1");
        },
      },
      {
        // (c) the optimizer file is missing: refused, naming it and --reset-optimizer.
        name: "(c) the optimizer file is missing",
        fn: async () => {
          const dir = await copyOfC("missing", null);
          const { ck } = await refusal(
            "(c) missing",
            dir,
            /^train: the optimizer state of \S+ck\.safetensors \(\S+ck-optimizer-step2\.safetensors\) is missing; pass --reset-optimizer/m,
          ).fn();
          const r = await sb.cli("train.ts", [
            "lenet",
            "--epochs",
            "2",
            "--resume",
            ck,
            "--save",
            ck,
            "--reset-optimizer",
          ]);
          assertOk("(c) with --reset-optimizer", r);
          assert.match(r.stderr, /--reset-optimizer: the momentum starts from zero/);
          assert.match(r.stdout, /^epoch 2: /m);
          assert.deepEqual(await listDir(dir), [
            "ck-optimizer-step4.safetensors",
            "ck.safetensors",
          ]);
        },
      },
      refusal(
        "(d) another run's optimizer file of the same step",
        await copyOfC("foreign-same-step", optA),
        /^train: the optimizer state \S+ck-optimizer-step2\.safetensors \(step 2, run \S+\) does not belong to \S+ck\.safetensors \(step 2, run \S+\); pass --reset-optimizer/m,
      ),
      refusal(
        "(d) another run's optimizer file of another step",
        await copyOfC("foreign-other-step", optB),
        /^train: the optimizer state \S+ck-optimizer-step2\.safetensors \(step 4, run \S+\) does not belong to \S+ck\.safetensors \(step 2, run \S+\); pass --reset-optimizer/m,
      ),
      {
        // (e) the model file is a plain state dict: the reference's names (PyTorch wrote the
        // fixture), momentum only in the optimizer file.
        name: "(e) the model file holds exactly the state dict",
        fn: async () => {
          const dir = await caseDir(sb.dir, "state-dict");
          const ck = join(dir, "ck.safetensors");
          const r = await sb.cli("train.ts", [
            "lenet-bn",
            ...TINY,
            "--momentum",
            "0.9",
            "--save",
            ck,
          ]);
          assertOk("(e) lenet-bn with momentum", r);
          const saved = decodeSafetensors(await Deno.readFile(ck));
          const torch = decodeSafetensors(
            await Deno.readFile(join(ROOT, "tests", "fixtures", "torch_lenet-bn.safetensors")),
          );
          const shapes = (sd: HostStateDict) =>
            Object.fromEntries([...sd].map(([k, t]) => [k, `${t.dtype}[${t.shape}]`]));
          assert.deepEqual(shapes(saved.tensors), shapes(torch.tensors));
          const opt = decodeSafetensors(await Deno.readFile(join(dir, saved.metadata.optimizer)));
          assert.ok(opt.tensors.size > 0);
          for (const k of opt.tensors.keys()) assert.ok(saved.tensors.has(k), `momentum of ${k}`);
        },
      },
    ];
    await pool(tracks, (t) => t.fn().then(() => {}));
  } finally {
    await sb.done();
  }
});

Deno.test({
  name: "a save leaves the optimizer file of another checkpoint of the same stem alone",
  fn: async () => {
    const sb = await sandbox();
    try {
      const MOM = ["lenet", ...TINY, "--momentum", "0.9"];
      const ck = join(sb.dir, "ck.safetensors");
      assertOk("ck.safetensors", await sb.cli("train.ts", [...MOM, "--save", ck]));
      const opt = join(sb.dir, "ck-optimizer-step2.safetensors");
      const before = await sha256(opt);
      const other = await sb.cli("train.ts", [
        ...MOM,
        "--limit-train",
        "128",
        "--save",
        join(sb.dir, "ck"),
      ]);
      assertOk("ck (no extension)", other);
      const after = await sha256(opt).catch(() => "deleted");
      assert.equal(after, before, "the optimizer file of ck.safetensors");
      assertOk(
        "resume ck.safetensors",
        await sb.cli("train.ts", ["lenet", "--epochs", "2", "--resume", ck]),
      );
    } finally {
      await sb.done();
    }
  },
});

// ------------------------------------------------------------------ 3: resume restores ----

Deno.test("--resume restores the run's recipe; a flag overrides it and says so", async () => {
  const sb = await sandbox();
  try {
    const ck = join(sb.dir, "ck.safetensors");
    assertOk(
      "the first run",
      await sb.cli("train.ts", [
        "lenet",
        ...SYN,
        "--epochs",
        "1",
        "--momentum",
        "0.9",
        "--weight-decay",
        "1e-4",
        "--lr",
        "0.3",
        "--seed",
        "5",
        "--batch-size",
        "32",
        "--save",
        ck,
      ]),
    );
    // No recipe flag: data set, limits, batch, lr, momentum, weight decay and seed come back.
    const r = await sb.cli("train.ts", ["lenet", "--epochs", "2", "--resume", ck, "--save", ck]);
    assertOk("resume without the recipe's flags", r);
    assert.match(
      r.stderr,
      /^train: resuming \S+ck\.safetensors after epoch 1 \(step 2\): momentum 0\.9, weight decay 0\.0001, seed 5 and the rest of its recipe restored/m,
    );
    assert.match(
      r.stdout,
      /^lenet on synthetic \(64 train \/ 32 test, 28x28\), batch 32, lr 0\.3, /,
    );
    const m = await metadataOf(ck);
    assert.deepEqual(
      [m.epoch, m.momentum, m.lr, m.seed, m.batch_size, m.weight_decay, m.dataset],
      ["2", "0.9", "0.3", "5", "32", "0.0001", "synthetic"],
    );
    // A flag given overrides the checkpoint's value, and the header says so.
    const o = await sb.cli("train.ts", ["lenet", "--epochs", "3", "--resume", ck, "--lr", "0.1"]);
    assertOk("resume with --lr 0.1", o);
    assert.match(o.stderr, /overridden by flags: .*--lr 0\.1 \(checkpoint: 0\.3\)/);
    assert.match(o.stdout, /, lr 0\.1, /);
  } finally {
    await sb.done();
  }
});

// ------------------------------------------------------------------ 4: locks ----

Deno.test("two runs, one file: a live lock refuses, a stale one is taken over", async () => {
  const sb = await sandbox();
  try {
    const host = Deno.hostname();
    const sleeper = new Deno.Command("sleep", { args: ["30"] }).spawn();
    const finished = new Deno.Command("true").spawn();
    await finished.status;
    try {
      const lockOf = (pid: number) =>
        JSON.stringify({ pid, host, started: new Date().toISOString() });
      const cases = [
        { name: "a live process's lock", lock: lockOf(sleeper.pid), ok: false },
        { name: "an unreadable lock", lock: "{half writ", ok: false },
        { name: "a dead process's lock (stale)", lock: lockOf(finished.pid), ok: true },
      ];
      await pool(cases, async (c) => {
        const dir = await caseDir(sb.dir, c.name);
        const x = join(dir, "x.safetensors");
        assertOk(
          `${c.name}: the first run`,
          await sb.cli("train.ts", ["lenet", ...TINY, "--save", x]),
        );
        await Deno.writeTextFile(`${x}.lock`, c.lock);
        const before = await snapshot(dir);
        const r = await sb.cli("train.ts", ["lenet", ...TINY, "--seed", "1", "--save", x]);
        if (c.ok) {
          assertOk(c.name, r);
          assert.deepEqual(await listDir(dir), ["x.safetensors"], `${c.name}: no lock left`);
          assert.equal((await metadataOf(x)).seed, "1");
        } else {
          assertFailed(c.name, r, {
            code: 1,
            command: "train",
            stderr: new RegExp(
              `--save ${lit(x)} is being written by another run \\(${
                c.lock.startsWith('{"pid') ? `pid ${sleeper.pid} on ${lit(host)}` : "\\?"
              }.*delete ${lit(x)}\\.lock`,
            ),
          });
          assert.deepEqual(await snapshot(dir), before, `${c.name}: files changed`);
        }
      });
    } finally {
      sleeper.kill("SIGKILL");
      await sleeper.status;
    }
    // Two real runs at once, and Ctrl-C: concurrently (independent folders).
    await pool([
      {
        // The second starts once the first holds the lock.
        name: "two concurrent runs with the same --save",
        fn: async () => {
          const dir = await caseDir(sb.dir, "concurrent");
          const x = join(dir, "x.safetensors");
          const first = sb.start("train.ts", [
            "lenet",
            ...LONG,
            "--limit-train",
            "1024",
            "--save",
            x,
          ]);
          assert.ok(await waitFor(`${x}.lock`), "the first run's lock");
          const second = await sb.cli("train.ts", ["lenet", ...TINY, "--save", x]);
          const r = await first.done;
          assertOk("the first run", r);
          assertFailed("the second run", second, {
            code: 1,
            command: "train",
            stderr: new RegExp(
              `--save ${lit(x)} is being written by another run \\(pid ${first.pid} `,
            ),
          });
          assert.deepEqual(await listDir(dir), ["x.safetensors"], "no lock left");
          assert.equal((await metadataOf(x)).epoch, "3", "the first run's checkpoint");
        },
      },
      {
        // Ctrl-C after the first epoch's checkpoint: the cleanups remove the lock, the
        // checkpoint and its optimizer file stay, exit 130.
        name: "SIGINT during training",
        fn: async () => {
          const dir = await caseDir(sb.dir, "interrupted");
          const z = join(dir, "z.safetensors");
          const p = sb.start("train.ts", [
            "lenet",
            ...LONG,
            "--limit-train",
            "2048",
            "--momentum",
            "0.9",
            "--save",
            z,
          ]);
          assert.ok(await waitFor(z), "the first epoch's checkpoint");
          p.kill("SIGINT");
          const r = await p.done;
          assert.equal(r.code, 130, `SIGINT\n${shown(r)}`);
          assert.equal(lines(r.stderr).at(-1), "train: interrupted", shown(r));
          assertNoStack("SIGINT", r);
          assert.deepEqual(await listDir(dir), [
            "z-optimizer-step64.safetensors",
            "z.safetensors",
          ]);
          const m = await metadataOf(z);
          assert.deepEqual([m.epoch, m.optimizer], ["1", "z-optimizer-step64.safetensors"]);
        },
      },
    ], (c) => c.fn());
  } finally {
    await sb.done();
  }
});

Deno.test({
  name: "--plot naming the file of --resume, --init or --save is refused; the checkpoint stays",
  fn: async () => {
    const sb = await sandbox();
    try {
      const good = join(sb.dir, "good.safetensors");
      assertOk("the good run", await sb.cli("train.ts", ["lenet", ...TINY, "--save", good]));
      const cases = [
        { name: "--resume F --plot F", flag: "--resume", args: ["--epochs", "2"] },
        { name: "--init F --plot F", flag: "--init", args: TINY },
        { name: "--save F --plot F", flag: "--save", args: TINY },
      ];
      await pool(cases, async (c) => {
        const dir = await caseDir(sb.dir, c.name);
        const f = join(dir, "ck.safetensors");
        await Deno.copyFile(good, f);
        const before = await snapshot(dir);
        const r = await sb.cli("train.ts", ["lenet", ...c.args, c.flag, f, "--plot", f]);
        assertFailed(c.name, r, {
          code: 2,
          command: "train",
          stderr: new RegExp(`(${c.flag}\\b.*--plot|--plot\\b.*${c.flag})\\b`),
          maxSeconds: 20,
        });
        assert.deepEqual(await snapshot(dir), before, `${c.name}: the checkpoint changed`);
      });
    } finally {
      await sb.done();
    }
  },
});

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
        stderr: /huge\.png: 20000x20000 pixels is too large to predict .*; resize it first/,
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
