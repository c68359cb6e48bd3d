// Safe on real GPUs (issue #17, section 2): every dispatch of every model's training step, at the
// seed recipe's batch and input size, fits the limits of the GPUs users have, and none runs long
// enough for a watchdog to kill it.
//
// Nothing here needs those GPUs: the step runs on a recording runtime (`tests/_dry_gpu.ts`) that
// presents an adapter as a limits record. The library's own code runs unchanged (the Trainer, the
// layers, the planners `planGemm` / `planConv2d` / the chunk plans, the kernel descriptors), so
// what is checked is exactly what a real GPU would be asked to do: each dispatch's WGSL
// (`var<workgroup>` bytes, `@workgroup_size`, storage bindings), its grid and the bytes of each
// binding, and the largest buffer any tensor needs. The shapes (VGG at 128x224x224) are far too
// large to run on llvmpipe; recording a step takes well under a second.
//
// The adapters:
// - WebGPU's default limits (the WebGPU spec, "Limits": 16 KiB workgroup storage, 256
//   invocations per workgroup, 256 x 256 x 64 per dimension, 65535 workgroups per dimension,
//   128 MiB per storage binding, 8 storage buffers per stage, 256 MiB buffers), as a GPU, and
//   as a CPU adapter (llvmpipe's kind: register GEMMs, direct convolutions);
// - a large GPU as Chrome exposes it: Dawn buckets adapter limits into tiers
//   (src/dawn/native/Limits.cpp), and on an NVIDIA GPU under Vulkan (maxStorageBufferRange
//   2^32 - 1, 48 KiB shared memory) reports the top ones: 4 GiB - 4 per binding, 4 GiB buffers,
//   1024 invocations (1024 x 1024 x 64), 32 KiB workgroup storage (the tier we assume; 48 KiB is
//   the driver's), 65535 workgroups per dimension.
//
// Dispatch time: browsers (Chrome's GPU watchdog) and operating systems (Windows' TDR: 2 s) kill
// long dispatches. The budget: 100 ms on a GPU of 10 TFLOP/s, i.e. 1e12 FLOP per dispatch. The
// FLOPs of a GEMM dispatch are 2·m·n·k·batch of its `Params` (the planner's k-passes and batch
// chunks bound each); the GPU profiles plan no direct convolution (asserted), so all of a
// convolution's arithmetic is in its GEMMs. The other kernels stream memory: their bound bytes
// must stay under 3 GB per dispatch (10 ms at 300 GB/s, a tenfold margin for the taps im2col and
// pooling re-read).
import assert from "node:assert/strict";
import { type AdapterProfile, WEBGPU_DEFAULT_PROFILE } from "../kernels/_adapter.ts";
import {
  createModel,
  DEFAULTS,
  MODEL_NAMES,
  type ModelName,
  type Precision,
  Trainer,
  uploadImageSet,
} from "../models/mod.ts";
import { type DryDispatch, dryGpu, workgroupSize, workgroupStorageBytes } from "./_dry_gpu.ts";

const GiB = 2 ** 30, MiB = 2 ** 20;

/** The WebGPU spec's per-dimension workgroup sizes and storage buffers per stage. */
const SPEC_EXTRA = {
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupSizeZ: 64,
  maxStorageBuffersPerShaderStage: 8,
  maxUniformBufferBindingSize: 65536,
};

/** An adapter: its profile and the limits beyond the profile's six. */
interface Adapter {
  readonly profile: AdapterProfile;
  readonly extra: Readonly<Record<keyof typeof SPEC_EXTRA, number>>;
}

const ADAPTERS: Readonly<Record<string, Adapter>> = {
  "WebGPU defaults (GPU)": { profile: WEBGPU_DEFAULT_PROFILE, extra: SPEC_EXTRA },
  "WebGPU defaults (CPU adapter)": {
    profile: {
      ...WEBGPU_DEFAULT_PROFILE,
      description: "llvmpipe with WebGPU's default limits",
      isCpu: true,
      mesaCpu: true,
    },
    extra: SPEC_EXTRA,
  },
  "Chrome on an NVIDIA GPU": {
    profile: {
      description: "NVIDIA GPU (Dawn's top limit tiers)",
      isCpu: false,
      mesaCpu: false,
      swiftShader: false,
      f16: true,
      cores: 16,
      limits: {
        maxStorageBufferBindingSize: 4 * GiB - 4,
        minStorageBufferOffsetAlignment: 256,
        maxBufferSize: 4 * GiB,
        maxComputeWorkgroupStorageSize: 32768,
        maxComputeInvocationsPerWorkgroup: 1024,
        maxComputeWorkgroupsPerDimension: 65535,
      },
    },
    extra: {
      ...SPEC_EXTRA,
      maxComputeWorkgroupSizeX: 1024,
      maxComputeWorkgroupSizeY: 1024,
      maxStorageBuffersPerShaderStage: 10,
    },
  },
};

/** What one recorded training step asked of its adapter. */
interface Step {
  readonly dispatches: readonly DryDispatch[];
  /** The largest buffer any tensor of the run needed. */
  readonly largestBuffer: number;
}

const steps = new Map<string, Promise<Step>>();

/** One training step of `name` at its seed recipe (batch, resize), recorded on `adapter`. */
function recordStep(adapter: string, name: ModelName, precision: Precision): Promise<Step> {
  const key = `${adapter}|${name}|${precision}`;
  let s = steps.get(key);
  if (!s) {
    s = (async () => {
      const { profile, extra } = ADAPTERS[adapter];
      const gpu = dryGpu(profile, extra);
      const r = DEFAULTS[name];
      const model = createModel(gpu, { name });
      const trainer = new Trainer(model, {
        lr: r.lr,
        batchSize: r.batchSize,
        resize: r.resize,
        precision,
      });
      const n = r.batchSize;
      const set = uploadImageSet(gpu, {
        images: new Uint8Array(n * 28 * 28),
        labels: new Uint8Array(n),
        count: n,
        channels: 1,
        height: 28,
        width: 28,
      });
      await trainer.trainEpoch(set, { epoch: 0 });
      return { dispatches: gpu.dispatches, largestBuffer: gpu.largestBuffer };
    })();
    steps.set(key, s);
  }
  return s;
}

/** Whether a dispatch is a GEMM product (register or shared family): FLOPs from its Params. */
function gemmFlops(d: DryDispatch): number | undefined {
  const p = d.params;
  if (!/^gemm_(reg|smem)/.test(d.kernel.name)) return undefined;
  assert.ok(
    ["m", "n", "k", "batch"].every((f) => Number.isInteger(p[f])),
    `${d.kernel.name}: Params without m, n, k, batch`,
  );
  return 2 * p.m * p.n * p.k * p.batch;
}

/** Every way `d` exceeds `adapter`'s limits (empty when it fits). */
function violations(d: DryDispatch, adapter: Adapter): string[] {
  const l = { ...adapter.extra, ...adapter.profile.limits };
  const out: string[] = [];
  const code = d.kernel.code;
  const shared = workgroupStorageBytes(code);
  if (shared > l.maxComputeWorkgroupStorageSize) {
    out.push(`${shared} bytes of workgroup storage > ${l.maxComputeWorkgroupStorageSize}`);
  }
  const size = workgroupSize(code);
  const invocations = size[0] * size[1] * size[2];
  if (invocations > l.maxComputeInvocationsPerWorkgroup) {
    out.push(`${invocations} invocations > ${l.maxComputeInvocationsPerWorkgroup}`);
  }
  const perDim = [
    l.maxComputeWorkgroupSizeX,
    l.maxComputeWorkgroupSizeY,
    l.maxComputeWorkgroupSizeZ,
  ];
  size.forEach((s, i) => {
    if (s > perDim[i]) out.push(`workgroup size ${size} > ${perDim} in dimension ${i}`);
  });
  d.workgroups.forEach((w, i) => {
    if (w > l.maxComputeWorkgroupsPerDimension) {
      out.push(`${w} workgroups in dimension ${i} > ${l.maxComputeWorkgroupsPerDimension}`);
    }
  });
  d.bindingBytes.forEach((b, i) => {
    if (b > l.maxStorageBufferBindingSize) {
      out.push(`binding ${i}: ${b} bytes > ${l.maxStorageBufferBindingSize}`);
    }
  });
  const storage = [...code.matchAll(/var<storage\b/g)].length;
  if (storage > l.maxStorageBuffersPerShaderStage) {
    out.push(`${storage} storage buffers > ${l.maxStorageBuffersPerShaderStage}`);
  }
  if (d.paramBytes > l.maxUniformBufferBindingSize) {
    out.push(`${d.paramBytes} bytes of Params > ${l.maxUniformBufferBindingSize}`);
  }
  return out;
}

/** The largest value of `f` over a step's dispatches, with the kernel that has it. */
function largest(step: Step, f: (d: DryDispatch) => number): [number, string] {
  let best: [number, string] = [0, "-"];
  for (const d of step.dispatches) {
    const v = f(d);
    if (v > best[0]) best = [v, d.kernel.name];
  }
  return best;
}

Deno.test("limits: the WGSL readers see workgroup storage and sizes through constants", () => {
  const code = "const WG = 64u;\nconst BK: u32 = 16;\n" +
    "var<workgroup> red: array<vec2f, WG>;\nvar<workgroup> t: array<array<f32, BK>, 4>;\n" +
    "var<workgroup> h: array<f16, 6>;\n@compute @workgroup_size(WG, 2)\nfn main() {}";
  assert.equal(workgroupStorageBytes(code), 64 * 8 + 16 * 4 * 4 + 12);
  assert.deepEqual(workgroupSize(code), [64, 2, 1]);
  assert.equal(workgroupStorageBytes("@compute @workgroup_size(1) fn main() {}"), 0);
});

for (const [label, adapter] of Object.entries(ADAPTERS)) {
  Deno.test(`limits: every dispatch of every model's seed step fits ${label}`, async () => {
    const failures: string[] = [];
    const rows: string[] = [];
    for (const name of MODEL_NAMES) {
      for (const precision of ["f32", "f16"] as const) {
        const step = await recordStep(label, name, precision);
        assert.ok(step.dispatches.length > 0, `${name}: no dispatch recorded`);
        for (const d of step.dispatches) {
          for (const v of violations(d, adapter)) {
            failures.push(`${name} ${precision} ${d.kernel.name}: ${v}`);
          }
        }
        const maxBuffer = adapter.profile.limits.maxBufferSize;
        // WebGPU's default 256 MiB buffers hold every step but VGG's in f32, whose first
        // activation (128 x 16 x 224 x 224 floats, 392 MiB) is larger than one such buffer may be:
        // a capacity limit of the device (a smaller batch runs there), not of a plan.
        const capacity = precision === "f32" && maxBuffer < GiB && name === "vgg";
        if (step.largestBuffer > maxBuffer && !capacity) {
          failures.push(`${name} ${precision}: a ${step.largestBuffer}-byte buffer > ${maxBuffer}`);
        }
        const [wgMem] = largest(step, (d) => workgroupStorageBytes(d.kernel.code));
        const [inv] = largest(step, (d) => workgroupSize(d.kernel.code).reduce((a, b) => a * b));
        const [grid] = largest(step, (d) => Math.max(...d.workgroups));
        const [bind] = largest(step, (d) => Math.max(0, ...d.bindingBytes));
        rows.push(
          `${name.padEnd(12)} ${precision} ${String(step.dispatches.length).padStart(5)} ` +
            `${String(wgMem).padStart(6)} ${String(inv).padStart(5)} ${String(grid).padStart(6)} ` +
            `${(bind / MiB).toFixed(1).padStart(7)} ${
              (step.largestBuffer / MiB).toFixed(1).padStart(7)
            }`,
        );
      }
    }
    console.log(
      `${label}\nmodel        prec  disp wgmem   inv   grid bindMiB  bufMiB\n${rows.join("\n")}`,
    );
    assert.deepEqual(failures, [], `${failures.length} limits exceeded:\n${failures.join("\n")}`);
  });
}

for (const label of ["WebGPU defaults (GPU)", "Chrome on an NVIDIA GPU"]) {
  Deno.test(`dispatch time: no dispatch of a seed step over 100 ms at 10 TFLOP/s (${label})`, async () => {
    const FLOP_BUDGET = 1e12; // 100 ms at 10 TFLOP/s
    const BYTE_BUDGET = 3e9; // 10 ms at 300 GB/s
    const failures: string[] = [];
    const rows: string[] = [];
    for (const name of MODEL_NAMES) {
      for (const precision of ["f32", "f16"] as const) {
        const step = await recordStep(label, name, precision);
        const direct = step.dispatches.filter((d) => d.kernel.name.startsWith("conv2d_direct"));
        assert.equal(direct.length, 0, `${name}: a GPU profile planned direct convolutions`);
        let total = 0;
        for (const d of step.dispatches) {
          const flops = gemmFlops(d);
          if (flops !== undefined) {
            total += flops;
            if (flops > FLOP_BUDGET) {
              failures.push(
                `${name} ${precision} ${d.kernel.name}: ${flops.toExponential(2)} FLOP`,
              );
            }
          } else {
            const bytes = d.bindingBytes.reduce((a, b) => a + b, 0);
            if (bytes > BYTE_BUDGET) {
              failures.push(`${name} ${precision} ${d.kernel.name}: binds ${bytes} bytes`);
            }
          }
        }
        const [flops, kernel] = largest(step, (d) => gemmFlops(d) ?? 0);
        assert.ok(total > 0, `${name}: no GEMM dispatch recorded`);
        rows.push(
          `${name.padEnd(12)} ${precision} ${(total / 1e9).toFixed(1).padStart(8)} ` +
            `${(flops / 1e9).toFixed(2).padStart(8)} ${(flops / 1e10).toFixed(2).padStart(7)}  ` +
            kernel,
        );
      }
    }
    console.log(
      `${label}\nmodel        prec  GFLOP/step  max GFLOP/dispatch  ms@10TF  kernel\n` +
        rows.join("\n"),
    );
    assert.deepEqual(
      failures,
      [],
      `${failures.length} dispatches over budget:\n${failures.join("\n")}`,
    );
  });
}
