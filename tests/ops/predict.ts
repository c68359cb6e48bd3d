// Inference checks shared by `deno task test` and `deno task test:browser`: what only a browser
// can give `predict` (an ImageBitmap, read through an OffscreenCanvas's 2D context). Under Deno,
// whose OffscreenCanvas has no 2D context, it checks the clear TypeError instead. No Deno API, no
// node: module.
import { flatten, linear, sequential } from "../../layers/mod.ts";
import { createModel } from "../../models/mod.ts";
import assert from "../_assert.ts";
import type { KernelCheck } from "../_check.ts";

type Bitmaps = {
  createImageBitmap(
    image: unknown,
    options?: { premultiplyAlpha?: string; colorSpaceConversion?: string },
  ): Promise<{ width: number; height: number; close(): void }>;
  ImageData: new (data: Uint8ClampedArray, width: number, height: number) => {
    width: number;
    height: number;
    data: Uint8ClampedArray;
  };
  OffscreenCanvas?: unknown;
};

/** The inference checks (the browser's image types). */
export const PREDICT_CHECKS: KernelCheck[] = [
  {
    name: "predict: an ImageBitmap gives the logits of the same pixels as ImageData (browser)",
    gpu: true,
    f16: false,
    run: async (gpu) => {
      const g = globalThis as unknown as Bitmaps;
      const Canvas = g.OffscreenCanvas as
        | (new (w: number, h: number) => {
          getContext(kind: string): unknown;
        })
        | undefined;
      const canvas2d = typeof Canvas === "function" && !!new Canvas(1, 1).getContext("2d");
      if (!canvas2d || typeof g.createImageBitmap !== "function") {
        // Where no 2D canvas can read a bitmap (Deno's OffscreenCanvas has no 2D context):
        // one TypeError saying what to pass instead.
        const model = createModel(gpu, {
          name: "tiny-gray",
          net: sequential([flatten(), linear({ inFeatures: 4, outFeatures: 2 })]),
          inputShape: [1, 2, 2],
        });
        let error: unknown = null;
        try {
          await model.predict([{ width: 2, height: 2, close() {} }]);
        } catch (e) {
          error = e;
        } finally {
          model.dispose();
        }
        assert.ok(
          error instanceof TypeError &&
            /ImageBitmap.*OffscreenCanvas.*ImageData/.test(error.message),
          `expected the TypeError that names ImageData, got ${error}`,
        );
        return;
      }
      const h = 7, w = 9;
      const rgba = new Uint8ClampedArray(h * w * 4);
      for (let i = 0; i < h * w; i++) {
        rgba[4 * i] = (i * 37) % 256;
        rgba[4 * i + 1] = (i * 101 + 13) % 256;
        rgba[4 * i + 2] = (i * 59 + 200) % 256;
        rgba[4 * i + 3] = 255;
      }
      const imageData = new g.ImageData(rgba, w, h);
      const bitmap = await g.createImageBitmap(imageData, {
        premultiplyAlpha: "none",
        colorSpaceConversion: "none",
      });
      const model = createModel(gpu, {
        name: "tiny-rgb",
        net: sequential([flatten(), linear({ inFeatures: 3 * 8 * 8, outFeatures: 5 })]),
        inputShape: [3, 8, 8],
        seed: 3,
      });
      try {
        const [fromData, fromBitmap] = await model.predict([imageData, bitmap], { topK: 2 });
        assert.deepEqual(
          [...fromBitmap.logits],
          [...fromData.logits],
          "same pixels, same host conversion and GPU work",
        );
        assert.deepEqual(fromBitmap.top, fromData.top);
      } finally {
        bitmap.close();
        model.dispose();
      }
    },
  },
];
