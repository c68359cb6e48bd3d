// Logits of one uploaded image (eval mode), shared by predict and the tests.
import { prepareBatch } from "../kernels/data/index.ts";
import type { GpuImageSet, Model } from "../models/mod.ts";

/** The logits of the first image of `set`, resized to `resize`, in evaluation mode. */
export async function predictLogits(
  model: Model,
  set: GpuImageSet,
  resize: number,
): Promise<Float32Array> {
  const gpu = model.gpu;
  const logits = gpu.scope(() => {
    const indices = gpu.tensor(new Uint32Array([0]), { shape: [1] });
    const x = gpu.empty(model.inputShape(1, resize));
    const labels = gpu.empty([1], { dtype: "i32" });
    prepareBatch({ x, labels, images: set.images, srcLabels: set.labels, indices }, {
      batch: 1,
      channels: set.channels,
      srcH: set.height,
      srcW: set.width,
      dstH: resize,
      dstW: resize,
    });
    return model.forward(x, { gpu, training: false, seed: 0 }).y;
  });
  const out = await logits.toArray() as Float32Array;
  logits.dispose();
  return out;
}
