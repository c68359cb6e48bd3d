/**
 * The shape walk-through of the seed documents: each top-level block's output shape for one
 * input, the parameter count and the forward FLOPs per image.
 *
 * @module
 */

import { formatShape, type Shape } from "../gpu/mod.ts";
import { namedParams } from "../layers/mod.ts";
import { type Architecture, checkInputSize } from "./zoo.ts";

/** One row of a summary. */
export interface SummaryRow {
  /** The block's state-dict name (`0`, `b1`, `layers`, ...) or its kind for unnamed steps. */
  readonly name: string;
  /** The block's kind (`Conv2d`, `Sequential`, `Residual`, ...). */
  readonly kind: string;
  /** Output shape. */
  readonly shape: Shape;
  /** Parameters in the block. */
  readonly params: number;
  /** Forward FLOPs of the block for one image (2 × multiply-adds of conv and linear layers). */
  readonly flops: number;
}

/** A model summary. */
export interface Summary {
  /** Per top-level block. */
  readonly rows: readonly SummaryRow[];
  /** Total trainable parameters. */
  readonly params: number;
  /** Forward FLOPs per image. */
  readonly flops: number;
  /** Input shape used. */
  readonly input: Shape;
}

/**
 * Counts the trainable parameters of an architecture (no GPU needed).
 *
 * @example
 * ```ts
 * import { buildArchitecture, countParameters } from "@modern-cnn/webgpu/models";
 * countParameters(buildArchitecture("lenet")); // 61706
 * ```
 */
export function countParameters(arch: Architecture): number {
  return namedParams(arch.net).reduce((s, [, p]) => s + p.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * Walks one input of `size`×`size` through the top-level blocks.
 *
 * @example
 * ```ts
 * import { buildArchitecture, summarize } from "@modern-cnn/webgpu/models";
 * const s = summarize(buildArchitecture("lenet"), 28);
 * console.log(s.rows.at(-1)!.shape); // [1, 10]
 * ```
 */
export function summarize(arch: Architecture, size: number): Summary {
  checkInputSize(arch, size);
  const input: Shape = [1, arch.inChannels, size, size];
  let shape = input;
  const rows: SummaryRow[] = [];
  // Top-level steps: the children of the root chain (a Sequential or a named chain).
  const steps = arch.net.children.length > 0 ? arch.net.children : [["net", arch.net] as const];
  for (const [name, layer] of steps) {
    const flops = layer.flops(shape);
    shape = layer.outputShape(shape);
    if (layer.kind === "AdaptiveAvgPool2d" && arch.net.kind === "MobileNetV1") {
      rows.push({ name, kind: layer.kind, shape, params: 0, flops });
      shape = [shape[0], shape.slice(1).reduce((a, b) => a * b, 1)]; // x.view(n, -1)
      continue;
    }
    const params = namedParams(layer).reduce(
      (s, [, p]) => s + p.shape.reduce((a, b) => a * b, 1),
      0,
    );
    rows.push({ name, kind: layer.kind, shape, params, flops });
  }
  return {
    rows,
    params: countParameters(arch),
    flops: arch.net.flops(input),
    input,
  };
}

/**
 * Formats a summary as the seed documents print it (`Conv2d output shape: [1, 6, 28, 28]`).
 *
 * @example
 * ```ts
 * import { buildArchitecture, formatSummary, summarize } from "@modern-cnn/webgpu/models";
 * console.log(formatSummary(summarize(buildArchitecture("lenet"), 28)));
 * ```
 */
export function formatSummary(s: Summary): string {
  const width = Math.max(...s.rows.map((r) => `${r.name} ${r.kind}`.length));
  const lines = [`input shape: ${formatShape(s.input)}`];
  for (const r of s.rows) {
    lines.push(`${`${r.name} ${r.kind}`.padEnd(width)}  output shape: ${formatShape(r.shape)}`);
  }
  lines.push(`parameters: ${s.params.toLocaleString("en-US")}`);
  lines.push(
    `forward FLOPs per image: ${
      s.flops >= 1e8 ? `${(s.flops / 1e9).toFixed(3)} GFLOP` : `${(s.flops / 1e6).toFixed(3)} MFLOP`
    }`,
  );
  return lines.join("\n");
}
