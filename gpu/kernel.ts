/**
 * What the runtime runs: a compute kernel ({@linkcode KernelSpec}, WGSL with one entry point) and
 * the workgroup counts of a flat launch ({@linkcode grid1d}). A leaf: it imports nothing.
 *
 * @module
 */

/**
 * A compute kernel: WGSL source with one entry point. The pipeline cache keys on `name` plus
 * `constants`, so a kernel whose WGSL is generated per specialization must put that
 * specialization into its `name` (e.g. `gemm_tn_64x64`).
 */
export interface KernelSpec {
  /** Unique name of this kernel and specialization; appears in every error about it. */
  readonly name: string;
  /** WGSL source. Convention: `Params` uniform at binding 0, storage buffers from binding 1. */
  readonly code: string;
  /**
   * The kernel's family: the name shared by all its specializations (a descriptor's name), for
   * profiles; default `name`.
   */
  readonly family?: string;
  /** Entry point; default `main`. */
  readonly entryPoint?: string;
  /** Values of WGSL `override` constants. */
  readonly constants?: Readonly<Record<string, number>>;
}

/**
 * Workgroup counts for `n` threads in workgroups of `wg`, split over x and y so that no dimension
 * exceeds 65535. In WGSL the flat index is `gid.x + gid.y * nwg.x * WG` (with
 * `@builtin(num_workgroups) nwg`), and threads with an index `>= n` must return.
 *
 * @example
 * ```ts
 * import { grid1d } from "@modern-cnn/webgpu/gpu";
 * grid1d(1000, 64); // [16, 1, 1]
 * grid1d(64 * 70000, 64); // [35000, 2, 1]
 * ```
 */
export function grid1d(n: number, wg: number): [number, number, number] {
  const groups = Math.ceil(n / wg);
  if (groups <= 65535) return [groups, 1, 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y, 1];
}
