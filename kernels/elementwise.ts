/**
 * Flat elementwise kernels: the residual add (with ResNet's fused ReLU) and its backward,
 * gradient accumulation, {@linkcode cast} between f32 and f16, and {@linkcode elementwiseMap},
 * the generator behind every flat elementwise kernel of the library (these, the activations,
 * SGD's plain update). The channel concatenation and split are in `concat.ts`.
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
 * are processed in ranges of elements aligned to the binding offset alignment, one dispatch per
 * range. No kernel here loops.
 *
 * @module
 */

import { formatShape, grid1d, type Tensor } from "../gpu/mod.ts";
import { bindingRange, unitRanges } from "./_binding.ts";
import { floatBytes, type FloatDType, floatDType, vec4Bytes } from "./_dtype.ts";
import {
  type BindingAccess,
  type BoundTensor,
  defineKernel,
  flatMain,
  type Kernel,
  type ParamType,
  variantProduct,
  type VariantTest,
} from "./_kernel.ts";

/** Threads per workgroup of the flat elementwise kernels. */
const WG = 256;

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
   * Operands in order (at most {@linkcode MAX_MAP_OPERANDS}). `read` operands are `let` locals
   * loaded before the body, `write` ones are zero-initialised `var`s stored after it,
   * `readwrite` ones are loaded and stored.
   */
  readonly operands: readonly { readonly name: string; readonly access: MapAccess }[];
  /** Scalar `f32` uniforms, readable in the body as `p.<name>`. */
  readonly uniforms?: readonly string[];
  /** WGSL statements computing the `write`/`readwrite` locals from the others. */
  readonly body: string;
}

/** The most operands an {@linkcode ElementwiseMapKernel} may have. */
export const MAX_MAP_OPERANDS = 6;

/** The bindings of a kernel of {@linkcode elementwiseMap}: `b0`, `b1`, ... (see `_layouts`). */
type MapBindings = Record<string, {
  readonly type: "float";
  readonly access: BindingAccess;
  readonly vec4: VariantTest;
  readonly variants: readonly string[];
}>;

/** A kernel of {@linkcode elementwiseMap}, as `defineKernel` made it. */
type MapKernel = Kernel<Record<string, ParamType>, MapBindings, string>;

/**
 * The layouts of operands onto bindings: `slots[j]` is the binding (`b0`, `b1`, ...) of operand
 * `j`, bindings numbered in the order of their first operand; operands on one storage share one
 * binding, and no binding holds two written operands. `"010"`: the third operand is the first's
 * storage (in place).
 */
function _layouts(access: readonly MapAccess[]): string[] {
  let out: number[][] = [[]];
  for (const a of access) {
    out = out.flatMap((slots) => {
      const next = slots.length === 0 ? 0 : Math.max(...slots) + 1;
      return Array.from({ length: next + 1 }, (_, k) => k)
        .filter((k) => a === "read" || !slots.some((s, j) => s === k && access[j] !== "read"))
        .map((k) => [...slots, k]);
    });
  }
  return out.map((slots) => slots.join(""));
}

/** The slots of a variant of a map kernel (`v4_b010` → `[0, 1, 0]`). */
const slotsOf = (variant: string): number[] => [...variant.split("_")[1].slice(1)].map(Number);

/** The kernel of each {@linkcode ElementwiseMapKernel}, described on its first use. */
const mapKernels = new WeakMap<ElementwiseMapKernel, MapKernel>();

/**
 * The kernel of `kernel`: its variants are `v4` (one thread per vec4) or `s` (per element) times
 * each layout of its operands onto bindings (`v4_b010`, see {@linkcode _layouts}); binding `bk`
 * is declared in the layouts with more than k bindings, and read-write where some operand bound
 * to it is written.
 */
function mapKernel(kernel: ElementwiseMapKernel): MapKernel {
  const hit = mapKernels.get(kernel);
  if (hit) return hit;
  const access = kernel.operands.map((o) => o.access);
  const layouts = _layouts(access);
  const variants: string[] = variantProduct(["v4", "s"], layouts.map((l) => `b${l}`));
  const vec4 = (v: string) => v.startsWith("v4_");
  const bindings: MapBindings = {};
  for (let k = 0; k < kernel.operands.length; k++) {
    bindings[`b${k}`] = {
      type: "float",
      access: (v) =>
        slotsOf(v).some((s, j) => s === k && access[j] !== "read") ? "read_write" : "read",
      vec4,
      variants: variants.filter((v) => slotsOf(v).includes(k)),
    };
  }
  const names = kernel.operands.map((o) => o.name).join(", ");
  const made = defineKernel({
    name: kernel.name,
    doc: `one thread per vec4 (4 consecutive elements) in the v4 variants, per element in the s ` +
      `ones; flat index i = gid.x + gid.y * nwg.x * WG over p.count vectors or elements ` +
      `(grid1d). Operands ${names}; variant b<slots>: operand j is bound as b<slots[j]> ` +
      `(operands on one storage share a binding).`,
    params: Object.fromEntries([
      ["count", "u32"],
      ...(kernel.uniforms ?? []).map((u) => [u, "f32"]),
    ]) as Record<string, ParamType>,
    bindings,
    variants,
    workgroupSize: WG,
    body: ({ dtypes, variant, load, store }) => {
      const slots = slotsOf(variant);
      const dt = dtypes as Record<string, FloatDType>;
      const loads: string[] = [];
      const stores: string[] = [];
      kernel.operands.forEach((o, j) => {
        const b = `b${slots[j]}`;
        const value = load(b, `${b}[i]`);
        if (o.access === "read") loads.push(`let ${o.name}: T = ${value};`);
        else if (o.access === "readwrite") loads.push(`var ${o.name}: T = ${value};`);
        else loads.push(`var ${o.name}: T;`);
        if (o.access !== "read") stores.push(store(b, `${b}[i]`, o.name));
      });
      const bound = Array.from({ length: Math.max(...slots) + 1 }, (_, k) => `b${k}`);
      const half = bound.some((b) => dt[b] === "f16")
        ? `
// Storage: ${
          bound.map((b) => `${b} ${dt[b]}`).join(", ")
        }; the locals are T (f32), f16 slots converted on
// load and rounded once on store.`
        : "";
      const main = flatMain(
        "i",
        "p.count",
        `  ${loads.join("\n  ")}
  {
    ${kernel.body}
  }
  ${stores.join("\n  ")}`,
      );
      return `// Operands (binding slot): ${
        kernel.operands.map((o, j) => `${o.name}=b${slots[j]}`).join(", ")
      }.${half}
alias T = ${vec4(variant) ? "vec4<f32>" : "f32"};
${main}`;
    },
  });
  mapKernels.set(kernel, made);
  return made;
}

/**
 * Records one flat elementwise kernel over float tensors (f32 or f16, each independently) of
 * equal element count; the body computes in f32 (f16 operands converted on load, results rounded
 * once on store). Tensors on the same storage from the same first byte are bound once (so an
 * output may alias an input: every element is loaded before it is stored); two written operands
 * may not share one, nor may two operands of different dtypes, and operands that overlap
 * otherwise are refused. Validates dtypes and sizes (TypeError naming `op` and both shapes) and
 * that uniforms are finite (RangeError).
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
  if (kernel.operands.length < 1 || kernel.operands.length > MAX_MAP_OPERANDS) {
    throw new TypeError(
      `${op}: kernel '${kernel.name}' has ${kernel.operands.length} operands (1 to ` +
        `${MAX_MAP_OPERANDS})`,
    );
  }
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
  const slotTensor: Tensor[] = [];
  const slotWriter: string[] = [];
  const slotName: string[] = [];
  const slots = list.map((t, j) => {
    const o = kernel.operands[j];
    let k = slotTensor.findIndex((u) => u.sameStart(t));
    if (slotTensor.some((u) => !u.sameStart(t) && u.overlaps(t))) {
      throw new TypeError(`${op}: ${o.name} ${describe(t)} overlaps another operand's storage`);
    }
    if (k < 0) {
      k = slotTensor.length;
      slotTensor.push(t);
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
    }
    return k;
  });
  if (first.size === 0) return;
  const vec = slotTensor.every((t) => t.capacity >= vec4Bytes(t));
  const gpu = first.gpu;
  // Ranges of whole blocks of `quantum` elements: multiples of the binding offset alignment in
  // every dtype (and of 4 elements), so every range starts at element 0 of its bindings. A
  // block's size for the binding limit (counted in 4-byte elements) is that of the widest dtype.
  const bytes = slotTensor.map((t) => floatBytes(t.dtype as FloatDType));
  const quantum = Math.max(4, gpu.limits.minStorageBufferOffsetAlignment / Math.min(...bytes));
  const blocks = Math.ceil(first.size / quantum);
  const params: Record<string, number> = {};
  uniforms.forEach((v, k) => (params[kernel.uniforms![k]] = v));
  for (const [q0, q1] of unitRanges(op, gpu, blocks, (quantum * Math.max(...bytes)) / 4)) {
    const e0 = q0 * quantum, e1 = Math.min(q1 * quantum, first.size);
    const n = e1 - e0;
    const whole = n === first.size;
    const count = vec ? Math.ceil(n / 4) : n;
    // The whole tensor as vec4s runs into the buffer's slack (room checked above).
    const bind = (t: Tensor): BoundTensor =>
      whole ? (vec ? { tensor: t, offset: 0, size: vec4Bytes(t) } : t) : bindingRange(t, e0, n);
    mapKernel(kernel).dispatch({
      op,
      variant: `${vec ? "v4" : "s"}_b${slots.join("")}`,
      params: { ...params, count },
      bindings: Object.fromEntries(slotTensor.map((t, k) => [`b${k}`, bind(t)])),
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
