/**
 * Models of your own: any {@linkcode Layer} tree with a name and an input shape becomes an
 * {@linkcode Architecture}, which `createModel`, the `Trainer`, checkpoints and the summary take
 * exactly as they take the zoo's (as a `torch.nn.Module` or a Keras `Sequential` is a model).
 *
 * @module
 */

import { formatShape } from "../gpu/mod.ts";
import type { Layer } from "../layers/mod.ts";
import type { Architecture } from "./zoo.ts";

/** A model of your own: its name, layer tree and input (see {@linkcode customArchitecture}). */
export interface CustomModelSpec {
  /** Any name (it names the model in errors, summaries and checkpoints). */
  readonly name: string;
  /** The layer tree; its state-dict names are its children's paths (`0.weight`, `fc.bias`). */
  readonly net: Layer;
  /** One example's input shape `[channels, height, width]` (Fashion-MNIST: `[1, 28, 28]`). */
  readonly inputShape: readonly [number, number, number];
  /** Classes; default the width of the net's output, which must equal it when given. */
  readonly classes?: number;
}

/**
 * The architecture of a model of your own. The net must map `[n, ...inputShape]` to logits
 * `[n, classes]`.
 *
 * @throws {TypeError} when the name is not a non-empty string, the net is not a layer, or its
 * output for the input shape is not `[1, classes]`.
 * @throws {RangeError} when the input shape is not three positive integers.
 * @example
 * ```ts
 * import { conv2d, flatten, linear, sequential } from "@modern-cnn/webgpu/layers";
 * import { customArchitecture } from "@modern-cnn/webgpu/models";
 * const net = sequential([
 *   conv2d({ inChannels: 1, outChannels: 4, kernel: 3, padding: 1 }),
 *   flatten(),
 *   linear({ inFeatures: 4 * 8 * 8, outFeatures: 3 }),
 * ]);
 * const arch = customArchitecture({ name: "tiny", net, inputShape: [1, 8, 8] });
 * console.log(arch.numClasses, arch.fixedSize); // 3 8
 * ```
 */
export function customArchitecture(spec: CustomModelSpec): Architecture {
  const { name, net, inputShape } = spec;
  if (typeof name !== "string" || name === "") {
    throw new TypeError(`a custom model needs a non-empty string name, got ${String(name)}`);
  }
  if (
    typeof net !== "object" || net === null || typeof net.forward !== "function" ||
    typeof net.outputShape !== "function"
  ) {
    throw new TypeError(`${name}: net must be a Layer (build it from @modern-cnn/webgpu/layers)`);
  }
  if (
    !Array.isArray(inputShape) || inputShape.length !== 3 ||
    !inputShape.every((d) => Number.isInteger(d) && d >= 1)
  ) {
    throw new RangeError(
      `${name}: inputShape must be [channels, height, width] of positive integers, got ${
        JSON.stringify(inputShape)
      }`,
    );
  }
  const [c, h, w] = inputShape;
  let out;
  try {
    out = net.outputShape([1, c, h, w]);
  } catch (err) {
    throw new TypeError(
      `${name}: the net does not take inputs ${formatShape([1, c, h, w])}: ${
        (err as Error).message
      }`,
    );
  }
  if (out.length !== 2 || (spec.classes !== undefined && out[1] !== spec.classes)) {
    throw new TypeError(
      `${name}: the net maps ${formatShape([1, c, h, w])} to ${formatShape(out)}, expected ` +
        `logits [1, ${spec.classes ?? "classes"}] (end with flatten() and linear())`,
    );
  }
  return {
    name,
    net,
    inChannels: c,
    numClasses: out[1],
    fixedSize: h === w && !_fits(net, [1, c, 2 * h, 2 * w]) ? h : null,
    blocks: net.children,
    inputShape: [c, h, w],
  };
}

/** Whether a net takes an input shape. */
function _fits(net: Layer, input: readonly number[]): boolean {
  try {
    net.outputShape(input);
    return true;
  } catch {
    return false;
  }
}
