// The host's cost of a training step (issue #15, section 1): a repeated step creates no bind
// group (they are cached by layout and exact buffer ranges, the uniform taking a dynamic
// offset), training with the cache is bit-identical to training without it and to replaying a
// recorded step (tests/replay_test.ts has the replay's own cases), a buffer the pool destroys
// takes its bind groups with it, and the bench's discarding mode records without executing.
import assert from "node:assert/strict";
import { BindGroupCache, uniformLayoutEntries } from "../gpu/bind_groups.ts";
import { GpuRuntime } from "../gpu/runtime.ts";
import type { Gpu } from "../gpu/mod.ts";
import { makeSynthetic } from "../data/mod.ts";
import { createModel, type ModelName, Trainer, uploadImageSet } from "../models/mod.ts";
import { GPU_TEST, testGpu } from "./harness.ts";

async function runtime(): Promise<GpuRuntime> {
  const gpu: Gpu = await testGpu();
  assert.ok(gpu instanceof GpuRuntime);
  return gpu;
}

/**
 * Trains `steps` steps of `name` (batch 2) and returns the bind groups each step created, the
 * dispatches it planned (`GpuRuntime.dispatch` calls) and the parameters after them.
 */
async function train(
  gpu: GpuRuntime,
  name: ModelName,
  resize: number,
  options: { steps: number; replay: boolean },
): Promise<{ perStep: number[]; planned: number[]; params: Uint32Array }> {
  const { steps, replay } = options;
  const model = createModel(gpu, { name, seed: 3 });
  const trainer = new Trainer(model, {
    lr: 0.05,
    momentum: 0.9,
    batchSize: 2,
    resize,
    seed: 1,
    replay,
  });
  const set = uploadImageSet(gpu, makeSynthetic({ count: 2 * steps, height: 28, seed: 2 }));
  const perStep: number[] = [];
  const planned: number[] = [];
  let last = { ...gpu.stats, ...gpu.hostStats };
  await trainer.trainEpoch(set, {
    epoch: 0,
    onStep: () => {
      const now = { ...gpu.stats, ...gpu.hostStats };
      perStep.push(now.bindGroups - last.bindGroups);
      planned.push(now.planned - last.planned);
      last = now;
    },
  });
  const values = await model.arena.values.toArray() as Float32Array;
  const params = new Uint32Array(values.buffer, values.byteOffset, values.length);
  trainer.dispose();
  model.dispose();
  set.images.dispose();
  set.labels.dispose();
  return { perStep, planned, params };
}

for (const [name, resize] of [["lenet", 28], ["googlenet", 64]] as [ModelName, number][]) {
  Deno.test(
    `${name}: a repeated step creates no bind group and a replayed one plans 3 dispatches, ` +
      "bit-identical to no cache and no replay",
    GPU_TEST,
    async () => {
      const gpu = await runtime();
      const steps = 4;
      const cached = await train(gpu, name, resize, { steps, replay: false });
      // The first step sets up (SGD's first-step variant, the momentum arena); from the
      // third on, every bind group of a step is the previous step's.
      assert.ok(cached.perStep[0] > 0);
      assert.deepEqual(cached.perStep.slice(2), new Array(steps - 2).fill(0), `${cached.perStep}`);
      // Recorded once, replayed from the second step: no bind group, and only the live entries
      // planned (the batch, the loss watch, the update) instead of every dispatch.
      const replayed = await train(gpu, name, resize, { steps, replay: true });
      assert.deepEqual(replayed.perStep.slice(1), new Array(steps - 1).fill(0));
      assert.deepEqual(replayed.planned.slice(1), new Array(steps - 1).fill(3));
      assert.ok(cached.planned.every((n) => n === cached.planned[0] && n > 3));
      assert.deepEqual(replayed.params, cached.params, "replay: the parameters are bit-identical");
      gpu.cacheBindGroups = false;
      try {
        const plain = await train(gpu, name, resize, { steps, replay: false });
        assert.ok(plain.perStep.every((n) => n > 0));
        assert.deepEqual(cached.params, plain.params, "the parameters are bit-identical");
      } finally {
        gpu.cacheBindGroups = true;
      }
    },
  );
}

const DOUBLE = {
  name: "host_test_double",
  code: `struct Params { k: f32 }
    @group(0) @binding(0) var<uniform> p: Params;
    @group(0) @binding(1) var<storage, read> x: array<f32>;
    @group(0) @binding(2) var<storage, read_write> y: array<f32>;
    @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
      if (g.x < arrayLength(&y)) { y[g.x] = x[g.x] * p.k; }
    }`,
};

Deno.test(
  "bind groups: the uniform's offset is dynamic, trimmed buffers drop theirs",
  GPU_TEST,
  async () => {
    const gpu = await runtime();
    const n = 128;
    const ramp = Float32Array.from({ length: n }, (_, i) => i);
    const times = (k: number) => ramp.map((v) => v * k);
    const x = gpu.tensor(ramp, { shape: [n] });
    const y = gpu.empty([n]);
    const k = (v: number) => ({ params: new Float32Array([v]), bindings: [x, y], workgroups: 2 });
    gpu.dispatch(DOUBLE, k(2));
    const before = gpu.stats.bindGroups;
    // Other params (packed at another offset of the uniform buffer), same buffers: no new group.
    gpu.dispatch(DOUBLE, k(3));
    assert.equal(gpu.stats.bindGroups, before);
    assert.deepEqual(await y.toArray(), times(3));
    // Other ranges of the same buffers are other groups.
    gpu.dispatch(DOUBLE, { ...k(1), bindings: [x.slice(64, 64), y.slice(64, 64)] });
    assert.equal(gpu.stats.bindGroups, before + 1);
    // A buffer the pool destroys leaves the cache with its groups: a new buffer, a new group
    // (never a stale one).
    y.dispose();
    gpu.trimPool();
    const y2 = gpu.empty([n]);
    gpu.dispatch(DOUBLE, { ...k(4), bindings: [x, y2] });
    assert.equal(gpu.stats.bindGroups, before + 2);
    assert.deepEqual(await y2.toArray(), times(4));
    x.dispose();
    y2.dispose();
  },
);

Deno.test(
  "BindGroupCache: a destroyed buffer's groups leave, the least recent beyond capacity",
  GPU_TEST,
  async () => {
    const { device } = await runtime();
    const buffers = [0, 1, 2].map(() =>
      device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE })
    );
    const layout = device.createBindGroupLayout({
      entries: [0, 1].map((binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: "storage" as const },
      })),
    });
    const cache = new BindGroupCache(2);
    const put = (a: GPUBuffer, b: GPUBuffer) => {
      const storage = [{ buffer: a }, { buffer: b, offset: 0, size: 64 }];
      const entries = storage.map((resource, binding) => ({ binding, resource }));
      const key = cache.key("L", storage);
      cache.set(key, device.createBindGroup({ layout, entries }), storage);
      return key;
    };
    const [a, b, c] = buffers;
    const ab = put(a, b);
    const bc = put(b, c);
    assert.notEqual(ab, bc);
    assert.ok(cache.get(ab) !== undefined);
    cache.forget(c); // bc binds c
    assert.equal(cache.size, 1);
    assert.equal(cache.get(bc), undefined);
    put(b, c);
    cache.get(ab); // ab is now the most recent: ca pushes bc out
    const ca = put(c, a);
    assert.equal(cache.size, 2);
    assert.equal(cache.get(bc), undefined);
    assert.ok(cache.get(ab) !== undefined && cache.get(ca) !== undefined);
    cache.forget(a);
    assert.equal(cache.size, 0);
    for (const buf of buffers) buf.destroy();
  },
);

Deno.test("uniformLayoutEntries reads the declarations, or leaves the automatic layout", () => {
  const kinds = (code: string) => uniformLayoutEntries(code)?.map((e) => e.buffer!.type);
  assert.deepEqual(kinds(DOUBLE.code), ["uniform", "read-only-storage", "storage"]);
  // No uniform, a second group, a declaration never used: the automatic layout.
  assert.equal(kinds(DOUBLE.code.replace("var<uniform> p", "var<storage, read> p")), undefined);
  assert.equal(
    kinds(DOUBLE.code.replace("@group(0) @binding(2)", "@group(1) @binding(0)")),
    undefined,
  );
  assert.equal(kinds(DOUBLE.code.replace("* p.k", "")), undefined);
  // Declarations inside comments do not count.
  assert.deepEqual(kinds(`// @group(0) @binding(3) var<storage> z: array<f32>;\n${DOUBLE.code}`), [
    "uniform",
    "read-only-storage",
    "storage",
  ]);
});

Deno.test("discarding submits records without executing; reads refuse", GPU_TEST, async () => {
  const gpu = await runtime();
  const y = gpu.tensor(new Float32Array([7, 7]), { shape: [2] });
  const s0 = { ...gpu.stats };
  gpu.discardSubmits = true;
  try {
    gpu.clear(y);
    gpu.flush();
    await assert.rejects(() => y.toArray(), /discarded/);
  } finally {
    gpu.discardSubmits = false;
  }
  assert.equal(gpu.stats.submits, s0.submits);
  assert.equal(gpu.stats.clears, s0.clears + 1);
  assert.deepEqual(await y.toArray(), new Float32Array([7, 7]), "the clear never ran");
  y.dispose();
});
