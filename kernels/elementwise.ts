/**
 * Elementwise kernels: the residual add (with ResNet's fused ReLU), gradient accumulation,
 * channel concatenation / split (Inception, DenseNet), {@linkcode cast} between f32 and f16, and
 * {@linkcode elementwiseMap}, the generator behind every flat elementwise kernel of the library
 * (activations, SGD).
 *
 * Every float tensor may be f32 or f16, each independently (the WGSL element type of a binding
 * follows its tensor's dtype); arithmetic is f32: f16 operands are converted on load and results
 * rounded once on store (`_dtype.ts`). With every tensor f32 the kernels are those of before f16.
 *
 * Memory-bound kernels run one thread per `vec4` (four consecutive elements) when every
 * tensor's buffer has room for the last, partial vector (always true for pooled buffers, whose
 * sizes are multiples of 256 bytes); the lanes past the tensor's end then compute on the
 * buffer's slack and are never read. Otherwise one thread per element.
 *
 * Tensors larger than one storage binding (`maxStorageBufferBindingSize`, 128 MiB on llvmpipe)
 * are processed in ranges, one dispatch per range: flat kernels in ranges of elements aligned to
 * the binding offset alignment, channel concat / split in ranges of whole rows (samples). No
 * kernel here loops.
 *
 * @module
 */

import { type Binding, formatShape, grid1d, type KernelSpec, type Tensor } from "../gpu/mod.ts";
import { actBackwardFn, checkActivationKind } from "./_activation_wgsl.ts";
import { bindingRange, unitRanges } from "./_binding.ts";
import {
  convert,
  dtypeTag,
  floatBytes,
  type FloatDType,
  floatDType,
  loadF32,
  storageType,
  storeAs,
  vec4Bytes,
  wgslEnable,
} from "./_dtype.ts";
import type { ActivationKind } from "./_activation_wgsl.ts";
import { ParamsWriter } from "./_params.ts";

/** Threads per workgroup of the flat elementwise kernels. */
const WG = 256;

// ------------------------------------------------------------------ shared helpers ----

/** Whether a tensor can be bound as an array of vec4s of its dtype covering all its elements. */
function fitsVec4(t: Tensor): boolean {
  return t.capacity >= vec4Bytes(t);
}

/** The binding of a tensor as an array of vec4s (rounded up into the buffer's slack). */
function vec4Binding(t: Tensor): Binding {
  return { buffer: t.buffer, offset: t.byteOffset, size: vec4Bytes(t) };
}

function describe(t: Tensor): string {
  return `${formatShape(t.shape)} (${t.dtype})`;
}

function checkFinite(op: string, name: string, v: number): void {
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new RangeError(`${op}: ${name} must be a finite number, got ${v}`);
  }
}

// ------------------------------------------------------------------ elementwiseMap ----

/** How a kernel of {@linkcode elementwiseMap} uses an operand. */
export type MapAccess = "read" | "write" | "readwrite";

/**
 * A flat elementwise kernel for {@linkcode elementwiseMap}: a WGSL body over locals named after
 * the operands, of type `T` (`vec4<f32>` or `f32`: write the body so that it is valid for both,
 * e.g. `max(x, T(0.0))`, `select(T(0.0), dy, y > T(0.0))`). The locals are f32 whatever the
 * operands' dtypes (f16 operands are converted on load and rounded on store).
 */
export interface ElementwiseMapKernel {
  /**
   * Unique name of this kernel; the operands, uniforms and body must be a function of it (the
   * pipeline cache keys on the name plus the layout suffix added by `elementwiseMap`).
   */
  readonly name: string;
  /**
   * Operands in order. `read` operands are `let` locals loaded before the body, `write` ones are
   * zero-initialised `var`s stored after it, `readwrite` ones are loaded and stored.
   */
  readonly operands: readonly { readonly name: string; readonly access: MapAccess }[];
  /** Scalar `f32` uniforms, readable in the body as `p.<name>`. */
  readonly uniforms?: readonly string[];
  /** WGSL statements computing the `write`/`readwrite` locals from the others. */
  readonly body: string;
}

const mapSpecs = new Map<string, KernelSpec>();

function mapSpec(
  kernel: ElementwiseMapKernel,
  vec: boolean,
  slots: readonly number[],
  slotAccess: readonly ("read" | "read_write")[],
  slotDtype: readonly FloatDType[],
): KernelSpec {
  const tag = dtypeTag(Object.fromEntries(slotDtype.map((d, k) => [`b${k}`, d])));
  const name = `${kernel.name}_${vec ? "v4" : "s"}_b${slots.join("")}${tag}`;
  const hit = mapSpecs.get(name);
  if (hit) return hit;
  const T = vec ? "vec4<f32>" : "f32";
  const fields = ["count: u32", ...(kernel.uniforms ?? []).map((u) => `${u}: f32`)];
  const decls = slotAccess.map((a, k) =>
    `@group(0) @binding(${k + 1}) var<storage, ${a}> b${k}: array<${
      storageType(slotDtype[k], vec)
    }>;`
  );
  const loads: string[] = [];
  const stores: string[] = [];
  kernel.operands.forEach((o, j) => {
    const k = slots[j];
    const load = loadF32(slotDtype[k], `b${k}[i]`, vec);
    if (o.access === "read") loads.push(`let ${o.name}: T = ${load};`);
    else if (o.access === "readwrite") loads.push(`var ${o.name}: T = ${load};`);
    else loads.push(`var ${o.name}: T;`);
    if (o.access !== "read") {
      stores.push(`b${k}[i] = ${storeAs(slotDtype[k], o.name, vec)};`);
    }
  });
  const half = slotDtype.some((d) => d === "f16")
    ? `
// Storage: ${
      slotDtype.map((d, k) => `b${k} ${d}`).join(", ")
    }; the locals are T (f32), f16 slots converted on
// load and rounded once on store.`
    : "";
  const code = `${wgslEnable(slotDtype)}// ${name}: one thread per ${
    vec ? "vec4 (4 consecutive elements)" : "element"
  }; flat
// index i = gid.x + gid.y * nwg.x * WG over p.count ${vec ? "vectors" : "elements"} (grid1d).
// Operands (binding slot): ${
    kernel.operands.map((o, j) => `${o.name}=b${slots[j]}`).join(", ")
  }.${half}
alias T = ${T};
const WG = ${WG}u;
struct Params { ${fields.join(", ")} }
@group(0) @binding(0) var<uniform> p: Params;
${decls.join("\n")}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * WG;
  if (i >= p.count) { return; }
  ${loads.join("\n  ")}
  {
    ${kernel.body}
  }
  ${stores.join("\n  ")}
}
`;
  const spec = { name, code };
  mapSpecs.set(name, spec);
  return spec;
}

/**
 * Records one flat elementwise kernel over float tensors (f32 or f16, each independently) of
 * equal element count; the body computes in f32 (f16 operands converted on load, results rounded
 * once on store). Tensors that share a buffer are bound once (so an output may alias an input:
 * every element is loaded before it is stored); two written operands may not share one, nor may
 * two operands of different dtypes. Validates dtypes and sizes (TypeError naming `op` and both
 * shapes) and that uniforms are finite (RangeError).
 *
 * @param op Name of the public operation, for error messages.
 * @param kernel The kernel (build it once, at module level).
 * @param tensors One tensor per operand, by operand name.
 * @param uniforms Values of `kernel.uniforms`, in order.
 * @returns Nothing: the dispatch is recorded.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { elementwiseMap, type ElementwiseMapKernel } from "./elementwise.ts";
 * const SCALE: ElementwiseMapKernel = {
 *   name: "scale",
 *   operands: [{ name: "y", access: "write" }, { name: "x", access: "read" }],
 *   uniforms: ["s"],
 *   body: "y = p.s * x;",
 * };
 * const gpu = await getGpu();
 * const x = gpu.tensor(new Float32Array([1, 2, 3]), { shape: [3] });
 * const y = gpu.empty([3]);
 * elementwiseMap("scale", SCALE, { y, x }, [2]);
 * console.log(await y.toArray()); // Float32Array [2, 4, 6]
 * ```
 */
export function elementwiseMap(
  op: string,
  kernel: ElementwiseMapKernel,
  tensors: Readonly<Record<string, Tensor>>,
  uniforms: readonly number[] = [],
): void {
  const list = kernel.operands.map((o) => {
    const t = tensors[o.name];
    if (!t) throw new TypeError(`${op}: missing tensor '${o.name}'`);
    floatDType(op, o.name, t);
    return t;
  });
  const first = list[0];
  const firstName = kernel.operands[0].name;
  list.forEach((t, j) => {
    if (t.size !== first.size) {
      throw new TypeError(
        `${op}: ${kernel.operands[j].name} has shape ${formatShape(t.shape)} ` +
          `(${t.size} elements), ${firstName} has shape ${formatShape(first.shape)} ` +
          `(${first.size} elements)`,
      );
    }
  });
  const nu = kernel.uniforms?.length ?? 0;
  if (uniforms.length !== nu) {
    throw new TypeError(`${op}: expected ${nu} uniforms, got ${uniforms.length}`);
  }
  uniforms.forEach((v, k) => checkFinite(op, kernel.uniforms![k], v));
  // One binding per distinct storage (the same first byte: an in-place operand); operands that
  // overlap otherwise are refused.
  const buffers: Tensor[] = [];
  const slotTensor: Tensor[] = [];
  const slotAccess: ("read" | "read_write")[] = [];
  const slotWriter: string[] = [];
  const slotName: string[] = [];
  const slots = list.map((t, j) => {
    const o = kernel.operands[j];
    let k = buffers.findIndex((u) => u.sameStart(t));
    const clash = buffers.find((u) => !u.sameStart(t) && u.overlaps(t));
    if (clash !== undefined) {
      throw new TypeError(`${op}: ${o.name} ${describe(t)} overlaps another operand's storage`);
    }
    if (k < 0) {
      k = buffers.length;
      buffers.push(t);
      slotTensor.push(t);
      slotAccess.push("read");
      slotWriter.push("");
      slotName.push(o.name);
    } else if (slotTensor[k].dtype !== t.dtype) {
      throw new TypeError(
        `${op}: ${slotName[k]} ${describe(slotTensor[k])} and ${o.name} ${describe(t)} share a ` +
          "buffer but differ in dtype",
      );
    }
    if (o.access !== "read") {
      if (slotWriter[k]) {
        throw new TypeError(
          `${op}: outputs ${slotWriter[k]} and ${o.name} share a buffer (${formatShape(t.shape)})`,
        );
      }
      slotWriter[k] = o.name;
      slotAccess[k] = "read_write";
    }
    return k;
  });
  if (first.size === 0) return;
  const slotDtype = slotTensor.map((t) => t.dtype as FloatDType);
  const vec = slotTensor.every(fitsVec4);
  const spec = mapSpec(kernel, vec, slots, slotAccess, slotDtype);
  const gpu = first.gpu;
  // Ranges of whole blocks of `quantum` elements: multiples of the binding offset alignment in
  // every dtype (and of 4 elements), so every range starts at element 0 of its bindings. A
  // block's size for the binding limit (counted in 4-byte elements) is that of the widest dtype.
  const bytes = slotDtype.map(floatBytes);
  const quantum = Math.max(4, gpu.limits.minStorageBufferOffsetAlignment / Math.min(...bytes));
  const blocks = Math.ceil(first.size / quantum);
  for (const [q0, q1] of unitRanges(op, gpu, blocks, (quantum * Math.max(...bytes)) / 4)) {
    const e0 = q0 * quantum, e1 = Math.min(q1 * quantum, first.size);
    const n = e1 - e0;
    const whole = n === first.size;
    const count = vec ? Math.ceil(n / 4) : n;
    const params = new ParamsWriter().u32(count);
    for (const v of uniforms) params.f32(v);
    gpu.dispatch(spec, {
      params: params.bytes(),
      bindings: slotTensor.map((t) =>
        whole ? (vec ? vec4Binding(t) : t) : bindingRange(t, e0, n).binding
      ),
      workgroups: grid1d(count, WG),
    });
  }
}

// ------------------------------------------------------------------ add / accumulate ----

const ADD: ElementwiseMapKernel = {
  name: "add",
  operands: [
    { name: "y", access: "write" },
    { name: "a", access: "read" },
    { name: "b", access: "read" },
  ],
  body: "y = a + b;",
};

const ADD_RELU: ElementwiseMapKernel = {
  name: "add_relu",
  operands: ADD.operands,
  body: "y = max(a + b, T(0.0));",
};

const ADD_RELU_BACKWARD: ElementwiseMapKernel = {
  name: "add_relu_backward",
  operands: [
    { name: "dx", access: "write" },
    { name: "dy", access: "read" },
    { name: "y", access: "read" },
  ],
  body: "dx = select(T(0.0), dy, y > T(0.0));",
};

const ACCUMULATE: ElementwiseMapKernel = {
  name: "accumulate",
  operands: [{ name: "y", access: "readwrite" }, { name: "x", access: "read" }],
  uniforms: ["alpha"],
  body: "y = y + p.alpha * x;",
};

const ACCUMULATE_1: ElementwiseMapKernel = {
  name: "accumulate_1",
  operands: ACCUMULATE.operands,
  body: "y = y + x;",
};

/** Options of {@linkcode addForward}. */
export interface AddParams {
  /** Fuse a ReLU: `y = max(a + b, 0)` (ResNet's residual connection); default false. */
  readonly relu?: boolean;
}

/**
 * Elementwise sum `y = a + b` of tensors of equal size, each f32 or f16 (summed in f32, rounded
 * once into `y`); `y` is overwritten and may be the same tensor as `a` or `b`. With `relu`,
 * `y = max(a + b, 0)`.
 *
 * @returns Nothing: the dispatch is recorded.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { addForward } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const a = gpu.tensor(new Float32Array([1, -5]), { shape: [2] });
 * const b = gpu.tensor(new Float32Array([2, 3]), { shape: [2] });
 * addForward({ y: a, a, b }, { relu: true }); // in place
 * console.log(await a.toArray()); // Float32Array [3, 0]
 * ```
 */
export function addForward(io: { y: Tensor; a: Tensor; b: Tensor }, p: AddParams = {}): void {
  elementwiseMap(p.relu ? "addForward(relu)" : "addForward", p.relu ? ADD_RELU : ADD, io);
}

/**
 * Backward of the fused add + ReLU: `dx = dy * (y > 0)`, from the forward's output `y`. The same
 * `dx` is the gradient of both summands. `dx` is overwritten and may be the same tensor as `dy`.
 * Each tensor may be f32 or f16.
 *
 * @returns Nothing: the dispatch is recorded.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { addBackwardRelu } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const y = gpu.tensor(new Float32Array([3, 0]), { shape: [2] });
 * const dy = gpu.tensor(new Float32Array([1, 1]), { shape: [2] });
 * addBackwardRelu({ dx: dy, dy, y });
 * console.log(await dy.toArray()); // Float32Array [1, 0]
 * ```
 */
export function addBackwardRelu(io: { dx: Tensor; dy: Tensor; y: Tensor }): void {
  elementwiseMap("addBackwardRelu", ADD_RELU_BACKWARD, io);
}

/** Options of {@linkcode accumulate}. */
export interface AccumulateParams {
  /** Scale of the added tensor; default 1. */
  readonly alpha?: number;
}

/**
 * Accumulates `y += alpha * x` over tensors of equal size, each f32 or f16 (gradient
 * accumulation; computed in f32, rounded once into `y`).
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {RangeError} when `alpha` is not finite.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { accumulate } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const g = gpu.tensor(new Float32Array([1, 2]), { shape: [2] });
 * accumulate({ y: g, x: gpu.tensor(new Float32Array([10, 10]), { shape: [2] }) }, { alpha: 0.5 });
 * console.log(await g.toArray()); // Float32Array [6, 7]
 * ```
 */
export function accumulate(io: { y: Tensor; x: Tensor }, p: AccumulateParams = {}): void {
  const alpha = p.alpha ?? 1;
  checkFinite("accumulate", "alpha", alpha);
  if (alpha === 1) elementwiseMap("accumulate", ACCUMULATE_1, io);
  else elementwiseMap("accumulate", ACCUMULATE, io, [alpha]);
}

// ------------------------------------------------------------------ concat / split ----

/**
 * A channel slice `[cOffset, cOffset + c)` of an `[n, cTotal, hw]` tensor (NCHW with the spatial
 * dimensions flattened into `hw`), for {@linkcode concatChannels} and {@linkcode splitChannels}.
 */
export interface ChannelSliceParams {
  /** Batch size. */
  readonly n: number;
  /** Spatial size `h * w` (1 for `[n, c]` tensors). */
  readonly hw: number;
  /** Channels of the whole (concatenated) tensor. */
  readonly cTotal: number;
  /** First channel of the slice. */
  readonly cOffset: number;
  /** Channels of the slice. */
  readonly c: number;
}

/**
 * Validates a channel slice and the two tensors: returns the whole tensor's shape
 * `[n, cTotal, hw]`.
 *
 * @returns The shape of the whole tensor, `[n, cTotal, hw]`.
 * @throws {RangeError} for non-integer or negative sizes, or a slice past `cTotal`.
 * @throws {TypeError} when a tensor is not f32 or f16 or its size does not match.
 * @example
 * ```ts
 * import { checkChannelSlice } from "@modern-cnn/webgpu/kernels";
 * checkChannelSlice("concatChannels", { n: 2, hw: 9, cTotal: 8, cOffset: 4, c: 4 }); // [2, 8, 9]
 * ```
 */
export function checkChannelSlice(
  op: string,
  p: ChannelSliceParams,
  tensors?: { whole: Tensor; part: Tensor; wholeName: string; partName: string },
): [number, number, number] {
  for (const k of ["n", "hw", "cTotal", "cOffset", "c"] as const) {
    const v = p[k];
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`${op}: ${k} must be an integer >= 0, got ${v}`);
    }
  }
  if (p.cOffset + p.c > p.cTotal) {
    throw new RangeError(
      `${op}: channels [${p.cOffset}, ${p.cOffset + p.c}) exceed cTotal ${p.cTotal}`,
    );
  }
  if (tensors) {
    const { whole, part, wholeName, partName } = tensors;
    floatDType(op, wholeName, whole);
    floatDType(op, partName, part);
    const wantWhole = p.n * p.cTotal * p.hw;
    const wantPart = p.n * p.c * p.hw;
    if (whole.size !== wantWhole || part.size !== wantPart) {
      throw new TypeError(
        `${op}: ${wholeName} has shape ${formatShape(whole.shape)} and ${partName} has shape ` +
          `${formatShape(part.shape)}; expected ${wholeName} [${p.n}, ${p.cTotal}, ${p.hw}] ` +
          `(${wantWhole} elements) and ${partName} [${p.n}, ${p.c}, ${p.hw}] (${wantPart} elements)`,
      );
    }
    if (whole.overlaps(part)) {
      throw new TypeError(`${op}: ${wholeName} and ${partName} share a buffer`);
    }
  }
  return [p.n, p.cTotal, p.hw];
}

const sliceSpecs = new Map<string, KernelSpec>();

/** What a channel-slice kernel does: copy into the whole, or (add) out of it. */
type SliceKind = "concat" | "split" | "split_acc";

/** The storage dtypes of a channel-slice kernel's bindings (`yWhole` only with an activation). */
interface SliceDtypes {
  readonly whole: FloatDType;
  readonly part: FloatDType;
  readonly yWhole?: FloatDType;
}

/**
 * The kernel of a channel slice; with `act` (splits only) the part gets the activation's
 * backward `f'(y) * dy` of the slice, `y` read from a third binding laid out like the whole.
 * Each binding's element type follows `dt`; a copy between bindings of one dtype moves the
 * stored values, anything else computes in f32 (T) and rounds once on store.
 */
function sliceSpec(
  kind: SliceKind,
  vec: boolean,
  dt: SliceDtypes,
  act?: ActivationKind,
): KernelSpec {
  const dtypes: Record<string, FloatDType> = { whole: dt.whole, part: dt.part };
  if (act) dtypes.yWhole = dt.yWhole ?? "f32";
  const name = `${kind}${act ? `_${act}_backward` : ""}_channels_${vec ? "v4" : "s"}${
    dtypeTag(dtypes)
  }`;
  const hit = sliceSpecs.get(name);
  if (hit) return hit;
  const T = vec ? "vec4<f32>" : "f32";
  const S = (d: FloatDType) => storageType(d, vec);
  // The value of the slice (stored as valueDtype): dy itself, or the activation's backward (f32).
  const value = act
    ? `actBackward(${loadF32(dt.whole, "whole[wi]", vec)}, ${
      loadF32(dtypes.yWhole, "yWhole[wi]", vec)
    })`
    : "whole[wi]";
  const valueDtype: FloatDType = act ? "f32" : dt.whole;
  const body = kind === "concat"
    ? `whole[wi] = ${convert("part[pi]", dt.part, dt.whole, vec)};`
    : kind === "split"
    ? `part[pi] = ${convert(value, valueDtype, dt.part, vec)};`
    : `part[pi] = ${
      storeAs(
        dt.part,
        `${loadF32(dt.part, "part[pi]", vec)} + ${loadF32(valueDtype, value, vec)}`,
        vec,
      )
    };`;
  const wholeAccess = kind === "concat" ? "read_write" : "read";
  const partAccess = kind === "concat" ? "read" : "read_write";
  const actDecls = act
    ? `
@group(0) @binding(3) var<storage, read> yWhole: array<${S(dtypes.yWhole)}>;
${actBackwardFn(act)}`
    : "";
  const half = Object.values(dtypes).some((d) => d === "f16")
    ? `
// Storage: ${
      Object.entries(dtypes).map(([k, d]) => `${k} ${d}`).join(", ")
    }; arithmetic in T (f32), rounded once on store.`
    : "";
  const code = `${wgslEnable(Object.values(dtypes))}// ${name}: one thread per ${
    vec ? "vec4" : "element"
  } of the slice part [rows, c, hw] of
// one range of rows; flat index i = gid.x + gid.y * nwg.x * WG (grid1d). Units are
// ${vec ? "vec4s" : "elements"}: row = i / chw, the part's index is partBase + i and the whole
// tensor's index is wholeBase + row * totalHw + offHw + (i - row * chw) (bases: where the range
// starts in its binding).${
    act
      ? `
// The part gets ${act}'s backward of the slice: actBackward(dy = whole, y = yWhole), yWhole being
// the forward output laid out (and bound) like the whole.`
      : ""
  }${half}
const WG = ${WG}u;
alias T = ${T};
struct Params { count: u32, chw: u32, totalHw: u32, offHw: u32, wholeBase: u32, partBase: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, ${wholeAccess}> whole: array<${S(dt.whole)}>;
@group(0) @binding(2) var<storage, ${partAccess}> part: array<${S(dt.part)}>;${actDecls}
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * WG;
  if (i >= p.count) { return; }
  let row = i / p.chw;
  let wi = p.wholeBase + row * p.totalHw + p.offHw + (i - row * p.chw);
  let pi = p.partBase + i;
  ${body}
}
`;
  const spec = { name, code };
  sliceSpecs.set(name, spec);
  return spec;
}

function dispatchSlice(
  kind: SliceKind,
  whole: Tensor,
  part: Tensor,
  p: ChannelSliceParams,
  act?: { kind: ActivationKind; y: Tensor },
): void {
  if (part.size === 0) return;
  const chw = p.c * p.hw, totalHw = p.cTotal * p.hw, offHw = p.cOffset * p.hw;
  const vec = chw % 4 === 0 && totalHw % 4 === 0 && offHw % 4 === 0;
  const u = vec ? 4 : 1;
  const op = kind === "concat" ? "concatChannels" : "splitChannels";
  const dt: SliceDtypes = {
    whole: whole.dtype as FloatDType,
    part: part.dtype as FloatDType,
    yWhole: act?.y.dtype as FloatDType | undefined,
  };
  // Ranges of whole rows; in vec4 mode every row starts at a multiple of 4 elements, and so do
  // the bases (the same for act.y, whose layout is the whole's).
  for (const [r0, r1] of unitRanges(op, whole.gpu, p.n, totalHw)) {
    const w = bindingRange(whole, r0 * totalHw, (r1 - r0) * totalHw);
    const q = bindingRange(part, r0 * chw, (r1 - r0) * chw);
    const bindings = [w.binding, q.binding];
    if (act) bindings.push(bindingRange(act.y, r0 * totalHw, (r1 - r0) * totalHw).binding);
    const count = ((r1 - r0) * chw) / u;
    whole.gpu.dispatch(sliceSpec(kind, vec, dt, act?.kind), {
      params: new ParamsWriter().u32(count).u32(chw / u).u32(totalHw / u).u32(offHw / u)
        .u32(w.base / u).u32(q.base / u).bytes(),
      bindings,
      workgroups: grid1d(count, WG),
    });
  }
}

/**
 * Copies `x` `[n, c, hw]` into channels `[cOffset, cOffset + c)` of `y` `[n, cTotal, hw]`
 * (`torch.cat(dim=1)` with one call per input; the other channels of `y` are left as they are).
 * Uses vec4 copies when `c * hw`, `cTotal * hw` and `cOffset * hw` are multiples of 4. `x` and
 * `y` are f32 or f16 each (an f32 `x` is rounded into an f16 `y`).
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} when sizes do not match the params or `x` and `y` share a buffer.
 * @throws {RangeError} for bad params.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { concatChannels } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const a = gpu.tensor(new Float32Array([1, 2]), { shape: [1, 1, 2] });
 * const b = gpu.tensor(new Float32Array([3, 4, 5, 6]), { shape: [1, 2, 2] });
 * const y = gpu.empty([1, 3, 2]);
 * concatChannels({ y, x: a }, { n: 1, hw: 2, cTotal: 3, cOffset: 0, c: 1 });
 * concatChannels({ y, x: b }, { n: 1, hw: 2, cTotal: 3, cOffset: 1, c: 2 });
 * console.log(await y.toArray()); // Float32Array [1, 2, 3, 4, 5, 6]
 * ```
 */
export function concatChannels(io: { y: Tensor; x: Tensor }, p: ChannelSliceParams): void {
  checkChannelSlice("concatChannels", p, {
    whole: io.y,
    part: io.x,
    wholeName: "y",
    partName: "x",
  });
  dispatchSlice("concat", io.y, io.x, p);
}

/** Params of {@linkcode splitChannels}. */
export interface SplitChannelsParams extends ChannelSliceParams {
  /** Add into `dx` instead of overwriting it; default false. */
  readonly accumulate?: boolean;
  /**
   * Fuse the backward of an activation that wrote its output straight into the concatenated
   * tensor (a branch ending with `f`, e.g. Inception's): `dx = f'(y) * dy` over the slice, with
   * `io.y` the concatenated forward output (relu'(0) = relu6'(0) = relu6'(6) = 0 as in PyTorch,
   * the same values as `activationBackward`); default none.
   */
  readonly activation?: ActivationKind;
}

/**
 * The backward of {@linkcode concatChannels}: `dx` `[n, c, hw]` = (or, with `accumulate`, +=)
 * channels `[cOffset, cOffset + c)` of `dy` `[n, cTotal, hw]`. `dx`, `dy` and `y` are f32 or
 * f16 each (sums and the activation backward in f32, rounded once into `dx`).
 *
 * With `activation`, the backward of that activation too, in the same pass: `dx` = (or +=)
 * `f'(y) * dy` over the slice, where `y` (shape of `dy`) is the concatenated output the
 * activation wrote, as `activationBackward` then a plain split would give, bit for bit.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} when sizes do not match the params, `dx` shares a buffer with `dy` or `y`,
 *   or `activation` is given without `y`.
 * @throws {RangeError} for bad params or an unknown activation.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { splitChannels } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const dy = gpu.tensor(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [1, 3, 2] });
 * const dx = gpu.empty([1, 2, 2]);
 * splitChannels({ dx, dy }, { n: 1, hw: 2, cTotal: 3, cOffset: 1, c: 2 });
 * console.log(await dx.toArray()); // Float32Array [3, 4, 5, 6]
 * // The branch ended with a ReLU whose output y went straight into the concatenation:
 * const y = gpu.tensor(new Float32Array([1, 1, 0, 2, 2, 0]), { shape: [1, 3, 2] });
 * splitChannels({ dx, dy, y }, { n: 1, hw: 2, cTotal: 3, cOffset: 1, c: 2, activation: "relu" });
 * console.log(await dx.toArray()); // Float32Array [0, 4, 5, 0]
 * ```
 */
export function splitChannels(
  io: {
    dx: Tensor;
    dy: Tensor;
    /**
     * The concatenated forward output (shape of `dy`); required with `activation`, unused
     * without it.
     */
    y?: Tensor;
  },
  p: SplitChannelsParams,
): void {
  const op = "splitChannels";
  checkChannelSlice(op, p, {
    whole: io.dy,
    part: io.dx,
    wholeName: "dy",
    partName: "dx",
  });
  const kind = p.activation;
  checkActivationKind(op, kind);
  if (kind !== undefined && io.y === undefined) {
    throw new TypeError(`${op}: activation "${kind}" needs y, the concatenated forward output`);
  }
  if (io.y !== undefined) {
    floatDType(op, "y", io.y);
    if (io.y.size !== io.dy.size) {
      throw new TypeError(
        `${op}: y has shape ${formatShape(io.y.shape)} (${io.y.size} elements), dy has shape ` +
          `${formatShape(io.dy.shape)} (${io.dy.size} elements)`,
      );
    }
    if (io.y.overlaps(io.dx)) throw new TypeError(`${op}: dx and y share a buffer`);
  }
  const act = kind === undefined ? undefined : { kind, y: io.y! };
  dispatchSlice(p.accumulate ? "split_acc" : "split", io.dy, io.dx, p, act);
}

// ------------------------------------------------------------------ cast ----

const CAST: ElementwiseMapKernel = {
  name: "cast",
  operands: [{ name: "y", access: "write" }, { name: "x", access: "read" }],
  body: "y = x;",
};

/**
 * Converts `x` into `y` (equal sizes; each f32 or f16): f16 → f32 is exact; f32 → f16 rounds to
 * the nearest f16, ties to even, as the device's f32-to-f16 conversion does (IEEE's default
 * on current GPUs and on lavapipe, where the tests check it against `Math.f16round`, f16
 * subnormals and overflow to ±Infinity included; WGSL leaves overflow implementation-defined).
 * With equal dtypes it is a copy. `y` is overwritten; it may be `x` itself (a no-op) but not
 * another tensor on `x`'s buffer with the other dtype. Training uses it for the f16 copies of
 * the f32 master weights.
 *
 * @returns Nothing: the dispatch is recorded.
 * @throws {TypeError} when the sizes differ or a tensor is not f32 or f16.
 * @example
 * ```ts
 * import { getGpu } from "@modern-cnn/webgpu/gpu";
 * import { cast } from "@modern-cnn/webgpu/kernels";
 * const gpu = await getGpu();
 * const w = gpu.tensor(new Float32Array([0.1, 70000]), { shape: [2] });
 * const h = gpu.empty([2], { dtype: "f16" });
 * cast({ y: h, x: w });
 * console.log(await h.toArray()); // Float16Array [0.0999755859375, Infinity]
 * ```
 */
export function cast(io: { y: Tensor; x: Tensor }): void {
  elementwiseMap("cast", CAST, io);
}
