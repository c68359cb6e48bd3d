/**
 * Channel concatenation and its backward, the split (Inception, DenseNet): {@linkcode
 * concatChannels} copies a tensor into a channel slice of a larger one, {@linkcode splitChannels}
 * copies (or adds) a channel slice out, optionally through the backward of an activation that
 * wrote its output straight into the concatenated tensor.
 *
 * Every float tensor may be f32 or f16, each independently; a copy between tensors of one dtype
 * moves the stored values, anything else computes in f32 and rounds once on store (`_dtype.ts`).
 *
 * One thread per `vec4` when the slice's rows and offsets are multiples of 4 elements, else per
 * element. Tensors larger than one storage binding are processed in ranges of whole rows
 * (samples), one dispatch per range. No kernel here loops.
 *
 * @module
 */

import { formatShape, grid1d, type Tensor } from "../gpu/mod.ts";
import {
  actBackwardFn,
  ACTIVATION_KINDS,
  type ActivationKind,
  checkActivationKind,
} from "./_activation_wgsl.ts";
import { bindingRange, unitRanges } from "./_binding.ts";
import { convert, floatDType, loadF32, storeAs } from "./_dtype.ts";
import { defineKernel, flatMain, variantProduct } from "./_kernel.ts";

/** Threads per workgroup of the channel-slice kernels. */
const WG = 256;

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

/** Whether a channel-slice variant works on vec4s. */
const isVec4 = (variant: string): boolean => variant.split("_").includes("v4");

/** What the two channel-slice kernels share: their thread mapping, params and index maths. */
const SLICE = {
  doc: "one thread per vec4 (v4) or element (s) of the slice part [rows, c, hw] of one range " +
    "of rows; flat index i = gid.x + gid.y * nwg.x * WG (grid1d), in units of vec4s or " +
    "elements: row = i / chw, the part's index is partBase + i and the whole tensor's index is " +
    "wholeBase + row * totalHw + offHw + (i - row * chw) (bases: where the range starts in its " +
    "binding)",
  params: {
    count: "u32",
    chw: "u32",
    totalHw: "u32",
    offHw: "u32",
    wholeBase: "u32",
    partBase: "u32",
  },
  workgroupSize: WG,
} as const;

/** The WGSL after a channel-slice kernel's declarations: `helpers`, then `main` doing `body`. */
function sliceMain(variant: string, helpers: string, body: string): string {
  const main = flatMain(
    "i",
    "p.count",
    `  let row = i / p.chw;
  let wi = p.wholeBase + row * p.totalHw + p.offHw + (i - row * p.chw);
  let pi = p.partBase + i;
  ${body}`,
  );
  return `${helpers}alias T = ${isVec4(variant) ? "vec4<f32>" : "f32"};\n${main}`;
}

/** Concatenation: the part copied into the whole (converted where their dtypes differ). */
const concat = defineKernel({
  name: "concat_channels",
  ...SLICE,
  bindings: {
    whole: { type: "float", access: "read_write", vec4: isVec4 },
    part: { type: "float", access: "read", vec4: isVec4 },
  },
  variants: ["v4", "s"],
  body: ({ dtypes, variant }) =>
    sliceMain(
      variant,
      "",
      `whole[wi] = ${convert("part[pi]", dtypes.part, dtypes.whole, isVec4(variant))};`,
    ),
});

/**
 * The split's variants: `acc` adds into the part; an activation kind gives the part that
 * activation's backward `f'(y) * dy` of the slice, `y` read from `yWhole` (laid out like the
 * whole); `v4` or `s` as {@linkcode SLICE}.
 */
const SPLIT = variantProduct(["", "acc"], ["", ...ACTIVATION_KINDS], ["v4", "s"]);
type SplitVariant = typeof SPLIT[number];
const actOf = (variant: string): ActivationKind | undefined =>
  ACTIVATION_KINDS.find((k) => variant.split("_").includes(k));

/** The split: the slice of the whole copied (or added) into the part. */
const split = defineKernel({
  name: "split_channels",
  ...SLICE,
  bindings: {
    whole: { type: "float", access: "read", vec4: isVec4 },
    part: { type: "float", access: "read_write", vec4: isVec4 },
    yWhole: {
      type: "float",
      access: "read",
      vec4: isVec4,
      variants: SPLIT.filter((v) => actOf(v) !== undefined),
    },
  },
  variants: SPLIT,
  body: ({ dtypes, variant }) => {
    const vec = isVec4(variant);
    const act = actOf(variant);
    // The value of the slice, stored as `from`: dy itself, or the activation's backward (f32).
    const [value, from] = act
      ? [
        `actBackward(${loadF32(dtypes.whole, "whole[wi]", vec)}, ${
          loadF32(dtypes.yWhole, "yWhole[wi]", vec)
        })`,
        "f32" as const,
      ]
      : ["whole[wi]", dtypes.whole];
    const body = variant.split("_").includes("acc")
      ? `part[pi] = ${
        storeAs(
          dtypes.part,
          `${loadF32(dtypes.part, "part[pi]", vec)} + ${loadF32(from, value, vec)}`,
          vec,
        )
      };`
      : `part[pi] = ${convert(value, from, dtypes.part, vec)};`;
    const helpers = act
      ? `// The part gets ${act}'s backward of the slice: actBackward(dy = whole, y = yWhole), ` +
        `yWhole being
// the forward output laid out (and bound) like the whole.
${actBackwardFn(act)}
`
      : "";
    return sliceMain(variant, helpers, body);
  },
});

/** Records a channel slice's kernel, in ranges of whole rows that each fit one binding. */
function dispatchSlice(
  op: "concatChannels" | "splitChannels",
  whole: Tensor,
  part: Tensor,
  p: ChannelSliceParams,
  opts: { accumulate?: boolean; act?: { kind: ActivationKind; y: Tensor } } = {},
): void {
  if (part.size === 0) return;
  const chw = p.c * p.hw, totalHw = p.cTotal * p.hw, offHw = p.cOffset * p.hw;
  const vec = chw % 4 === 0 && totalHw % 4 === 0 && offHw % 4 === 0;
  const u = vec ? 4 : 1;
  const layout = vec ? "v4" : "s";
  // Ranges of whole rows; in vec4 mode every row starts at a multiple of 4 elements, and so do
  // the bases (the same for act.y, whose layout is the whole's).
  for (const [r0, r1] of unitRanges(op, whole.gpu, p.n, totalHw)) {
    const w = bindingRange(whole, r0 * totalHw, (r1 - r0) * totalHw);
    const q = bindingRange(part, r0 * chw, (r1 - r0) * chw);
    const count = ((r1 - r0) * chw) / u;
    const call = {
      op,
      params: {
        count,
        chw: chw / u,
        totalHw: totalHw / u,
        offHw: offHw / u,
        wholeBase: w.base / u,
        partBase: q.base / u,
      },
      workgroups: grid1d(count, WG),
    };
    if (op === "concatChannels") {
      concat.dispatch({ ...call, variant: layout, bindings: { whole: w, part: q } });
    } else {
      const { accumulate, act } = opts;
      const variant = [accumulate ? "acc" : "", act?.kind ?? "", layout]
        .filter((s) => s !== "").join("_") as SplitVariant;
      const yWhole = act && bindingRange(act.y, r0 * totalHw, (r1 - r0) * totalHw);
      split.dispatch({ ...call, variant, bindings: { whole: w, part: q, yWhole } });
    }
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
  dispatchSlice("concatChannels", io.y, io.x, p);
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
  dispatchSlice(op, io.dy, io.dx, p, { accumulate: p.accumulate, act });
}
