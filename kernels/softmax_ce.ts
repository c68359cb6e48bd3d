/**
 * Fused softmax cross-entropy (`nn.CrossEntropyLoss(reduction="mean", label_smoothing=eps)`)
 * with its gradient, the summed loss and the count of correct predictions, plus the eval-time
 * accuracy count.
 *
 * Rows are split over workgroups of 256 threads: thread `t` of a workgroup handles rows
 * `t, t + WG, t + 2 WG, ...` of the workgroup's block (numerically stable: max subtraction,
 * log-sum-exp), then the workgroup tree-reduces the per-thread loss and hit counts. Blocks hold
 * as many rows as keep each thread's loops (about `3c` iterations per row) well under llvmpipe's
 * silent cap of 65535 loop iterations per invocation. With a single workgroup (the classifier
 * head of the seed models: up to ~120k rows of 10 classes) thread 0 adds the sums to `lossSum`
 * and `correct`; otherwise the workgroups write partial sums and a second single-workgroup pass
 * adds them (WGSL has no float atomics). The summation order is fixed, so results are
 * deterministic. Logits larger than one storage binding are processed in ranges of rows, one
 * dispatch per range. At most 16384 classes.
 *
 * Labels outside `[0, c)` (e.g. -100, PyTorch's default `ignore_index`) are ignored: their row
 * gets a zero gradient, adds 0 to the loss and is never counted correct (the mean is still
 * taken over all n rows).
 *
 * Logits and dlogits are f32 or f16, each independently; the arithmetic is f32 (f16 logits are
 * converted on load, f16 gradients rounded once on store), the sums `lossSum` (f32) and
 * `correct` (u32) are unchanged. With a loss scaler's state (`lossScale`, see `loss_scale.ts`)
 * the gradient is multiplied by the current scale, read on the GPU, before it is rounded.
 *
 * @module
 */

import { formatShape, type Tensor } from "../gpu/mod.ts";
import { bindingLimit, bindingRange, LOOP_BUDGET, unitRanges } from "./_binding.ts";
import { floatDType } from "./_dtype.ts";
import { defineKernel } from "./_kernel.ts";
import { checkLossScale } from "./loss_scale.ts";

/** Threads of the single workgroup. */
const WG = 256;

/** Params of {@linkcode softmaxCrossEntropy}. */
export interface SoftmaxCrossEntropyParams {
  /** Rows (batch size). */
  readonly n: number;
  /** Classes. */
  readonly c: number;
  /** Label smoothing `eps` in [0, 1]; default 0. */
  readonly labelSmoothing?: number;
}

/** Params of {@linkcode accuracyCount}. */
export interface AccuracyParams {
  /** Rows (batch size). */
  readonly n: number;
  /** Classes. */
  readonly c: number;
}

function describe(t: Tensor): string {
  return `${formatShape(t.shape)} (${t.dtype})`;
}

/**
 * Validates the sizes, dtypes and params of {@linkcode softmaxCrossEntropy} /
 * {@linkcode accuracyCount}; returns the logits shape `[n, c]`.
 *
 * @returns `[n, c]`.
 * @throws {RangeError} for bad `n`, `c` or label smoothing.
 * @throws {TypeError} for mismatched sizes or dtypes.
 * @example
 * ```ts
 * import { checkSoftmaxCrossEntropy } from "@modern-cnn/webgpu/kernels";
 * checkSoftmaxCrossEntropy("softmaxCrossEntropy", { n: 256, c: 10 }); // [256, 10]
 * ```
 */
export function checkSoftmaxCrossEntropy(
  op: string,
  p: SoftmaxCrossEntropyParams,
  io?: {
    dlogits?: Tensor;
    lossSum?: Tensor;
    correct: Tensor;
    logits: Tensor;
    labels: Tensor;
    lossScale?: Tensor;
  },
): [number, number] {
  if (!Number.isInteger(p.n) || p.n < 0) {
    throw new RangeError(`${op}: n must be an integer >= 0, got ${p.n}`);
  }
  if (!Number.isInteger(p.c) || p.c < 1) {
    throw new RangeError(`${op}: c must be an integer >= 1, got ${p.c}`);
  }
  const eps = p.labelSmoothing ?? 0;
  if (typeof eps !== "number" || !(eps >= 0 && eps <= 1)) {
    throw new RangeError(`${op}: labelSmoothing must be in [0, 1], got ${eps}`);
  }
  if (io) {
    const { logits, labels, correct } = io;
    const nc = p.n * p.c;
    floatDType(op, "logits", logits);
    if (logits.size !== nc) {
      throw new TypeError(
        `${op}: logits has shape ${describe(logits)}, expected ${logits.dtype} [${p.n}, ${p.c}]`,
      );
    }
    if (labels.dtype !== "i32" || labels.size !== p.n) {
      throw new TypeError(
        `${op}: labels has shape ${describe(labels)}, expected i32 [${p.n}] for logits ` +
          formatShape(logits.shape),
      );
    }
    if (correct.dtype !== "u32" || correct.size !== 1) {
      throw new TypeError(`${op}: correct has shape ${describe(correct)}, expected u32 [1]`);
    }
    if (io.dlogits) {
      floatDType(op, "dlogits", io.dlogits);
      if (io.dlogits.size !== nc) {
        throw new TypeError(
          `${op}: dlogits has shape ${describe(io.dlogits)}, logits has shape ` +
            `${formatShape(logits.shape)}`,
        );
      }
      if (
        io.dlogits.overlaps(logits) &&
        (!io.dlogits.sameStart(logits) || io.dlogits.dtype !== logits.dtype)
      ) {
        throw new TypeError(
          `${op}: dlogits ${describe(io.dlogits)} shares its buffer with logits ` +
            `${describe(logits)}: in place needs one dtype`,
        );
      }
    }
    if (io.lossSum && (io.lossSum.dtype !== "f32" || io.lossSum.size !== 1)) {
      throw new TypeError(`${op}: lossSum has shape ${describe(io.lossSum)}, expected f32 [1]`);
    }
    const outs = [io.dlogits, io.lossSum, correct].filter((t): t is Tensor => !!t);
    const shared = outs.some((t, i) =>
      outs.some((u, j) => j > i && t.overlaps(u)) || t.overlaps(labels) ||
      (t !== io.dlogits && t.overlaps(logits))
    );
    if (shared) {
      throw new TypeError(
        `${op}: outputs must not share buffers with each other or with the inputs ` +
          "(only dlogits may be the same tensor as logits)",
      );
    }
    if (io.lossScale) {
      checkLossScale(op, io.lossScale);
      const ls = io.lossScale;
      if ([...outs, logits, labels].some((t) => t.overlaps(ls))) {
        throw new TypeError(`${op}: lossScale must not share a buffer with another operand`);
      }
    }
  }
  return [p.n, p.c];
}

/**
 * The per-row kernel's variants: `ce` (loss, gradient into dlogits and hits), `ce_inplace` (the
 * same with dlogits also the logits: one read_write binding) or `acc` (hits only); `_partial`:
 * workgroup `wid` writes its sums to `lossOut[partialOff + wid]` and `hitsOut[partialOff + wid]`
 * (reduced by {@linkcode final}), otherwise (a single workgroup in all) thread 0 adds them to
 * `lossOut[0]` and `hitsOut[0]` directly; `_scaled`: the gradient is multiplied by a loss
 * scaler's scale.
 */
const ROW_VARIANTS = [
  "ce",
  "ce_partial",
  "ce_scaled",
  "ce_partial_scaled",
  "ce_inplace",
  "ce_inplace_partial",
  "ce_inplace_scaled",
  "ce_inplace_partial_scaled",
  "acc",
  "acc_partial",
] as const;
type RowVariant = typeof ROW_VARIANTS[number];
type Kind = "ce" | "ce_inplace" | "acc";
/** The variants with a loss and a gradient (the others count hits only). */
const CE = ROW_VARIANTS.filter((v) => v.startsWith("ce"));
/** The variants with a separate (read-only) logits binding: in place, dlogits is both. */
const NOT_IN_PLACE = ROW_VARIANTS.filter((v) => !v.startsWith("ce_inplace"));
/** The variants that multiply the gradient by a loss scaler's scale. */
const SCALED = ROW_VARIANTS.filter((v) => v.endsWith("_scaled"));

/**
 * The per-row kernel. Loads convert f16 logits to f32 (no conversion for f32: the all-f32 kernel
 * is the one of before f16); the gradient is rounded on store.
 */
const row = defineKernel({
  name: "softmax_ce",
  doc: "workgroup wid of WG threads takes rows [wid * rowsPerGroup, + rowsPerGroup) of this " +
    "dispatch's range of p.n rows; thread t handles rows r0 + t, r0 + t + WG, ... (per row: max " +
    "and first argmax, with ce log-sum-exp, loss and gradient, hit), then a shared-memory tree " +
    "reduction; thread 0 writes the workgroup's sums to slot partialOff + wid (partial) or " +
    "accumulates them into slot 0. rowsPerGroup / WG rows of about 3c loop iterations each stay " +
    "under llvmpipe's loop cap. Indices into logits (dlogits in place), labels and dlogits are " +
    "offset by the range's base in its binding. Arithmetic in f32 (f16 converted on load, the " +
    "gradient rounded once on store); scaled: the gradient is multiplied by the loss scale " +
    "(lossScale[0], the scale's f32 bits) before its rounding.",
  params: {
    n: "u32",
    c: "u32",
    invN: "f32",
    onTarget: "f32",
    offTarget: "f32",
    rowsPerGroup: "u32",
    logitsBase: "u32",
    labelsBase: "u32",
    dlogitsBase: "u32",
    partialOff: "u32",
  },
  bindings: {
    lossOut: { type: "f32", access: "read_write", variants: CE },
    hitsOut: { type: "u32", access: "read_write" },
    logits: { type: "float", access: "read", variants: NOT_IN_PLACE },
    labels: { type: "i32", access: "read" },
    dlogits: { type: "float", access: "read_write", variants: CE },
    lossScale: { type: "u32", access: "read", variants: SCALED },
  },
  variants: ROW_VARIANTS,
  workgroupSize: WG,
  body: ({ variant, load: loadAs, store }) => {
    const ce = CE.includes(variant);
    const scaled = SCALED.includes(variant);
    const src = NOT_IN_PLACE.includes(variant) ? "logits" : "dlogits";
    const load = (i: string) => loadAs(src, `${src}[${i}]`);
    const grad = scaled
      ? `(exp(${load("base + j")} - m) * invS - tgt) * p.invN * scale`
      : `(exp(${load("base + j")} - m) * invS - tgt) * p.invN`;
    const lossPart = ce
      ? `var s = 0.0;
    var sumz = 0.0;
    for (var j = 0u; j < p.c; j++) {
      let z = ${load("base + j")} - m;
      s += exp(z);
      sumz += z;
    }
    if (valid) {
      // -sum_j target_j * log_softmax_j with log_softmax_j = z_j - log(s).
      loss += log(s) - p.onTarget * (${load("base + u32(lab)")} - m) - p.offTarget * sumz;
    }
    let invS = 1.0 / s;
    let dbase = p.dlogitsBase + r * p.c;${
        scaled ? "\n    let scale = bitcast<f32>(lossScale[0]);" : ""
      }
    for (var j = 0u; j < p.c; j++) {
      let tgt = select(p.offTarget, p.onTarget + p.offTarget, i32(j) == lab);
      let g = ${grad};
      ${store("dlogits", "dlogits[dbase + j]", "select(0.0, g, valid)")}
    }`
      : "";
    const sums = variant.includes("_partial")
      ? `${ce ? "lossOut[p.partialOff + wid.x] = sLoss[0];" : ""}
    hitsOut[p.partialOff + wid.x] = sHits[0];`
      : `${ce ? "lossOut[0] += sLoss[0];" : ""}
    hitsOut[0] += sHits[0];`;
    return `var<workgroup> sLoss: array<f32, WG>;
var<workgroup> sHits: array<u32, WG>;
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3u) {
  var loss = 0.0;
  var hits = 0u;
  let r0 = wid.x * p.rowsPerGroup;
  let r1 = min(r0 + p.rowsPerGroup, p.n);
  for (var r = r0 + t; r < r1; r += WG) {
    let base = p.logitsBase + r * p.c;
    let lab = labels[p.labelsBase + r];
    let valid = lab >= 0 && u32(lab) < p.c;
    var m = ${load("base")};
    var arg = 0u;
    for (var j = 1u; j < p.c; j++) {
      let v = ${load("base + j")};
      if (v > m) { m = v; arg = j; }
    }
    if (valid && arg == u32(lab)) { hits += 1u; }
    ${lossPart}
  }
  sLoss[t] = loss;
  sHits[t] = hits;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) {
      sLoss[t] += sLoss[t + k];
      sHits[t] += sHits[t + k];
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    ${sums}
  }
}
`;
  },
});

/** The second pass when several workgroups ran: one workgroup sums their partial sums. */
const final = defineKernel({
  name: "softmax_ce_final",
  doc: "a single workgroup; thread t sums the partial sums t, t + WG, ... of the p.count " +
    "workgroups of the first pass (fixed order: deterministic), then a tree reduction; thread 0 " +
    "accumulates into lossSum[0] (ce) and correct[0].",
  params: { count: "u32" },
  bindings: {
    lossSum: { type: "f32", access: "read_write", variants: ["ce"] },
    correct: { type: "u32", access: "read_write" },
    pLoss: { type: "f32", access: "read", variants: ["ce"] },
    pHits: { type: "u32", access: "read" },
  },
  variants: ["ce", "acc"],
  workgroupSize: WG,
  body: ({ variant }) => {
    const ce = variant === "ce";
    return `var<workgroup> sLoss: array<f32, WG>;
var<workgroup> sHits: array<u32, WG>;
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32) {
  var loss = 0.0;
  var hits = 0u;
  for (var k = t; k < p.count; k += WG) {
    ${ce ? "loss += pLoss[k];" : ""}
    hits += pHits[k];
  }
  sLoss[t] = loss;
  sHits[t] = hits;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) {
      sLoss[t] += sLoss[t + k];
      sHits[t] += sHits[t + k];
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    ${ce ? "lossSum[0] += sLoss[0];" : ""}
    correct[0] += sHits[0];
  }
}
`;
  },
});

/** Most classes: one row's loops take about 3c iterations of llvmpipe's 65535 per invocation. */
const MAX_CLASSES = 16384;

/**
 * Records the per-row passes over all rows (one dispatch per range of rows that fits one
 * binding) and, when more than one workgroup ran, the final reduction.
 */
function run(
  op: string,
  kind: Kind,
  io: {
    lossSum?: Tensor;
    correct: Tensor;
    logits: Tensor;
    labels: Tensor;
    dlogits?: Tensor;
    lossScale?: Tensor;
  },
  p: { n: number; c: number; invN: number; onTarget: number; offTarget: number },
): void {
  const { n, c } = p;
  if (c > MAX_CLASSES) {
    throw new RangeError(`${op}: c = ${c} classes is more than the supported ${MAX_CLASSES}`);
  }
  const gpu = io.logits.gpu;
  const ce = kind !== "acc";
  // Rows per thread: their loops (about 3c + 4 iterations each) stay within the loop budget.
  const perThread = Math.max(1, Math.floor(LOOP_BUDGET / (3 * c + 4)));
  const rowsPerGroup = Math.max(1, Math.min(WG * perThread, Math.floor(bindingLimit(gpu) / c)));
  const ranges = unitRanges(op, gpu, n, c, rowsPerGroup, 65535 * rowsPerGroup);
  const groups = ranges.map(([r0, r1]) => Math.ceil((r1 - r0) / rowsPerGroup));
  const total = groups.reduce((a, b) => a + b, 0);
  if (total > WG * LOOP_BUDGET) {
    throw new RangeError(`${op}: n = ${n} rows is too large`);
  }
  const partial = total > 1;
  const pLoss = partial && ce ? gpu.empty([total]) : undefined;
  const pHits = partial ? gpu.empty([total], { dtype: "u32" }) : undefined;
  const inPlace = io.dlogits !== undefined && io.dlogits.sameStart(io.logits);
  const scaled = ce && io.lossScale !== undefined;
  const variant = `${kind}${partial ? "_partial" : ""}${scaled ? "_scaled" : ""}` as RowVariant;
  let off = 0;
  ranges.forEach(([r0, r1], k) => {
    const nr = r1 - r0;
    const lg = bindingRange(io.logits, r0 * c, nr * c);
    const lb = bindingRange(io.labels, r0, nr);
    const dl = io.dlogits && !inPlace ? bindingRange(io.dlogits, r0 * c, nr * c) : lg;
    row.dispatch({
      op,
      variant,
      params: {
        n: nr,
        c,
        invN: p.invN,
        onTarget: p.onTarget,
        offTarget: p.offTarget,
        rowsPerGroup,
        logitsBase: lg.base,
        labelsBase: lb.base,
        dlogitsBase: dl.base,
        partialOff: off,
      },
      bindings: {
        lossOut: ce ? pLoss ?? io.lossSum : undefined,
        hitsOut: pHits ?? io.correct,
        logits: inPlace ? undefined : lg,
        labels: lb,
        dlogits: ce ? dl : undefined,
        lossScale: scaled ? io.lossScale : undefined,
      },
      workgroups: groups[k],
    });
    off += groups[k];
  });
  if (pHits) {
    final.dispatch({
      op,
      variant: ce ? "ce" : "acc",
      params: { count: total },
      bindings: { lossSum: ce ? io.lossSum : undefined, correct: io.correct, pLoss, pHits },
      workgroups: 1,
    });
    pLoss?.dispose();
    pHits.dispose();
  }
}

/**
 * Fused, numerically stable softmax cross-entropy over logits `[n, c]` (f32 or f16) and labels
 * `[n]` (i32), as `torch.nn.CrossEntropyLoss(label_smoothing=eps)` with mean reduction:
 *
 * - `dlogits` (f32 or f16 `[n, c]`) is OVERWRITTEN with `(softmax(logits) - target) / n`, where
 *   `target = (1 - eps) * onehot(label) + eps / c`; it may be the same tensor as `logits`; with
 *   `lossScale` (a loss scaler's state, see `createLossScale`) it is multiplied by the
 *   current scale, read on the GPU (the gradient of the scaled loss), before it is stored;
 * - `lossSum` (f32 `[1]`) is ACCUMULATED: `+=` the sum over rows of the per-row loss (the mean
 *   loss of the step is `lossSum / n`; never scaled);
 * - `correct` (u32 `[1]`) is ACCUMULATED: `+=` the rows whose argmax (first maximum on ties)
 *   equals the label.
 *
 * Rows whose label is outside `[0, c)` are ignored (zero gradient, no loss, never correct).
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} for mismatched sizes, dtypes or shared buffers.
 * @throws {RangeError} for bad `n`, `c` or `labelSmoothing`.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { softmaxCrossEntropy } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const logits = gpu.tensor(new Float32Array([2, 0, 0, 1, 3, 0]), { shape: [2, 3] });
 * const labels = gpu.tensor(new Int32Array([0, 2]), { shape: [2] });
 * const dlogits = gpu.empty([2, 3]);
 * const lossSum = gpu.zeros([1]);
 * const correct = gpu.zeros([1], { dtype: "u32" });
 * softmaxCrossEntropy({ dlogits, lossSum, correct, logits, labels }, { n: 2, c: 3 });
 * console.log((await lossSum.toArray())[0] / 2, (await correct.toArray())[0]); // mean loss, 1
 * ```
 */
export function softmaxCrossEntropy(
  io: {
    dlogits: Tensor;
    lossSum: Tensor;
    correct: Tensor;
    logits: Tensor;
    labels: Tensor;
    lossScale?: Tensor;
  },
  p: SoftmaxCrossEntropyParams,
): void {
  const op = "softmaxCrossEntropy";
  checkSoftmaxCrossEntropy(op, p, io);
  if (p.n === 0) return;
  const eps = p.labelSmoothing ?? 0;
  const inPlace = io.dlogits.sameStart(io.logits);
  run(op, inPlace ? "ce_inplace" : "ce", io, {
    n: p.n,
    c: p.c,
    invN: 1 / p.n,
    onTarget: 1 - eps,
    offTarget: eps / p.c,
  });
}

/**
 * Eval-time accuracy: `correct` (u32 `[1]`) is ACCUMULATED `+=` the number of rows of logits
 * `[n, c]` (f32 or f16) whose argmax (first maximum on ties) equals the label (i32 `[n]`); labels outside
 * `[0, c)` never count.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} for mismatched sizes or dtypes.
 * @throws {RangeError} for bad `n` or `c`.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { accuracyCount } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const logits = gpu.tensor(new Float32Array([2, 0, 0, 1]), { shape: [2, 2] });
 * const labels = gpu.tensor(new Int32Array([0, 0]), { shape: [2] });
 * const correct = gpu.zeros([1], { dtype: "u32" });
 * accuracyCount({ correct, logits, labels }, { n: 2, c: 2 });
 * console.log((await correct.toArray())[0]); // 1
 * ```
 */
export function accuracyCount(
  io: { correct: Tensor; logits: Tensor; labels: Tensor },
  p: AccuracyParams,
): void {
  checkSoftmaxCrossEntropy("accuracyCount", { n: p.n, c: p.c }, io);
  if (p.n === 0) return;
  run("accuracyCount", "acc", io, { n: p.n, c: p.c, invN: 0, onTarget: 0, offTarget: 0 });
}
