// Device time per kernel from GPU timestamps (gpu/profiler.ts, `GpuRuntime.startProfile` /
// `stopProfile`, `deno task bench:train --profile`): every dispatch is counted under its kernel
// and family, recorded or replayed, across submits and beyond one query set; a kernel that runs
// 8 times the work of another takes longer; a profiled computation gives the same values as an
// unprofiled one; misuse is a one-line TypeError.
import assert from "node:assert/strict";
import { GpuRuntime } from "../gpu/runtime.ts";
import { defineKernel } from "../kernels/_kernel.ts";
import { byFamily } from "../bench/_profile.ts";
import { GPU_TEST, testGpu } from "./harness.ts";

async function runtime(): Promise<GpuRuntime> {
  const gpu = await testGpu();
  assert.ok(gpu instanceof GpuRuntime);
  return gpu;
}

/** `y = x * k`, repeated `iters` times per element (work that scales with `iters`). */
const SCALE = defineKernel({
  name: "profile_test_scale",
  doc: "y[i] = x[i] * k^iters",
  params: { n: "u32", k: "f32", iters: "u32" },
  bindings: { x: { type: "float", access: "read" }, y: { type: "float", access: "read_write" } },
  variants: ["", "long"] as const,
  workgroupSize: 64,
  body: () =>
    `@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= p.n) { return; }
  var v = x[g.x];
  for (var i = 0u; i < p.iters; i++) { v = v * p.k; }
  y[g.x] = v;
}`,
});

Deno.test("profile: every dispatch counted under its kernel and family", GPU_TEST, async (t) => {
  const gpu = await runtime();
  if (!gpu.features.timestamps) {
    t.step({ name: "no timestamp-query on this adapter", ignore: true, fn: () => {} });
    return;
  }
  const n = 1 << 16;
  const x = gpu.tensor(new Float32Array(n).fill(1), { shape: [n] });
  const y = gpu.zeros([n]);
  const run = (variant: "" | "long", iters: number) =>
    SCALE.dispatch({
      variant,
      params: { n, k: 1, iters },
      bindings: { x, y },
      workgroups: n / 64,
    });
  gpu.startProfile();
  for (let i = 0; i < 3; i++) run("", 200);
  gpu.flush(); // a second submit
  for (let i = 0; i < 3; i++) run("long", 1600);
  const times = await gpu.stopProfile();
  assert.deepEqual(
    times.map((k) => [k.kernel, k.family, k.calls]),
    [["profile_test_scale_long", "profile_test_scale", 3], [
      "profile_test_scale",
      "profile_test_scale",
      3,
    ]],
  );
  for (const k of times) assert.ok(Number.isFinite(k.ms) && k.ms > 0, `${k.kernel}: ${k.ms} ms`);
  const [long, short] = times;
  assert.ok(long.ms > 2 * short.ms, `8x the work: ${long.ms} ms against ${short.ms} ms`);
  const fam = byFamily(times);
  assert.equal(fam.length, 1);
  assert.equal(fam[0].calls, 6);
  assert.equal(fam[0].kernel, "profile_test_scale (2 variants)");
  assert.ok(Math.abs(fam[0].ms - (long.ms + short.ms)) < 1e-9);
  // Nothing is profiled after stopProfile.
  run("", 1);
  gpu.startProfile();
  assert.deepEqual(await gpu.stopProfile(), []);
  x.dispose();
  y.dispose();
});

Deno.test("profile: replayed dispatches and more than one query set", GPU_TEST, async (t) => {
  const gpu = await runtime();
  if (!gpu.features.timestamps) {
    t.step({ name: "no timestamp-query on this adapter", ignore: true, fn: () => {} });
    return;
  }
  const n = 64;
  const x = gpu.tensor(new Float32Array(n).fill(1), { shape: [n] });
  const y = gpu.zeros([n]);
  gpu.beginTape();
  SCALE.dispatch({ params: { n, k: 2, iters: 1 }, bindings: { x, y }, workgroups: 1 });
  const tape = gpu.endTape()!;
  assert.ok(tape !== null);
  gpu.startProfile();
  // Replays (each a submit of its own, as the tape's params are rewritten), then 2,100
  // dispatches in one submit: two query sets of 2,048 dispatches.
  for (let i = 0; i < 3; i++) gpu.replay(tape);
  const submits = gpu.stats.submits;
  for (let i = 0; i < 2100; i++) {
    SCALE.dispatch({
      variant: "long",
      params: { n, k: 1, iters: 500 }, // long enough for a nonzero time on any GPU
      bindings: { x, y },
      workgroups: 1,
    });
  }
  const out = await y.toArray(); // a readback in the middle of the profile
  assert.equal(gpu.stats.submits, submits + 1, "the 2,100 dispatches went in one submit");
  gpu.replay(tape);
  const times = await gpu.stopProfile();
  assert.deepEqual(out, new Float32Array(n).fill(1), "profiled work computes what it did before");
  assert.deepEqual(await y.toArray(), new Float32Array(n).fill(2));
  assert.deepEqual(times.map((k) => [k.kernel, k.calls]).sort(), [
    ["profile_test_scale", 4],
    ["profile_test_scale_long", 2100],
  ]);
  // Every dispatch got its own timestamps (both query sets resolved where they belong).
  for (const k of times) assert.ok(k.minMs > 0, `${k.kernel}: shortest dispatch ${k.minMs} ms`);
  assert.ok(times.every((k) => k.minMs <= k.ms / k.calls));
  gpu.dropTape(tape);
  x.dispose();
  y.dispose();
});

Deno.test("profile: misuse is a TypeError naming the call", GPU_TEST, async () => {
  const gpu = await runtime();
  await assert.rejects(() => gpu.stopProfile(), /stopProfile: no profile is running/);
  if (gpu.features.timestamps) {
    gpu.startProfile();
    assert.throws(() => gpu.startProfile(), /startProfile: a profile is running/);
    assert.throws(() => gpu.discardSubmits = true, /discardSubmits: a profile is running/);
    await gpu.stopProfile();
    gpu.discardSubmits = true;
    assert.throws(() => gpu.startProfile(), /startProfile: submits are discarded/);
    gpu.discardSubmits = false;
  }
  // Not while a step is being recorded for replay: its tape would silently not be kept.
  if (gpu.features.timestamps) {
    gpu.beginTape();
    assert.throws(() => gpu.startProfile(), /startProfile: a tape is being recorded/);
    gpu.endTape();
    gpu.startProfile();
    gpu.beginTape();
    await assert.rejects(() => gpu.stopProfile(), /stopProfile: a tape is being recorded/);
    gpu.endTape();
    await gpu.stopProfile();
  }
  // A device without timestamp-query.
  const adapter = (await navigator.gpu.requestAdapter())!;
  const plain = new GpuRuntime(adapter, await adapter.requestDevice());
  try {
    assert.throws(
      () => plain.startProfile(),
      (e) =>
        e instanceof TypeError && /no 'timestamp-query' feature/.test(e.message) &&
        !e.message.includes("\n"),
    );
  } finally {
    await plain.close();
  }
});

Deno.test(
  "profile: a device lost while profiling is reported, not a crash",
  GPU_TEST,
  async (t) => {
    const adapter = (await navigator.gpu.requestAdapter())!;
    if (!adapter.features.has("timestamp-query")) {
      t.step({ name: "no timestamp-query on this adapter", ignore: true, fn: () => {} });
      return;
    }
    const device = await adapter.requestDevice({ requiredFeatures: ["timestamp-query"] });
    const gpu = new GpuRuntime(adapter, device);
    const n = 1024;
    const x = gpu.tensor(new Float32Array(n).fill(1), { shape: [n] });
    const y = gpu.zeros([n]);
    gpu.startProfile();
    for (let i = 0; i < 20; i++) {
      SCALE.dispatch({ params: { n, k: 1, iters: 100 }, bindings: { x, y }, workgroups: n / 64 });
    }
    gpu.flush(); // the readback of these timestamps is in flight
    device.destroy();
    await new Promise((r) => setTimeout(r, 50)); // an unhandled rejection would end the test here
    await assert.rejects(() => gpu.stopProfile());
    gpu.destroy();
  },
);
