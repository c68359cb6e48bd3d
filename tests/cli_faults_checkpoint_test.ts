// The CLI fault suite (see tests/_faults.ts), checkpoints: bad metadata, malformed safetensors,
// PyTorch files, NaN weights and a folder given as the checkpoint are refused by every command
// that loads one, naming the file, and the file is kept.
import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeSafetensors, encodeSafetensors } from "../models/mod.ts";
import { assertFailed, pool, snapshot } from "./_cli.ts";
import { assertOk, caseDir, goodPng, lit, sandbox, SYN, TINY } from "./_faults.ts";

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
      meta("best_test_acc", "1.5", "a number in [0, 1]"),
      meta("best_epoch", "0", "an integer in [1, epoch = 1]"),
      meta("best_epoch", "2", "an integer in [1, epoch = 1]"),
      {
        file: "stop-wait-alone.safetensors",
        bytes: withMetadata(good, { stop_wait: "2" }),
        stderr:
          /stop-wait-alone\.safetensors: metadata 'stop_monitor' is missing, though stop_wait is there \(stop_monitor, stop_best, stop_wait go together\)/,
        loaders: all,
      },
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
