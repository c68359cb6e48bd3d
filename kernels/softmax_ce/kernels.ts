/**
 * The kernels of softmax cross-entropy: the per-row pass (workgroups of {@linkcode WG} threads
 * over blocks of rows; thread `t` handles rows `t, t + WG, ...` of its block, numerically stable:
 * max subtraction, log-sum-exp; then the workgroup tree-reduces its loss and hit counts) and the
 * final pass that adds the workgroups' partial sums when there are several (WGSL has no float
 * atomics). The summation order is fixed, so results are deterministic. And their recorder
 * ({@linkcode recordSoftmaxCe}), which dispatches a plan (`plan.ts`).
 *
 * @module
 */

import type { Tensor } from "../../gpu/mod.ts";
import { bindingRange } from "../_binding.ts";
import { defineKernel, variantProduct } from "../_kernel.ts";
import { type SoftmaxCePlan, WG } from "./plan.ts";

/** WGSL: the workgroup's loss and hit sums. */
const SUMS = `var<workgroup> sLoss: array<f32, WG>;
var<workgroup> sHits: array<u32, WG>;`;

/**
 * WGSL: the end of an entry point that reduces each thread's `loss` and `hits` into `sLoss[0]`
 * and `sHits[0]` (a tree over the workgroup), then runs `sums` (statements) in thread 0.
 */
function reduceSums(sums: string): string {
  return `  sLoss[t] = loss;
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
}

/**
 * The per-row kernel's variants: `ce` (loss, gradient into dlogits and hits), `ce_inplace` (the
 * same with dlogits also the logits: one read_write binding) or `acc` (hits only); `_partial`:
 * workgroup `wid` writes its sums to `lossOut[partialOff + wid]` and `hitsOut[partialOff + wid]`
 * (reduced by {@linkcode final}), otherwise (a single workgroup in all) thread 0 adds them to
 * `lossOut[0]` and `hitsOut[0]` directly; `_scaled`: the gradient is multiplied by a loss
 * scaler's scale; `_counted`: the rows with a valid label (the mean's divisor) are added to
 * `validRows[0]`.
 */
const ROW_VARIANTS = [
  ...variantProduct(["ce", "ce_inplace"], ["", "partial"], ["", "scaled"], ["", "counted"]),
  "acc",
  "acc_partial",
] as const;
type RowVariant = typeof ROW_VARIANTS[number];
/** The variants with a loss and a gradient (the others count hits only). */
const CE = ROW_VARIANTS.filter((v) => v.startsWith("ce"));
/** The variants with a separate (read-only) logits binding: in place, dlogits is both. */
const NOT_IN_PLACE = ROW_VARIANTS.filter((v) => !v.startsWith("ce_inplace"));
/** The variants that multiply the gradient by a loss scaler's scale. */
const SCALED = ROW_VARIANTS.filter((v) => v.includes("_scaled"));
/** The variants that add the count of valid rows to `validRows`. */
const COUNTED = ROW_VARIANTS.filter((v) => v.endsWith("_counted"));

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
    "under llvmpipe's loop cap. ce: first every workgroup counts the valid labels of all p.total " +
    "rows of the call (labels bound whole, row 0 at labelsStart; thread t counts labels t, " +
    "t + WG, ..., then a tree reduction): the gradient is divided by that count (PyTorch's mean " +
    "over the rows not ignored); counted: workgroup 0 of the first range adds the count to " +
    "validRows[0]. Indices into logits (dlogits in place), labels and dlogits are offset by the " +
    "range's base in its binding. Arithmetic in f32 (f16 converted on load, the gradient rounded " +
    "once on store); scaled: the gradient is multiplied by the loss scale (lossScale[0], the " +
    "scale's f32 bits) before its rounding.",
  params: {
    n: "u32",
    c: "u32",
    total: "u32",
    labelsStart: "u32",
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
    validRows: { type: "u32", access: "read_write", variants: COUNTED },
  },
  variants: ROW_VARIANTS,
  workgroupSize: WG,
  body: ({ variant, load: loadAs, store }) => {
    const ce = CE.includes(variant);
    const scaled = SCALED.includes(variant);
    const counted = COUNTED.includes(variant);
    const src = NOT_IN_PLACE.includes(variant) ? "logits" : "dlogits";
    const load = (i: string) => loadAs(src, `${src}[${i}]`);
    const grad = scaled
      ? `(exp(${load("base + j")} - m) * invS - tgt) * invN * scale`
      : `(exp(${load("base + j")} - m) * invS - tgt) * invN`;
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
    const sums = (variant.includes("_partial")
      ? `${ce ? "lossOut[p.partialOff + wid.x] = sLoss[0];" : ""}
    hitsOut[p.partialOff + wid.x] = sHits[0];`
      : `${ce ? "lossOut[0] += sLoss[0];" : ""}
    hitsOut[0] += sHits[0];`) +
      (counted ? "\n    if (p.partialOff + wid.x == 0u) { validRows[0] += counted; }" : "");
    // The mean's divisor, counted by every workgroup (the labels are 1/c of the logits): all
    // threads reach the barriers (uniform loops), and sHits is free again after the last one.
    const count = ce
      ? `var cnt = 0u;
  for (var k = t; k < p.total; k += WG) {
    let l = labels[p.labelsStart + k];
    if (l >= 0 && u32(l) < p.c) { cnt += 1u; }
  }
  sHits[t] = cnt;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (t < k) { sHits[t] += sHits[t + k]; }
    workgroupBarrier();
  }
  let counted = sHits[0];
  // Inf when no row counts: then every row is ignored and its gradient is selected to 0.
  let invN = 1.0 / f32(counted);
  workgroupBarrier();
  `
      : "";
    return `${SUMS}
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3u) {
  ${count}var loss = 0.0;
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
${reduceSums(sums)}`;
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
    return `${SUMS}
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32) {
  var loss = 0.0;
  var hits = 0u;
  for (var k = t; k < p.count; k += WG) {
    ${ce ? "loss += pLoss[k];" : ""}
    hits += pHits[k];
  }
${
      reduceSums(`${ce ? "lossSum[0] += sLoss[0];" : ""}
    correct[0] += sHits[0];`)
    }`;
  },
});

/**
 * Records the per-row passes of `plan` (one dispatch per range of rows) and, when more than one
 * workgroup runs, the final reduction. The tensors are checked by the caller.
 *
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { adapterProfile } from "../_adapter.ts";
 * import { recordSoftmaxCe } from "./kernels.ts";
 * import { planSoftmaxCe } from "./plan.ts";
 * const gpu = await getGpu();
 * const plan = planSoftmaxCe({ op: "accuracyCount", kind: "acc", n: 2, c: 3 }, adapterProfile(gpu));
 * const logits = gpu.zeros([2, 3]), labels = gpu.zeros([2], { dtype: "i32" });
 * const correct = gpu.zeros([1], { dtype: "u32" });
 * recordSoftmaxCe("accuracyCount", plan, { correct, logits, labels });
 * ```
 */
export function recordSoftmaxCe(
  op: string,
  plan: SoftmaxCePlan,
  io: {
    lossSum?: Tensor;
    correct: Tensor;
    logits: Tensor;
    labels: Tensor;
    dlogits?: Tensor;
    lossScale?: Tensor;
    validRows?: Tensor;
  },
): void {
  const { kind, c, rowsPerGroup, groups } = plan;
  const gpu = io.logits.gpu;
  const ce = kind !== "acc";
  const partial = plan.partial;
  const pLoss = partial && ce ? gpu.empty([groups]) : undefined;
  const pHits = partial ? gpu.empty([groups], { dtype: "u32" }) : undefined;
  const inPlace = kind === "ce_inplace";
  const scaled = ce && io.lossScale !== undefined;
  const counted = ce && io.validRows !== undefined;
  const variant = `${kind}${partial ? "_partial" : ""}${scaled ? "_scaled" : ""}${
    counted ? "_counted" : ""
  }` as RowVariant;
  // ce binds all the labels in every range (each workgroup counts the valid ones; the planner
  // checked that they fit one binding), acc only the range's.
  const all = ce ? bindingRange(io.labels, 0, plan.n) : undefined;
  for (const { rows: [r0, r1], groups: count, partialOff } of plan.ranges) {
    const nr = r1 - r0;
    const lg = bindingRange(io.logits, r0 * c, nr * c);
    const lb = all ?? bindingRange(io.labels, r0, nr);
    const dl = io.dlogits && !inPlace ? bindingRange(io.dlogits, r0 * c, nr * c) : lg;
    row.dispatch({
      op,
      variant,
      params: {
        n: nr,
        c,
        total: plan.n,
        labelsStart: all?.base ?? 0,
        onTarget: plan.onTarget,
        offTarget: plan.offTarget,
        rowsPerGroup,
        logitsBase: lg.base,
        labelsBase: all ? all.base + r0 : lb.base,
        dlogitsBase: dl.base,
        partialOff,
      },
      bindings: {
        lossOut: ce ? pLoss ?? io.lossSum : undefined,
        hitsOut: pHits ?? io.correct,
        logits: inPlace ? undefined : lg,
        labels: lb,
        dlogits: ce ? dl : undefined,
        lossScale: scaled ? io.lossScale : undefined,
        validRows: counted ? io.validRows : undefined,
      },
      workgroups: count,
    });
  }
  if (pHits) {
    final.dispatch({
      op,
      variant: ce ? "ce" : "acc",
      params: { count: groups },
      bindings: { lossSum: ce ? io.lossSum : undefined, correct: io.correct, pLoss, pHits },
      workgroups: 1,
    });
    pLoss?.dispose();
    pHits.dispose();
  }
}
