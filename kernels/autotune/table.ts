/**
 * The per-adapter table of tuned kernel choices, its problem keys, and the recording hook of
 * `gemmStrided`. `gemmStrided` consults the table through {@linkcode tunedGemm}; the conv2d
 * runner reads it with {@linkcode activeTuningTable} and hands it to its pure planner
 * (`planConv2d`). The autotuner and the public API live in the other modules of this folder;
 * this one has no runtime imports, so the kernels can import it without a cycle.
 *
 * @module
 */

import type { Gpu } from "../../gpu/mod.ts";
import type { Conv2dGeometry } from "../_geometry.ts";
import type { GemmTuning, StridedGemm } from "../_types.ts";

/**
 * A tuned choice: the GEMM configuration to run (every knob resolved), or whether a conv2d pass
 * runs the direct kernel (`direct: true`) or im2col + GEMM (`false`), and for the direct kernel
 * whether its blocking search may use output-channel groups (`groups`; absent: the default,
 * `true`; stored only where the grouped and the plain blocking differ).
 */
export type TunedChoice =
  | { readonly op: "gemm"; readonly tuning: GemmTuning }
  | { readonly op: "conv2d"; readonly direct: boolean; readonly groups?: boolean };

/** The three passes of a convolution whose kernels are chosen separately. */
export type ConvPass = "forward" | "inputGrad" | "weightGrad";

/**
 * The tuned choices of one adapter, keyed by problem (see `TuningProblem.key`): `gemmStrided`
 * and the conv2d passes look their problem up here when the caller forced nothing, and fall back
 * to the cost model when it has no entry.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { tuningTable } from "@modern-cnn/webgpu/kernels";
 * const table = tuningTable(await getGpu());
 * console.log(table.size); // 0 until loaded or tuned
 * ```
 */
export class TuningTable {
  #entries = new Map<string, TunedChoice>();

  /**
   * The choice for a problem key, if tuned.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { tuningTable } from "@modern-cnn/webgpu/kernels";
   * tuningTable(await getGpu()).get("gemm:..."); // undefined
   * ```
   */
  get(key: string): TunedChoice | undefined {
    return this.#entries.get(key);
  }

  /**
   * Sets the choice of a problem key (the key's prefix must name the choice's op).
   *
   * @throws {TypeError} when the key does not start with `gemm:` / `conv2d:` as the choice says.
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { tuningTable } from "@modern-cnn/webgpu/kernels";
   * const gpu = await getGpu();
   * tuningTable(gpu).set("conv2d:forward:2,1,28,28,6,5,5,1,1,2,2,1,1,1", { op: "conv2d", direct: true });
   * ```
   */
  set(key: string, choice: TunedChoice): void {
    if (!key.startsWith(`${choice.op}:`)) {
      throw new TypeError(`tuningTable.set: key '${key}' does not belong to op '${choice.op}'`);
    }
    this.#entries.set(key, choice);
  }

  /**
   * Removes a problem's choice (the cost model decides again); returns whether there was one.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { tuningTable } from "@modern-cnn/webgpu/kernels";
   * tuningTable(await getGpu()).delete("gemm:..."); // false
   * ```
   */
  delete(key: string): boolean {
    return this.#entries.delete(key);
  }

  /**
   * Removes every choice.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { tuningTable } from "@modern-cnn/webgpu/kernels";
   * tuningTable(await getGpu()).clear();
   * ```
   */
  clear(): void {
    this.#entries.clear();
  }

  /**
   * Number of tuned problems.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { tuningTable } from "@modern-cnn/webgpu/kernels";
   * console.log(tuningTable(await getGpu()).size);
   * ```
   */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * The `[key, choice]` pairs, in insertion order.
   *
   * @example
   * ```ts
   * import { getGpu } from "@modern-cnn/webgpu/gpu";
   * import { tuningTable } from "@modern-cnn/webgpu/kernels";
   * for (const [key, choice] of tuningTable(await getGpu()).entries()) console.log(key, choice);
   * ```
   */
  entries(): IterableIterator<[string, TunedChoice]> {
    return this.#entries.entries();
  }
}

/** A GEMM operand range without its tensor: where it starts inside its binding, and its size. */
export interface RangeShape {
  /** Element offset of the range inside its binding. */
  readonly base: number;
  /** Elements in the range. */
  readonly count: number;
}

/** A recorded GEMM: the StridedGemm without tensors (enough to rebuild it on fresh tensors). */
export type GemmShape = Omit<StridedGemm, "a" | "b" | "c" | "bias"> & {
  readonly a: RangeShape;
  readonly b: RangeShape;
  readonly c: RangeShape;
  readonly bias?: RangeShape | undefined;
};

/** A problem seen while recording. */
export type Recorded =
  | { readonly op: "gemm"; readonly key: string; count: number; readonly g: GemmShape }
  | {
    readonly op: "conv2d";
    readonly key: string;
    count: number;
    readonly pass: ConvPass;
    readonly g: Conv2dGeometry;
  };

/** The tuning state of one Gpu. */
export interface TuningState {
  /** Its table. */
  readonly table: TuningTable;
  /** Where `gemmStrided` records its problems, while recording. */
  recorder: Map<string, Recorded> | null;
  /** While > 0 the table is not consulted (the tuner times the cost model's choices). */
  suspended: number;
}

const states = new WeakMap<Gpu, TuningState>();

/**
 * The tuning state of a Gpu, created on first use.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { tuningState } from "./table.ts";
 * tuningState(await getGpu()).table.size; // 0 until loaded or tuned
 * ```
 */
export function tuningState(gpu: Gpu): TuningState {
  let s = states.get(gpu);
  if (!s) states.set(gpu, s = { table: new TuningTable(), recorder: null, suspended: 0 });
  return s;
}

/**
 * The table a kernel's planner consults now: the Gpu's table, or `undefined` when it is empty or
 * while the tuner times the cost model's choices.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { activeTuningTable } from "./table.ts";
 * activeTuningTable(await getGpu()); // undefined until loaded or tuned
 * ```
 */
export function activeTuningTable(gpu: Gpu): TuningTable | undefined {
  const s = states.get(gpu);
  return s && s.suspended === 0 && s.table.size > 0 ? s.table : undefined;
}

/**
 * Drops the Gpu's kept step tapes (a `GpuRuntime`'s; other Gpus keep none): a replayed step
 * plans nothing, so it would neither report its problems to a recording nor pick up a changed
 * table.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { dropStepTapes } from "./table.ts";
 * dropStepTapes(await getGpu()); // the next training step is recorded again
 * ```
 */
export function dropStepTapes(gpu: Gpu): void {
  (gpu as Partial<{ dropTapes(): void }>).dropTapes?.();
}

function aligned(v: number | undefined): string {
  return (v ?? 0) % 4 === 0 ? "1" : "0";
}

/**
 * The table key of a strided GEMM: dimensions, transposes, whether C is read, the bias mode, the
 * store mapping, the fused activation, the operands read in segments (B's columns, A's and B's
 * k), and the alignment facts (multiples of 4) that decide its vectorized loads and stores.
 */
export function gemmKey(g: StridedGemm): string {
  const facts = [
    g.lda,
    g.strideA,
    g.a.base,
    g.ldb,
    g.strideB,
    g.b.base,
    g.ldc,
    g.ldcCol ?? 1,
    g.strideC,
    g.c.base,
    g.segment,
    g.segmentStride,
  ].map(aligned).join("") + ((g.ldcCol ?? 1) === 1 ? "1" : "0");
  return `gemm:${g.m}x${g.n}x${g.k}:b${g.batch}:${g.transA ? "t" : "n"}${g.transB ? "t" : "n"}` +
    `:beta${g.beta !== 0 ? 1 : 0}:bias-${g.biasMode}:${g.segment !== undefined ? "seg" : "rows"}` +
    `:al${facts}${g.activation ? `:${g.activation}` : ""}` +
    (g.segmentB !== undefined ? `:sb${aligned(g.segmentB)}${aligned(g.segmentStrideB)}` : "") +
    (g.segmentKA !== undefined ? `:ska${aligned(g.segmentKA)}${aligned(g.segmentStrideKA)}` : "") +
    (g.segmentKB !== undefined ? `:skb${aligned(g.segmentKB)}${aligned(g.segmentStrideKB)}` : "");
}

/**
 * The table key of one pass of a convolution.
 *
 * @example
 * ```ts
 * import { conv2dGeometry } from "../conv2d/geometry.ts";
 * import { convKey } from "./table.ts";
 * convKey(conv2dGeometry({ n: 2, cIn: 1, h: 28, w: 28, cOut: 6, kernel: 5, padding: 2 }), "forward");
 * // "conv2d:forward:2,1,28,28,6,5,5,1,1,2,2,1,1,1"
 * ```
 */
export function convKey(g: Conv2dGeometry, pass: ConvPass): string {
  const dims = [g.n, g.cIn, g.h, g.w, g.cOut, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw];
  return `conv2d:${pass}:${dims.join(",")},${g.groups}`;
}

function isEmpty(t: GemmTuning): boolean {
  return t.variant === undefined && t.tile === undefined && t.splitK === undefined &&
    t.swap === undefined;
}

/**
 * The hook of `gemmStrided`: when the caller forced nothing, records the problem (while
 * recording) and returns its tuned configuration, if any; else returns `tuning` unchanged.
 */
export function tunedGemm(gpu: Gpu, g: StridedGemm, tuning: GemmTuning): GemmTuning {
  if (!isEmpty(tuning)) return tuning;
  // The tuner times f32 operands: f16 problems keep the cost model's choice. So do problems
  // stored in row groups (a merged concatenation's GEMM): their second output tensor is the
  // caller's, released right after recording, so a recorded problem could not be replayed.
  if ([g.a, g.b, g.c].some((r) => r.tensor.dtype === "f16") || g.rowGroups) return tuning;
  const s = states.get(gpu);
  if (!s || (!s.recorder && (s.suspended > 0 || s.table.size === 0))) return tuning;
  const key = gemmKey(g);
  if (s.recorder) {
    const seen = s.recorder.get(key);
    if (seen) seen.count++;
    else {
      const range = (r: { base: number; count: number }): RangeShape => ({
        base: r.base,
        count: r.count,
      });
      const shape: GemmShape = {
        ...g,
        a: range(g.a),
        b: range(g.b),
        c: range(g.c),
        bias: g.bias ? range(g.bias) : undefined,
      };
      s.recorder.set(key, { op: "gemm", key, count: 1, g: shape });
    }
  }
  if (s.suspended > 0) return tuning;
  const e = s.table.get(key);
  return e?.op === "gemm" ? e.tuning : tuning;
}
