/**
 * What the kernel planners know about an adapter: a plain, readonly record built once per `Gpu`
 * ({@linkcode adapterProfile}), so that planning (`planGemm`, `planConv2d`) is a pure function of
 * a problem, a profile and a tuning table, and tests can plan for adapters they do not have
 * (WebGPU's default limits, {@linkcode WEBGPU_DEFAULT_PROFILE}).
 *
 * A leaf of the kernels' module graph (it imports only types of `gpu/`). Private to `kernels/`.
 *
 * @module
 */

import type { Gpu } from "../gpu/mod.ts";

/** The adapter limits the planners respect (a subset of `GPUSupportedLimits`). */
export interface AdapterLimits {
  /** Largest storage binding, bytes. */
  readonly maxStorageBufferBindingSize: number;
  /** Alignment of a storage binding's offset, bytes. */
  readonly minStorageBufferOffsetAlignment: number;
  /** Largest buffer, bytes. */
  readonly maxBufferSize: number;
  /** Workgroup (`var<workgroup>`) memory per workgroup, bytes. */
  readonly maxComputeWorkgroupStorageSize: number;
  /** Invocations per workgroup. */
  readonly maxComputeInvocationsPerWorkgroup: number;
  /** Workgroups per dispatch dimension. */
  readonly maxComputeWorkgroupsPerDimension: number;
}

/**
 * Storage buffers per shader stage that every WebGPU device offers (the spec's default of
 * `maxStorageBuffersPerShaderStage`): no kernel binds more, whatever the device was given.
 */
export const MIN_STORAGE_BUFFERS = 8;

/** An adapter as the planners see it. */
export interface AdapterProfile {
  /** The adapter's description (`llvmpipe (LLVM 19.1.7, 256 bits)`, `NVIDIA H100 ...`). */
  readonly description: string;
  /** A CPU adapter (llvmpipe, lavapipe, SwiftShader, WARP): costs follow SIMD lanes, not warps. */
  readonly isCpu: boolean;
  /** Mesa's CPU adapters (llvmpipe, lavapipe), whose costs the direct conv kernels follow. */
  readonly mesaCpu: boolean;
  /** SwiftShader (Chromium's CPU adapter). */
  readonly swiftShader: boolean;
  /** Whether `shader-f16` is available. */
  readonly f16: boolean;
  /**
   * Cores of the machine running a CPU adapter (its invocations run on them): cost models keep
   * every core busy. `navigator.hardwareConcurrency`, 4 where the runtime does not say.
   */
  readonly cores: number;
  /** Its limits. */
  readonly limits: AdapterLimits;
}

const MESA_CPU = /llvmpipe|lavapipe/i;
const SWIFTSHADER = /swiftshader/i;

const profiles = new WeakMap<Gpu, AdapterProfile>();

/**
 * The profile of a runtime's adapter (built once per `Gpu`).
 *
 * @returns The adapter's description, kind and limits.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "./_adapter.ts";
 * const p = adapterProfile(await getGpu());
 * console.log(p.mesaCpu, p.limits.maxComputeWorkgroupStorageSize); // true 32768 on llvmpipe
 * ```
 */
export function adapterProfile(gpu: Gpu): AdapterProfile {
  let p = profiles.get(gpu);
  if (p === undefined) {
    const l = gpu.limits;
    p = Object.freeze({
      description: gpu.description,
      isCpu: gpu.isCpu,
      mesaCpu: gpu.isCpu && MESA_CPU.test(gpu.description),
      swiftShader: SWIFTSHADER.test(gpu.description),
      f16: gpu.features.f16,
      cores: Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 4),
      limits: Object.freeze({
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        minStorageBufferOffsetAlignment: l.minStorageBufferOffsetAlignment,
        maxBufferSize: l.maxBufferSize,
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      }),
    });
    profiles.set(gpu, p);
  }
  return p;
}

/**
 * A GPU with exactly WebGPU's default limits (16 KiB workgroup storage, 256 invocations, 128 MiB
 * bindings, 256 MiB buffers): what every plan must fit.
 *
 * @example
 * ```ts
 * import { WEBGPU_DEFAULT_PROFILE } from "./_adapter.ts";
 * console.log(WEBGPU_DEFAULT_PROFILE.limits.maxComputeWorkgroupStorageSize); // 16384
 * ```
 */
export const WEBGPU_DEFAULT_PROFILE: AdapterProfile = Object.freeze({
  description: "WebGPU default limits",
  isCpu: false,
  mesaCpu: false,
  swiftShader: false,
  f16: true,
  cores: 4,
  limits: Object.freeze({
    maxStorageBufferBindingSize: 128 * 1024 * 1024,
    minStorageBufferOffsetAlignment: 256,
    maxBufferSize: 256 * 1024 * 1024,
    maxComputeWorkgroupStorageSize: 16384,
    maxComputeInvocationsPerWorkgroup: 256,
    maxComputeWorkgroupsPerDimension: 65535,
  }),
});

/**
 * The most f32 elements one storage binding may span under `limits`, less one alignment unit (so
 * that a range starting anywhere still fits): `maxBindingElements` of `_binding.ts` for a profile.
 *
 * @returns An element count.
 * @example
 * ```ts
 * import { bindingElements, WEBGPU_DEFAULT_PROFILE } from "./_adapter.ts";
 * console.log(bindingElements(WEBGPU_DEFAULT_PROFILE.limits)); // 33554364 (128 MiB)
 * ```
 */
export function bindingElements(
  limits: Pick<AdapterLimits, "maxStorageBufferBindingSize" | "minStorageBufferOffsetAlignment">,
): number {
  const align = limits.minStorageBufferOffsetAlignment;
  return Math.floor((limits.maxStorageBufferBindingSize - align - 16) / 4);
}
