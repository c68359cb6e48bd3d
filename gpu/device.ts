/**
 * Acquiring the runtime: {@linkcode requestGpu} asks for an adapter and a device with raised
 * limits and returns the {@linkcode Gpu} around them, {@linkcode getGpu} shares one per process,
 * and {@linkcode shutdownGpu} releases every runtime before the process exits.
 *
 * The runtime's parts: `tensor.ts` (the `Tensor` and `Gpu` types), `runtime.ts` (the `Gpu` that
 * `requestGpu` returns: tensors and lifetimes), `recorder.ts` (pipelines, batched recording,
 * submits, readbacks, errors), `environment.ts` (what Deno's WebGPU reads from the environment),
 * `pool.ts`, `kernel.ts`, `shape.ts` and `errors.ts`.
 *
 * @module
 */

import { BACKEND_VAR, prepareDenoEnvironment, restrictedToVulkan } from "./environment.ts";
import { NoAdapterError } from "./errors.ts";
import { GpuRuntime, liveRuntimes } from "./runtime.ts";
import type { Gpu } from "./tensor.ts";

/** Options of {@linkcode requestGpu}. */
export interface RequestGpuOptions {
  /** Adapter preference; default `high-performance`. */
  readonly powerPreference?: GPUPowerPreference;
  /** The WebGPU entry point; default `navigator.gpu`. Tests pass a fake to simulate no adapter. */
  readonly gpu?: Pick<GPU, "requestAdapter"> | undefined;
  /** Log a line per uncaptured error to the console as well as raising it; default false. */
  readonly verbose?: boolean;
}

/** Limits raised to the adapter's maximum: what training large models needs. */
const RAISED_LIMITS = [
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupStorageSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxUniformBufferBindingSize",
  "maxBindingsPerBindGroup",
] as const;

/**
 * Acquires a WebGPU adapter and device and returns the runtime around them.
 *
 * @throws {NoAdapterError} when WebGPU or an adapter is unavailable, saying how to get one.
 * @example
 * ```ts
 * import { requestGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await requestGpu();
 * console.log(gpu.description); // e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"
 * ```
 */
export async function requestGpu(options: RequestGpuOptions = {}): Promise<Gpu> {
  const entry = "gpu" in options
    ? options.gpu
    : (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!entry) throw new NoAdapterError("navigator.gpu is undefined: this runtime has no WebGPU");
  prepareDenoEnvironment();
  let adapter: GPUAdapter | null;
  try {
    adapter = await entry.requestAdapter({
      powerPreference: options.powerPreference ?? "high-performance",
    });
  } catch (err) {
    throw new NoAdapterError(`requestAdapter() failed: ${(err as Error).message}`);
  }
  if (!adapter) {
    throw new NoAdapterError(
      "navigator.gpu.requestAdapter() returned null" +
        (restrictedToVulkan()
          ? `; ${BACKEND_VAR} was unset, so this library set it to 'vulkan' (Deno's OpenGL ` +
            `backend crashes at exit); set ${BACKEND_VAR}=gl to try OpenGL instead`
          : ""),
    );
  }
  const requiredLimits: Record<string, number> = {};
  const adapterLimits = adapter.limits as unknown as Record<string, number>;
  for (const name of RAISED_LIMITS) {
    const v = adapterLimits[name];
    if (typeof v === "number") requiredLimits[name] = v;
  }
  const requiredFeatures: GPUFeatureName[] = [];
  for (const f of ["shader-f16", "timestamp-query"] as GPUFeatureName[]) {
    if (adapter.features.has(f)) requiredFeatures.push(f);
  }
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  return new GpuRuntime(adapter, device, { verbose: options.verbose ?? false });
}

let defaultGpu: Promise<Gpu> | undefined;

/**
 * The process-wide runtime, created on first use with {@linkcode requestGpu}'s defaults.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await getGpu();
 * console.log(gpu === await getGpu()); // true
 * ```
 */
export function getGpu(): Promise<Gpu> {
  defaultGpu ??= requestGpu().catch((err) => {
    defaultGpu = undefined;
    throw err;
  });
  return defaultGpu;
}

/**
 * Releases every GPU runtime of this process: the one {@linkcode getGpu} made and any other
 * {@linkcode Gpu} not yet destroyed. Each waits for its submitted work, then destroys its buffers
 * and its device ({@linkcode Gpu.close}). Call it once at the end of a command, before exiting:
 * `await shutdownGpu(); Deno.exit(code);`. A later `getGpu()` acquires a new device.
 *
 * @example
 * ```ts
 * import { getGpu, shutdownGpu } from "@modern-cnn/webgpu/gpu";
 * const gpu = await getGpu();
 * console.log(await gpu.tensor(new Float32Array([1, 2]), { shape: [2] }).toArray());
 * await shutdownGpu();
 * ```
 */
export async function shutdownGpu(): Promise<void> {
  const pending = defaultGpu;
  defaultGpu = undefined;
  // A getGpu() still acquiring its device would otherwise construct a Gpu after the sweep.
  if (pending) await pending.catch(() => undefined);
  const gpus = [...liveRuntimes].map((ref) => ref.deref()).filter((g) => g !== undefined);
  liveRuntimes.clear();
  await Promise.all(gpus.map((gpu) => gpu.close()));
}
