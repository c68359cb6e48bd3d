/**
 * A kernel described once: its name, its `Params` fields (in WGSL struct order), its storage
 * bindings (access and element type, float bindings f32 or f16 per call; a binding may belong to
 * some variants only, hold vec4s in some, and be read-write in some; {@linkcode variantProduct}
 * lists the variants of several axes), its workgroup size and its body. Everything else is generated from that
 * description: the `enable f16;` line, the `Params` struct and its packing, the `@binding`
 * declarations, the pipeline cache key (name, variant and the bindings stored as f16) and the
 * checks of what a call binds.
 *
 * ```ts ignore
 * const scale = defineKernel({
 *   name: "scale",
 *   doc: "thread i scales element i",
 *   params: { n: "u32", alpha: "f32" },
 *   bindings: { y: { type: "float", access: "read_write" }, x: { type: "float", access: "read" } },
 *   workgroupSize: 64,
 *   body: ({ load, store }) => `@compute @workgroup_size(WG)
 * fn main(@builtin(global_invocation_id) g: vec3u) {
 *   if (g.x < p.n) { ${store("y", "y[g.x]", `p.alpha * ${load("x", "x[g.x]")}`)} }
 * }`,
 * });
 * scale.dispatch({ params: { n: 3, alpha: 2 }, bindings: { y, x }, workgroups: 1 });
 * ```
 *
 * @module
 */

import type { Gpu, KernelSpec, Tensor } from "../gpu/mod.ts";
import { type FloatDType, loadF32, storageType, storeAs, wgslEnable } from "./_dtype.ts";
import type { TensorRange } from "./_binding.ts";
import { ParamsWriter } from "./_params.ts";

/** The params of every dispatch are packed here (`Gpu.dispatch` copies them at once). */
const PARAMS = new ParamsWriter();

/** The type of a `Params` field (all 4-byte scalars). */
export type ParamType = "u32" | "i32" | "f32";

/** A test of a kernel's variant (for the bindings whose element type depends on it). */
export type VariantTest = (variant: string) => boolean;

/** How a kernel uses a binding: fixed, or a function of the variant (e.g. in place or not). */
export type BindingAccess =
  | "read"
  | "read_write"
  | ((variant: string) => "read" | "read_write");

/** A storage binding of a kernel. */
export type BindingDecl =
  | {
    /**
     * `float`: an array of f32 or f16 (the bound tensor's dtype, per call); `float-bits`: the raw
     * 32-bit words of an f32 or f16 tensor (`array<u32>`; the dtype still specializes the body).
     */
    readonly type: "float" | "float-bits";
    readonly access: BindingAccess;
    /** Elements are `vec4`s of the float type (in every variant, or in those the test accepts). */
    readonly vec4?: boolean | VariantTest;
    /** The variants that declare and bind it (default: every variant). */
    readonly variants?: readonly string[];
  }
  | {
    /**
     * A fixed element type (`f32`: always f32, whatever the call's other float dtypes);
     * `u8-words`: the bytes of a u8 tensor, 4 per word (`array<u32>`).
     */
    readonly type: "u32" | "i32" | "f32" | "atomic<u32>" | "atomic<i32>" | "u8-words";
    readonly access: BindingAccess;
    /** The variants that declare and bind it (default: every variant). */
    readonly variants?: readonly string[];
  };

/** The names of a kernel's float bindings. */
export type FloatBindings<B> = {
  [K in keyof B]: B[K] extends { type: "float" | "float-bits" } ? K : never;
}[keyof B];

/** The names of the bindings that only some variants have (a call of another variant omits them). */
export type VariantBindings<B> = {
  [K in keyof B]: B[K] extends { variants: readonly string[] } ? K : never;
}[keyof B];

/**
 * Storage dtype of every float binding of a call (absent, or undefined, for a binding its variant
 * lacks).
 */
export type BindingDTypes<B> =
  & { readonly [K in Exclude<FloatBindings<B>, VariantBindings<B>>]: FloatDType }
  & { readonly [K in FloatBindings<B> & VariantBindings<B> & keyof B]?: FloatDType };

/** What a body is generated from: the float bindings' dtypes, the variant, and WGSL helpers. */
export interface KernelContext<B, V extends string> {
  /** Storage dtype of every float binding of this call (undefined where its variant lacks it). */
  readonly dtypes: BindingDTypes<B>;
  /** The variant the call asked for ("" when none). */
  readonly variant: V;
  /** `expr`, an element of float binding `name`, as an f32 value (a vec4 for vec4 bindings). */
  load(name: FloatBindings<B> & string, expr: string): string;
  /** The statement `target = value;` for float binding `name`, rounding once to f16. */
  store(name: FloatBindings<B> & string, target: string, value: string): string;
}

/** A kernel's description: everything its WGSL header, packing and checks come from. */
export interface KernelDescriptor<
  P extends Record<string, ParamType>,
  B extends Record<string, BindingDecl>,
  V extends string = "",
> {
  /** Base name (the pipeline cache key adds the variant and the f16 bindings). */
  readonly name: string;
  /** How threads map to data: the header comment of the generated WGSL. */
  readonly doc: string;
  /** `Params` fields in struct order (binding 0, a uniform); `{}` for none. */
  readonly params: P;
  /**
   * Storage bindings in binding order (from 1, or 0 without params); one that names variants is
   * declared, numbered and bound in those only.
   */
  readonly bindings: B;
  /** The variants of the body (a call picks one; part of the cache key); none by default. */
  readonly variants?: readonly V[];
  /** Threads per workgroup (x, or x, y, z): `WG` (or `WG_X`, `WG_Y`, `WG_Z`) in the body. */
  readonly workgroupSize: number | readonly [number, number, number];
  /** The WGSL after the declarations: helper functions and the `main` entry point. */
  readonly body: (ctx: KernelContext<B, V>) => string;
}

/**
 * A bound value: a tensor, a byte range of one (`offset` counted from the tensor's first byte),
 * or a {@linkcode TensorRange} (from `bindingRange`); its dtype is the tensor's.
 */
export type BoundTensor = Tensor | TensorRange | {
  readonly tensor: Tensor;
  readonly offset: number;
  readonly size: number;
};

/** One dispatch of a kernel. */
export interface KernelCall<P, B, V extends string> {
  /** A value for every `Params` field. */
  readonly params: { readonly [K in keyof P]: number };
  /** A tensor (or a range of one) for every binding of the call's variant. */
  readonly bindings:
    & { readonly [K in Exclude<keyof B, VariantBindings<B>>]: BoundTensor }
    & { readonly [K in VariantBindings<B>]?: BoundTensor };
  /** Workgroup counts. */
  readonly workgroups: number | readonly [number, number?, number?];
  /** Which variant of the body (a part of the cache key). */
  readonly variant?: V;
  /** The op named in errors (default: the kernel's name). */
  readonly op?: string;
}

/** A kernel made by {@linkcode defineKernel}. */
export interface Kernel<P, B, V extends string> {
  /** The description it was made from. */
  readonly descriptor: KernelDescriptor<
    P & Record<string, ParamType>,
    B & Record<string, BindingDecl>,
    V
  >;
  /** The kernel (name and WGSL) for the given float dtypes and variant; built once, then cached. */
  spec(dtypes: BindingDTypes<B>, variant?: V): KernelSpec;
  /** Checks a call (every binding's dtype, every param's range) and records its dispatch. */
  dispatch(call: KernelCall<P, B, V>): void;
}

const tensorOf = (b: BoundTensor): Tensor => ("tensor" in b ? b.tensor : b);

/** Whether binding `decl` holds vec4s in `variant`. */
function isVec4(decl: BindingDecl, variant: string): boolean {
  if (decl.type !== "float" && decl.type !== "float-bits") return false;
  return typeof decl.vec4 === "function" ? decl.vec4(variant) : decl.vec4 === true;
}

/** The WGSL element type of a binding as stored. */
function elementType(decl: BindingDecl, dtype: FloatDType | undefined, variant: string): string {
  if (decl.type === "float") return storageType(dtype, isVec4(decl, variant));
  if (decl.type === "float-bits" || decl.type === "u8-words") return "u32";
  return decl.type;
}

/** The access of binding `decl` in `variant`. */
function accessOf(decl: BindingDecl, variant: string): "read" | "read_write" {
  return typeof decl.access === "function" ? decl.access(variant) : decl.access;
}

/** Joins two parts of a variant with `_`, leaving out empty ones. */
type JoinParts<X extends string, Y extends string> = X extends "" ? Y
  : Y extends "" ? X
  : `${X}_${Y}`;

/** The variants {@linkcode variantProduct} makes of the axes `A`. */
export type VariantProduct<A extends readonly (readonly string[])[], P extends string = ""> =
  A extends readonly [
    infer H extends readonly string[],
    ...infer R extends readonly (readonly string[])[],
  ] ? VariantProduct<R, JoinParts<P, H[number]>>
    : P;

/**
 * Every combination of one option per axis, its parts joined with `_` (empty options left out):
 * the variants of a kernel specialized along several axes. A body reads its variant's parts with
 * `variant.split("_")`.
 *
 * @returns The variants, the first axis varying slowest.
 * @example
 * ```ts
 * import { variantProduct } from "./_kernel.ts";
 * variantProduct(["v4", "s"], ["", "inplace"]); // ["v4", "v4_inplace", "s", "s_inplace"]
 * ```
 */
export function variantProduct<const A extends readonly (readonly string[])[]>(
  ...axes: A
): VariantProduct<A>[] {
  let out = [""];
  for (const axis of axes) {
    out = out.flatMap((p) => axis.map((o) => (p === "" ? o : o === "" ? p : `${p}_${o}`)));
  }
  return out as VariantProduct<A>[];
}

/** A compile-time constant a kernel description may be specialized on (see {@linkcode perSizes}). */
export type SizeArg = number | string | boolean;

/**
 * Kernels specialized on compile-time sizes (a window, a stride: too many to list as variants)
 * or other compile-time constants (a transpose flag, a tile shape): `make(...sizes)` builds one
 * description per distinct set of arguments, on first use; each then caches its dtype and
 * variant specializations as any kernel does.
 *
 * @returns A function giving the kernel for a set of sizes.
 * @example
 * ```ts
 * import { perSizes } from "./_kernel.ts";
 * const square = perSizes((k: number) => ({ k }));
 * console.log(square(3) === square(3)); // true
 * const tile = perSizes((trans: boolean, tm: number) => ({ trans, tm }));
 * console.log(tile(true, 4) === tile(true, 4), tile(true, 4) === tile(false, 4)); // true false
 * ```
 */
export function perSizes<A extends SizeArg[], K>(make: (...sizes: A) => K): (...sizes: A) => K {
  const made = new Map<string, K>();
  return (...sizes) => {
    // Numbers and booleans cannot be confused once joined; strings are quoted.
    const key = sizes.some((s) => typeof s === "string") ? JSON.stringify(sizes) : sizes.join();
    let k = made.get(key);
    if (k === undefined) made.set(key, k = make(...sizes));
    return k;
  };
}

/**
 * The `main` entry point of a kernel launched on a flat grid (the host's `grid1d`): one thread per
 * index `gid.x + gid.y * nwg.x * WG`, bound to `index`; a thread at or past `limit` returns
 * (`null`: the body bounds itself, e.g. on a value derived from the index). `body` is the rest of
 * `main`, its statements indented by two spaces.
 *
 * @returns The WGSL of the entry point.
 * @example
 * ```ts
 * import { flatMain } from "./_kernel.ts";
 * flatMain("i", "p.n", "  y[i] = 2.0 * x[i];");
 * ```
 */
export function flatMain(index: string, limit: string | null, body: string): string {
  const bound = limit === null ? "" : `\n  if (${index} >= ${limit}) { return; }`;
  return `@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let ${index} = gid.x + gid.y * nwg.x * WG;${bound}
${body}
}
`;
}

/**
 * Makes a kernel from its description (see the module documentation).
 *
 * @returns The kernel: `spec` for its WGSL, `dispatch` to record a call.
 */
export function defineKernel<
  P extends Record<string, ParamType>,
  B extends Record<string, BindingDecl>,
  V extends string = "",
>(d: KernelDescriptor<P, B, V>): Kernel<P, B, V> {
  const specs = new Map<string, KernelSpec>();
  const names = Object.keys(d.bindings) as (keyof B & string)[];
  const isFloat = (n: keyof B) =>
    d.bindings[n].type === "float" || d.bindings[n].type === "float-bits";
  for (const n of names) {
    for (const v of d.bindings[n].variants ?? []) {
      if (!d.variants?.includes(v as V)) {
        throw new TypeError(`${d.name}: binding '${n}' names an unknown variant '${v}'`);
      }
    }
  }
  const usedBy = new Map<string, readonly (keyof B & string)[]>();
  /**
   * The bindings of variant `v`, in binding order (throws for an unknown variant); found once per
   * variant (a kernel may have hundreds).
   */
  function bindingsOf(v: V): readonly (keyof B & string)[] {
    let used = usedBy.get(v);
    if (used === undefined) {
      if (v !== "" && !d.variants?.includes(v)) {
        throw new RangeError(
          `${d.name}: unknown variant '${v}' (${d.variants?.join(", ") ?? "none"})`,
        );
      }
      used = names.filter((n) => d.bindings[n].variants?.includes(v) ?? true);
      usedBy.set(v, used);
    }
    return used;
  }
  const fields = Object.entries(d.params) as [string, ParamType][];
  const wg = typeof d.workgroupSize === "number"
    ? `const WG = ${d.workgroupSize}u;`
    : ["X", "Y", "Z"].map((a, i) =>
      `const WG_${a} = ${(d.workgroupSize as readonly number[])[i]}u;`
    ).join(
      "\n",
    );

  function spec(dtypes: BindingDTypes<B>, variant?: V): KernelSpec {
    const v = (variant ?? "") as V;
    const used = bindingsOf(v);
    const floats = used.filter(isFloat);
    const dt = dtypes as Record<string, FloatDType>;
    const half = floats.filter((n) => dt[n] === "f16");
    const key = `${d.name}${v ? `_${v}` : ""}${half.length ? `_h-${half.join("-")}` : ""}`;
    const hit = specs.get(key);
    if (hit) return hit;
    const vec4 = (n: string) => {
      if (!floats.includes(n)) {
        throw new TypeError(`${key}: '${n}' is not a float binding of this variant`);
      }
      return isVec4(d.bindings[n], v);
    };
    const ctx: KernelContext<B, V> = {
      dtypes,
      variant: v,
      load: (n, expr) => loadF32(dt[n], expr, vec4(n)),
      store: (n, target, value) => `${target} = ${storeAs(dt[n], value, vec4(n))};`,
    };
    const lines = [`${wgslEnable(floats.map((n) => dt[n]))}// ${key}: ${d.doc}`, wg];
    let slot = 0;
    if (fields.length > 0) {
      lines.push(`struct Params { ${fields.map(([f, t]) => `${f}: ${t}`).join(", ")} }`);
      lines.push(`@group(0) @binding(${slot++}) var<uniform> p: Params;`);
    }
    for (const n of used) {
      const decl = d.bindings[n];
      lines.push(
        `@group(0) @binding(${slot++}) var<storage, ${accessOf(decl, v)}> ${n}: array<${
          elementType(decl, dt[n], v)
        }>;`,
      );
    }
    const code = `${lines.join("\n")}\n${d.body(ctx)}`;
    const s = { name: key, family: d.name, code };
    specs.set(key, s);
    return s;
  }

  function dispatch(call: KernelCall<P, B, V>): void {
    const op = call.op ?? d.name;
    const v = (call.variant ?? "") as V;
    const used = bindingsOf(v);
    const bound = call.bindings as Record<string, BoundTensor | undefined>;
    for (const n of names) {
      if (!used.includes(n) && bound[n] !== undefined) {
        throw new TypeError(`${op}: binding '${n}' is not one of variant '${v}'`);
      }
    }
    const dtypes: Record<string, FloatDType> = {};
    for (const n of used) {
      const b = bound[n];
      if (b === undefined) throw new TypeError(`${op}: binding '${n}' is missing`);
      const t = tensorOf(b);
      const decl = d.bindings[n];
      if (decl.type === "float" || decl.type === "float-bits") {
        if (t.dtype !== "f32" && t.dtype !== "f16") {
          throw new TypeError(`${op}: ${n} ${t} must be f32 or f16`);
        }
        dtypes[n] = t.dtype;
      } else {
        const want = decl.type === "u8-words" ? "u8" : decl.type.replace(/atomic<(\w+)>/, "$1");
        if (t.dtype !== want) throw new TypeError(`${op}: ${n} ${t} must be ${want}`);
      }
    }
    let params: Uint8Array | undefined;
    if (fields.length > 0) {
      const w = PARAMS.reset();
      const values = call.params as Record<string, number>;
      for (const [f, t] of fields) {
        if (values[f] === undefined) throw new TypeError(`${op}: param '${f}' is missing`);
        if (t === "u32") w.u32(values[f]);
        else if (t === "i32") w.i32(values[f]);
        else w.f32(values[f]);
      }
      params = w.bytes();
    }
    const first = tensorOf(bound[used[0]]!);
    const gpu: Gpu = first.gpu;
    gpu.dispatch(spec(dtypes as BindingDTypes<B>, v), {
      params,
      bindings: used.map((n) => {
        const b = bound[n]!;
        if ("binding" in b) return b.binding;
        return "tensor" in b
          ? { buffer: b.tensor.buffer, offset: b.tensor.byteOffset + b.offset, size: b.size }
          : b;
      }),
      workgroups: call.workgroups,
    });
  }

  return { descriptor: d as Kernel<P, B, V>["descriptor"], spec, dispatch };
}
