// Models of your own: any layer tree trains, saves and loads, and the summary shows it (and the
// zoo's) layer by layer; the README's custom-CNN example runs as written.
import assert from "node:assert/strict";
import { getGpu } from "../gpu/mod.ts";
import {
  activation,
  batchNorm,
  conv2d,
  flatten,
  globalAvgPool,
  linear,
  maxPool2d,
  residual,
  sequential,
} from "../layers/mod.ts";
import {
  buildArchitecture,
  createModel,
  customArchitecture,
  decodeSafetensors,
  encodeSafetensors,
  formatSummary,
  summarize,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { makeSynthetic } from "../data/mod.ts";

const ROOT = new URL("..", import.meta.url).pathname;

const smallNet = () =>
  sequential([
    conv2d({ inChannels: 1, outChannels: 4, kernel: 3, padding: 1 }),
    batchNorm({ channels: 4 }),
    activation("relu"),
    residual({ inChannels: 4, channels: 4 }),
    maxPool2d({ kernel: 2 }),
    globalAvgPool(),
    flatten(),
    linear({ inFeatures: 4, outFeatures: 3 }),
  ]);

Deno.test("a custom model trains a step and its checkpoint saves and loads", async () => {
  const gpu = await getGpu();
  const model = createModel(gpu, {
    name: "my-cnn",
    net: smallNet(),
    inputShape: [1, 8, 8],
    seed: 1,
  });
  assert.equal(model.arch.name, "my-cnn");
  assert.equal(model.arch.numClasses, 3);
  assert.deepEqual(model.state.slice(0, 3).map((e) => e.name), ["0.weight", "0.bias", "1.weight"]);
  assert.ok(model.state.some((e) => e.name === "3.conv1.weight"));
  const before = await model.stateDict();
  const set = uploadImageSet(gpu, makeSynthetic({ count: 16, height: 8, classes: 3 }));
  const trainer = new Trainer(model, { lr: 0.1, batchSize: 8, resize: 8 });
  const r = await trainer.trainEpoch(set, { epoch: 0 });
  assert.ok(Number.isFinite(r.loss), `loss ${r.loss}`);
  const after = await model.stateDict();
  const w0 = before.get("0.weight")!.data as Float32Array;
  const w1 = after.get("0.weight")!.data as Float32Array;
  assert.ok(w0.some((v, i) => v !== w1[i]), "a step changes the weights");
  assert.equal(Number((after.get("1.num_batches_tracked")!.data as BigInt64Array)[0]), 2);

  const bytes = encodeSafetensors(after, { model: "my-cnn" });
  const other = createModel(gpu, { name: "my-cnn", net: smallNet(), inputShape: [1, 8, 8] });
  other.loadStateDict(decodeSafetensors(bytes).tensors);
  const loaded = await other.stateDict();
  assert.deepEqual([...loaded.keys()], [...after.keys()]);
  for (const [k, t] of after) assert.deepEqual(loaded.get(k)!.data, t.data, k);
  const x = gpu.tensor(new Float32Array(2 * 64).map((_, i) => Math.sin(i)), {
    shape: [2, 1, 8, 8],
  });
  const ctx = { gpu, training: false, seed: 0 };
  const a = model.forward(x, ctx), b = other.forward(x, ctx);
  assert.deepEqual(await a.y.toArray(), await b.y.toArray());
  for (const t of [x, a.y, b.y]) t.dispose();
  trainer.dispose();
  set.images.dispose();
  set.labels.dispose();
  model.dispose();
  other.dispose();
});

Deno.test("a custom model's spec is checked", () => {
  const net = smallNet();
  assert.throws(
    () => customArchitecture({ name: "", net, inputShape: [1, 8, 8] }),
    TypeError,
  );
  assert.throws(
    () => customArchitecture({ name: "x", net, inputShape: [1, 8] as never }),
    /inputShape must be \[channels, height, width\]/,
  );
  assert.throws(
    () => customArchitecture({ name: "x", net, inputShape: [3, 8, 8] }),
    /x: the net does not take inputs \[1, 3, 8, 8\]/,
  );
  assert.throws(
    () => customArchitecture({ name: "x", net, inputShape: [1, 8, 8], classes: 10 }),
    /expected logits \[1, 10\]/,
  );
  const fixed = sequential([flatten(), linear({ inFeatures: 64, outFeatures: 2 })]);
  assert.equal(customArchitecture({ name: "f", net: fixed, inputShape: [1, 8, 8] }).fixedSize, 8);
  assert.equal(customArchitecture({ name: "g", net, inputShape: [1, 8, 8] }).fixedSize, null);
});

Deno.test("the summary of a custom model: every layer's shapes, counts and own FLOPs", () => {
  const arch = customArchitecture({ name: "my-cnn", net: smallNet(), inputShape: [1, 8, 8] });
  const s = summarize(arch, undefined, { depth: 2, batch: 2 });
  const layers = arch.net.children.map(([, l]) => l);
  assert.deepEqual(s.rows.map((r) => [r.name, r.kind, r.depth]), [
    ["0", "Conv2d", 1],
    ["1", "BatchNorm2d", 1],
    ["2", "ReLU", 1],
    ["3", "Residual", 1],
    ["3.conv1", "Conv2d", 2],
    ["3.bn1", "BatchNorm2d", 2],
    ["3.conv2", "Conv2d", 2],
    ["3.bn2", "BatchNorm2d", 2],
    ["4", "MaxPool2d", 1],
    ["5", "AdaptiveAvgPool2d", 1],
    ["6", "Flatten", 1],
    ["7", "Linear", 1],
  ]);
  const top = s.rows.filter((r) => r.depth === 1);
  let shape: readonly number[] = [2, 1, 8, 8];
  top.forEach((r, i) => {
    assert.deepEqual(r.input, shape, r.name);
    assert.equal(r.flops, layers[i].flops(shape), r.name);
    shape = layers[i].outputShape(shape);
    assert.deepEqual(r.shape, shape, r.name);
  });
  const row = (n: string) => s.rows.find((r) => r.name === n)!;
  assert.equal(row("0").params, 4 * 9 + 4);
  assert.equal(row("1").params, 8);
  assert.equal(row("1").buffers, 8);
  assert.equal(row("3").params, 2 * (4 * 4 * 9 + 4) + 2 * 8);
  assert.equal(row("3").buffers, 16);
  assert.equal(
    row("3.conv1").flops,
    conv2d({ inChannels: 4, outChannels: 4, kernel: 3, padding: 1 }).flops([2, 4, 8, 8]),
  );
  assert.equal(row("7").params, 15);
  assert.equal(s.params, 40 + 8 + 2 * 148 + 16 + 15);
  assert.equal(s.buffers, 8 + 16);
  assert.equal(s.flops, arch.net.flops([2, 1, 8, 8]));
  assert.equal(s.memory.input, 2 * 64 * 4);
  assert.equal(s.memory.params, (s.params + s.buffers) * 4);
  assert.equal(s.memory.total, s.memory.input + s.memory.activations + s.memory.params);
  assert.ok(s.memory.activations > 0);
  assert.equal(summarize(arch, undefined, { depth: 1 }).rows.length, 8);
  const text = formatSummary(s);
  assert.match(text, /^ {2}3\.conv1 Conv2d\s+\[2, 4, 8, 8\]\s+148\s+0\s+/m);
  assert.match(text, /parameters: 375 trainable, 24 non-trainable/);
  assert.throws(() => summarize(arch, undefined, { depth: 0 }), RangeError);
});

Deno.test("the summary of a zoo model: LeNet's rows, and blocks expand to their children", () => {
  const lenet = buildArchitecture("lenet");
  const s = summarize(lenet, 28);
  assert.deepEqual(
    s.rows.map((r) => [r.name, r.kind, r.shape, r.params]),
    [
      ["0", "Conv2d", [1, 6, 28, 28], 156],
      ["1", "Sigmoid", [1, 6, 28, 28], 0],
      ["2", "AvgPool2d", [1, 6, 14, 14], 0],
      ["3", "Conv2d", [1, 16, 10, 10], 2416],
      ["4", "Sigmoid", [1, 16, 10, 10], 0],
      ["5", "AvgPool2d", [1, 16, 5, 5], 0],
      ["6", "Flatten", [1, 400], 0],
      ["7", "Linear", [1, 120], 48120],
      ["8", "Sigmoid", [1, 120], 0],
      ["9", "Linear", [1, 84], 10164],
      ["10", "Sigmoid", [1, 84], 0],
      ["11", "Linear", [1, 10], 850],
    ],
  );
  for (const r of s.rows) {
    const layer = lenet.net.children.find(([n]) => n === r.name)![1];
    assert.equal(r.flops, layer.flops(r.input), r.name);
  }
  assert.equal(s.rows.reduce((t, r) => t + r.flops, 0), s.flops);
  assert.equal(s.params, 61706);
  // GoogLeNet: an Inception block's children are its branches' layers, with their own FLOPs.
  const g = summarize(buildArchitecture("googlenet"), 96, { depth: 3 });
  const inc = g.rows.find((r) => r.kind === "Inception")!;
  const kids = g.rows.filter((r) => r.name.startsWith(`${inc.name}.`) && r.depth === inc.depth + 1);
  assert.deepEqual(kids.map((r) => r.name.slice(inc.name.length + 1)), [
    "p1_1",
    "p2_1",
    "p2_2",
    "p3_1",
    "p3_2",
    "p4_1",
    "p4_2",
  ]);
  assert.equal(kids.reduce((t, r) => t + r.flops, 0), inc.flops);
  assert.equal(kids.reduce((t, r) => t + r.params, 0), inc.params);
  // DenseNet: a dense block's conv blocks each see the channels concatenated so far.
  const d = summarize(buildArchitecture("densenet"), 96, { depth: 2 });
  const blocks = d.rows.filter((r) => /^1\.net\.\d$/.test(r.name));
  assert.deepEqual(blocks.map((r) => r.input[1]), [64, 96, 128, 160]);
  assert.equal(
    blocks.reduce((t, r) => t + r.flops, 0),
    d.rows.find((r) => r.name === "1")!.flops,
  );
});

Deno.test("the README's custom CNN trains and saves as written", async () => {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const m = readme.match(/<!-- custom-cnn -->\s*```ts\n([\s\S]*?)```/);
  assert.ok(m, "README has a <!-- custom-cnn --> ts block");
  const code = m[1].replace(`"@modern-cnn/webgpu"`, JSON.stringify(`file://${ROOT}mod.ts`));
  const dir = await Deno.makeTempDir({ prefix: "modern-cnn-custom-" });
  try {
    await Deno.writeTextFile(`${dir}/example.ts`, code);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", `${ROOT}deno.json`, `${dir}/example.ts`],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    assert.match(dec.decode(out.stdout), /loss/);
    const saved = decodeSafetensors(await Deno.readFile(`${dir}/my-cnn.safetensors`)).tensors;
    assert.deepEqual([...saved.keys()], ["0.weight", "0.bias", "4.weight", "4.bias"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
