// Float64 CPU reference of batch normalization's partial statistics: a tile's (count, mean, M2)
// from its values (two-pass), and the merge of a channel's tiles with Chan's parallel formula
// (pairwise, in tile order), from the definitions.

/** One tile's statistics: count, mean, and M2 (the sum of squared deviations from the mean). */
export interface TileStats {
  readonly count: number;
  readonly mean: number;
  readonly m2: number;
}

/** The statistics of `values` (two-pass, Float64). */
export function tileStatsRef(values: ArrayLike<number>): TileStats {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  const mean = values.length > 0 ? s / values.length : 0;
  let m2 = 0;
  for (let i = 0; i < values.length; i++) m2 += (values[i] - mean) ** 2;
  return { count: values.length, mean, m2 };
}

/** Merges tiles in order (Chan, Golub and LeVeque's pairwise update), Float64. */
export function mergeTilesRef(tiles: readonly TileStats[]): TileStats {
  let acc: TileStats = { count: 0, mean: 0, m2: 0 };
  for (const t of tiles) {
    if (t.count === 0) continue;
    const count = acc.count + t.count;
    const delta = t.mean - acc.mean;
    acc = {
      count,
      mean: acc.mean + delta * (t.count / count),
      m2: acc.m2 + t.m2 + delta * delta * (acc.count * t.count / count),
    };
  }
  return acc;
}

/**
 * The per-channel statistics of `partials` (`[c, tiles, 4]`: count, mean, mean correction, M2,
 * as the producers write them; the tile's mean is the sum of the two), merged in Float64.
 */
export function mergePartialsRef(
  partials: ArrayLike<number>,
  c: number,
  tiles: number,
): TileStats[] {
  return Array.from(
    { length: c },
    (_, ch) =>
      mergeTilesRef(Array.from({ length: tiles }, (_, t) => {
        const o = (ch * tiles + t) * 4;
        return { count: partials[o], mean: partials[o + 1] + partials[o + 2], m2: partials[o + 3] };
      })),
  );
}
