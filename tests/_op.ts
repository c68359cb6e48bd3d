/**
 * One test helper for every op (in the spirit of tinygrad's `helper_test_op`). An op case is
 * data: its tensors (shapes, seeded generators), its phases (the GPU recording and the Float64
 * CPU reference of a forward, a backward, ...), and the tolerance of every output. A suite is an
 * op, the parameters of its cases and the dtype mixes to run; {@linkcode checkOp} runs it:
 *
 * - the CPU backward against finite differences of the CPU forward (`fd` cases, no GPU);
 * - every phase on the GPU against the CPU reference fed what the tensors hold (inputs rounded to
 *   their dtype, the GPU's outputs of earlier phases), for each dtype mix: f32 outputs within
 *   their tolerance, f16 outputs within {@linkcode f16Tolerance} of the reference's magnitude.
 *
 * Outputs start as NaN, so every element must be written; a failure names the case, the phase,
 * the output, the mix, the max abs / rel error and the first bad index. Cases and suites use no
 * Deno API (they are to run in a browser too); {@linkcode testOp} is the `Deno.test` layer.
 *
 * One module past ~500 lines on purpose: the description of a case (half of it, its documented
 * types) and the engine that runs it read together.
 *
 * @module
 */

import { AssertionError } from "./_assert.ts";
import type { DType, Gpu, Shape, Tensor } from "../gpu/mod.ts";
import type { FloatDType } from "../kernels/_dtype.ts";
import {
  assertClose,
  checkGradient,
  type CloseOptions,
  exactTensor,
  F16_TEST,
  f16Tolerance,
  GPU_TEST,
  maxAbs,
  type Numeric,
  Rng,
  stored,
  tensorOf,
  testGpu,
} from "./harness.ts";
import { assertExact, withBindingLimit } from "./big.ts";

/** What a tensor holds on the CPU: Float64 (a reference), or the typed array of its dtype. */
export type Held =
  | Float64Array
  | Float32Array
  | Float16Array
  | Int32Array
  | Uint32Array
  | Uint8Array;

/** Values of tensors by name: Float64 for float tensors, the typed array of integer ones. */
export type Values<N extends string = string> = Readonly<Record<N, Held>>;

/**
 * Starting values of a tensor of `size` elements, drawn from the suite's seeded `rng`; `drawn`:
 * the values of the tensors listed before it (to copy them, or to keep away from a kink).
 */
export type Init = (rng: Rng, size: number, drawn: Data) => Numeric;

/** Starting values of tensors by name, as drawn (not yet rounded to the tensors' types). */
export type Data = Readonly<Record<string, Numeric>>;

/** A tensor of an op case. */
export interface OpTensor {
  /** Its shape. */
  readonly shape: Shape;
  /** An integer type (fixed whatever the mix; compared exactly); default a float, f32 or f16. */
  readonly dtype?: "i32" | "u32" | "u8";
  /** The key of the dtype mix that sets this float tensor's type (default its own name). */
  readonly as?: string;
  /**
   * Its starting values. Without: an output, filled with NaN (integers: 0x55 bytes) so that an
   * element the kernels do not write fails.
   */
  readonly init?: Init;
  /** Another tensor of the case that this one is (in place): no storage of its own. */
  readonly alias?: string;
  /** Makes the tensor by other means (a loss scaler): never read back nor in the values. */
  readonly make?: (gpu: Gpu) => Tensor;
}

/**
 * The tolerance of an output: `CloseOptions` for f32 (and integer) outputs, f16 outputs then
 * getting {@linkcode f16Tolerance} of the reference's largest magnitude and the phase's `extra`;
 * `"exact"`: every element equal (`Object.is`: -0 differs from 0, NaN equals NaN); or a function
 * of the output's dtype and its reference, for anything else.
 */
export type Tol =
  | CloseOptions
  | "exact"
  | ((dtype: DType, want: Numeric, run: TolContext) => CloseOptions | "exact");

/** What a tolerance function is told besides the output's dtype and reference. */
export interface TolContext {
  /** What the tensors held before the phase. */
  readonly v: Values;
  /** Each tensor's dtype in this run. */
  readonly dtypes: Readonly<Record<string, DType>>;
}

/** What a CPU reference is told besides the values. */
export interface OpContext<N extends string = string> {
  /** The reference's own values: the starting ones, then the references of earlier phases. */
  readonly ref: Readonly<Record<N, Numeric>>;
  /** Each tensor's dtype in this run. */
  readonly dtypes: Readonly<Record<N, DType>>;
  /** Whether any float tensor of the run is f16. */
  readonly half: boolean;
  /**
   * Whether this is the finite-difference check: the forward must then be smooth (a reference
   * that rounds to f32 as the kernel does must not round there).
   */
  readonly fd: boolean;
}

/** One step of an op case: what the GPU records and what the CPU reference says it gives. */
export interface OpPhase<N extends string = string> {
  /** A name for messages (default `forward` for the first phase, `backward` for the second). */
  readonly name?: string;
  /** Records the kernels on the case's tensors; none: a reference only (say, an identity). */
  readonly gpu?: (t: Readonly<Record<N, Tensor>>) => void;
  /**
   * The Float64 reference of the outputs, from `v`, what the tensors hold before the phase (their
   * starting values rounded to their dtype, then the GPU's outputs of earlier phases; in the
   * finite-difference check, the reference's).
   */
  readonly cpu: (v: Values<N>, ctx: OpContext<N>) => Partial<Record<N, Numeric>>;
  /** The outputs the phase writes and their tolerance. */
  readonly tol: Readonly<Partial<Record<N, Tol>>>;
  /** f16 outputs: headroom over one f16 rounding, see {@linkcode f16Tolerance} (default 0). */
  readonly extra?: number | Readonly<Partial<Record<N, number>>>;
  /**
   * Outputs that must equal another output (a fused kernel and the unfused pair), element for
   * element (`===`, or both NaN).
   */
  readonly same?: Readonly<Partial<Record<N, N>>>;
  /** Tensors read back after the phase for `check` alone (no reference of their own). */
  readonly reads?: readonly N[];
  /** Further checks of the outputs `got` against the reference `want`. */
  readonly check?: (got: Values<N>, want: Partial<Record<N, Numeric>>, ctx: OpContext<N>) => void;
}

/** The finite-difference check of the gradient of one input. */
export interface FdCheck<N extends string = string> extends CloseOptions {
  /** The input. */
  readonly wrt: N;
  /** The output of the backward (second phase) holding its gradient. */
  readonly grad: N;
  /**
   * The loss: the sum over its entries `o: do` of `o * do` (`o` a forward output, `do` a tensor
   * of cotangents); default every forward output `o` with a tensor named `d` + `o`.
   */
  readonly loss?: Readonly<Partial<Record<N, N>>>;
  /** The step of the central differences (default 1e-6). */
  readonly eps?: number;
}

/** One case of an op: tensors, phases and checks; build it with {@linkcode opCase}. */
export interface OpCase<N extends string = string> {
  /** The case in messages (shape and parameters). */
  readonly label: string;
  /** Every tensor the phases touch, by name (drawn from the seeded generator in this order). */
  readonly tensors: Readonly<Record<N, OpTensor>>;
  /** The phases, run in order on the same tensors (the first two: the forward, the backward). */
  readonly phases: readonly OpPhase<N>[];
  /**
   * Gradients the backward (the second phase) gives, checked in the `fd` cases against central
   * differences of a loss of the forward (the first phase); the backward's outputs start at zero
   * there.
   */
  readonly fd?: readonly FdCheck<N>[];
  /** Runs the case with the kernels' binding limit lowered to this many elements (ranges). */
  readonly bindingLimit?: number;
  /** Puts every tensor in a buffer of exactly its size (no vec4 slack: the scalar paths). */
  readonly exact?: boolean;
}

/** The storage type of float tensors by mix key (tensor name or `as`); f32 where absent. */
export type Mix = Readonly<Record<string, FloatDType>>;

/** A list of cases of one op: what {@linkcode checkOp} runs and {@linkcode testOp} registers. */
export interface OpSuite<P> {
  /** The test's name. */
  readonly name: string;
  /** The case of each parameter record. */
  op(p: P): OpCase;
  /** The seed of the generator of the starting values. */
  readonly seed: number;
  /** Parameters of the cases run on the GPU. */
  readonly cases?: readonly P[];
  /** Parameters of the cases whose CPU backward is checked against finite differences. */
  readonly fd?: readonly P[];
  /** The dtype mixes to run each GPU case in (default: everything f32). */
  readonly mixes?: readonly Mix[];
  /** A check over all GPU cases once they passed (say, that they reached every regime). */
  readonly after?: () => void;
}

/**
 * `c` typed by the names of its tensors (checked in its phases and checks).
 *
 * @example
 * ```ts
 * import { input, opCase, output } from "./_op.ts";
 * const c = opCase({
 *   label: "double n=3",
 *   tensors: { x: input([3]), y: output([3]) },
 *   phases: [{ gpu: () => {}, cpu: ({ x }) => ({ y: Float64Array.from(x, (v) => 2 * v) }), tol: { y: "exact" } }],
 * });
 * ```
 */
export function opCase<N extends string>(c: OpCase<N>): OpCase<N> {
  return c;
}

/**
 * Standard normal starting values.
 *
 * @example
 * ```ts
 * import { normal } from "./_op.ts";
 * import { Rng } from "./harness.ts";
 * normal(new Rng(1), 4).length; // 4
 * ```
 */
export const normal: Init = (rng, n) => rng.normalArray(n);

/**
 * Starting values uniform in [lo, hi).
 *
 * @example
 * ```ts
 * import { uniform } from "./_op.ts";
 * import { Rng } from "./harness.ts";
 * uniform(0, 1)(new Rng(1), 4).length; // 4
 * ```
 */
export function uniform(lo: number, hi: number): Init {
  return (rng, n) => rng.uniformArray(n, lo, hi);
}

/**
 * An input tensor: `shape`, starting values from `init` (default {@linkcode normal}).
 *
 * @example
 * ```ts
 * import { input } from "./_op.ts";
 * input([2, 3]).shape; // [2, 3]
 * ```
 */
export function input(shape: Shape, init: Init = normal, more: Partial<OpTensor> = {}): OpTensor {
  return { shape, init, ...more };
}

/**
 * An output tensor (filled with NaN before the kernels run).
 *
 * @example
 * ```ts
 * import { output } from "./_op.ts";
 * output([2, 3], { dtype: "i32" }).dtype; // "i32"
 * ```
 */
export function output(shape: Shape, more: Partial<OpTensor> = {}): OpTensor {
  return { shape, ...more };
}

const size = (shape: Shape) => shape.reduce((a, b) => a * b, 1);

/** The names a phase reads back: its outputs and the outputs they must equal. */
function outputsOf(phase: OpPhase): string[] {
  const same = Object.values(phase.same ?? {}) as string[];
  return [...new Set([...Object.keys(phase.tol), ...same, ...phase.reads ?? []])];
}

function phaseName(phase: OpPhase, i: number): string {
  return phase.name ?? ["forward", "backward"][i] ?? `phase ${i}`;
}

/** The dtype of every tensor of `c` in `mix` (an alias has its target's). */
function dtypesOf(c: OpCase, mix: Mix): Record<string, DType> {
  const out: Record<string, DType> = {};
  const own = (name: string): DType => {
    const t = c.tensors[name];
    if (t === undefined) throw new TypeError(`${c.label}: no tensor ${name}`);
    if (t.alias !== undefined) return own(t.alias);
    return t.dtype ?? mix[t.as ?? name] ?? "f32";
  };
  for (const name of Object.keys(c.tensors)) out[name] = own(name);
  return out;
}

/**
 * The starting values of `c`'s tensors, drawn from `rng` in the order the case lists them (those
 * `given` taken as they are).
 */
function draw(c: OpCase, rng: Rng, given: Data = {}): Data {
  const data: Record<string, Numeric> = {};
  for (const [name, t] of Object.entries(c.tensors)) {
    if (name in given) data[name] = given[name];
    if (name in given || t.init === undefined || t.alias !== undefined) continue;
    const d = t.init(rng, size(t.shape), data);
    if (d.length !== size(t.shape)) {
      throw new TypeError(`${c.label}: ${name} has ${d.length} values for shape [${t.shape}]`);
    }
    data[name] = d;
  }
  return data;
}

/** The values `c`'s tensors start with: `data` as `hold` keeps it, and each alias its target's. */
function startValues(
  c: OpCase,
  data: Data,
  hold: (d: Numeric, name: string) => Held,
): Record<string, Held> {
  const v: Record<string, Held> = {};
  for (const [name, d] of Object.entries(data)) v[name] = hold(d, name);
  for (const [name, t] of Object.entries(c.tensors)) {
    if (t.alias !== undefined && t.alias in v) v[name] = v[t.alias];
  }
  return v;
}

const ARRAYS = {
  f32: Float32Array,
  f16: Float16Array,
  i32: Int32Array,
  u32: Uint32Array,
  u8: Uint8Array,
} as const;

/** What a tensor of `dtype` holds of `data` (f64: unrounded): Float64 for floats, else its array. */
function held(data: Numeric, dtype: DType | "f64"): Held {
  if (dtype === "f64") return Float64Array.from(data);
  if (dtype === "f32" || dtype === "f16") return stored(data, dtype);
  return data instanceof ARRAYS[dtype] ? data : ARRAYS[dtype].from(data);
}

/** `out` with every array a typed one (a reference may give plain arrays). */
function asHeld(out: Readonly<Record<string, Numeric | undefined>>): Record<string, Held> {
  const r: Record<string, Held> = {};
  for (const [k, a] of Object.entries(out)) {
    if (a !== undefined) r[k] = ArrayBuffer.isView(a) ? a as Held : Float64Array.from(a);
  }
  return r;
}

/** A tensor of `dtype` and `shape` holding `data` (its own exact-size buffer when `exact`). */
function upload(gpu: Gpu, data: Numeric, dtype: DType, shape: Shape, exact: boolean): Tensor {
  if (dtype === "f32" || dtype === "f16") {
    if (!exact) return tensorOf(gpu, data, { dtype, shape });
    const values = dtype === "f16" ? Float16Array.from(data) : Float32Array.from(data);
    return exactTensor(gpu, values, { shape });
  }
  const values = ArrayBuffer.isView(data) && data instanceof ARRAYS[dtype]
    ? data
    : ARRAYS[dtype].from(data as ArrayLike<number>);
  return gpu.tensor(values, { shape });
}

/** `n` elements of `dtype` an output starts with: NaN, or 0x55 bytes for integers. */
function sentinel(dtype: DType, n: number): Numeric {
  if (dtype === "f32" || dtype === "f16") return new Float64Array(n).fill(NaN);
  const bytes = new Uint8Array(n * (dtype === "u8" ? 1 : 4)).fill(0x55);
  return dtype === "u8" ? bytes : new ARRAYS[dtype](bytes.buffer);
}

/** Allocates the tensors of `c`: starting values uploaded, outputs filled with the sentinel. */
function allocate(
  gpu: Gpu,
  c: OpCase,
  start: Values,
  dtypes: Record<string, DType>,
): Record<string, Tensor> {
  const t: Record<string, Tensor> = {};
  for (const [name, spec] of Object.entries(c.tensors)) {
    if (spec.alias !== undefined) continue;
    if (spec.make) {
      t[name] = spec.make(gpu);
      continue;
    }
    const dtype = dtypes[name];
    const values = start[name] ?? sentinel(dtype, size(spec.shape));
    t[name] = upload(gpu, values, dtype, spec.shape, c.exact ?? false);
  }
  for (const [name, spec] of Object.entries(c.tensors)) {
    if (spec.alias !== undefined) t[name] = t[spec.alias];
  }
  return t;
}

/** Throws unless every element of `got` is `want`'s (`Object.is`). */
function assertSame(got: Numeric, want: Numeric, what: string): void {
  if (got.length !== want.length) {
    throw new AssertionError({
      message: `${what}: length ${got.length} differs from expected ${want.length}`,
    });
  }
  let bad = 0, first = -1;
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) {
      bad++;
      if (first < 0) first = i;
    }
  }
  if (first >= 0) {
    throw new AssertionError({
      message: `${what}: ${bad} of ${want.length} elements differ (exact); first at index ` +
        `${first}: actual ${got[first]}, expected ${want[first]}`,
    });
  }
}

/** Asserts `got` against `want` with the tolerance `tol` of an output of `dtype`. */
function compare(
  got: Numeric,
  want: Numeric,
  tol: Tol,
  o: {
    readonly dtype: DType;
    readonly extra: number;
    readonly run: TolContext;
    readonly what: string;
  },
): void {
  const { dtype, extra, what } = o;
  const t = typeof tol === "function" ? tol(dtype, want, o.run) : tol;
  if (t === "exact") assertSame(got, want, what);
  else if (dtype === "f16" && typeof tol !== "function") {
    assertClose(got, want, { ...f16Tolerance(maxAbs(want), extra), what });
  } else assertClose(got, want, { ...t, what });
}

/** The context of a run: each tensor's dtype and whether any is f16. */
function context(
  ref: Readonly<Record<string, Numeric>>,
  dtypes: Record<string, DType>,
  fd = false,
): OpContext {
  return { ref, dtypes, half: Object.values(dtypes).includes("f16"), fd };
}

/**
 * Runs the phases of `c` on the GPU with the starting values `data` (what {@linkcode checkOp}
 * draws) in the dtypes of `mix`, calling `each` after every phase with the outputs read back and
 * what the tensors held before it.
 */
async function execute(
  gpu: Gpu,
  c: OpCase,
  data: Data,
  mix: Mix,
  each: (phase: OpPhase, i: number, got: Values, before: Values) => void,
): Promise<void> {
  const dtypes = dtypesOf(c, mix);
  const v = startValues(c, data, (d, name) => held(d, dtypes[name]));
  const body = async () => {
    const t = allocate(gpu, c, v, dtypes);
    try {
      for (const [i, phase] of c.phases.entries()) {
        if (!phase.gpu) continue;
        phase.gpu(t);
        const names = outputsOf(phase);
        const arrays = await Promise.all(names.map((n) => t[n].toArray()));
        const got: Record<string, Held> = {};
        names.forEach((n, k) => {
          const a = arrays[k];
          if (!(a instanceof ARRAYS[dtypes[n]])) {
            throw new AssertionError({
              message: `${c.label} ${phaseName(phase, i)}: ${n} reads back as ` +
                `${a.constructor.name}, not as a ${dtypes[n]} tensor`,
            });
          }
          got[n] = a;
        });
        each(phase, i, got, { ...v });
        Object.assign(v, got);
      }
    } finally {
      for (const x of new Set(Object.values(t))) x.dispose();
    }
  };
  await (c.bindingLimit === undefined ? body() : withBindingLimit(c.bindingLimit, body));
}

/** How {@linkcode runOp}, {@linkcode runOpPhases} and {@linkcode checkOpCase} run one case. */
export interface RunOptions {
  /** The dtype mix (default every float tensor f32). */
  readonly mix?: Mix;
  /** Starting values by name; the others are drawn from `new Rng(seed)`. */
  readonly data?: Data;
  /** The seed of the values not in `data` (default 0). */
  readonly seed?: number;
}

/**
 * Runs `c` on the GPU and returns what each phase wrote (its outputs read back), unchecked: for
 * tests that assert something else than the reference, or compare two runs.
 *
 * @example
 * ```ts ignore
 * const steps = await runOpPhases(gpu, sgd({ n: 7, p: { lr: 0.1 } }));
 * steps[2].param; // after the third step
 * ```
 */
export async function runOpPhases(gpu: Gpu, c: OpCase, o: RunOptions = {}): Promise<Values[]> {
  const out: Values[] = [];
  const data = draw(c, new Rng(o.seed ?? 0), o.data);
  await execute(gpu, c, data, o.mix ?? {}, (_phase, _i, got) => out.push(got));
  return out;
}

/**
 * {@linkcode runOpPhases}, the outputs of all phases in one record (a later phase's win).
 *
 * @example
 * ```ts ignore
 * const out = await runOp(gpu, pool2d({ n: 1, c: 1, h: 4, w: 4, kernel: 2 }));
 * out.argmax; // Int32Array
 * ```
 */
export async function runOp(gpu: Gpu, c: OpCase, o: RunOptions = {}): Promise<Values> {
  return Object.assign({}, ...await runOpPhases(gpu, c, o));
}

/**
 * Checks `c` on the GPU against its CPU reference: one case of a suite, on given data, for a
 * test that also asserts something else on the same data.
 *
 * @example
 * ```ts ignore
 * await checkOpCase(gpu, prepareBatchOp({ p, count }), { data: { images, srcLabels, indices } });
 * ```
 */
export async function checkOpCase(gpu: Gpu, c: OpCase, o: RunOptions = {}): Promise<void> {
  await checkCase(gpu, c, draw(c, new Rng(o.seed ?? 0), o.data), o.mix ?? {});
}

function mixLabel(mix: Mix): string {
  const keys = Object.entries(mix);
  return keys.length ? ` (${keys.map(([k, d]) => `${k} ${d}`).join(", ")})` : "";
}

/** Checks one case in one mix on the GPU against its CPU reference. */
async function checkCase(gpu: Gpu, c: OpCase, data: Data, mix: Mix): Promise<void> {
  const dtypes = dtypesOf(c, mix);
  const ref: Record<string, Numeric> = startValues(c, data, (d, name) => held(d, dtypes[name]));
  await execute(gpu, c, data, mix, (phase, i, got, before) => {
    const ctx = context({ ...ref }, dtypes);
    const want = phase.cpu(before, ctx);
    const at = `${c.label} ${phaseName(phase, i)}`;
    for (const [name, tol] of Object.entries(phase.tol) as [string, Tol][]) {
      const w = want[name];
      if (w === undefined) throw new TypeError(`${at}: the CPU reference gives no ${name}`);
      const extra = typeof phase.extra === "object" ? phase.extra[name] : phase.extra;
      const what = `${at}: ${name}${mixLabel(mix)}`;
      const run = { v: before, dtypes };
      compare(got[name], w, tol, { dtype: dtypes[name], extra: extra ?? 0, run, what });
    }
    for (const [a, b] of Object.entries(phase.same ?? {}) as [string, string][]) {
      assertExact(got[a], got[b], `${at}: ${a} == ${b}${mixLabel(mix)}`);
    }
    phase.check?.(got, want, ctx);
    for (const [name, w] of Object.entries(want)) if (w !== undefined) ref[name] = w;
  });
}

/**
 * Checks the backward (second phase) of `c`'s CPU reference against central differences of its
 * forward (first phase), in Float64 on the unrounded starting values `data`.
 */
function checkCaseGradients(c: OpCase, data: Data): void {
  const [forward, backward] = c.phases;
  if (!backward || !c.fd) throw new TypeError(`${c.label}: no backward or fd inputs to check`);
  const dtypes = dtypesOf(c, {});
  const v = startValues(
    c,
    data,
    (d, name) => held(d, dtypes[name] === "f32" ? "f64" : dtypes[name]),
  );
  // Gradients start at zero (a backward that accumulates adds to them).
  for (const name of outputsOf(backward)) {
    if (name in v) v[name] = new Float64Array(size(c.tensors[name].shape));
  }
  const after = { ...v, ...asHeld(forward.cpu(v, context(v, dtypes, true))) };
  const grads = backward.cpu(after, context(after, dtypes, true));
  for (const { wrt, grad, loss, ...tol } of c.fd) {
    const terms = Object.entries(
      loss ??
        Object.fromEntries(outputsOf(forward).map((o) => [o, `d${o}`]).filter(([, d]) => d in v)),
    ) as [string, string][];
    const f = (xv: Float64Array) => {
      const values: Values = { ...v, [wrt]: xv };
      const out = forward.cpu(values, context(values, dtypes, true));
      let s = 0;
      for (const [o, d] of terms) {
        const y = out[o]!, dy = values[d];
        for (let i = 0; i < y.length; i++) s += y[i] * dy[i];
      }
      return s;
    };
    const analytic = grads[grad];
    if (analytic === undefined) throw new TypeError(`${c.label}: the backward gives no ${grad}`);
    checkGradient(f, Float64Array.from(v[wrt]), analytic, {
      ...tol,
      what: `${c.label}: ${grad} vs finite differences`,
    });
  }
}

/**
 * One check of a suite, as {@linkcode opChecks} lists them: the finite-difference check of one
 * `fd` case, one GPU case in one mix, or the suite's `after`.
 */
export interface OpCheck {
  /** `<suite>: <case>` and, for a GPU case, its mix or ` (CPU backward vs finite differences)`. */
  readonly name: string;
  /** Whether it needs a GPU (false: the CPU references alone). */
  readonly gpu: boolean;
  /** Whether it needs `shader-f16` (a mix holds an f16 tensor). */
  readonly f16: boolean;
  /** Runs it: throws an `AssertionError` (or another error) where it fails. */
  run(gpu: Gpu): void | Promise<void>;
}

/** Which checks {@linkcode opChecks} lists. */
export interface OpChecksOptions {
  /** The finite-difference checks of the `fd` cases (default true). */
  readonly fd?: boolean;
  /** The GPU cases and the suite's `after` (default true). */
  readonly gpu?: boolean;
}

/**
 * The checks of `suite` one by one, in the order {@linkcode checkOpGradients} and
 * {@linkcode checkOp} run them (the `fd` cases, then each GPU case in each mix, then `after`),
 * each case's starting values drawn from the suite's seeded generator as the list is walked: run
 * each check before taking the next. Uses no Deno API (`deno task test:browser` runs the suites
 * case by case in Chromium with it).
 *
 * @example
 * ```ts ignore
 * for (const check of opChecks(lrnSuite)) await check.run(gpu);
 * ```
 */
export function* opChecks<P>(suite: OpSuite<P>, o: OpChecksOptions = {}): Generator<OpCheck> {
  if (o.fd ?? true) {
    const rng = new Rng(suite.seed);
    for (const p of suite.fd ?? []) {
      const c = suite.op(p);
      const data = draw(c, rng);
      yield {
        name: `${suite.name}: ${c.label} (CPU backward vs finite differences)`,
        gpu: false,
        f16: false,
        run: () => checkCaseGradients(c, data),
      };
    }
  }
  if (!(o.gpu ?? true)) return;
  const rng = new Rng(suite.seed);
  for (const p of suite.cases ?? []) {
    const c = suite.op(p);
    const data = draw(c, rng);
    for (const mix of suite.mixes ?? [{}]) {
      yield {
        name: `${suite.name}: ${c.label}${mixLabel(mix)}`,
        gpu: true,
        f16: Object.values(mix).includes("f16"),
        run: (gpu) => checkCase(gpu, c, data, mix),
      };
    }
  }
  if (suite.after && suite.cases?.length) {
    const after = suite.after;
    yield { name: `${suite.name}: after every case`, gpu: false, f16: false, run: () => after() };
  }
}

/**
 * Runs the GPU cases of `suite` in each of its mixes against the CPU reference (throws an
 * `AssertionError` at the first output out of tolerance). Uses no Deno API.
 *
 * @example
 * ```ts ignore
 * await checkOp(await testGpu(), lrnSuite);
 * ```
 */
export async function checkOp<P>(gpu: Gpu, suite: OpSuite<P>): Promise<void> {
  for (const check of opChecks(suite, { fd: false })) await check.run(gpu);
}

/**
 * Checks the CPU backward of the `fd` cases of `suite` against finite differences of the CPU
 * forward. Uses no Deno API and no GPU.
 *
 * @example
 * ```ts ignore
 * checkOpGradients(lrnSuite);
 * ```
 */
export function checkOpGradients<P>(suite: OpSuite<P>): void {
  for (const check of opChecks(suite, { gpu: false })) {
    // Finite-difference checks are synchronous (no GPU): the gpu argument is never read.
    void check.run(undefined as unknown as Gpu);
  }
}

/**
 * Registers `suite` with `Deno.test`: `<name>: CPU backward vs finite differences` for its `fd`
 * cases (no GPU needed) and `<name>: GPU vs reference` for its GPU cases (ignored without
 * `shader-f16` when a mix holds an f16 tensor).
 *
 * @example
 * ```ts ignore
 * testOp(lrnSuite);
 * ```
 */
export function testOp<P>(suite: OpSuite<P>): void {
  if (suite.fd?.length) {
    Deno.test(`${suite.name}: CPU backward vs finite differences`, () => checkOpGradients(suite));
  }
  if (suite.cases?.length) {
    const half = (suite.mixes ?? []).some((m) => Object.values(m).includes("f16"));
    Deno.test(`${suite.name}: GPU vs reference`, half ? F16_TEST : GPU_TEST, async () => {
      await checkOp(await testGpu(), suite);
    });
  }
}
