/**
 * Fused softmax cross-entropy (`nn.CrossEntropyLoss(reduction="mean", label_smoothing=eps)`)
 * with its gradient, the summed loss and the count of correct predictions, plus the eval-time
 * accuracy count.
 *
 * Both kernels run as ONE workgroup (WGSL has no float atomics): thread `t` handles rows
 * `t, t + WG, t + 2 WG, ...` (numerically stable: max subtraction, log-sum-exp), then the
 * workgroup tree-reduces the per-thread loss and hit counts and thread 0 adds them to `lossSum`
 * and `correct`. The summation order is fixed, so results are deterministic. Meant for the
 * classifier head (n up to a few thousand rows).
 *
 * Labels outside `[0, c)` (e.g. -100, PyTorch's default `ignore_index`) are ignored: their row
 * gets a zero gradient, adds 0 to the loss and is never counted correct (the mean is still
 * taken over all n rows).
 *
 * @module
 */

import { formatShape, type KernelSpec, type Tensor } from "../gpu/mod.ts";
import { ParamsWriter } from "./_params.ts";

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
    if (logits.dtype !== "f32" || logits.size !== nc) {
      throw new TypeError(
        `${op}: logits has shape ${describe(logits)}, expected f32 [${p.n}, ${p.c}]`,
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
      if (io.dlogits.dtype !== "f32" || io.dlogits.size !== nc) {
        throw new TypeError(
          `${op}: dlogits has shape ${describe(io.dlogits)}, logits has shape ` +
            `${formatShape(logits.shape)}`,
        );
      }
    }
    if (io.lossSum && (io.lossSum.dtype !== "f32" || io.lossSum.size !== 1)) {
      throw new TypeError(`${op}: lossSum has shape ${describe(io.lossSum)}, expected f32 [1]`);
    }
    const outs = [io.dlogits, io.lossSum, correct].filter((t): t is Tensor => !!t);
    const bufs = new Set(outs.map((t) => t.buffer));
    const shared = bufs.size !== outs.length || bufs.has(labels.buffer) ||
      ((io.lossSum?.buffer ?? null) === logits.buffer) || correct.buffer === logits.buffer;
    if (shared) {
      throw new TypeError(
        `${op}: outputs must not share buffers with each other or with the inputs ` +
          "(only dlogits may be the same tensor as logits)",
      );
    }
  }
  return [p.n, p.c];
}

const specs = new Map<string, KernelSpec>();

function spec(kind: "ce" | "ce_inplace" | "acc"): KernelSpec {
  const name = `softmax_ce_${kind}`;
  const hit = specs.get(name);
  if (hit) return hit;
  const ce = kind !== "acc";
  // Binding layout: ce: lossSum, correct, logits (rw when in place), labels, [dlogits].
  const lg = kind === "ce_inplace" ? "read_write" : "read";
  const dl = kind === "ce_inplace" ? "logits" : "dlogits";
  const decls = ce
    ? `@group(0) @binding(1) var<storage, read_write> lossSum: array<f32>;
@group(0) @binding(2) var<storage, read_write> correct: array<u32>;
@group(0) @binding(3) var<storage, ${lg}> logits: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<i32>;
${kind === "ce" ? "@group(0) @binding(5) var<storage, read_write> dlogits: array<f32>;" : ""}`
    : `@group(0) @binding(1) var<storage, read_write> correct: array<u32>;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<i32>;`;
  const lossPart = ce
    ? `var s = 0.0;
    var sumz = 0.0;
    for (var j = 0u; j < p.c; j++) {
      let z = logits[base + j] - m;
      s += exp(z);
      sumz += z;
    }
    if (valid) {
      // -sum_j target_j * log_softmax_j with log_softmax_j = z_j - log(s).
      loss += log(s) - p.onTarget * (logits[base + u32(lab)] - m) - p.offTarget * sumz;
    }
    let invS = 1.0 / s;
    for (var j = 0u; j < p.c; j++) {
      let tgt = select(p.offTarget, p.onTarget + p.offTarget, i32(j) == lab);
      let g = (exp(logits[base + j] - m) * invS - tgt) * p.invN;
      ${dl}[base + j] = select(0.0, g, valid);
    }`
    : "";
  const code = `// ${name}: a single workgroup of WG threads; thread t handles rows t, t + WG, ...
// (per row: max and first argmax, ${ce ? "log-sum-exp, loss and gradient, " : ""}hit), then a
// shared-memory tree reduction; thread 0 accumulates into ${ce ? "lossSum[0] and " : ""}correct[0].
const WG = ${WG}u;
struct Params { n: u32, c: u32, invN: f32, onTarget: f32, offTarget: f32 }
@group(0) @binding(0) var<uniform> p: Params;
${decls}
var<workgroup> sLoss: array<f32, WG>;
var<workgroup> sHits: array<u32, WG>;
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32) {
  var loss = 0.0;
  var hits = 0u;
  for (var r = t; r < p.n; r += WG) {
    let base = r * p.c;
    let lab = labels[r];
    let valid = lab >= 0 && u32(lab) < p.c;
    var m = logits[base];
    var arg = 0u;
    for (var j = 1u; j < p.c; j++) {
      let v = logits[base + j];
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
    ${ce ? "lossSum[0] += sLoss[0];" : ""}
    correct[0] += sHits[0];
  }
}
`;
  const s = { name, code };
  specs.set(name, s);
  return s;
}

/**
 * Fused, numerically stable softmax cross-entropy over logits `[n, c]` (f32) and labels `[n]`
 * (i32), as `torch.nn.CrossEntropyLoss(label_smoothing=eps)` with mean reduction:
 *
 * - `dlogits` (f32 `[n, c]`) is OVERWRITTEN with `(softmax(logits) - target) / n`, where
 *   `target = (1 - eps) * onehot(label) + eps / c`; it may be the same tensor as `logits`;
 * - `lossSum` (f32 `[1]`) is ACCUMULATED: `+=` the sum over rows of the per-row loss (the mean
 *   loss of the step is `lossSum / n`);
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
  io: { dlogits: Tensor; lossSum: Tensor; correct: Tensor; logits: Tensor; labels: Tensor },
  p: SoftmaxCrossEntropyParams,
): void {
  checkSoftmaxCrossEntropy("softmaxCrossEntropy", p, io);
  if (p.n === 0) return;
  const eps = p.labelSmoothing ?? 0;
  const inPlace = io.dlogits.buffer === io.logits.buffer;
  const params = new ParamsWriter().u32(p.n).u32(p.c).f32(1 / p.n).f32(1 - eps).f32(eps / p.c)
    .bytes();
  const bindings = [io.lossSum, io.correct, io.logits, io.labels];
  if (!inPlace) bindings.push(io.dlogits);
  io.logits.gpu.dispatch(spec(inPlace ? "ce_inplace" : "ce"), {
    params,
    bindings,
    workgroups: 1,
  });
}

/**
 * Eval-time accuracy: `correct` (u32 `[1]`) is ACCUMULATED `+=` the number of rows of logits
 * `[n, c]` whose argmax (first maximum on ties) equals the label (i32 `[n]`); labels outside
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
  io.logits.gpu.dispatch(spec("acc"), {
    params: new ParamsWriter().u32(p.n).u32(p.c).f32(0).f32(0).f32(0).bytes(),
    bindings: [io.correct, io.logits, io.labels],
    workgroups: 1,
  });
}
