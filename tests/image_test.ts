// Tests of image decoding (data/image.ts, data/jpeg.ts): PNGs of every bit depth and colour type
// into planes, JPEGs written by jpeg-js, and the files that are rejected before or while decoding
// (other formats, empty, too large, truncated, corrupt, a palette index past the palette,
// unsupported JPEGs), each with an ImageDecodeError naming the file in one line. No GPU needed.
import assert from "node:assert/strict";
import { encode } from "fast-png";
import { encode as encodeJpeg } from "jpeg-js";
import { decodeImage, ImageDecodeError, imageSize, pngSize, pngToPlanes } from "../data/mod.ts";
import { MAX_IMAGE_PIXELS } from "../data/image.ts";
import { chunk, concat, ihdr, PNG_SIGNATURE } from "./_png.ts";

/** A PNG written by hand: `rows` are the raw scanlines (packed samples), filter 0 each. */
async function png(options: {
  width: number;
  height: number;
  depth: number;
  colorType: number;
  rows: number[][];
  plte?: number[][];
  trns?: number[];
}): Promise<Uint8Array> {
  const raw = concat(options.rows.map((r) => new Uint8Array([0, ...r])));
  const zlib = new Uint8Array(
    await new Response(
      new Blob([raw as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
        new CompressionStream("deflate"),
      ),
    ).arrayBuffer(),
  );
  return concat([
    PNG_SIGNATURE,
    ihdr(options.width, options.height, options.depth, options.colorType),
    ...(options.plte ? [chunk("PLTE", new Uint8Array(options.plte.flat()))] : []),
    ...(options.trns ? [chunk("tRNS", new Uint8Array(options.trns))] : []),
    chunk("IDAT", zlib),
    chunk("IEND", new Uint8Array(0)),
  ]);
}

/** Asserts an ImageDecodeError naming `file`, in one line, matching `re`. */
function rejects(fn: () => unknown, file: string, re: RegExp): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof ImageDecodeError, `ImageDecodeError, got ${e}`);
    assert.equal(e.name, "ImageDecodeError");
    assert.equal((e as ImageDecodeError).file, file);
    assert.ok(e.message.startsWith(`${file}: `), e.message);
    assert.ok(!e.message.includes("\n") && e.message.length <= 300, e.message);
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("PNGs of 8 and 16 bits, gray, RGB and alpha decode into planes", () => {
  const gray = encode({ width: 2, height: 1, data: new Uint8Array([0, 255]), channels: 1 });
  assert.deepEqual(pngSize(gray), { width: 2, height: 1 });
  const g = pngToPlanes(gray, { channels: 1, file: "g.png" });
  assert.deepEqual([g.width, g.height, [...g.data]], [2, 1, [0, 255]]);
  assert.deepEqual([...pngToPlanes(gray, { channels: 1, invert: true }).data], [255, 0]);
  assert.deepEqual([...pngToPlanes(gray, { channels: 3 }).data], [0, 255, 0, 255, 0, 255]);
  const rgba = encode({
    width: 1,
    height: 1,
    data: new Uint8Array([200, 100, 50, 128]),
    channels: 4,
  });
  const a = 128 / 255;
  assert.deepEqual(
    [...pngToPlanes(rgba, { channels: 3 }).data],
    [200 * a, 100 * a, 50 * a].map(Math.round),
  );
  const deep = encode({
    width: 2,
    height: 1,
    data: new Uint16Array([65535, 32768]),
    channels: 1,
    depth: 16,
  });
  assert.deepEqual([...pngToPlanes(deep, { channels: 1 }).data], [255, 128]);
});

Deno.test("PNGs of 1, 2 and 4 bits and palettes decode sample by sample", async () => {
  // 1-bit gray, 10 pixels wide (rows padded to whole bytes): 1011000011 / 0100111100.
  const bits = await png({
    width: 10,
    height: 2,
    depth: 1,
    colorType: 0,
    rows: [[0b10110000, 0b11000000], [0b01001111, 0b00000000]],
  });
  assert.deepEqual(
    [...pngToPlanes(bits, { channels: 1 }).data].map((v) => v / 255),
    [1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0],
  );
  // 4-bit gray: 0, 15, 5.
  const nibbles = await png({ width: 3, height: 1, depth: 4, colorType: 0, rows: [[0x0f, 0x50]] });
  assert.deepEqual([...pngToPlanes(nibbles, { channels: 1 }).data], [0, 255, 85]);
  // 2-bit palette of 4 colours, indices 3 2 1 0 1.
  const plte = [[10, 20, 30], [40, 50, 60], [70, 80, 90], [255, 0, 0]];
  const pal = await png({
    width: 5,
    height: 1,
    depth: 2,
    colorType: 3,
    rows: [[0b11100100, 0b01000000]],
    plte,
  });
  const rgb = pngToPlanes(pal, { channels: 3, file: "p.png" });
  const want = [3, 2, 1, 0, 1].map((i) => plte[i]);
  assert.deepEqual([...rgb.data.subarray(0, 5)], want.map((c) => c[0]));
  assert.deepEqual([...rgb.data.subarray(5, 10)], want.map((c) => c[1]));
  assert.deepEqual([...rgb.data.subarray(10, 15)], want.map((c) => c[2]));
  // 8-bit palette with transparency: composited over black, as RGBA images.
  const trns = await png({
    width: 2,
    height: 1,
    depth: 8,
    colorType: 3,
    rows: [[0, 1]],
    plte: [[200, 200, 200], [100, 100, 100]],
    trns: [0, 255],
  });
  assert.deepEqual([...pngToPlanes(trns, { channels: 1 }).data], [0, 100]);
});

Deno.test("a palette index past the palette is a clear error, not a crash", async () => {
  const bad = await png({
    width: 3,
    height: 1,
    depth: 8,
    colorType: 3,
    rows: [[0, 7, 1]],
    plte: [[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]],
  });
  rejects(
    () => pngToPlanes(bad, { channels: 1, file: "pal.png" }),
    "pal.png",
    /palette index 7 past the palette of 4 colours/,
  );
});

Deno.test("the PNG header's size is checked before decoding: empty and huge images", () => {
  const header = (w: number, h: number) => concat([PNG_SIGNATURE, ihdr(w, h, 8, 0)]);
  rejects(
    () => pngToPlanes(header(0, 28), { channels: 1, file: "zero.png" }),
    "zero.png",
    /is 0x28 pixels: an empty image \(zero width\)/,
  );
  rejects(
    () => pngToPlanes(header(28, 0), { channels: 1, file: "flat.png" }),
    "flat.png",
    /zero height/,
  );
  const t0 = performance.now();
  rejects(
    () => pngToPlanes(header(20000, 20000), { channels: 3, file: "IMG.png" }),
    "IMG.png",
    new RegExp(
      `^IMG\\.png: 20000x20000 pixels is too large to decode \\(at most ${MAX_IMAGE_PIXELS} ` +
        "pixels, e\\.g\\. 4096x4096\\); resize it first$",
    ),
  );
  assert.ok(performance.now() - t0 < 100);
  rejects(
    () => pngToPlanes(header(30, 30), { channels: 1, file: "s.png", maxPixels: 800 }),
    "s.png",
    /30x30 pixels is too large to decode \(at most 800 pixels\)/,
  );
  assert.throws(() => pngToPlanes(header(1, 1), { channels: 2 }), RangeError);
});

Deno.test("files that are not PNGs are named: JPEG, GIF, other bytes, truncated, corrupt", () => {
  rejects(
    () =>
      pngToPlanes(new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 16]), { channels: 1, file: "a.jpg" }),
    "a.jpg",
    /is a JPEG image, not a PNG: read it with decodeImage, which reads PNG and JPEG/,
  );
  rejects(
    () => pngToPlanes(new TextEncoder().encode("GIF89a....."), { channels: 1, file: "a.gif" }),
    "a.gif",
    /is a GIF image; only PNG is supported/,
  );
  rejects(
    () => pngToPlanes(new TextEncoder().encode("hello, world"), { channels: 1, file: "t.png" }),
    "t.png",
    /is not a PNG image \(it does not start with the PNG signature\)/,
  );
  rejects(
    () => pngToPlanes(new Uint8Array(0), { channels: 1, file: "e.png" }),
    "e.png",
    /is empty/,
  );
  rejects(
    () => pngToPlanes(PNG_SIGNATURE, { channels: 1, file: "cut.png" }),
    "cut.png",
    /is 8 bytes, a truncated PNG \(no IHDR header\)/,
  );
  const corrupt = concat([
    PNG_SIGNATURE,
    ihdr(4, 4, 8, 0),
    chunk("IDAT", new Uint8Array([1, 2, 3])),
  ]);
  rejects(
    () => pngToPlanes(corrupt, { channels: 1, file: "bad.png" }),
    "bad.png",
    /is not a readable PNG \(.*\); export it again/,
  );
});

/** A JPEG of an RGBA image, written by jpeg-js. */
function jpeg(width: number, height: number, rgba: Uint8Array, quality = 100): Uint8Array {
  return new Uint8Array(encodeJpeg({ width, height, data: rgba }, quality).data);
}

/** A smooth w x h test picture as RGBA (gradients, so JPEG keeps it within a few levels). */
function picture(w: number, h: number, gray: boolean): Uint8Array {
  const out = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = 4 * (y * w + x);
      const r = Math.round(40 + (160 * x) / (w - 1));
      const g = Math.round(30 + (180 * y) / (h - 1));
      const b = Math.round(200 - (100 * (x + y)) / (w + h - 2));
      out.set(gray ? [r, r, r, 255] : [r, g, b, 255], i);
    }
  }
  return out;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** RGBA to planes: 3 channels, or gray by luma as the decoders do. */
function planes(rgba: Uint8Array, n: number, channels: 1 | 3): number[] {
  const out = new Array<number>(channels * n);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = rgba.subarray(4 * i, 4 * i + 3);
    if (channels === 1) out[i] = Math.round(0.299 * r + 0.587 * g + 0.114 * b);
    else [out[i], out[n + i], out[2 * n + i]] = [r, g, b];
  }
  return out;
}

Deno.test("JPEGs written by jpeg-js (quality 100) decode close to their source, RGB and gray", () => {
  const [w, h] = [24, 17]; // not multiples of the 8x8 blocks
  for (const gray of [false, true]) {
    const src = picture(w, h, gray);
    const jpg = jpeg(w, h, src);
    assert.deepEqual(imageSize(jpg, "p.jpg"), {
      format: "jpeg",
      width: w,
      height: h,
      channels: 3,
    });
    for (const channels of [1, 3] as const) {
      const img = decodeImage(jpg, { channels, file: "p.jpg" });
      assert.deepEqual([img.width, img.height, img.data.length], [w, h, channels * w * h]);
      const d = maxDiff(img.data, planes(src, w * h, channels));
      assert.ok(d <= 4, `gray ${gray}, ${channels} channels: off by ${d} levels`);
      const inv = decodeImage(jpg, { channels, invert: true });
      assert.deepEqual([...inv.data], [...img.data].map((v) => 255 - v));
    }
  }
  // PNG through decodeImage is pngToPlanes.
  const png = encode({ width: 2, height: 1, data: new Uint8Array([0, 255]), channels: 1 });
  assert.deepEqual([...decodeImage(png, { channels: 3 }).data], [0, 255, 0, 255, 0, 255]);
  assert.deepEqual(imageSize(png), { format: "png", width: 2, height: 1, channels: 1 });
  // A flat colour stays that colour.
  const red = jpeg(8, 8, new Uint8Array(8 * 8 * 4).map((_, i) => [200, 10, 60, 255][i % 4]));
  const r = decodeImage(red, { channels: 3 });
  assert.ok(
    maxDiff(r.data, [...Array(64).fill(200), ...Array(64).fill(10), ...Array(64).fill(60)]) <= 3,
  );
});

Deno.test("corrupt, truncated and unsupported JPEGs are one line naming the file", () => {
  const jpg = jpeg(16, 16, picture(16, 16, false));
  // Cut anywhere: in the header, or in the image data (then jpeg-js finds no end marker).
  for (const cut of [3, 10, 30, 100, 200, jpg.length - 40, jpg.length - 2]) {
    rejects(
      () => decodeImage(jpg.subarray(0, cut), { channels: 3, file: "cut.jpg" }),
      "cut.jpg",
      /truncated JPEG|not a readable JPEG|corrupt JPEG/,
    );
  }
  rejects(
    () => decodeImage(jpg.subarray(0, 30), { channels: 3, file: "cut.jpg" }),
    "cut.jpg",
    /^cut\.jpg: is 30 bytes, a truncated JPEG \(it ends before its frame header\); export it again$/,
  );
  // Garbage where the entropy-coded data is.
  const sos = jpg.findIndex((v, i) => v === 0xff && jpg[i + 1] === 0xda);
  const garbled = jpg.slice();
  for (let i = sos + 20; i < jpg.length - 2; i++) garbled[i] = 0xff;
  rejects(() => decodeImage(garbled, { channels: 1, file: "bad.jpg" }), "bad.jpg", /JPEG/);
  rejects(
    () => decodeImage(new Uint8Array([0xff, 0xd8, 0xff, 0xd9]), { channels: 1, file: "e.jpg" }),
    "e.jpg",
    /is a corrupt JPEG \(no frame header before its image data\)/,
  );
  // The frame header, changed in place: its marker, precision, components, size.
  const sof = jpg.findIndex((v, i) => v === 0xff && jpg[i + 1] === 0xc0);
  const edit = (at: number, values: number[]) => {
    const b = jpg.slice();
    b.set(values, sof + at);
    return b;
  };
  rejects(
    () => decodeImage(edit(1, [0xc9]), { channels: 3, file: "a.jpg" }),
    "a.jpg",
    /is an arithmetic-coded JPEG, which is not supported/,
  );
  rejects(
    () => decodeImage(edit(1, [0xc3]), { channels: 3, file: "l.jpg" }),
    "l.jpg",
    /is a lossless JPEG/,
  );
  rejects(
    () => decodeImage(edit(4, [12]), { channels: 3, file: "d.jpg" }),
    "d.jpg",
    /is a 12-bit JPEG; only 8-bit JPEGs are supported/,
  );
  rejects(
    () => decodeImage(edit(9, [4]), { channels: 3, file: "cmyk.jpg" }),
    "cmyk.jpg",
    /is a CMYK JPEG \(4 components\); only gray and RGB JPEGs are supported: convert it to RGB/,
  );
  rejects(
    () => decodeImage(edit(7, [0, 0]), { channels: 3, file: "z.jpg" }),
    "z.jpg",
    /is 0x16 pixels: an empty image \(zero width\)/,
  );
  // Other formats are named.
  rejects(
    () => decodeImage(new TextEncoder().encode("GIF89a....."), { channels: 1, file: "a.gif" }),
    "a.gif",
    /is a GIF image; only PNG and JPEG are supported: convert it to PNG first/,
  );
  rejects(
    () => decodeImage(new TextEncoder().encode("hello"), { channels: 1, file: "t.txt" }),
    "t.txt",
    /is not a PNG or JPEG image/,
  );
  rejects(() => decodeImage(new Uint8Array(0), { channels: 1, file: "e" }), "e", /is empty/);
  assert.throws(() => decodeImage(jpg, { channels: 2 }), RangeError);
  assert.throws(() => decodeImage(jpg, { channels: 1, maxPixels: 0 }), RangeError);
});

Deno.test("a JPEG too large by its header is refused before decoding", () => {
  const jpg = jpeg(16, 16, picture(16, 16, true));
  const sof = jpg.findIndex((v, i) => v === 0xff && jpg[i + 1] === 0xc0);
  const huge = jpg.slice();
  huge.set([0xfe, 0x00, 0xfe, 0x00], sof + 5); // 65024 x 65024
  const t0 = performance.now();
  rejects(
    () => decodeImage(huge, { channels: 3, file: "big.jpg" }),
    "big.jpg",
    /^big\.jpg: 65024x65024 pixels is too large to decode \(at most 16777216 pixels, e\.g\. 4096x4096\); resize it first$/,
  );
  assert.ok(performance.now() - t0 < 100);
  rejects(
    () => decodeImage(jpg, { channels: 1, file: "s.jpg", maxPixels: 100 }),
    "s.jpg",
    /16x16 pixels is too large to decode \(at most 100 pixels, e\.g\. 10x10\)/,
  );
  // A header that claims fewer pixels than the data holds cannot make jpeg-js allocate more:
  // it is bounded by the header's size (it decodes that many pixels, or fails).
  const small = jpg.slice();
  small.set([0x00, 0x08, 0x00, 0x08], sof + 5);
  try {
    const img = decodeImage(small, { channels: 1, file: "s.jpg" });
    assert.deepEqual([img.width, img.height], [8, 8]);
  } catch (e) {
    assert.ok(e instanceof ImageDecodeError, String(e));
  }
});
