// GEMM throughput at the linear-layer shapes of the seed models (deno bench -A bench/gemm_bench.ts).
//
// Each iteration records `reps` GEMMs and waits once (a GPU wait costs ~11 ms on llvmpipe); the
// best GFLOP/s of each bench is printed at the end. AlexNet's fc layers run at batch 32 instead
// of d2l's 128 (one fc1 forward at batch 128 is 6.7 GFLOP, ~0.4 s on llvmpipe; the shapes per
// row of the batch are the same). A few benches compare kernel variants: the register-blocked
// kernel (auto tile), the same with 4x4 blocks, and the shared-memory kernel meant for GPUs.
// Rows marked [f16 ...] store operands as f16 (training's --precision f16: A and B f16, C f16
// for forward and dx products, f32 for weight gradients); the math is f32 either way.
import { getGpu } from "../gpu/mod.ts";
import { gemm, type GemmParams, type GemmTuning } from "../kernels/gemm/index.ts";

const gpu = await getGpu();
const results: [string, number][] = [];

function randomTensor(size: number, dtype: "f32" | "f16" = "f32") {
  const data = dtype === "f16" ? new Float16Array(size) : new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = Math.random() - 0.5;
  return gpu.tensor(data, { shape: [size] });
}

/** Storage types of A, B and C (bias stays f32). */
interface BenchDTypes {
  readonly a: "f32" | "f16";
  readonly b: "f32" | "f16";
  readonly c: "f32" | "f16";
}

function benchGemm(
  label: string,
  p: GemmParams,
  tuning: GemmTuning = {},
  dt: BenchDTypes = { a: "f32", b: "f32", c: "f32" },
): void {
  const batch = p.batch ?? 1;
  const a = randomTensor(batch * p.m * p.k, dt.a);
  const b = randomTensor(batch * p.k * p.n, dt.b);
  const c = gpu.empty([batch * p.m * p.n], { dtype: dt.c });
  const bias = p.batch === undefined ? randomTensor(p.n) : undefined;
  const flops = 2 * batch * p.m * p.n * p.k;
  const reps = Math.max(1, Math.min(1000, Math.round(4e9 / flops)));
  const ops = `${p.transA ? "T" : "N"}${p.transB ? "T" : "N"}`;
  const half = [dt.a, dt.b, dt.c].includes("f16")
    ? ` [f16 ${["a", "b", "c"].filter((o) => dt[o as keyof BenchDTypes] === "f16").join("")}]`
    : "";
  const name = `${label} ${p.m}x${p.n}x${p.k} ${ops}` +
    (tuning.variant || tuning.tile
      ? ` [${tuning.variant ?? "auto"}${tuning.tile ? ` ${tuning.tile.join("x")}` : ""}]`
      : "") +
    half;
  let best = Infinity;
  Deno.bench({
    name: `${name} (${reps}/sync)`,
    n: 3,
    warmup: 1,
    async fn() {
      const t0 = performance.now();
      for (let r = 0; r < reps; r++) gemm({ c, a, b, bias }, { ...p, ...tuning });
      await gpu.sync();
      best = Math.min(best, (performance.now() - t0) / reps);
      results.push([name, (flops / best) / 1e6]);
    },
  });
}

// LeNet at batch 256: fc1 400->120, fc2 120->84, fc3 84->10; forward y = x w^T, backward
// dx = dy w (NN) and dw = dy^T x (TN).
benchGemm("lenet fc1 fwd b256", { m: 256, n: 120, k: 400, transB: true });
benchGemm("lenet fc1 dx   b256", { m: 256, n: 400, k: 120 });
benchGemm("lenet fc1 dw   b256", { m: 120, n: 400, k: 256, transA: true });
benchGemm("lenet fc2 fwd b256", { m: 256, n: 84, k: 120, transB: true });
benchGemm("lenet fc3 fwd b256", { m: 256, n: 10, k: 84, transB: true });
// AlexNet / VGG fc layers (batch reduced to 32, see above).
benchGemm("alexnet fc1 fwd b32", { m: 32, n: 4096, k: 6400, transB: true });
benchGemm("alexnet fc1 dx   b32", { m: 32, n: 6400, k: 4096 });
benchGemm("alexnet fc1 dw   b32", { m: 4096, n: 6400, k: 32, transA: true });
benchGemm("alexnet fc2 fwd b32", { m: 32, n: 4096, k: 4096, transB: true });
benchGemm("alexnet fc3 fwd b32", { m: 32, n: 10, k: 4096, transB: true });
// ResNet-18 / GoogLeNet heads.
benchGemm("resnet fc fwd b256", { m: 256, n: 10, k: 512, transB: true });
// Variants on one shape: the register kernel (auto tile, then 4x4) and the shared-memory one.
benchGemm("square", { m: 512, n: 512, k: 512 });
benchGemm("square", { m: 512, n: 512, k: 512 }, { variant: "register", tile: [4, 4] });
benchGemm("square", { m: 512, n: 512, k: 512 }, { variant: "shared" });
benchGemm("alexnet fc2 fwd b32", { m: 32, n: 4096, k: 4096, transB: true }, {
  variant: "register",
  tile: [4, 4],
});
benchGemm("alexnet fc2 fwd b32", { m: 32, n: 4096, k: 4096, transB: true }, { variant: "shared" });
benchGemm("batched", { m: 64, n: 49, k: 576, batch: 32 });
// f16 storage at the same shapes as f32 rows above (forward/dx: all f16; dw: C f32).
const H16: BenchDTypes = { a: "f16", b: "f16", c: "f16" };
benchGemm("lenet fc1 fwd b256", { m: 256, n: 120, k: 400, transB: true }, {}, H16);
benchGemm("lenet fc1 dw   b256", { m: 120, n: 400, k: 256, transA: true }, {}, {
  a: "f16",
  b: "f16",
  c: "f32",
});
benchGemm("alexnet fc2 fwd b32", { m: 32, n: 4096, k: 4096, transB: true }, {}, H16);
benchGemm("square", { m: 512, n: 512, k: 512 }, {}, H16);
benchGemm("square", { m: 512, n: 512, k: 512 }, { variant: "shared" }, H16);

globalThis.addEventListener("unload", () => {
  const best = new Map<string, number>();
  for (const [name, g] of results) best.set(name, Math.max(best.get(name) ?? 0, g));
  console.log(`\nGEMM on ${gpu.description} (best of the timed iterations):`);
  for (const [name, g] of best) {
    console.log(`  ${name.padEnd(48)} ${g.toFixed(2).padStart(7)} GFLOP/s`);
  }
});
