// Tests of the GPU runtime (gpu/) and of the test harness itself.
import assert from "node:assert/strict";
import {
  type Gpu,
  GpuValidationError,
  grid1d,
  KernelCompileError,
  NoAdapterError,
  requestGpu,
  Tensor,
} from "../gpu/mod.ts";
import { sizeClass } from "../gpu/pool.ts";
import { assertClose, checkGradient, GPU_TEST, Rng, testGpu } from "./harness.ts";

const SHIFT_WGSL = (offByOne: boolean) => `
// One thread per element: y[i] = x[i] * 2 (or, deliberately wrong, x[i + 1] * 2).
const WG = 64u;
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) g: vec3u) {
  let n = arrayLength(&y);
  if (g.x >= n) { return; }
  let j = min(g.x + ${offByOne ? "1u" : "0u"}, n - 1u);
  y[g.x] = x[j] * 2.0;
}`;

function double(gpu: Gpu, x: Tensor, offByOne: boolean): Tensor {
  const y = gpu.empty(x.shape);
  gpu.dispatch(
    { name: offByOne ? "test_double_off_by_one" : "test_double", code: SHIFT_WGSL(offByOne) },
    { bindings: [x, y], workgroups: Math.ceil(x.size / 64) },
  );
  return y;
}

Deno.test("tensor round trip for every dtype, odd lengths included", GPU_TEST, async () => {
  const gpu = await testGpu();
  const f = new Float32Array([1.5, -2, 3.25, 1e-30, -0]);
  assert.deepEqual(await gpu.tensor(f, { shape: [5] }).toArray(), f);
  const i = new Int32Array([-7, 0, 2147483647]);
  assert.deepEqual(await gpu.tensor(i, { shape: [3, 1] }).toArray(), i);
  const u = new Uint32Array([4294967295, 1]);
  assert.deepEqual(await gpu.tensor(u, { shape: [2] }).toArray(), u);
  const b = new Uint8Array([0, 1, 254, 255, 7]); // 5 bytes: packed into 2 words
  const bt = gpu.tensor(b, { shape: [5] });
  assert.equal(bt.dtype, "u8");
  assert.equal(bt.byteLength, 8);
  assert.deepEqual(await bt.toArray(), b);
});

Deno.test("reshape and flatten are views that share the buffer", GPU_TEST, async () => {
  const gpu = await testGpu();
  const x = gpu.tensor(new Float32Array([0, 1, 2, 3, 4, 5, 6, 7]), { shape: [2, 2, 2] });
  const flat = x.flatten();
  assert.deepEqual(flat.shape, [2, 4]);
  assert.equal(flat.buffer, x.buffer);
  assert.deepEqual(x.reshape([-1]).shape, [8]);
  x.dispose(); // the view keeps the storage alive
  assert.deepEqual(await flat.toArray(), new Float32Array([0, 1, 2, 3, 4, 5, 6, 7]));
  assert.throws(() => x.reshape([8]), /was disposed/);
  assert.throws(() => flat.reshape([3, 3]), /reshape: cannot view shape \[2, 4\] as \[3, 3\]/);
  flat.dispose();
});

Deno.test("shape errors name the op and both shapes", GPU_TEST, async () => {
  const gpu = await testGpu();
  assert.throws(
    () => gpu.tensor(new Float32Array(5), { shape: [2, 3] }),
    (e: Error) =>
      e instanceof TypeError && /tensor: data has 5 elements, shape \[2, 3\]/.test(e.message),
  );
  assert.throws(() => gpu.empty([2, -1]), TypeError);
  const { assertShape } = await import("../gpu/mod.ts");
  assert.throws(
    () => assertShape("linear", "weight", [10, 80], [10, 84]),
    /linear: weight has shape \[10, 80\], expected \[10, 84\]/,
  );
});

Deno.test("scope disposes what it created, keeps what it returns", GPU_TEST, async () => {
  const gpu = await testGpu();
  let tmp: Tensor | undefined;
  const kept = gpu.scope(() => {
    tmp = gpu.zeros([16]);
    return { out: gpu.zeros([4]) };
  });
  assert.equal(tmp!.disposed, true);
  assert.equal(kept.out.disposed, false);
  let inner: Tensor | undefined;
  const asyncKept = await gpu.scope(async () => {
    inner = gpu.zeros([3]);
    await Promise.resolve();
    return [gpu.zeros([2])];
  });
  assert.equal(inner!.disposed, true);
  assert.equal(asyncKept[0].disposed, false);
  assert.deepEqual(await kept.out.toArray(), new Float32Array(4));
});

Deno.test("buffer pool reuses freed buffers by size class", GPU_TEST, async () => {
  const gpu = await testGpu();
  assert.equal(sizeClass(1), 256);
  assert.equal(sizeClass(1024), 1024);
  assert.equal(sizeClass(1025), 1536);
  assert.equal(sizeClass(1537), 2048);
  const a = gpu.empty([1000]); // 4000 bytes -> 4096 class
  const buf = a.buffer;
  a.dispose();
  const before = gpu.pool.stats.reuses;
  const b = gpu.empty([1010]); // 4040 bytes -> same class
  assert.equal(b.buffer, buf);
  assert.equal(gpu.pool.stats.reuses, before + 1);
  b.dispose();
});

Deno.test(
  "many dispatches are recorded into one submit; readback only on request",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    await gpu.sync();
    const x = gpu.tensor(new Float32Array([1, 2, 3]), { shape: [3] });
    const s0 = { ...gpu.stats };
    let y: Tensor = x;
    for (let i = 0; i < 10; i++) y = double(gpu, y, false);
    assert.equal(gpu.stats.submits, s0.submits, "recording must not submit");
    gpu.flush();
    assert.equal(gpu.stats.submits, s0.submits + 1);
    assert.equal(gpu.stats.dispatches, s0.dispatches + 10);
    assert.equal(gpu.stats.readbacks, s0.readbacks);
    assertClose(await y.toArray(), [1024, 2048, 3072]);
    assert.equal(gpu.stats.readbacks, s0.readbacks + 1);
  },
);

Deno.test("params uniforms of many dispatches in one submit stay distinct", GPU_TEST, async () => {
  const gpu = await testGpu();
  const code = `struct Params { v: f32, i: u32 }
  @group(0) @binding(0) var<uniform> p: Params;
  @group(0) @binding(1) var<storage, read_write> y: array<f32>;
  @compute @workgroup_size(1) fn main() { y[p.i] = p.v; }`;
  const y = gpu.zeros([8]);
  for (let i = 0; i < 8; i++) {
    const params = new ArrayBuffer(8);
    new Float32Array(params, 0, 1)[0] = i * 10;
    new Uint32Array(params, 4, 1)[0] = i;
    gpu.dispatch({ name: "test_set", code }, { params, bindings: [y], workgroups: 1 });
  }
  assert.deepEqual(await y.toArray(), new Float32Array([0, 10, 20, 30, 40, 50, 60, 70]));
});

Deno.test("write after recorded work does not overtake it", GPU_TEST, async () => {
  const gpu = await testGpu();
  const x = gpu.tensor(new Float32Array([1, 1]), { shape: [2] });
  const y = double(gpu, x, false); // recorded, reads x = [1, 1]
  gpu.write(x, new Float32Array([5, 5]));
  assert.deepEqual(await y.toArray(), new Float32Array([2, 2]));
});

Deno.test("no adapter: a clear error that says how to get one", async () => {
  await assert.rejects(
    () => requestGpu({ gpu: { requestAdapter: () => Promise.resolve(null) } }),
    (e: Error) =>
      e instanceof NoAdapterError && /no WebGPU adapter/.test(e.message) &&
      /mesa-vulkan-drivers/.test(e.message),
  );
  await assert.rejects(() => requestGpu({ gpu: undefined }), NoAdapterError);
});

Deno.test("a WGSL compile error names the kernel", GPU_TEST, async () => {
  const gpu = await testGpu();
  const bad = {
    name: "test_broken_kernel",
    code: "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
  };
  await assert.rejects(
    () => gpu.compile(bad),
    (e: Error) =>
      e instanceof KernelCompileError && e.kernel === "test_broken_kernel" &&
      /test_broken_kernel/.test(e.message),
  );
  // The recording path raises it at the next sync.
  const bad2 = {
    name: "test_broken_kernel_2",
    code: "@compute @workgroup_size(1) fn main() { undefined_fn(); }",
  };
  gpu.dispatch(bad2, { bindings: [], workgroups: 1 });
  await assert.rejects(() => gpu.sync(), /test_broken_kernel_2/);
  await gpu.sync(); // the error was reported once; the runtime goes on
});

Deno.test("a validation error in recorded work names the kernel", GPU_TEST, async () => {
  const gpu = await testGpu();
  const code = `@group(0) @binding(0) var<storage, read> x: array<f32>;
  @group(0) @binding(1) var<storage, read_write> y: array<f32>;
  @compute @workgroup_size(1) fn main() { y[0] = x[0]; }`;
  const y = gpu.zeros([1]);
  gpu.dispatch({ name: "test_missing_binding", code }, { bindings: [y], workgroups: 1 });
  await assert.rejects(
    () => gpu.sync(),
    (e: Error) => e instanceof GpuValidationError && e.kernels.includes("test_missing_binding"),
  );
  await gpu.sync();
});

Deno.test("grid1d splits large dispatches over x and y", () => {
  assert.deepEqual(grid1d(1000, 64), [16, 1, 1]);
  const [x, y] = grid1d(64 * 70000, 64);
  assert.ok(x <= 65535 && x * y >= 70000);
});

// ---------------------------------------------------------------- the harness itself ----

Deno.test(
  "harness: a deliberately wrong kernel fails with a readable max-error message",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const data = new Float32Array([1, 2, 3, 4, 5]);
    const expected = [...data].map((v) => v * 2);
    const x = gpu.tensor(data, { shape: [5] });
    assertClose(await double(gpu, x, false).toArray(), expected, { what: "double" });
    const wrong = await double(gpu, x, true).toArray();
    assert.throws(
      () => assertClose(wrong, expected, { what: "double" }),
      (e: Error) =>
        /double: 4 of 5 elements differ: max abs error 2\.000e\+0/.test(e.message) &&
        /first at index 0: actual 4, expected 2/.test(e.message),
    );
  },
);

Deno.test("harness: gradient checker accepts a right gradient and rejects a wrong one", () => {
  const rng = new Rng(7);
  const x = rng.normalArray(5);
  const f = (v: Float64Array) => v.reduce((s, a, i) => s + Math.sin(a) * (i + 1), 0);
  const right = [...x].map((a, i) => Math.cos(a) * (i + 1));
  checkGradient(f, x, right);
  const wrong = right.map((g, i) => (i === 3 ? g + 0.01 : g));
  assert.throws(() => checkGradient(f, x, wrong), /1 of 5 elements differ.*first at index 3/);
});

Deno.test("harness: the seeded RNG is reproducible", () => {
  assert.deepEqual(new Rng(3).uniformArray(4), new Rng(3).uniformArray(4));
  assert.notDeepEqual(new Rng(3).uniformArray(4), new Rng(4).uniformArray(4));
});

Deno.test("a tensor created on a disposed base is rejected", GPU_TEST, async () => {
  const gpu = await testGpu();
  const x = gpu.zeros([2]);
  x.dispose();
  assert.throws(() => new Tensor(gpu, x, { shape: [2], dtype: "f32" }), /disposed/);
});

Deno.test("close waits, then destroys every pooled buffer and the device; twice is harmless", async () => {
  const gpu = await requestGpu(); // its own device: the shared one stays up for the other tests
  const kept = gpu.tensor(new Float32Array([1, 2]), { shape: [2] });
  gpu.zeros([64]).dispose();
  const y = double(gpu, kept, false);
  gpu.flush(); // submitted: close waits for it
  await gpu.close();
  assert.equal(gpu.pool.stats.allocatedBytes, 0);
  assert.throws(() => gpu.checkErrors(), /destroyed/);
  y.dispose(); // after close: a no-op, not an error
  gpu.destroy();
  await gpu.close();
});

/** The environment a subprocess gets: what finding a GPU and the Deno cache need, no more. */
function minimalEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1", ...extra };
  for (const k of ["PATH", "HOME", "DENO_DIR", "TMPDIR", "LD_LIBRARY_PATH", "VK_ICD_FILENAMES"]) {
    const v = Deno.env.get(k);
    if (v !== undefined) env[k] = v;
  }
  return env;
}

/** Acquires the GPU in a fresh `deno eval`, reads a tensor back, shuts down, reports. */
async function acquireInSubprocess(env: Record<string, string>) {
  const gpuMod = new URL("../gpu/mod.ts", import.meta.url).href;
  const script = `
    import { getGpu, requestGpu, shutdownGpu } from ${JSON.stringify(gpuMod)};
    const gpu = await getGpu();
    const other = await requestGpu();
    const values = Array.from(await gpu.tensor(new Float32Array([1, 2]), { shape: [2] }).toArray());
    const env = { xdg: Deno.env.get("XDG_RUNTIME_DIR"), backend: Deno.env.get("DENO_WEBGPU_BACKEND") };
    await shutdownGpu();
    const closed = [gpu, other].map((g) => { try { g.checkErrors(); return false; } catch { return true; } });
    const fresh = (await getGpu()) !== gpu;
    await shutdownGpu();
    console.log(JSON.stringify({ values, ...env, closed, fresh }));
    Deno.exit(0);`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", script],
    clearEnv: true,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  const stdout = new TextDecoder().decode(out.stdout);
  return { code: out.code, stderr, report: out.code === 0 ? JSON.parse(stdout) : stdout };
}

Deno.test(
  "GPU acquisition without XDG_RUNTIME_DIR prints no `error:` line; shutdownGpu closes all",
  async () => {
    const r = await acquireInSubprocess(minimalEnv());
    assert.equal(r.code, 0, r.stderr);
    const errors = r.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assert.deepEqual(errors, [], r.stderr);
    assert.deepEqual(r.report.values, [1, 2]);
    assert.deepEqual(r.report.closed, [true, true], "shutdownGpu destroyed both runtimes");
    assert.equal(r.report.fresh, true, "getGpu after shutdownGpu acquires a new device");
    if (Deno.build.os !== "linux") return;
    // The private folder set in the subprocess, and the backend that avoids the exit crash.
    assert.equal(r.report.backend, "vulkan");
    assert.match(r.report.xdg, /\/modern-cnn-runtime-\d+$/);
    const info = await Deno.lstat(r.report.xdg);
    assert.ok(info.isDirectory);
    assert.equal(info.uid, Deno.uid());
    assert.equal((info.mode ?? 0) & 0o077, 0, `mode ${(info.mode ?? 0).toString(8)}`);

    // A user's own settings are left as they are.
    const dir = await Deno.makeTempDir();
    const mine = await acquireInSubprocess(
      minimalEnv({ XDG_RUNTIME_DIR: dir, DENO_WEBGPU_BACKEND: "vulkan,gl" }),
    );
    await Deno.remove(dir);
    assert.equal(mine.code, 0, mine.stderr);
    assert.equal(mine.report.xdg, dir);
    assert.equal(mine.report.backend, "vulkan,gl");
  },
);

Deno.test(
  "tensor views at a byte offset: read, write, clear, copy, bind, overlap",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const { addForward, gemm } = await import("../kernels/mod.ts");
    const align = gpu.limits.minStorageBufferOffsetAlignment / 4; // f32 elements
    const total = 4 * align;
    const arena = gpu.tensor(new Float32Array(total).map((_, i) => i), { shape: [total] });
    const a = arena.slice(align, 6, [2, 3]);
    const b = arena.slice(2 * align, 6, [2, 3]);
    assert.equal(a.byteOffset, align * 4);
    assert.deepEqual([...await a.toArray()], [0, 1, 2, 3, 4, 5].map((i) => align + i));
    gpu.write(b, new Float32Array([1, 2, 3, 4, 5, 6]));
    assert.deepEqual([...await b.toArray()], [1, 2, 3, 4, 5, 6]);
    // A kernel binding whole views (addForward) and one binding ranges of them (gemm). Two views
    // of one buffer may both be read by a dispatch, not one read and one written: WebGPU's usage
    // rules take a written storage buffer as a whole (wgpu refuses it).
    const other = gpu.zeros([total]);
    const c = other.slice(3 * align, 6, [2, 3]);
    addForward({ y: c, a, b });
    assert.deepEqual([...await c.toArray()], [0, 1, 2, 3, 4, 5].map((i) => align + 2 * i + 1));
    const w = gpu.tensor(new Float32Array([1, 0, 0, 1, 1, 1]), { shape: [3, 2] });
    const out = gpu.empty([2, 2]);
    gemm({ c: out, a: b, b: w }, { m: 2, n: 2, k: 3 });
    assert.deepEqual([...await out.toArray()], [1 + 3, 2 + 3, 4 + 6, 5 + 6]);
    // Copy and clear touch the view's bytes only.
    gpu.copy(b, a);
    gpu.clear(b);
    const all = await arena.toArray();
    assert.deepEqual([...all.slice(align, align + 6)], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual([...all.slice(2 * align, 2 * align + 6)], [0, 0, 0, 0, 0, 0]);
    assert.equal(all[2 * align + 6], 2 * align + 6);
    assert.equal(all[align - 1], align - 1);
    // Overlap and in-place tests follow bytes, not buffers.
    assert.equal(a.overlaps(b), false);
    assert.equal(a.overlaps(arena), true);
    assert.equal(a.sameStart(a.reshape([6])), true);
    assert.equal(a.sameStart(arena), false);
    assert.throws(() => arena.slice(1, 4), /byteOffset 4 must be a non-negative multiple/);
    assert.throws(() => arena.slice(total - 2, 4), /outside/);
    for (const t of [a, b, c, w, out, arena, other]) t.dispose();
  },
);
