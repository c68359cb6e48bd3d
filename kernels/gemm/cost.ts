/**
 * The cost model of GEMM planning: the register tile of the CPU kernel (`pickTile`, fit to
 * llvmpipe's timings) and the number of k-splits (`chooseSplitK`). Pure functions of the
 * dimensions and a few adapter facts.
 *
 * @module
 */

import { REGISTER_WG } from "./types.ts";

/** Shortest k-range per split on CPU adapters. */
const SPLIT_MIN_K_CPU = 1024;
/** Cost of one operand load in FMAs (fit to llvmpipe timings of square GEMMs). */
const LOAD_COST = 5;
/** Cost of one C store in FMAs. */
const STORE_COST = 12;

/**
 * The register block of the CPU kernel: as big as the problem fills (fewer loads per FMA), but
 * small enough not to waste most of a block on odd edges and to leave work for every core.
 *
 * @returns The tile `[tm, tn]` and its estimated cost (FMA equivalents).
 * @example
 * ```ts
 * import { pickTile } from "./cost.ts";
 * pickTile(256, 120, 400, 1, 4).tile; // [8, 16]
 * ```
 */
export function pickTile(
  m: number,
  n: number,
  k: number,
  batch: number,
  cores: number,
): { tile: [number, number]; cost: number } {
  const options: [number, number][] = [
    [16, 16],
    [8, 16],
    [16, 8],
    [8, 8],
    [4, 16],
    [4, 8],
    [8, 4],
    [4, 4],
    [2, 8],
    [2, 4],
    [1, 8],
    [1, 4],
  ];
  const W = REGISTER_WG;
  let best: [number, number] = [4, 4];
  let bestCost = Infinity;
  for (const [tm, tn] of options) {
    // The grid has at most 65535 workgroups per dimension.
    if (Math.ceil(m / (W * tm)) > 65535 || Math.ceil(n / (W * tn)) > 65535) continue;
    // llvmpipe runs the 8 threads of a workgroup row as one SIMD group: a group costs as much
    // as if all lanes were busy. Per k-step a thread does tm*tn FMAs and tm+tn loads (each
    // load costs about LOAD_COST FMAs), and each C element costs about STORE_COST FMAs.
    const simdGroups = Math.ceil(m / tm) * Math.ceil(n / (W * tn)) * batch;
    const perLane = tm * tn * (k * (1 + LOAD_COST * (tm + tn) / (tm * tn)) + STORE_COST);
    const workgroups = Math.ceil(m / (W * tm)) * Math.ceil(n / (W * tn)) * batch;
    // Too few workgroups leave cores idle, unless k is long enough for split-K to fill them.
    const balance = k >= 2 * SPLIT_MIN_K_CPU
      ? 1
      : Math.ceil(workgroups / cores) * cores / workgroups;
    const cost = simdGroups * perLane * balance;
    if (cost < bestCost * 0.98) {
      bestCost = cost;
      best = [tm, tn];
    }
  }
  return { tile: best, cost: bestCost };
}

/**
 * The k-splits of a pass: enough workgroups to fill the adapter (2 per core on CPU adapters, 256
 * elsewhere), each split at least `minK` long.
 *
 * @returns 1 (no split-K) or more.
 * @example
 * ```ts
 * import { chooseSplitK } from "./cost.ts";
 * chooseSplitK(4096, 1, 1, true, 4); // 4: 1 workgroup, 8 wanted, splits of 1024 k
 * ```
 */
export function chooseSplitK(
  k: number,
  groups: number,
  kAlign: number,
  isCpu: boolean,
  cores: number,
): number {
  const target = isCpu ? 2 * cores : 256;
  const minK = isCpu ? SPLIT_MIN_K_CPU : 256;
  if (groups >= target || k < 2 * minK) return 1;
  return Math.max(1, Math.min(Math.ceil(target / groups), Math.floor(k / minK), 64 * kAlign));
}
