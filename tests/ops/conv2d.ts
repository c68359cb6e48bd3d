// The conv2d op for testOp (tests/_op.ts): conv2dForward / conv2dBackward with their kernel
// options (GEMM variants, the direct kernels, chunks of images) and fusions (an activation, a
// channel slice of a wider output) against the Float64 reference of tests/cpu_ref/conv2d.ts, with
// the plans and kernels each call ran for the path checks; the mixes and paths the suites of
// tests/conv2d_test.ts (ops/conv2d_suites.ts) and tests/conv2d_direct_test.ts
// (ops/conv2d_direct.ts) share.
import assert from "../_assert.ts";
import type { Gpu, Tensor } from "../../gpu/mod.ts";
import { activationForward, type ActivationKind } from "../../kernels/activation.ts";
import {
  conv2dBackward,
  conv2dForward,
  conv2dGeometry,
  type Conv2dKernelOptions,
  type Conv2dParams,
} from "../../kernels/conv2d/index.ts";
import type { ConvPassPlan, ConvPlan, ConvStep } from "../../kernels/conv2d/plan.ts";
import { activationForwardRef } from "../cpu_ref/activation.ts";
import { conv2dBackwardRef, conv2dRef } from "../cpu_ref/conv2d.ts";
import {
  assertClose,
  channelSlice,
  type CloseOptions,
  f16Tolerance,
  maxAbs,
  type Numeric,
  type Rng,
} from "../harness.ts";
import { conv2dPlansOf, kernelsOf } from "../kernels_of.ts";
import {
  type FdCheck,
  type Init,
  input,
  type Mix,
  type OpCase,
  opCase,
  type OpPhase,
  type OpTensor,
  output,
  type Tol,
  uniform,
} from "../_op.ts";

/** The shapes of a convolution's tensors, and the longest sum behind any of its outputs. */
export function conv2dShapes(p: Conv2dParams): {
  x: number[];
  w: number[];
  y: number[];
  /** Longest reduction of any output (forward: taps; dw: pixels over the batch; dx). */
  len: number;
} {
  const g = conv2dGeometry(p);
  return {
    x: [g.n, g.cIn, g.h, g.w],
    w: [g.cOut, g.cIn / g.groups, g.kh, g.kw],
    y: [g.n, g.cOut, g.oh, g.ow],
    len: Math.max((g.cIn / g.groups) * g.kh * g.kw, g.n * g.oh * g.ow, g.cOut * g.kh * g.kw),
  };
}

/** f32 tolerance for sums of `len` O(1) terms. */
export const conv2dTol = (len: number): CloseOptions => ({ rtol: 1e-4, atol: 1e-5 + 2e-8 * len });

/** `p` in messages. */
export function conv2dLabel(p: Conv2dParams): string {
  const g = conv2dGeometry(p);
  return `n${g.n} ${g.cIn}x${g.h}x${g.w} -> ${g.cOut} k${g.kh}x${g.kw} s${g.sh},${g.sw} ` +
    `p${g.ph},${g.pw} d${g.dh},${g.dw} g${g.groups}`;
}

/** One conv2d call of a case as the runner ran it: its plan and the kernels it dispatched. */
export interface Conv2dCall {
  /** The plan. */
  readonly plan: ConvPlan;
  /** The kernel names, in order. */
  readonly kernels: readonly string[];
}

/** The conv2d calls of a case (in the last mix run), for checks of the paths they took. */
export interface Conv2dRan {
  /** The device. */
  gpu: Gpu;
  /** The case in messages. */
  readonly what: string;
  /** The forward call. */
  forward?: Conv2dCall;
  /** The backward call (dx, dw, db). */
  backward?: Conv2dCall;
  /** The same calls in chunks of at most `maxChunkBytes` (`chunks` of the case), in order. */
  readonly chunked: { maxChunkBytes: number; forward?: Conv2dCall; backward?: Conv2dCall }[];
  /** The backward calls of `again`, in order. */
  readonly again: Conv2dCall[];
}

/** The gradients `again` accumulates once more, each alone. */
export type Conv2dGrad = "dw" | "db";

/**
 * A case: the convolution `p`, with a bias if `bias`, run with the kernel `options` (the direct
 * kernels, GEMM variants, chunk size) on x, w, b, dy uniform in [-1, 1) (w in
 * [-wRange, wRange)); `ints`: small integers instead, every output compared exactly.
 */
export interface Conv2dCase {
  /** The convolution. */
  readonly p: Conv2dParams;
  /** What the case is in messages, before its parameters. */
  readonly label?: string;
  /** With a bias. */
  readonly bias?: boolean;
  /** The kernel options of every call. */
  readonly options?: Conv2dKernelOptions;
  /** Runs the case with the kernels' binding limit lowered to this many elements. */
  readonly bindingLimit?: number;
  /** The activation fused into the forward. */
  readonly activation?: ActivationKind;
  /**
   * The forward writes channels `[offset, offset + cOut)` of a y of `channels` channels filled
   * with `sentinel` (exact in y's type), which the other channels must keep.
   */
  readonly slice?: {
    readonly offset: number;
    readonly channels: number;
    readonly sentinel: number;
  };
  /**
   * Also the unfused forward (then activationForward) into `plain`: the fused output (its slice)
   * must equal it within an f32 ulp.
   */
  readonly separate?: boolean;
  /** The forward alone (no backward). */
  readonly forwardOnly?: boolean;
  /** The backward adds dw and db to prior values (dx is still overwritten). */
  readonly accumulate?: boolean;
  /** After the backward, each of these gradients alone accumulated once more (`+=`). */
  readonly again?: readonly Conv2dGrad[];
  /**
   * The same calls again in chunks of images of at most these many bytes (`maxChunkBytes`):
   * y and dx must equal the whole run's bit for bit, dw and db within the f32 tolerance.
   */
  readonly chunks?: readonly number[];
  /** Small integer data (every product and sum exact in f16 and f32): exact outputs. */
  readonly ints?: boolean;
  /** Weights uniform in [-wRange, wRange) (default 1). */
  readonly wRange?: number;
  /** f16 outputs: headroom over one rounding (see `f16Tolerance`; default 0). */
  readonly extra?: Readonly<Partial<Record<"y" | "dx" | "dw" | "db", number>>>;
  /** Checks of the plans and kernels the calls ran, after the last phase passed. */
  readonly check?: (ran: Conv2dRan) => void;
}

/** Integers uniform in [-m, m] (rounded). */
function ints(m: number): Init {
  return (rng: Rng, n: number) =>
    Float64Array.from({ length: n }, () => Math.round(rng.uniform(-m, m)));
}

/** Runs `f` (one conv2d call) on `gpu`, returning the plan it ran and the kernels it dispatched. */
function call(gpu: Gpu, f: () => void): Conv2dCall {
  let plans: ConvPlan[] = [];
  const kernels = kernelsOf(gpu, () => {
    plans = conv2dPlansOf(gpu, f);
  });
  assert.equal(plans.length, 1, "one conv2d call, one plan");
  return { plan: plans[0], kernels };
}

const add = (a: Numeric, b: Numeric) => Float64Array.from(a, (v, i) => v + b[i]);

/**
 * conv2d forward (y = conv2d(x, w) + b, fused activation and channel slice as the case says)
 * then backward (dx, dw, db; accumulating), each call also in the case's chunks, then `again`.
 * f32 outputs get {@linkcode conv2dTol} of the longest sum; f16 outputs one rounding of the
 * reference's magnitude plus the case's `extra` (y, dw and db are f32 sums rounded once on store;
 * an f16 dx through im2col and col2im may round twice, the direct tests say where). The
 * reference is fed what the tensors hold (f16-rounded inputs).
 */
export function conv2d(c: Conv2dCase): OpCase {
  const { p, bias, slice, activation, chunks = [], again = [], ints: exact } = c;
  const s = conv2dShapes(p);
  const [n, cOut, oh, ow] = s.y;
  const C = slice?.channels ?? cOut, P = oh * ow;
  const yShape = [n, C, oh, ow];
  const label = `${c.label ? `${c.label} ` : ""}${conv2dLabel(p)}${
    c.options ? ` ${JSON.stringify(c.options)}` : ""
  }${activation ? ` ${activation}` : ""}${slice ? ` slice ${slice.offset}/${slice.channels}` : ""}`;
  const f32: CloseOptions = exact ? { rtol: 0, atol: 0 } : conv2dTol(s.len);
  const extra = c.extra ?? {};
  // Every output: exact (ints), else the f32 tolerance (f16: one rounding, by the engine).
  const plainTol: Tol = exact ? () => f32 : f32;
  const sliceOf = (a: Numeric, what?: string) =>
    channelSlice(a, { ...slice!, n, cOut, pixels: P, what });
  // y in a slice: an f16 one scaled by the slice's magnitude (not the sentinel's).
  const yTol: Tol = slice && !exact
    ? (dtype, want) =>
      dtype === "f16" ? f16Tolerance(maxAbs(sliceOf(want)), extra.y ?? 0) : conv2dTol(s.len)
    : plainTol;
  const init = exact ? ints(2) : uniform(-1, 1);
  const wRange = c.wRange ?? 1;
  const yTensor: OpTensor = slice
    ? input(yShape, (_rng, k) => new Float64Array(k).fill(slice.sentinel), { as: "y" })
    : output(yShape, { as: "y" });
  const at = (name: string, m: number) => `${name}@${m}`;
  if (c.accumulate && chunks.length) throw new TypeError(`${label}: chunks do not accumulate`);
  const tensors: Record<string, OpTensor> = {
    x: input(s.x, init),
    w: input(s.w, exact ? ints(2) : uniform(-wRange, wRange)),
    ...(bias ? { b: input([cOut], exact ? ints(3) : init) } : {}),
    ...(c.forwardOnly ? {} : { dy: input(s.y, init) }),
    ...(c.accumulate ? { dw: input(s.w, init), db: input([cOut], init) } : {}),
    y: yTensor,
    ...(c.separate ? { plain: output(s.y, { as: "y" }) } : {}),
    ...(c.forwardOnly ? {} : { dx: output(s.x) }),
    ...(c.forwardOnly || c.accumulate ? {} : { dw: output(s.w), db: output([cOut]) }),
  };
  for (const m of chunks) {
    tensors[at("y", m)] = yTensor;
    if (c.forwardOnly) continue;
    tensors[at("dx", m)] = output(s.x, { as: "dx" });
    tensors[at("dw", m)] = output(s.w, { as: "dw" });
    tensors[at("db", m)] = output([cOut], { as: "db" });
  }
  // What the calls ran, reset by each run's forward (the last mix's is what `check` sees).
  const ran: Conv2dRan = { gpu: undefined as unknown as Gpu, what: label, chunked: [], again: [] };
  const fwd = { ...p, ...c.options, activation, yChannelOffset: slice?.offset };
  const bwd = { ...p, ...c.options, accumulate: c.accumulate };
  const each = (f: (name: (d: string) => string, m?: number) => void) => {
    f((d) => d);
    for (const m of chunks) f((d) => at(d, m), m);
  };
  const forward: OpPhase = {
    gpu: (t: Readonly<Record<string, Tensor>>) => {
      const { x, w, b } = t, gpu = x.gpu;
      Object.assign(ran, { gpu, forward: undefined, backward: undefined });
      ran.chunked.length = ran.again.length = 0;
      each((name, m) => {
        const r = call(
          gpu,
          () => conv2dForward({ y: t[name("y")], x, w, b }, m ? { ...fwd, maxChunkBytes: m } : fwd),
        );
        if (m === undefined) ran.forward = r;
        else ran.chunked.push({ maxChunkBytes: m, forward: r });
      });
      if (c.separate) {
        conv2dForward({ y: t.plain, x, w, b }, { ...p, ...c.options });
        if (activation) activationForward({ y: t.plain, x: t.plain }, { kind: activation });
      }
    },
    cpu: ({ x, w, b, y }) => {
      let r = conv2dRef(p, x, w, b);
      if (activation) r = activationForwardRef(r, activation);
      let full = r;
      if (slice) {
        full = Float64Array.from(y);
        for (let img = 0; img < n; img++) {
          full.set(r.subarray(img * cOut * P, (img + 1) * cOut * P), (img * C + slice.offset) * P);
        }
      }
      const out: Record<string, Numeric> = c.separate ? { plain: r } : {};
      each((name) => out[name("y")] = full);
      return out;
    },
    tol: {
      ...Object.fromEntries(
        [undefined, ...chunks].map((m) => [m === undefined ? "y" : at("y", m), yTol]),
      ),
      ...(c.separate ? { plain: plainTol } : {}),
    },
    extra: extra.y ?? 0,
    same: Object.fromEntries(chunks.map((m) => [at("y", m), "y"])),
    check: (got) => {
      // The fused output (whole and chunked): its slice, the other channels untouched, and the
      // unfused kernels' output within an f32 ulp.
      each((name) => {
        const y = name("y"), what = `${label}: ${y}`;
        const fused = slice ? sliceOf(got[y], what) : got[y];
        if (c.separate) {
          assertClose(fused, got.plain, {
            rtol: 1.2e-7,
            atol: 0,
            what: `${what} fused vs separate`,
          });
        }
      });
      if (c.forwardOnly) c.check?.(ran);
    },
  };
  if (c.forwardOnly) {
    return opCase({ label, tensors, phases: [forward], bindingLimit: c.bindingLimit });
  }
  const backward: OpPhase = {
    gpu: (t) => {
      const { x, w, dy } = t, gpu = x.gpu;
      each((name, m) => {
        const io = { dx: t[name("dx")], dw: t[name("dw")], db: t[name("db")], dy, x, w };
        const r = call(gpu, () => conv2dBackward(io, m ? { ...bwd, maxChunkBytes: m } : bwd));
        if (m === undefined) ran.backward = r;
        else ran.chunked.find((q) => q.maxChunkBytes === m)!.backward = r;
      });
    },
    cpu: (v) => {
      const g = conv2dBackwardRef(p, v.x, v.w, v.dy);
      const out: Record<string, Numeric> = {};
      each((name) => {
        out[name("dx")] = g.dx;
        out[name("dw")] = c.accumulate ? add(g.dw, v[name("dw")]) : g.dw;
        out[name("db")] = c.accumulate ? add(g.db, v[name("db")]) : g.db;
      });
      return out;
    },
    tol: Object.fromEntries(
      [undefined, ...chunks].flatMap((m) =>
        (["dx", "dw", "db"] as const).map((d) => [m === undefined ? d : at(d, m), plainTol])
      ),
    ),
    extra: Object.fromEntries(
      [undefined, ...chunks].flatMap((m) =>
        (["dx", "dw", "db"] as const).map((d) => [m === undefined ? d : at(d, m), extra[d] ?? 0])
      ),
    ),
    same: Object.fromEntries(chunks.map((m) => [at("dx", m), "dx"])),
    check: (got) => {
      // Chunks sum dw and db in another order.
      for (const m of chunks) {
        for (const d of ["dw", "db"]) {
          assertClose(got[at(d, m)], got[d], {
            ...conv2dTol(s.len),
            what: `${label}: chunked ${d}`,
          });
        }
      }
      if (again.length === 0) c.check?.(ran);
    },
  };
  const more: OpPhase[] = again.map((d, k) => ({
    name: `${d} alone, accumulated again`,
    gpu: (t) => {
      const { x, w, dy } = t;
      ran.again.push(
        call(x.gpu, () => conv2dBackward({ [d]: t[d], dy, x, w }, { ...bwd, accumulate: true })),
      );
    },
    cpu: ({ x, w, dy }, { ref }) => ({ [d]: add(ref[d], conv2dBackwardRef(p, x, w, dy)[d]) }),
    tol: { [d]: plainTol },
    extra: extra[d] ?? 0,
    check: () => {
      if (k === again.length - 1) c.check?.(ran);
    },
  }));
  const fd: FdCheck[] = [
    { wrt: "x", grad: "dx" },
    { wrt: "w", grad: "dw" },
    ...(bias ? [{ wrt: "b", grad: "db" }] : []),
  ];
  return opCase({
    label,
    tensors,
    phases: [forward, backward, ...more],
    fd,
    bindingLimit: c.bindingLimit,
  });
}

/** The steps of the forward and backward plans of a run. */
export function stepsOf(ran: Conv2dRan): ConvStep[] {
  return [...ran.forward?.plan.steps ?? [], ...ran.backward?.plan.steps ?? []];
}

/** How many of `steps` are of `kind`. */
export function countSteps(steps: readonly ConvStep[], kind: ConvStep["kind"]): number {
  return steps.filter((t) => t.kind === kind).length;
}

/** The kernels of the forward and backward calls of a run. */
export function kernelsRan(ran: Conv2dRan): string[] {
  return [...ran.forward?.kernels ?? [], ...ran.backward?.kernels ?? []];
}

/**
 * Training's configuration: activations and their gradients f16, weights f16 (copies of f32
 * master weights), the bias and every parameter gradient f32.
 */
export const TRAIN: Mix = { x: "f16", w: "f16", b: "f32", y: "f16", dy: "f16", dx: "f16" };

/** Another mix: f32 activations and input gradient, f16 parameters, dy and parameter gradients. */
export const OTHER: Mix = { w: "f16", b: "f16", dy: "f16", dw: "f16", db: "f16" };

/** The forward's path in a run, checked with a GEMM kernel that must run (its own epilogue). */
export function forwardPath(
  path: ConvPassPlan["path"],
  gemmKernel?: RegExp,
): (ran: Conv2dRan) => void {
  return (ran) => {
    assert.equal(ran.forward?.plan.forward?.path, path, ran.what);
    if (gemmKernel) {
      const kernels = ran.forward!.kernels;
      assert.ok(kernels.some((k) => gemmKernel.test(k)), `${ran.what}: ran ${kernels.join(", ")}`);
    }
  };
}

/** The activations every fused path is run with. */
export const KINDS: readonly ActivationKind[] = ["relu", "relu6", "sigmoid", "tanh"];

/** Whether every plan of a run's chunked calls splits the images (several chunks). */
export function severalChunks(ran: Conv2dRan): void {
  assert.ok(ran.chunked.length > 0, `${ran.what}: no chunked run`);
  for (const { maxChunkBytes, forward, backward } of ran.chunked) {
    for (const q of [forward, backward]) {
      if (q) {
        const { chunks } = q.plan.chunks;
        assert.ok(chunks > 1, `${ran.what}: ${chunks} chunk(s) at ${maxChunkBytes} bytes`);
      }
    }
  }
}

/** Every conv2d kernel of a run (forward and backward) is an f16 specialization. */
export function halfKernels(ran: Conv2dRan): void {
  const own = kernelsRan(ran).filter((k) => k.startsWith("conv2d"));
  assert.ok(own.every((k) => k.includes("_h-")), `${ran.what}: ${own.join(", ")}`);
}
