// Deterministic values that tests/fixtures/make_models.py reproduces exactly (a counter hash):
// weights, inputs and labels of the PyTorch parity fixtures, so no weights are stored.
import type { HostStateDict, Model } from "../models/mod.ts";

function keySeed(key: string): number {
  let s = 0;
  for (const ch of new TextEncoder().encode(key)) s = (Math.imul(s, 31) + ch) >>> 0;
  return s;
}

function hash32(x: number): number {
  x >>>= 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

export function detValues(key: string, n: number, lo: number, hi: number): Float32Array {
  const seed = Math.imul(keySeed(key), 0x9e3779b9) >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * (hash32((i + seed) >>> 0) / 4294967296);
  return out;
}

export function detState(model: Model): HostStateDict {
  const sd: HostStateDict = new Map();
  const names = new Set(model.state.map((e) => e.name));
  for (const e of model.state) {
    if (e.kind === "counter") {
      sd.set(e.name, { dtype: "I64", shape: [], data: new BigInt64Array([0n]) });
      continue;
    }
    const shape = e.kind === "param" ? e.param.shape : e.buffer.shape;
    const n = shape.reduce((a, b) => a * b, 1);
    const leaf = e.name.split(".").at(-1)!;
    const prefix = e.name.slice(0, e.name.length - leaf.length - 1);
    const isBn = names.has(`${prefix}.running_mean`);
    let v: Float32Array;
    if (leaf === "running_mean") v = detValues(e.name, n, -0.1, 0.1);
    else if (leaf === "running_var") v = detValues(e.name, n, 0.5, 1.5);
    else if (isBn && leaf === "weight") v = detValues(e.name, n, 0.8, 1.2);
    else if (isBn && leaf === "bias") v = detValues(e.name, n, -0.1, 0.1);
    else if (leaf === "bias") {
      const w = model.params.find(([k]) => k === `${prefix}.weight`)![1];
      const b = 1 / Math.sqrt(w.fanIn);
      v = detValues(e.name, n, -b, b);
    } else {
      const p = (e as { param: { shape: readonly number[] } }).param;
      const receptive = p.shape.slice(2).reduce((a, b) => a * b, 1);
      const fi = p.shape[1] * receptive, fo = p.shape[0] * receptive;
      const b = Math.sqrt(6 / (fi + fo));
      v = detValues(e.name, n, -b, b);
    }
    sd.set(e.name, { dtype: "F32", shape: [...shape], data: v });
  }
  return sd;
}
