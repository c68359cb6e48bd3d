// The one 2-D window record (kernels/_geometry.ts): resolving what callers give, the output size
// and the errors, shared by conv2d, depthwise, pooling and the layers. CPU only.
import assert from "node:assert/strict";
import {
  checkWindow2d,
  type Conv2dGeometry,
  planeWindow,
  type Window2d,
  window2d,
} from "../kernels/_geometry.ts";
import { checkConv2d, conv2dGeometry } from "../kernels/conv2d/index.ts";
import { checkDepthwise } from "../kernels/depthwise/index.ts";
import { checkPool2d } from "../kernels/pool/index.ts";
import { avgPool2d, conv2d, maxPool2d } from "../layers/mod.ts";

const isError = (type: ErrorConstructor, re: RegExp) => (e: Error) =>
  e instanceof type && re.test(e.message);

Deno.test("window2d fills the defaults: stride 1 (or the kernel), padding 0, dilation 1", () => {
  assert.deepEqual(window2d("conv2d", { kernel: 3, padding: 1 }), {
    kh: 3,
    kw: 3,
    sh: 1,
    sw: 1,
    ph: 1,
    pw: 1,
    dh: 1,
    dw: 1,
  });
  assert.deepEqual(
    window2d("maxPool2d", { kernel: [3, 2], padding: [1, 0] }, { stride: "kernel" }),
    { kh: 3, kw: 2, sh: 3, sw: 2, ph: 1, pw: 0, dh: 1, dw: 1 },
  );
  const win = window2d("conv2d", { kernel: [5, 3], stride: [2, 1], dilation: 2 });
  assert.deepEqual([win.sh, win.sw, win.dh, win.dw], [2, 1, 2, 2]);
});

Deno.test("window2d: TypeError for a non-number entry, RangeError for a bad value", () => {
  const bad = (kernel: unknown) => ({ kernel }) as unknown as { kernel: number };
  assert.throws(() => window2d("conv2d", bad("3")), isError(TypeError, /^conv2d: kernel must/));
  assert.throws(() => window2d("conv2d", { kernel: 0 }), isError(RangeError, /^conv2d: kernel/));
  assert.throws(
    () => window2d("conv2d", { kernel: 3, stride: [1, 0] }),
    isError(RangeError, /^conv2d: stride must be an integer >= 1 or a pair of them, got \[1,0\]/),
  );
  assert.throws(() => window2d("pool", { kernel: 3, padding: -1 }), isError(RangeError, /padding/));
  assert.throws(() => window2d("conv2d", bad([3, 3, 3])), isError(RangeError, /kernel/));
  assert.throws(() => window2d("conv2d", { kernel: 3, dilation: 1.5 }), /dilation/);
});

Deno.test("checkWindow2d gives PyTorch's output shape", () => {
  const w = (kernel: number, stride: number, padding: number, dilation = 1) =>
    window2d("t", { kernel, stride, padding, dilation });
  assert.deepEqual(checkWindow2d("t", w(3, 2, 1), [1, 8, 48, 48]), [1, 8, 24, 24]);
  assert.deepEqual(checkWindow2d("t", w(11, 4, 1), [2, 1, 224, 224]), [2, 1, 54, 54]);
  assert.deepEqual(checkWindow2d("t", w(3, 1, 2, 2), [1, 1, 5, 7]), [1, 1, 5, 7]);
  assert.deepEqual(checkWindow2d("t", w(2, 2, 0), [3, 4, 5, 5]), [3, 4, 2, 2]);
  const pw = planeWindow("t", { n: 8, c: 32, h: 48, w: 48 }, w(3, 2, 1));
  assert.deepEqual([pw.n, pw.c, pw.h, pw.w, pw.oh, pw.ow, pw.kh, pw.sh], [
    8,
    32,
    48,
    48,
    24,
    24,
    3,
    2,
  ]);
});

Deno.test("checkWindow2d: errors name the op and both shapes", () => {
  const win = window2d("maxPool2d", { kernel: 3, padding: 0 });
  assert.throws(
    () => checkWindow2d("maxPool2d", win, [1, 8, 2, 9]),
    isError(
      RangeError,
      /^maxPool2d: input \[1, 8, 2, 9\] is too small for kernel \[3, 3\] with padding \[0, 0\] \(output 0x7\)$/,
    ),
  );
  const dilated = window2d("conv2d", { kernel: 3, dilation: 2 });
  assert.throws(
    () => checkWindow2d("conv2d", dilated, [1, 1, 4, 4]),
    isError(RangeError, /kernel \[3, 3\] with padding \[0, 0\] and dilation \[2, 2\]/),
  );
  assert.throws(
    () => checkWindow2d("conv2d", win, [8, 2, 2]),
    isError(TypeError, /^conv2d: expected an \[n, c, h, w\] input, got \[8, 2, 2\]$/),
  );
  assert.throws(
    () => checkWindow2d("conv2d", win, [1, 0, 8, 8]),
    isError(RangeError, /^conv2d: input \[1, 0, 8, 8\] must have integer sizes >= 1$/),
  );
  const byHand: Window2d = { ...win, sh: 0 };
  assert.throws(
    () => checkWindow2d("conv2d", byHand, [1, 1, 8, 8]),
    isError(
      RangeError,
      /^conv2d: window kernel \[3, 3\], stride \[0, 1\].* over input \[1, 1, 8, 8\]/,
    ),
  );
  const notNumber = { ...win, kw: "3" } as unknown as Window2d;
  assert.throws(() => checkWindow2d("conv2d", notNumber, [1, 1, 8, 8]), TypeError);
});

Deno.test("conv2d, depthwise and pooling share the window record and its maths", () => {
  const g: Conv2dGeometry = conv2dGeometry({
    n: 2,
    cIn: 4,
    h: 9,
    w: 7,
    cOut: 6,
    kernel: [3, 2],
    stride: [2, 1],
    padding: [1, 0],
    dilation: [1, 2],
  });
  const win = window2d("t", { kernel: [3, 2], stride: [2, 1], padding: [1, 0], dilation: [1, 2] });
  const [, , oh, ow] = checkWindow2d("t", win, [2, 4, 9, 7]);
  assert.deepEqual([g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.oh, g.ow], [
    ...Object.values(win),
    oh,
    ow,
  ]);
  assert.deepEqual(checkConv2d({ n: 2, cIn: 4, h: 9, w: 7, cOut: 6, kernel: 3, padding: 1 }), [
    2,
    6,
    9,
    7,
  ]);
  assert.deepEqual(checkDepthwise({ n: 2, c: 4, h: 9, w: 7, kernel: 3, stride: 2, padding: 1 }), [
    2,
    4,
    5,
    4,
  ]);
  assert.deepEqual(checkPool2d({ n: 2, c: 4, h: 9, w: 7, kernel: 3 }), [2, 4, 3, 2]);
});

Deno.test("the layers resolve their window with the same record, and fail on construction", () => {
  assert.deepEqual(conv2d({ inChannels: 3, outChannels: 4, kernel: [3, 1] }).own.params[0].shape, [
    4,
    3,
    3,
    1,
  ]);
  assert.deepEqual(maxPool2d({ kernel: 3, stride: 2 }).outputShape([1, 96, 54, 54]), [
    1,
    96,
    26,
    26,
  ]);
  assert.throws(
    () => conv2d({ inChannels: 3, outChannels: 4, kernel: 3, stride: 0 }),
    isError(RangeError, /^Conv2d: stride must be/),
  );
  assert.throws(() => maxPool2d({ kernel: [2, 0] }), isError(RangeError, /^MaxPool2d: kernel/));
  assert.throws(() => avgPool2d({ kernel: 2, padding: -1 }), isError(RangeError, /^AvgPool2d/));
});
