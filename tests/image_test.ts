// Tests of image decoding for prediction (data/image.ts): PNGs of every bit depth and colour type
// into planes, and the files that are rejected before or while decoding (other formats, empty,
// too large, truncated, corrupt, a palette index past the palette), each with an
// ImageDecodeError naming the file in one line. No GPU needed.
import assert from "node:assert/strict";
import { encode } from "fast-png";
import { ImageDecodeError, pngSize, pngToPlanes } from "../data/mod.ts";
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
      `^IMG\\.png: 20000x20000 pixels is too large to predict \\(at most ${MAX_IMAGE_PIXELS} ` +
        "pixels, e\\.g\\. 4096x4096\\); resize it first$",
    ),
  );
  assert.ok(performance.now() - t0 < 100);
  rejects(
    () => pngToPlanes(header(30, 30), { channels: 1, file: "s.png", maxPixels: 800 }),
    "s.png",
    /30x30 pixels is too large to predict \(at most 800 pixels\)/,
  );
  assert.throws(() => pngToPlanes(header(1, 1), { channels: 2 }), RangeError);
});

Deno.test("files that are not PNGs are named: JPEG, GIF, other bytes, truncated, corrupt", () => {
  rejects(
    () =>
      pngToPlanes(new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 16]), { channels: 1, file: "a.jpg" }),
    "a.jpg",
    /is a JPEG image; JPEG is not supported yet, only PNG: convert it to PNG first/,
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
