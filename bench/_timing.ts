// Shared by the memory-bound kernel benches (depthwise, pool, norm): many dispatches recorded per
// GPU wait, best of a few repetitions, reported as ms per call and GB/s of compulsory traffic.
import type { Gpu } from "../gpu/mod.ts";

/** Dispatches recorded per sync: enough that the ~11 ms GPU wait is amortized. */
export function dispatchesFor(bytes: number): number {
  return Math.min(64, Math.max(4, Math.round(2e8 / bytes)));
}

/** Deterministic values in [-1, 1). */
export function fill(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = ((i * 7919) % 1000) / 500 - 1;
  return a;
}

/** `record` repeated `dispatches` times, then one GPU wait. */
export function repeated(gpu: Gpu, record: () => void, dispatches: number): () => Promise<void> {
  return async () => {
    for (let i = 0; i < dispatches; i++) record();
    await gpu.sync();
  };
}

/** Best seconds per dispatch of `run` over `rounds` timed runs, after one untimed (compile) run. */
export async function bestSeconds(
  run: () => Promise<void>,
  dispatches: number,
  rounds = 3,
): Promise<number> {
  await run();
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    await run();
    best = Math.min(best, (performance.now() - t0) / 1000 / dispatches);
  }
  return best;
}

/**
 * Times `record` (moving `bytes` of compulsory traffic per call), prints
 * `name: X ms, Y GB/s (adapter)` and registers a `Deno.bench` under that label.
 */
export async function benchBytes(
  gpu: Gpu,
  name: string,
  bytes: number,
  record: () => void,
): Promise<void> {
  const dispatches = dispatchesFor(bytes);
  const run = repeated(gpu, record, dispatches);
  const sec = await bestSeconds(run, dispatches);
  const label = `${name}: ${(sec * 1e3).toFixed(2)} ms, ${(bytes / sec / 1e9).toFixed(2)} GB/s`;
  console.log(`${label} (${gpu.description})`);
  Deno.bench(`${label} (x${dispatches} per sync)`, { n: 2, warmup: 0 }, run);
}
