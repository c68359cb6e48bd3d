/**
 * Packing of a kernel's `Params` uniform: 4-byte scalars in WGSL struct order.
 *
 * @module
 */

/**
 * Builds the bytes of a WGSL `Params` struct whose fields are all 4-byte scalars (`u32`, `i32`,
 * `f32`), written in declaration order. Keep the WGSL struct and the calls in the same order.
 *
 * @example
 * ```ts
 * import { ParamsWriter } from "./_params.ts";
 * // struct Params { n: u32, c: u32, eps: f32 }
 * const bytes = new ParamsWriter().u32(8).u32(3).f32(1e-5).bytes();
 * ```
 */
export class ParamsWriter {
  #view = new DataView(new ArrayBuffer(256));
  #n = 0;

  /** Appends a `u32` field (throws `RangeError` outside 0..2^32-1). */
  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new RangeError(`Params: u32 field ${this.#n} got ${v}`);
    }
    this.#grow().setUint32(this.#n * 4, v, true);
    this.#n++;
    return this;
  }

  /** Appends an `i32` field. */
  i32(v: number): this {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
      throw new RangeError(`Params: i32 field ${this.#n} got ${v}`);
    }
    this.#grow().setInt32(this.#n * 4, v, true);
    this.#n++;
    return this;
  }

  /** Appends an `f32` field. */
  f32(v: number): this {
    this.#grow().setFloat32(this.#n * 4, v, true);
    this.#n++;
    return this;
  }

  /**
   * Starts over, reusing the storage: the bytes an earlier {@linkcode ParamsWriter.bytes}
   * returned are overwritten by the next writes (a writer reused per dispatch saves allocating
   * one; the runtime copies a dispatch's params at once).
   */
  reset(): this {
    this.#n = 0;
    return this;
  }

  /** The packed bytes (the runtime pads them to the uniform's 16-byte size). */
  bytes(): Uint8Array {
    return new Uint8Array(this.#view.buffer, 0, this.#n * 4);
  }

  #grow(): DataView {
    if ((this.#n + 1) * 4 > this.#view.byteLength) {
      const bigger = new Uint8Array(this.#view.byteLength * 2);
      bigger.set(new Uint8Array(this.#view.buffer));
      this.#view = new DataView(bigger.buffer);
    }
    return this.#view;
  }
}
