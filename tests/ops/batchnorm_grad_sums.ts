// The batch-norm gradient sums gathered by the producer after it, for testOp (tests/_op.ts): the
// register GEMM that stores the batch norm's output gradient dy (a Linear's input gradient,
// [n, c] with the channels along C's columns; a pointwise convolution's, NCHW with the channels
// along C's rows, batched over the images) gathers Σg and Σg (x - mean) per channel (g = dy, or
// the batch norm's fused activation's backward of it), and batchNormBackward merges them instead
// of its own gradient-sum pass. Checked against the Float64 CPU reference (the product, then the
// batch-norm backward, through dweight = Σg (x - mean) invstd and dbias = Σg: the sums), next to
// the unfused pair (the plain GEMM, then the batch norm's own passes) within the same tolerances.
import type { Gpu, Tensor } from "../../gpu/mod.ts";
import type { ActivationKind } from "../../kernels/activation.ts";
import { adapterProfile } from "../../kernels/_adapter.ts";
import { bindingRange } from "../../kernels/_binding.ts";
import type { StridedGemm } from "../../kernels/_types.ts";
import { batchNormBackward } from "../../kernels/batchnorm/index.ts";
import type { GradSumsPartials, GradSumsSink } from "../../kernels/batchnorm/grad_sums.ts";
import { setBnFusionMode } from "../../kernels/batchnorm/fusion_mode.ts";
import { gemmStrided } from "../../kernels/gemm/index.ts";
import { conv2dBackward } from "../../kernels/conv2d/index.ts";
import { conv2dBackwardRef } from "../cpu_ref/conv2d.ts";
import { gemmStridedGradSums } from "../../kernels/gemm/grad_sums.ts";
import { input, type Mix, type OpCase, opCase, type OpSuite, output, uniform } from "../_op.ts";
import { activationBackwardRef } from "../cpu_ref/activation.ts";
import { batchNormBackwardRef } from "../cpu_ref/batchnorm.ts";

/** A case: the product's layout, sizes (k: the product's inner dimension) and the activation. */
export interface GradSumsCase {
  /**
   * `nc`: Linear (hw 1, channels along columns); `nchw`: pointwise conv (along rows);
   * `conv3x3`: a 3x3 convolution's input gradient (hw = h * w, square; k: its output channels),
   * by the direct flipped kernel (`direct`) or im2col + col2im (which gathers nothing).
   */
  readonly layout: "nc" | "nchw" | "conv3x3";
  readonly direct?: boolean;
  /** The product on the shared-memory GEMM (the GPUs' kernel) instead of the planner's. */
  readonly shared?: boolean;
  readonly n: number;
  readonly c: number;
  readonly hw: number;
  readonly k: number;
  readonly kind?: ActivationKind;
}

const TOL = { rtol: 1e-4, atol: 1e-4 }, GRAD = { rtol: 1e-4, atol: 1e-3 };

/** The product that stores dy: `dy = a·b` (nc), or per image `dy_z = a·b_z` (nchw). */
function product(cs: GradSumsCase, t: Readonly<Record<string, Tensor>>, dy: Tensor): StridedGemm {
  const { n, c, hw, k } = cs;
  const common = { transA: false, transB: false, alpha: 1, beta: 0, biasMode: "none" } as const;
  const a = bindingRange(t.a, 0, t.a.size), b = bindingRange(t.b, 0, t.b.size);
  const cr = bindingRange(dy, 0, dy.size);
  return cs.layout === "nc"
    ? {
      ...common,
      m: n,
      n: c,
      k,
      batch: 1,
      a,
      b,
      c: cr,
      lda: k,
      ldb: c,
      ldc: c,
      strideA: 0,
      strideB: 0,
      strideC: 0,
    }
    : {
      ...common,
      m: c,
      n: hw,
      k,
      batch: n,
      a,
      b,
      c: cr,
      lda: k,
      ldb: hw,
      ldc: hw,
      strideA: 0,
      strideB: k * hw,
      strideC: c * hw,
    };
}

/** The Float64 product. */
function productRef(cs: GradSumsCase, a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const { n, c, hw, k } = cs;
  const out = new Float64Array(n * c * hw);
  for (let z = 0; z < n; z++) {
    for (let i = 0; i < c; i++) {
      for (let j = 0; j < hw; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) {
          s += cs.layout === "nc"
            ? a[z * k + q] * b[q * c + i]
            : a[i * k + q] * b[(z * k + q) * hw + j];
        }
        out[(z * c + i) * hw + j] = s;
      }
    }
  }
  return out;
}

/** The 3x3 convolution whose input gradient is the batch norm's output gradient. */
function conv3x3(cs: GradSumsCase) {
  const side = Math.sqrt(cs.hw);
  return {
    n: cs.n,
    cIn: cs.c,
    h: side,
    w: side,
    cOut: cs.k,
    kernel: 3,
    padding: 1,
    direct: cs.direct ?? false,
  };
}

/** Whether the adapter's plan is expected to gather (Mesa's CPU adapters run the register GEMM). */
const expectsGather = (gpu: Gpu) => adapterProfile(gpu).mesaCpu;

/** The case of a parameter record. */
export function gradSumsOp(cs: GradSumsCase): OpCase {
  const { n, c, hw, k, kind } = cs;
  const side = Math.sqrt(hw);
  const shape = cs.layout === "nc"
    ? [n, c]
    : cs.layout === "nchw"
    ? [n, c, hw]
    : [n, c, side, side];
  const p = { n, c, hw, activation: kind };
  // The sums the first phase gathered, for the second (undefined where the plan could not).
  let sums: GradSumsPartials | undefined;
  return opCase({
    label: `${cs.layout}${cs.shared ? " shared" : ""} n=${n} c=${c} hw=${hw} k=${k}${
      kind ? ` ${kind}` : ""
    }`,
    tensors: {
      a: input(cs.layout === "nc" ? [n, k] : cs.layout === "nchw" ? [c, k] : [k, c, 3, 3]),
      b: input(
        cs.layout === "nc" ? [k, c] : cs.layout === "nchw" ? [n, k, hw] : [n, k, side, side],
      ),
      x: input(shape),
      y: input(shape),
      weight: input([c]),
      mean: input([c], uniform(-0.5, 0.5), { as: "stats" }),
      invStd: input([c], uniform(0.5, 2), { as: "stats" }),
      dy: output(shape),
      dx: output(shape),
      dweight: output([c], { as: "dweight" }),
      dbias: output([c], { as: "dweight" }),
      dyU: output(shape, { as: "dy" }),
      dxU: output(shape, { as: "dx" }),
      dweightU: output([c], { as: "dweight" }),
      dbiasU: output([c], { as: "dweight" }),
    },
    phases: [{
      name: "product (gathering the sums)",
      gpu: (t) => {
        const gpu = t.x.gpu;
        const before = setBnFusionMode(gpu, "gradSums", "on");
        try {
          const source = {
            x: t.x,
            mean: t.mean,
            invStd: t.invStd,
            act: kind,
            y: kind ? t.y : undefined,
          };
          if (cs.layout === "conv3x3") {
            // The conv's input is the batch norm's output y; its output gradient is b.
            const sink: GradSumsSink = { source };
            const io = { dy: t.b, x: t.y, w: t.a };
            conv2dBackward({ ...io, dx: t.dy, gradSums: sink }, conv3x3(cs));
            sums = sink.partials;
            if (!!sums !== !!cs.direct) throw new Error(`gathered: ${!!sums}`);
            setBnFusionMode(gpu, "gradSums", "off");
            conv2dBackward({ ...io, dx: t.dyU }, conv3x3(cs));
            return;
          }
          const axis = cs.layout === "nc" ? "col" : "row";
          const tuning = cs.shared ? { variant: "shared" } as const : {};
          const o = { source, axis, cOffset: 0 } as const;
          sums = gemmStridedGradSums(gpu, product(cs, t, t.dy), o, tuning);
          if (!sums && (cs.shared || expectsGather(gpu))) {
            throw new Error("the GEMM gathered no sums");
          }
          setBnFusionMode(gpu, "gradSums", "off");
          gemmStrided(gpu, product(cs, t, t.dyU), tuning);
        } finally {
          setBnFusionMode(gpu, "gradSums", before);
        }
      },
      cpu: (v) => {
        const dy = cs.layout === "conv3x3"
          ? conv2dBackwardRef(conv3x3(cs), v.y, v.a, v.b).dx
          : productRef(cs, v.a, v.b);
        return { dy, dyU: dy };
      },
      tol: { dy: TOL, dyU: TOL },
      extra: k * 2 ** -13,
      same: { dy: "dyU" },
    }, {
      name: "batch norm backward (merging the sums, and its own passes)",
      gpu: (t) => {
        const common = { weight: t.weight, saveMean: t.mean, saveInvStd: t.invStd, x: t.x, y: t.y };
        const io = { ...common, dx: t.dx, dweight: t.dweight, dbias: t.dbias, dy: t.dy };
        batchNormBackward({ ...io, gradSums: sums }, p);
        sums?.partials.dispose();
        sums = undefined;
        const u = { dx: t.dxU, dweight: t.dweightU, dbias: t.dbiasU, dy: t.dyU };
        batchNormBackward({ ...common, ...u }, p);
      },
      cpu: (v) => {
        const dz = kind ? activationBackwardRef(v.dy, v.y, kind) : v.dy;
        const g = batchNormBackwardRef(n, c, hw, dz, v.x, v.weight, v.mean, v.invStd);
        return {
          dx: g.dx,
          dxU: g.dx,
          dweight: g.dweight,
          dweightU: g.dweight,
          dbias: g.dbias,
          dbiasU: g.dbias,
        };
      },
      tol: { dx: TOL, dxU: TOL, dweight: GRAD, dweightU: GRAD, dbias: GRAD, dbiasU: GRAD },
      extra: n * hw * 2 ** -13,
    }],
  });
}

const CASES: GradSumsCase[] = [
  // Linear (BatchNorm1d): odd sizes, lenet-bn's shapes, every activation
  { layout: "nc", n: 7, c: 5, hw: 1, k: 3 },
  { layout: "nc", n: 37, c: 19, hw: 1, k: 11, kind: "sigmoid" },
  { layout: "nc", n: 256, c: 120, hw: 1, k: 84, kind: "sigmoid" },
  { layout: "nc", n: 256, c: 84, hw: 1, k: 10, kind: "tanh" },
  { layout: "nc", n: 64, c: 32, hw: 1, k: 16, kind: "relu" },
  // pointwise convolution (BatchNorm2d): odd planes (scalar C), planes of vec4s, ReLU / ReLU6
  { layout: "nchw", n: 3, c: 5, hw: 7, k: 6 },
  { layout: "nchw", n: 2, c: 13, hw: 9, k: 8, kind: "relu" },
  { layout: "nchw", n: 4, c: 32, hw: 36, k: 16, kind: "relu6" },
  { layout: "nchw", n: 2, c: 64, hw: 144, k: 32, kind: "relu" },
  // the shared-memory GEMM (GPUs): both layouts, edges of its 64x64 tiles
  { layout: "nc", n: 37, c: 19, hw: 1, k: 11, kind: "sigmoid", shared: true },
  { layout: "nc", n: 130, c: 70, hw: 1, k: 24, shared: true },
  { layout: "nchw", n: 2, c: 13, hw: 9, k: 8, kind: "relu", shared: true },
  { layout: "nchw", n: 3, c: 72, hw: 100, k: 40, kind: "tanh", shared: true },
  // 3x3 convolution (ResNet's conv2, DenseNet's conv block): the direct kernel gathers, im2col
  // does not (the batch norm's own pass)
  { layout: "conv3x3", n: 2, c: 5, hw: 49, k: 3, direct: true },
  { layout: "conv3x3", n: 3, c: 12, hw: 36, k: 8, kind: "relu", direct: true },
  { layout: "conv3x3", n: 2, c: 16, hw: 81, k: 16, kind: "relu", direct: true },
  { layout: "conv3x3", n: 2, c: 6, hw: 25, k: 4, kind: "relu", direct: false },
];

const F16: Mix = { a: "f16", b: "f16", x: "f16", y: "f16", dy: "f16", dx: "f16" };

/** The suites of tests/batchnorm_grad_sums_test.ts. */
export const GRAD_SUMS_SUITES: OpSuite<GradSumsCase>[] = [{
  name: "batch norm gradient sums gathered by the GEMM and direct conv stores (f32 and f16)",
  op: gradSumsOp,
  seed: 15,
  cases: CASES,
  mixes: [{}, F16],
}];
