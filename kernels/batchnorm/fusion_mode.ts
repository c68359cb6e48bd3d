/**
 * The switches of the batch norm's two fusions with its neighbours, per runtime:
 *
 * - `batchStats`: the producer of a batch norm's input gathers its batch statistics as it stores
 *   it (`partials.ts`, `gemm/stats.ts`);
 * - `gradSums`: the producer of a batch norm's output gradient gathers the batch norm's gradient
 *   sums as it stores it (`grad_sums.ts`, `gemm/grad_sums.ts`).
 *
 * Each is `auto` (the planners decide by the adapter: on GPUs wherever a kernel can, on CPU
 * adapters only where measured no slower), or forced `on` or `off` (tests, benchmarks, the
 * side-by-side of `deno task gpu-report`). Without a call, the environment variables
 * `MODERN_CNN_BATCH_STATS` and `MODERN_CNN_GRAD_SUMS` (`on` / `off`) set the default where the
 * runtime may read them without asking.
 *
 * @module
 */

import type { Gpu } from "../../gpu/mod.ts";

/** Whether a fusion runs: decided per adapter by the planners (`auto`), or forced. */
export type FusionMode = "auto" | "on" | "off";

/** The batch norm's fusions with its producers (see the module's comment). */
export type BnFusion = "batchStats" | "gradSums";

const ENV: Readonly<Record<BnFusion, string>> = {
  batchStats: "MODERN_CNN_BATCH_STATS",
  gradSums: "MODERN_CNN_GRAD_SUMS",
};

const modes = new WeakMap<Gpu, Partial<Record<BnFusion, FusionMode>>>();
const fromEnv: Partial<Record<BnFusion, FusionMode>> = {};

/**
 * Forces `fusion` on `gpu` (`on` wherever a kernel can, `off` nowhere) or leaves it to the
 * planners (`auto`). It applies to what is recorded from then on: a trainer's kept step (replay)
 * goes on replaying the kernels it recorded until it records anew (a new batch size, precision or
 * image set).
 *
 * @returns The previous mode (to restore it).
 * @throws {RangeError} when `mode` is not `auto`, `on` or `off`.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bnFusionMode, setBnFusionMode } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const before = setBnFusionMode(gpu, "gradSums", "off");
 * bnFusionMode(gpu, "gradSums"); // "off"
 * setBnFusionMode(gpu, "gradSums", before);
 * ```
 */
export function setBnFusionMode(gpu: Gpu, fusion: BnFusion, mode: FusionMode): FusionMode {
  if (mode !== "auto" && mode !== "on" && mode !== "off") {
    throw new RangeError(
      `setBnFusionMode: ${fusion}'s mode must be "auto", "on" or "off", got ${mode}`,
    );
  }
  const before = bnFusionMode(gpu, fusion);
  modes.set(gpu, { ...modes.get(gpu), [fusion]: mode });
  return before;
}

/**
 * The mode of `fusion` on `gpu`: as set by {@linkcode setBnFusionMode}, else its environment
 * variable's, else `auto`.
 *
 * @returns The mode.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { bnFusionMode } from "@modern-cnn/webgpu/kernels";
 * bnFusionMode(await getGpu(), "batchStats"); // "auto" unless forced
 * ```
 */
export function bnFusionMode(gpu: Gpu, fusion: BnFusion): FusionMode {
  const set = modes.get(gpu)?.[fusion];
  if (set !== undefined) return set;
  return fromEnv[fusion] ??= _envMode(ENV[fusion]);
}

/** Variable `name`'s mode where the runtime may read it without asking (else `auto`). */
function _envMode(name: string): FusionMode {
  const deno = (globalThis as {
    Deno?: {
      env: { get(k: string): string | undefined };
      permissions?: { querySync?(d: { name: "env"; variable: string }): { state: string } };
    };
  }).Deno;
  try {
    if (deno?.permissions?.querySync?.({ name: "env", variable: name }).state !== "granted") {
      return "auto";
    }
    const env = deno.env.get(name);
    return env === "on" || env === "off" ? env : "auto";
  } catch {
    return "auto";
  }
}
