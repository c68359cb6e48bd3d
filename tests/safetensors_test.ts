// Tests of the safetensors reader's strictness (models/safetensors.ts), as the format's reference
// implementation (huggingface/safetensors): every malformed header is a SafetensorsError naming
// the file and the entry, in one readable line; PyTorch .pt files are recognised and the message
// shows how to convert them. No GPU needed.
import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeSafetensors, encodeSafetensors, SafetensorsError } from "../models/mod.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;
const FILE = "ck.safetensors";

/** Safetensors bytes of a header (an object, or raw JSON text) and `data` bytes of data. */
function file(header: unknown, data = 0): Uint8Array {
  const text = typeof header === "string" ? header : JSON.stringify(header);
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.length + data);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

/** Asserts that decoding fails with a one-line SafetensorsError naming the file and matching. */
function rejects(bytes: Uint8Array, re: RegExp, entry?: string): SafetensorsError {
  let caught: unknown;
  try {
    decodeSafetensors(bytes, { file: FILE });
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof SafetensorsError, `SafetensorsError, got ${caught}`);
  const e = caught as SafetensorsError;
  assert.ok(e instanceof TypeError);
  assert.equal(e.name, "SafetensorsError");
  assert.equal(e.file, FILE);
  assert.equal(e.entry, entry);
  assert.ok(e.message.startsWith(`${FILE}: `), e.message);
  assert.ok(!e.message.includes("\n"), `one line: ${e.message}`);
  assert.ok(e.message.length <= 300, `${e.message.length} characters: ${e.message.slice(0, 400)}`);
  assert.match(e.message, re);
  return e;
}

const w = (begin: number, end: number, shape = [(end - begin) / 4]) => ({
  dtype: "F32",
  shape,
  data_offsets: [begin, end],
});

Deno.test("what decodes today decodes the same: ours and PyTorch's files", async () => {
  const sd = new Map([
    ["a", { dtype: "F32" as const, shape: [2, 1], data: new Float32Array([1, 2]) }],
    ["n", { dtype: "I64" as const, shape: [], data: new BigInt64Array([7n]) }],
    ["empty", { dtype: "F32" as const, shape: [0, 3], data: new Float32Array(0) }],
  ]);
  const back = decodeSafetensors(encodeSafetensors(sd, { model: "x" }));
  assert.deepEqual(back.metadata, { model: "x" });
  assert.deepEqual([...back.tensors.keys()].sort(), ["a", "empty", "n"]);
  assert.deepEqual(back.tensors.get("a"), sd.get("a"));
  assert.deepEqual(back.tensors.get("n"), sd.get("n"));
  assert.deepEqual(back.tensors.get("empty")!.shape, [0, 3]);
  // Entries in any order in the header, and an empty file of no tensors.
  const data = file({ b: w(8, 12), a: w(0, 8) }, 12);
  assert.deepEqual([...decodeSafetensors(data).tensors.keys()], ["a", "b"]);
  assert.equal(decodeSafetensors(file({})).tensors.size, 0);
  // Written by PyTorch (safetensors.torch.save_file).
  const torch = decodeSafetensors(await Deno.readFile(join(FIX, "torch_lenet-bn.safetensors")));
  assert.equal(torch.tensors.size, 30);
  assert.deepEqual(torch.tensors.get("0.weight")!.shape, [6, 1, 5, 5]);
  assert.equal(torch.tensors.get("1.num_batches_tracked")!.dtype, "I64");
});

Deno.test("a header that is not an object of entries is rejected", () => {
  rejects(file("null"), /the header is null, not a JSON object of tensors/);
  rejects(file("[1, 2]"), /the header is an array, not a JSON object/);
  rejects(file("5"), /the header is number, not a JSON object/);
  rejects(file('{"a": '), /the JSON header does not parse/);
  const bad = file('{"a":1}');
  bad[9] = 0xff;
  rejects(bad, /the header is not valid UTF-8/);
  rejects(file({ w: 5 }), /entry 'w' is 5, not an object \{dtype, shape, data_offsets\}/, "w");
  rejects(file({ w: null }), /entry 'w' is null, not an object/, "w");
  rejects(file({ w: [0, 4] }), /entry 'w' is \[0,4\], not an object/, "w");
  rejects(
    file({ w: { dtype: "F32" } }),
    /entry 'w' lacks a shape array, a data_offsets array/,
    "w",
  );
  rejects(file({ w: { ...w(0, 4), dtype: "F16" } }, 2), /entry 'w' has dtype F16; only F32/, "w");
});

Deno.test("__metadata__ must be an object of strings", () => {
  rejects(
    file({ __metadata__: null }),
    /__metadata__ is null, not an object of strings/,
    "__metadata__",
  );
  rejects(file({ __metadata__: "x" }), /__metadata__ is "x", not an object/, "__metadata__");
  rejects(file({ __metadata__: ["x"] }), /__metadata__ is \["x"\], not an object/, "__metadata__");
  rejects(
    file({ __metadata__: { model: "lenet", epochs: 3 } }),
    /__metadata__ entry 'epochs' is 3, not a string/,
    "__metadata__",
  );
  assert.deepEqual(decodeSafetensors(file({ __metadata__: { a: "b" } })).metadata, { a: "b" });
});

Deno.test("shapes and offsets must be non-negative integers", () => {
  rejects(
    file({ w: { ...w(0, 8), data_offsets: ["0", "8"] } }, 8),
    /entry 'w' has data_offsets \["0", "8"\]; expected two non-negative integers/,
    "w",
  );
  rejects(file({ w: { ...w(0, 8), data_offsets: [0, 7.5] } }, 8), /data_offsets \[0, 7\.5\]/, "w");
  rejects(file({ w: { ...w(0, 8), data_offsets: [-8, 0] } }, 8), /data_offsets \[-8, 0\]/, "w");
  rejects(file({ w: { ...w(0, 8), data_offsets: [0, 4, 8] } }, 8), /data_offsets \[0, 4, 8\]/, "w");
  rejects(
    file({ w: { ...w(0, 8), data_offsets: [0, 1e20] } }, 8),
    /data_offsets \[0, 100000000000000000000\]/,
    "w",
  );
  rejects(file({ w: { ...w(0, 0), data_offsets: [8, 0] } }, 8), /end before they begin/, "w");
  rejects(
    file({ w: w(0, 8, ["2" as unknown as number]) }, 8),
    /entry 'w' has shape \["2"\]: dimension 0 \("2"\) is not a non-negative integer/,
    "w",
  );
  rejects(file({ w: w(0, 8, [2, -1]) }, 8), /dimension 1 \(-1\) is not a non-negative/, "w");
  rejects(file({ w: w(0, 8, [1.5]) }, 8), /dimension 0 \(1\.5\)/, "w");
  rejects(file({ w: w(0, 8, [null as unknown as number]) }, 8), /dimension 0 \(null\)/, "w");
  rejects(
    file({ w: w(0, 8, [3]) }, 8),
    /entry 'w' spans 8 bytes but shape \[3\] of F32 needs 12/,
    "w",
  );
  rejects(file({ w: w(0, 8, [2 ** 40, 2 ** 40]) }, 8), /needs too many/, "w");
});

Deno.test("messages stay short: a 10^6-dimension shape, a long name", () => {
  const dims = new Array(1_000_000).fill(1);
  const e = rejects(
    file({ big: w(0, 4, dims) }, 4),
    /entry 'big' has a shape of 1000000 dimensions/,
    "big",
  );
  assert.ok(e.message.length < 200);
  const shape = [...new Array(20).fill(1), "x"];
  rejects(
    file({ w: w(0, 4, shape as number[]) }, 4),
    /shape \[1, 1, 1, 1, \.\.\.\] \(21 dimensions\): dimension 20 \("x"\)/,
    "w",
  );
  const name = "n".repeat(100_000);
  rejects(file({ [name]: 5 }), /entry 'n{60}\.\.\. \(100000 characters\)' is 5/, name);
});

Deno.test("the tensors must tile the data: no overlap, duplicate, gap or extra bytes", () => {
  rejects(
    file({ a: w(0, 8), b: w(4, 12) }, 12),
    /entry 'b' \(bytes 4\.\.12\) overlaps entry 'a' \(bytes 0\.\.8\)/,
    "b",
  );
  rejects(
    file({ a: w(0, 8), b: w(0, 8) }, 8),
    /entry 'b' \(bytes 0\.\.8\) has the same data_offsets as entry 'a'/,
    "b",
  );
  rejects(
    file({ a: w(0, 4), b: w(8, 12) }, 12),
    /bytes 4\.\.8 of the data, before entry 'b', belong to no tensor/,
    "b",
  );
  rejects(file({ a: w(4, 8) }, 8), /bytes 0\.\.4 of the data, before entry 'a'/, "a");
  rejects(file({ a: w(0, 4) }, 8), /4 bytes after the last tensor 'a' belong to no tensor/, "a");
  rejects(file({}, 3), /3 bytes after the header belong to no tensor/);
  rejects(
    file({ a: w(0, 8) }, 4),
    /entry 'a' \(bytes 0\.\.8\) runs past the end of the data \(4 bytes\): truncated/,
    "a",
  );
});

Deno.test("the header length is checked before the header is decoded", () => {
  const bytes = new Uint8Array(64);
  new DataView(bytes.buffer).setBigUint64(0, 100_000_001n, true);
  rejects(
    bytes,
    /the header length field says 100000001 bytes, more than the format's limit of 100000000/,
  );
  new DataView(bytes.buffer).setBigUint64(0, 2n ** 64n - 1n, true);
  rejects(bytes, /says 18446744073709551615 bytes/);
  new DataView(bytes.buffer).setBigUint64(0, 100n, true);
  rejects(bytes, /header length 100 runs past the end \(64 bytes\)/);
  rejects(new Uint8Array(5), /only 5 bytes, too short/);
});

Deno.test("a PyTorch .pt file is recognised, and the message shows how to convert it", () => {
  const zip = new Uint8Array([0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 8, 0, 0, 0]);
  const pickle = new Uint8Array([0x80, 0x02, 0x7d, 0x71, 0x00, 0x28, 0x58, 0x08, 0, 0]);
  for (
    const [bytes, kind] of [[zip, "torch\\.save \\(zip\\)"], [pickle, "legacy pickle"]] as const
  ) {
    let msg = "";
    try {
      decodeSafetensors(bytes, { file: "runs/model.pt" });
    } catch (e) {
      assert.ok(e instanceof SafetensorsError);
      msg = e.message;
    }
    const lines = msg.split("\n");
    assert.equal(lines.length, 4, msg);
    assert.match(
      lines[0],
      new RegExp(`^runs/model\\.pt: is a PyTorch ${kind} file, not safetensors`),
    );
    assert.match(lines[0], /\.state_dict\(\)/);
    assert.equal(lines[1], "  import torch");
    assert.equal(lines[2], "  from safetensors.torch import save_file");
    assert.equal(
      lines[3],
      '  save_file(torch.load("runs/model.pt", map_location="cpu"), "runs/model.safetensors")',
    );
  }
  // A protocol byte outside 2..5 is not taken for a pickle.
  const other = new Uint8Array(16);
  other[0] = 0x80;
  other[1] = 0x09;
  assert.throws(
    () => decodeSafetensors(other, { file: "x" }),
    (e: Error) => !/PyTorch/.test(e.message),
  );
});
