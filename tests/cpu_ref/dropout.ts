// Float64 CPU reference of dropout with the counter-based RNG of `kernels/dropout.ts`, written
// independently with BigInt arithmetic: keep element i iff pcg(pcg(i) ^ pcg(seed)) >=
// floor(p * 2^32), where pcg is the PCG output permutation on u32.

const M32 = 0xffffffffn;

/** One round of the PCG output permutation (RXS-M-XS) of a u32, in BigInt. */
export function pcgRef(v: number): number {
  const s = (BigInt(v >>> 0) * 747796405n + 2891336453n) & M32;
  const w = (((s >> ((s >> 28n) + 4n)) ^ s) * 277803737n) & M32;
  return Number((w >> 22n) ^ w);
}

/** Whether element `i` is kept under `seed` at drop probability `p`. */
export function dropoutKeepRef(seed: number, i: number, p: number): boolean {
  const h = pcgRef((pcgRef(i) ^ pcgRef(seed)) >>> 0);
  return h >= Math.floor(p * 2 ** 32);
}

/** Forward: y = x * keep * f32(1 / (1 - p)) rounded to f32, and the packed keep mask. */
export function dropoutForwardRef(
  x: ArrayLike<number>,
  p: number,
  seed: number,
): { y: Float64Array; mask: Uint32Array; keep: Uint8Array } {
  const n = x.length;
  const scale = Math.fround(1 / (1 - p));
  const y = new Float64Array(n);
  const mask = new Uint32Array(Math.ceil(n / 32));
  const keep = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    if (dropoutKeepRef(seed, i, p)) {
      keep[i] = 1;
      mask[i >> 5] |= 1 << (i & 31);
      y[i] = Math.fround(x[i] * scale);
    }
  }
  return { y, mask, keep };
}

/** Backward: dx = dy * keep / (1 - p) from the packed mask (f32 rounding as the GPU). */
export function dropoutBackwardRef(
  dy: ArrayLike<number>,
  mask: Uint32Array,
  p: number,
): Float64Array {
  const scale = Math.fround(1 / (1 - p));
  const dx = new Float64Array(dy.length);
  for (let i = 0; i < dy.length; i++) {
    if ((mask[i >> 5] >>> (i & 31)) & 1) dx[i] = Math.fround(dy[i] * scale);
  }
  return dx;
}
