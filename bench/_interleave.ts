// Interleaved timing of two sides of a comparison (bench/tfjs_compare.ts: ours and TF.js's): a
// sample records R calls and waits for the GPU once, R picked per side so that a sample takes
// >= ~0.25 s; samples of the two sides alternate (the side that goes first alternates too) for N
// rounds (at most 3 when a sample takes over 2 s), and each side's median is reported.
// `alternate` is the bare round-robin, for sides that time themselves (bench:train --vs-torch).

/** The median of `xs`. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** One side of a comparison: `run` records one op; `sync` waits for everything recorded. */
export interface Side {
  run(): void;
  sync(): Promise<void>;
}

const SAMPLE_S = 0.25;

/** A sample slower than this (s) runs fewer rounds (at most SLOW_ROUNDS) to bound the run time. */
const SLOW_S = 2;
const SLOW_ROUNDS = 3;
const FIRST_S = 5;

/**
 * Calls per sample so that a sample takes >= SAMPLE_S, and the seconds per call estimated.
 * `first` is the duration of the untimed checking call (compile and readback included), used
 * instead of a timed call when it is longer than FIRST_S (compiling takes less).
 */
async function pickReps(side: Side, first: number): Promise<{ reps: number; per: number }> {
  let per = first;
  let t0 = performance.now();
  if (per < FIRST_S) {
    side.run();
    await side.sync();
    per = (performance.now() - t0) / 1000;
  }
  if (per < SAMPLE_S / 2) {
    // A sync alone costs ~10 ms here: re-estimate over ~50 ms of calls.
    const k = Math.max(2, Math.ceil(0.05 / per));
    t0 = performance.now();
    for (let i = 0; i < k; i++) side.run();
    await side.sync();
    per = (performance.now() - t0) / 1000 / k;
  }
  return { reps: Math.max(1, Math.min(5000, Math.ceil(SAMPLE_S / per))), per };
}

async function sample(side: Side, reps: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) side.run();
  await side.sync();
  return (performance.now() - t0) / 1000 / reps;
}

/** The two sides' first (checking) calls and their durations in seconds. */
export interface Checked {
  ours: Side;
  theirs: Side | null;
  firstOurs: number;
  firstTf: number;
}

/**
 * Times both sides interleaved; returns seconds per call (median over the rounds; NaN for TF.js
 * when it raised a GPU error: it computed nothing then).
 */
export async function compare(
  c: Checked,
  roundsWanted: number,
): Promise<{ ours: number; tfjs: number; reps: string }> {
  const o = await pickReps(c.ours, c.firstOurs);
  const t = c.theirs ? await pickReps(c.theirs, c.firstTf) : { reps: 0, per: 0 };
  const slow = Math.max(o.reps * o.per, t.reps * t.per) > SLOW_S;
  const rounds = slow ? Math.min(roundsWanted, SLOW_ROUNDS) : roundsWanted;
  const a: number[] = [], b: number[] = [];
  for (let round = 0; round < rounds; round++) {
    if (round % 2 === 0 || !c.theirs) {
      a.push(await sample(c.ours, o.reps));
      if (c.theirs) b.push(await sample(c.theirs, t.reps));
    } else {
      b.push(await sample(c.theirs, t.reps));
      a.push(await sample(c.ours, o.reps));
    }
  }
  return {
    ours: median(a),
    tfjs: c.theirs ? median(b) : NaN,
    reps: `${o.reps}/${c.theirs ? t.reps : "-"}${
      rounds < roundsWanted ? ` (${rounds} rounds)` : ""
    }`,
  };
}

/** Runs `f` and returns its result and duration in seconds. */
export async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const r = await f();
  return [r, (performance.now() - t0) / 1000];
}

/**
 * Runs `rounds` rounds of the two timed sides, one sample each per round, the side that goes
 * first alternating (ours first in even rounds); returns each side's samples in order. Without
 * `theirs`, only ours runs.
 */
export async function alternate(
  rounds: number,
  ours: () => Promise<number>,
  theirs: (() => Promise<number>) | null,
): Promise<{ ours: number[]; theirs: number[] }> {
  const a: number[] = [], b: number[] = [];
  for (let round = 0; round < rounds; round++) {
    if (round % 2 === 0 || !theirs) {
      a.push(await ours());
      if (theirs) b.push(await theirs());
    } else {
      b.push(await theirs());
      a.push(await ours());
    }
  }
  return { ours: a, theirs: b };
}
