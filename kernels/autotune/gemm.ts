/**
 * Tuning a strided GEMM ({@linkcode tuneGemm}): its candidates (family, orientation, register
 * tile, split-K) timed on fresh tensors of the recorded problem's sizes, bound at its recorded
 * offsets.
 *
 * @module
 */

import type { Gpu } from "../../gpu/mod.ts";
import { bindingRange } from "../_binding.ts";
import { adapterProfile } from "../_adapter.ts";
import {
  type GemmPlan,
  gemmProblem,
  gemmStrided,
  type GemmTuning,
  planGemm,
  type StridedGemm,
} from "../gemm/index.ts";
import { formatChoice } from "./problems.ts";
import type { TuningProblem } from "./problems.ts";
import type { GemmShape } from "./table.ts";
import {
  filled,
  finishSearch,
  type Internal,
  noise,
  startSearch,
  type Timing,
  tryCandidates,
  type Workload,
} from "./timing.ts";

/** Elements a strided GEMM operand spans from its base. */
function extents(g: GemmShape): { a: number; b: number; c: number; bias: number } {
  const { m, n, k, batch } = g;
  const kk = Math.max(k, 1);
  // The element of the last k of a row of A (of a column of B^T), in k segments or not.
  const lastK = (seg: number | undefined, stride: number | undefined) =>
    seg === undefined ? kk - 1 : Math.floor((kk - 1) / seg) * (stride ?? 0) + (kk - 1) % seg;
  const a = (batch - 1) * g.strideA +
    (g.transA ? (kk - 1) * g.lda + m : (m - 1) * g.lda + lastK(g.segmentKA, g.segmentStrideKA) + 1);
  const bLast = g.segmentB !== undefined // B's last column
    ? Math.floor((n - 1) / g.segmentB) * (g.segmentStrideB ?? 0) + (n - 1) % g.segmentB
    : n - 1;
  const b = (batch - 1) * g.strideB +
    (g.transB
      ? (n - 1) * g.ldb + lastK(g.segmentKB, g.segmentStrideKB) + 1
      : (kk - 1) * g.ldb + bLast + 1);
  const c = (batch - 1) * g.strideC +
    (g.segment !== undefined
      ? Math.floor((n - 1) / g.segment) * (g.segmentStride ?? 0) + (m - 1) * g.ldc +
        (n - 1) % g.segment + 1
      : (m - 1) * g.ldc + (n - 1) * (g.ldcCol ?? 1) + 1);
  const bias = (batch - 1) * (g.strideBias ?? 0) + (g.biasMode === "row" ? m : n);
  return { a, b, c, bias };
}

/** Fresh tensors for a recorded GEMM, bound at the recorded offsets. */
function gemmWorkload(
  gpu: Gpu,
  shape: GemmShape,
): Workload<GemmTuning> & { readonly g: StridedGemm } {
  const ext = extents(shape);
  const make = (r: { base: number; count: number }, extent: number, seed: number) => {
    const count = Math.max(r.count, extent);
    const size = Math.ceil((r.base + count) / 4) * 4 + 4;
    const t = filled(gpu, [size], seed);
    return { t, range: bindingRange(t, r.base, count) };
  };
  const a = make(shape.a, ext.a, 1), b = make(shape.b, ext.b, 2), c = make(shape.c, ext.c, 3);
  const bias = shape.bias ? make(shape.bias, ext.bias, 4) : undefined;
  const c0 = shape.beta !== 0 ? noise(c.t.size, 3) : null;
  const g: StridedGemm = {
    ...shape,
    a: a.range,
    b: b.range,
    c: c.range,
    bias: bias?.range,
  };
  return {
    g,
    base: {},
    run: (cand) => gemmStrided(gpu, g, cand),
    outputs: [c.t],
    reset: () => {
      if (c0) gpu.write(c.t, c0);
    },
    dispose: () => {
      for (const x of [a, b, c, bias]) x?.t.dispose();
    },
  };
}

function fullTuning(plan: GemmPlan): GemmTuning {
  return plan.variant === "shared"
    ? { variant: "shared", splitK: plan.splitK }
    : { variant: "register", tile: plan.tile, swap: plan.swap, splitK: plan.splitK };
}

/** The register tiles' TM values (rows per thread). */
export const TM = [1, 2, 4, 8, 16];
/** The register tiles' TN values (columns per thread). */
export const TN = [4, 8, 16];

/**
 * Tunes one recorded GEMM: the cost model's pick against the other orientation, the
 * neighbouring register tiles, other split counts and the shared-memory family.
 */
export async function tuneGemm(
  gpu: Gpu,
  p: TuningProblem,
  shape: GemmShape,
  t: Timing,
): Promise<Internal> {
  const w = gemmWorkload(gpu, shape);
  try {
    const resolve = (c: GemmTuning): GemmTuning | null => {
      try {
        return fullTuning(planGemm(gemmProblem(w.g), adapterProfile(gpu), c));
      } catch {
        return null;
      }
    };
    const sig = (c: GemmTuning) => {
      const full = resolve(c);
      return full ? formatChoice({ op: "gemm", tuning: full }) : null;
    };
    const base = resolve({})!;
    const costModel = formatChoice({ op: "gemm", tuning: base });
    const session = await startSearch(gpu, p, w, t, costModel);
    if (!("search" in session)) return session;
    const { b, search } = session;
    const step = (c: GemmTuning[]) => tryCandidates(gpu, w, c, sig, search, b.reps, b.outputs, t);
    // 1. Family and orientation (each with the cost model's tile and splits).
    await step([
      { variant: "register", swap: false },
      ...(shape.segment === undefined ? [{ variant: "register", swap: true } as const] : []),
      { variant: "shared" },
    ]);
    // 2. Register tiles next to the best one so far (same orientation).
    const best = () => resolve(search.best.tuning)!;
    const b1 = best();
    if (b1.variant === "register") {
      const [tm, tn] = b1.tile!;
      const tiles: [number, number][] = [
        [tm * 2, tn],
        [tm / 2, tn],
        [tm, tn * 2],
        [tm, tn / 2],
        [tm * 2, tn / 2],
        [tm / 2, tn * 2],
        [tm * 2, tn * 2],
        [tm / 2, tn / 2],
      ];
      await step(
        tiles.filter(([x, y]) => TM.includes(x) && TN.includes(y)).map((tile) => ({
          variant: "register",
          swap: b1.swap,
          tile,
        })),
      );
    }
    // 3. Split counts around the best one's.
    const b2 = best();
    if (shape.k >= 256) {
      const s = b2.splitK ?? 1;
      const splits = [...new Set([1, 2, s * 2, s * 4, Math.floor(s / 2)])].filter((x) => x >= 1);
      await step(splits.map((splitK) => ({ ...b2, splitK })));
    }
    return await finishSearch(gpu, w, session, t, () => ({
      op: "gemm",
      tuning: resolve(search.best.tuning)!,
    }));
  } finally {
    w.dispose();
  }
}
