// What a checkpoint keeps of the optimizer besides the parameters: SGD's momentum buffers and
// Adam's moments (views of the model's arenas, read back and written in one operation each), and
// the learning-rate schedule of a recipe over optimizer steps.
import type { HostStateDict, LrSchedule, Model, Schedule } from "../models/mod.ts";
import type { RunRecipe } from "./checkpoint.ts";

/** The tensor-name suffixes of Adam's moments in an optimizer file. */
export const MOMENTS = [".exp_avg", ".exp_avg_sq"] as const;

/**
 * The schedule of a recipe over optimizer steps: its epochs become steps (`stepsPerEpoch` each);
 * cosine and one-cycle span the run after the warm-up.
 */
export function lrSchedule(recipe: RunRecipe, stepsPerEpoch: number): LrSchedule {
  const warmup = recipe.warmup;
  const span = Math.max(1, recipe.epochs * stepsPerEpoch - warmup);
  const [kind, arg] = recipe.schedule.split(":");
  const epochs = arg ? arg.split(",").map((e) => Number(e) * stepsPerEpoch) : [];
  const schedule: Schedule = kind === "step"
    ? { kind, stepSize: epochs[0] }
    : kind === "multistep"
    ? { kind, milestones: epochs }
    : kind === "cosine"
    ? { kind, tMax: span }
    : kind === "onecycle"
    ? { kind, totalSteps: span }
    : { kind: "constant" };
  return { schedule, warmup };
}

/** Adam's moments of the model, read back for a checkpoint (one readback per arena). */
export async function momentsState(model: Model): Promise<HostStateDict> {
  const out: HostStateDict = new Map();
  const moments = model.arena.ensureAdamMoments();
  const [avg, sq] = [await moments.expAvg.toArray(), await moments.expAvgSq.toArray()];
  const names = new Map(model.params.map(([name, p]) => [p, name]));
  for (const slot of model.arena.slots) {
    const name = names.get(slot.param)!;
    for (const [suffix, all] of [[MOMENTS[0], avg], [MOMENTS[1], sq]] as const) {
      const data = all.slice(slot.offset, slot.offset + slot.size) as Float32Array;
      out.set(name + suffix, { dtype: "F32", shape: [...slot.param.shape], data });
    }
  }
  return out;
}

/** Writes Adam's moments read from a checkpoint into the model's arenas (one upload each). */
export function writeMoments(model: Model, saved: Map<string, Float32Array>): void {
  const arena = model.arena;
  const moments = arena.ensureAdamMoments();
  const names = new Map(model.params.map(([name, p]) => [p, name]));
  const [avg, sq] = [new Float32Array(arena.size), new Float32Array(arena.size)];
  for (const slot of arena.slots) {
    const name = names.get(slot.param)!;
    avg.set(saved.get(name + MOMENTS[0])!, slot.offset);
    sq.set(saved.get(name + MOMENTS[1])!, slot.offset);
  }
  model.gpu.write(moments.expAvg, avg);
  model.gpu.write(moments.expAvgSq, sq);
}

/** The model's SGD momentum buffers, read back for a checkpoint. */
export async function momentumState(model: Model): Promise<HostStateDict> {
  const out: HostStateDict = new Map();
  for (const [name, p] of model.params) {
    if (!p.momentum) continue;
    const data = await p.momentum.toArray() as Float32Array;
    out.set(name, { dtype: "F32", shape: [...p.shape], data });
  }
  return out;
}
