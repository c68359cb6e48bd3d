// The model zoo against the reference: parameter counts, state-dict names/shapes/dtypes, block
// output shapes, and PyTorch parity of eval logits and one training step (fixtures made by
// tests/fixtures/make_models.py from the PyTorch module trees of tests/fixtures/d2l_nets.py).
import assert from "node:assert/strict";
import type { Ctx } from "../layers/mod.ts";
import {
  buildArchitecture,
  countParameters,
  createModel,
  decodeSafetensors,
  encodeSafetensors,
  MODEL_NAMES,
  type ModelName,
  summarize,
} from "../models/mod.ts";
import { checkInputSize } from "../models/zoo.ts";
import { GPU_TEST, testGpu } from "./harness.ts";
import { type Fixture, modelParity } from "./_models_parity.ts";
import { detValues } from "./det.ts";

function fixture(name: ModelName): Fixture {
  const url = new URL(`./fixtures/model_${name}.json`, import.meta.url);
  return JSON.parse(Deno.readTextFileSync(url));
}

// ------------------------------------------------------------------------------ tests ----

const EXPECTED_PARAMS: Record<ModelName, number> = {
  "lenet": 61706,
  "lenet-bn": 44878,
  "alexnet": 46764746,
  "alexnet-lrn": 46764746,
  "vgg": 43093322,
  "nin": 1992166,
  "googlenet": 5977530,
  "resnet": 11178378,
  "densenet": 758226,
  "mobilenet": 3216650,
};

Deno.test("parameter counts equal the reference's", () => {
  for (const name of MODEL_NAMES) {
    assert.equal(countParameters(buildArchitecture(name)), EXPECTED_PARAMS[name], name);
  }
  // ResNet-34 is one option away.
  assert.equal(countParameters(buildArchitecture("resnet", { blocks: [3, 4, 6, 3] })), 21290250);
});

Deno.test("state-dict names, shapes and dtypes equal the reference's", GPU_TEST, async () => {
  const gpu = await testGpu();
  for (const name of MODEL_NAMES) {
    const fx = fixture(name);
    if (["alexnet", "alexnet-lrn", "vgg"].includes(name)) {
      // Large models: check names/shapes from the layer tree without allocating.
      const arch = buildArchitecture(name);
      const { stateEntries } = await import("../layers/mod.ts");
      const ours = stateEntries(arch.net).map((e) => [
        e.name,
        e.kind === "counter" ? [] : e.kind === "param" ? [...e.param.shape] : [...e.buffer.shape],
        e.kind === "counter" ? "int64" : "float32",
      ]);
      assert.deepEqual(ours, fx.state, name);
      continue;
    }
    const model = createModel(gpu, { name });
    const ours = model.state.map((e) => [
      e.name,
      e.kind === "counter" ? [] : [...(e.kind === "param" ? e.param.shape : e.buffer.shape)],
      e.kind === "counter" ? "int64" : "float32",
    ]);
    assert.deepEqual(ours, fx.state, name);
    model.dispose();
  }
});

Deno.test("block output shapes equal the reference's (the seed's walk-through)", () => {
  for (const name of MODEL_NAMES) {
    const fx = fixture(name);
    const arch = buildArchitecture(name);
    const rows = summarize(
      arch,
      arch.fixedSize ??
        { nin: 224, googlenet: 96, resnet: 96, densenet: 96, mobilenet: 96 }[name as "nin"],
    );
    const ours = rows.rows.filter((r) => r.depth === 1).map((r) => [r.name, r.shape]);
    const theirs = fx.blocks.map(([n, , s]) => [n, s]);
    assert.deepEqual(ours, theirs, name);
  }
});

Deno.test("a wrong input size names the size needed", () => {
  assert.throws(
    () => checkInputSize(buildArchitecture("alexnet"), 96),
    /alexnet needs 224x224 inputs/,
  );
  assert.throws(() => checkInputSize(buildArchitecture("lenet"), 32), /lenet needs 28x28 inputs/);
  assert.throws(
    () => checkInputSize(buildArchitecture("nin"), 32),
    /nin: input 32x32 is too small/,
  );
  checkInputSize(buildArchitecture("resnet"), 96);
});

for (const name of MODEL_NAMES) {
  Deno.test(
    `PyTorch parity: ${name} eval logits and one training step`,
    GPU_TEST,
    async () => modelParity(await testGpu(), fixture(name)),
  );
}

for (const name of MODEL_NAMES) {
  Deno.test(
    `PyTorch parity in f16: ${name} eval logits and one training step`,
    GPU_TEST,
    async () => modelParity(await testGpu(), fixture(name), "f16"),
  );
}

Deno.test("checkpoint round trip gives identical logits", GPU_TEST, async () => {
  const gpu = await testGpu();
  const a = createModel(gpu, { name: "lenet-bn", seed: 5 });
  const b = createModel(gpu, { name: "lenet-bn", seed: 6 });
  const x = gpu.tensor(detValues("rt", 3 * 28 * 28, 0, 1), { shape: [3, 1, 28, 28] });
  // One training forward so running stats and num_batches_tracked are non-trivial.
  const f = a.forward(x, { gpu, training: true, seed: 0 });
  f.y.dispose();
  const bytes = encodeSafetensors(await a.stateDict());
  b.loadStateDict(decodeSafetensors(bytes).tensors);
  const ctx: Ctx = { gpu, training: false, seed: 0 };
  const ya = await a.forward(x, ctx).y.toArray();
  const yb = await b.forward(x, ctx).y.toArray();
  assert.deepEqual(yb, ya);
  const sd = await b.stateDict();
  assert.equal((sd.get("1.num_batches_tracked")!.data as BigInt64Array)[0], 1n);
});

Deno.test("a bad checkpoint names every offender and loads nothing", GPU_TEST, async () => {
  const gpu = await testGpu();
  const m = createModel(gpu, { name: "lenet", seed: 1 });
  const before = await m.params[0][1].value!.toArray();
  const sd = await createModel(gpu, { name: "lenet", seed: 2 }).stateDict();
  sd.delete("11.bias");
  sd.set("12.weight", { dtype: "F32", shape: [1], data: new Float32Array(1) });
  sd.set("3.weight", { dtype: "F32", shape: [16, 6, 5, 4], data: new Float32Array(480) });
  assert.throws(
    () => m.loadStateDict(sd, { source: "bad.safetensors" }),
    (e: Error) =>
      /bad\.safetensors/.test(e.message) && /missing keys: 11\.bias/.test(e.message) &&
      /unexpected keys: 12\.weight/.test(e.message) &&
      /3\.weight: shape \[16, 6, 5, 4\], expected \[16, 6, 5, 5\]/.test(e.message),
  );
  assert.deepEqual(await m.params[0][1].value!.toArray(), before, "nothing was loaded");
  const bytes = encodeSafetensors(await m.stateDict());
  assert.throws(
    () => decodeSafetensors(bytes.subarray(0, bytes.length - 10), { file: "cut.safetensors" }),
    /cut\.safetensors.*truncated/,
  );
});
