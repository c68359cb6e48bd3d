/**
 * The summary of a model, as torchinfo's: per layer and block (expanded to a depth) the output
 * shape, parameters, running statistics and FLOPs, then totals and memory estimates.
 *
 * @module
 */

import { formatShape, type Shape } from "../gpu/mod.ts";
import { type Layer, namedParams, stateEntries } from "../layers/mod.ts";
import { type Architecture, checkInputSize } from "./zoo.ts";

/** One row of a summary: a layer or block of the tree. */
export interface SummaryRow {
  /** The layer's state-dict path (`0`, `2.0.conv1`, `layers.3.1`). */
  readonly name: string;
  /** The layer's kind (`Conv2d`, `Sequential`, `Residual`, ...). */
  readonly kind: string;
  /** Depth in the tree: 1 for the top-level blocks, 2 for their children, ... */
  readonly depth: number;
  /** Input shape. */
  readonly input: Shape;
  /** Output shape. */
  readonly shape: Shape;
  /** Trainable parameters in the layer and its children. */
  readonly params: number;
  /** Non-trainable elements (running statistics) in the layer and its children. */
  readonly buffers: number;
  /** Forward FLOPs of the layer for the summary's batch (the layer's own `flops`). */
  readonly flops: number;
}

/** Memory estimates of a summary in bytes (f32, as torchinfo's). */
export interface SummaryMemory {
  /** The input batch. */
  readonly input: number;
  /** Forward/backward pass: every leaf layer's output and its gradient (2 × 4 bytes each). */
  readonly activations: number;
  /** Parameters and running statistics. */
  readonly params: number;
  /** The sum of the three. */
  readonly total: number;
}

/** A model summary. */
export interface Summary {
  /** The model's name. */
  readonly name: string;
  /** Every layer and block down to the summary's depth, in forward order. */
  readonly rows: readonly SummaryRow[];
  /** Total trainable parameters. */
  readonly params: number;
  /** Total non-trainable elements (running statistics). */
  readonly buffers: number;
  /** Forward FLOPs of the batch. */
  readonly flops: number;
  /** Input shape used (batch first). */
  readonly input: Shape;
  /** The depth the rows go down to. */
  readonly depth: number;
  /** Memory estimates. */
  readonly memory: SummaryMemory;
}

/** Options of {@linkcode summarize}. */
export interface SummarizeOptions {
  /** How deep blocks expand into their children (1: the top-level blocks only); default 3. */
  readonly depth?: number;
  /** Batch size of the input; default 1. */
  readonly batch?: number;
}

const elements = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

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
  return namedParams(arch.net).reduce((s, [, p]) => s + elements(p.shape), 0);
}

function _buffers(layer: Layer): number {
  return stateEntries(layer).reduce(
    (s, e) => s + (e.kind === "buffer" ? elements(e.buffer.shape) : 0),
    0,
  );
}

/**
 * Walks one input batch through the layer tree, as torchinfo's `summary`: per layer and block
 * (blocks expanded into their children down to `depth`) its input and output shapes, trainable
 * parameters, running statistics and FLOPs, then totals and memory estimates. `size` is the
 * square input size (default the architecture's `inputShape`). Functional steps that are no
 * module (a ReLU inside a block, `x.view(n, -1)`) have no row.
 *
 * @throws {RangeError} when the size does not fit or the depth or batch is not a positive integer.
 * @example
 * ```ts
 * import { buildArchitecture, summarize } from "@modern-cnn/webgpu/models";
 * const s = summarize(buildArchitecture("lenet"), 28);
 * console.log(s.rows.at(-1)!.shape); // [1, 10]
 * const r = summarize(buildArchitecture("resnet"), 96, { depth: 2 });
 * console.log(r.rows.find((row) => row.name === "2.0")!.kind); // "Residual"
 * ```
 */
export function summarize(
  arch: Architecture,
  size?: number,
  options: SummarizeOptions = {},
): Summary {
  const depth = options.depth ?? 3;
  const batch = options.batch ?? 1;
  if (!Number.isInteger(depth) || depth < 1) {
    throw new RangeError(`${arch.name}: summary depth must be an integer >= 1, got ${depth}`);
  }
  if (!Number.isInteger(batch) || batch < 1) {
    throw new RangeError(`${arch.name}: summary batch must be an integer >= 1, got ${batch}`);
  }
  const [c, h, w] = arch.inputShape;
  const input: Shape = size === undefined ? [batch, c, h, w] : [batch, c, size, size];
  if (size !== undefined) checkInputSize(arch, size);
  const rows: SummaryRow[] = [];
  let leafOutputs = 0;
  const visit = (name: string | null, layer: Layer, at: Shape, d: number): void => {
    const shape = layer.outputShape(at);
    if (name !== null && d <= depth) {
      rows.push({
        name,
        kind: layer.kind,
        depth: d,
        input: at,
        shape,
        params: _params(layer),
        buffers: _buffers(layer),
        flops: layer.flops(at),
      });
    }
    const steps = layer.trace?.(at);
    if (steps === undefined || layer.children.length === 0) leafOutputs += elements(shape);
    else {for (const s of steps) {
        visit(s.name === null ? null : _path(name, s.name), s.layer, s.input, d + 1);
      }}
  };
  const root = arch.net.trace?.(input);
  if (root === undefined) visit("net", arch.net, input, 1);
  else for (const s of root) visit(s.name, s.layer, s.input, 1);
  const params = countParameters(arch);
  const buffers = _buffers(arch.net);
  const memory = {
    input: elements(input) * 4,
    activations: leafOutputs * 2 * 4,
    params: (params + buffers) * 4,
  };
  return {
    name: arch.name,
    rows,
    params,
    buffers,
    flops: arch.net.flops(input),
    input,
    depth,
    memory: { ...memory, total: memory.input + memory.activations + memory.params },
  };
}

function _params(layer: Layer): number {
  return namedParams(layer).reduce((s, [, p]) => s + elements(p.shape), 0);
}

/** A child's path below its parent's (an unnamed parent's children keep their own names). */
function _path(parent: string | null, child: string): string {
  return parent === null ? child : `${parent}.${child}`;
}

/**
 * Formats a summary as a table, as torchinfo prints one: per row the layer (indented by depth),
 * output shape, trainable parameters, running statistics and FLOPs; then the totals and the
 * memory estimates.
 *
 * @example
 * ```ts
 * import { buildArchitecture, formatSummary, summarize } from "@modern-cnn/webgpu/models";
 * console.log(formatSummary(summarize(buildArchitecture("lenet"), 28)));
 * ```
 */
export function formatSummary(s: Summary): string {
  const n = (v: number) => v.toLocaleString("en-US");
  const cells = s.rows.map((r) => [
    `${"  ".repeat(r.depth - 1)}${r.name} ${r.kind}`,
    formatShape(r.shape),
    n(r.params),
    n(r.buffers),
    n(r.flops),
  ]);
  const head = ["layer", "output shape", "params", "buffers", "FLOPs"];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) =>
    c.map((v, i) => (i < 2 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join("  ").trimEnd();
  const mb = (b: number) => (b / 1e6).toFixed(2);
  const flops = s.flops >= 1e8
    ? `${(s.flops / 1e9).toFixed(3)} GFLOP`
    : `${(s.flops / 1e6).toFixed(3)} MFLOP`;
  return [
    `input shape: ${formatShape(s.input)} (depth ${s.depth})`,
    line(head),
    ...cells.map(line),
    `parameters: ${n(s.params)} trainable, ${n(s.buffers)} non-trainable (running statistics)`,
    `forward FLOPs: ${flops} (batch ${s.input[0]})`,
    `memory (MB, f32): input ${mb(s.memory.input)}, forward/backward pass ${
      mb(s.memory.activations)
    }, params ${mb(s.memory.params)}, estimated total ${mb(s.memory.total)}`,
  ].join("\n");
}
