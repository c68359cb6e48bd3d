/**
 * Tuning one pass of a convolution ({@linkcode tuneConv}): the plans `conv2dChoices` lists for
 * it (im2col + GEMM, the direct kernel where it can run, and the direct kernel's plain blocking
 * where it differs from the grouped one), each run by the conv2d runner on fresh f32 tensors of
 * the recorded geometry, against the cost model's plan.
 *
 * @module
 */

import type { Gpu, Tensor } from "../../gpu/mod.ts";
import { adapterProfile } from "../_adapter.ts";
import { type Conv2dIO, runConv2dPlan } from "../conv2d/index.ts";
import { conv2dChoices, type Conv2dProblem, type ConvPlan, planConv2d } from "../conv2d/plan.ts";
import type { Conv2dGeometry } from "../_geometry.ts";
import { formatChoice, type TuningProblem } from "./problems.ts";
import type { ConvPass, Recorded } from "./table.ts";
import {
  filled,
  finishSearch,
  type Internal,
  skipped,
  startSearch,
  type Timing,
  tryCandidates,
  type Workload,
} from "./timing.ts";

/** The f32 problem of one pass: the forward pass, the input gradient, or dw and db. */
function passProblem(r: Extract<Recorded, { op: "conv2d" }>): Conv2dProblem {
  const f = "f32" as const;
  if (r.pass === "forward") {
    return { geometry: r.g, call: "forward", dtypes: { x: f, w: f, b: f, y: f } };
  }
  const grads = r.pass === "inputGrad" ? { dx: f } : { dw: f, db: f };
  return {
    geometry: r.g,
    call: "backward",
    dtypes: { x: f, w: f, dy: f, ...grads },
    accumulate: r.pass === "weightGrad",
  };
}

/** Fresh tensors for one pass of a recorded convolution, run by the plan it is given. */
function convWorkload(
  gpu: Gpu,
  pass: ConvPass,
  c: Conv2dGeometry,
  base: ConvPlan,
): Workload<ConvPlan> {
  const xs = [c.n, c.cIn, c.h, c.w], ys = [c.n, c.cOut, c.oh, c.ow];
  const ws = [c.cOut, c.cIn / c.groups, c.kh, c.kw];
  const owned: Tensor[] = [];
  const keep = (t: Tensor) => (owned.push(t), t);
  const x = keep(filled(gpu, xs, 1)), w = keep(filled(gpu, ws, 2));
  let io: Conv2dIO;
  let reset = () => {};
  if (pass === "forward") {
    io = { x, w, b: keep(filled(gpu, [c.cOut], 3)), y: keep(gpu.empty(ys)) };
  } else {
    const dy = keep(filled(gpu, ys, 3));
    if (pass === "inputGrad") io = { x, w, dy, dx: keep(gpu.empty(xs)) };
    else {
      const dw = keep(gpu.zeros(ws)), db = keep(gpu.zeros([c.cOut]));
      io = { x, w, dy, dw, db };
      reset = () => {
        gpu.clear(dw);
        gpu.clear(db);
      };
    }
  }
  const outputs = pass === "forward" ? [io.y!] : pass === "inputGrad" ? [io.dx!] : [io.dw!, io.db!];
  return {
    base,
    run: (plan) => runConv2dPlan(plan, io),
    outputs,
    reset,
    dispose: () => owned.forEach((t) => t.dispose()),
  };
}

/**
 * Tunes one recorded conv2d pass: the cost model's plan against the other plans of
 * `conv2dChoices` (im2col, the direct kernel with the grouped or the plain blocking).
 */
export async function tuneConv(
  gpu: Gpu,
  p: TuningProblem,
  r: Extract<Recorded, { op: "conv2d" }>,
  t: Timing,
): Promise<Internal> {
  const profile = adapterProfile(gpu);
  const problem = passProblem(r);
  const base = planConv2d(problem, profile, undefined);
  const choices = conv2dChoices(problem, r.pass, profile);
  const at = (plan: ConvPlan) => JSON.stringify(plan[r.pass] ?? null);
  // Each candidate's name (its table entry as text), the cost model's among them.
  const names = new Map(choices.map((c) => [at(c.plan), formatChoice(c.choice)]));
  const name = (plan: ConvPlan) =>
    names.get(at(plan)) ?? (plan[r.pass]?.path === "direct" ? "direct" : "im2col");
  const costModel = name(base);
  const others = choices.filter((c) => name(c.plan) !== costModel);
  // Not on SwiftShader: the direct kernels run there but take tens of seconds each to compile
  // (see autoDirect in conv2d/cost.ts), which timing them would spend for no gain.
  if (others.length === 0 || profile.swiftShader) {
    return { ...skipped(p, "no direct kernel for this pass"), costModel, tuned: costModel };
  }
  const w = convWorkload(gpu, r.pass, r.g, base);
  try {
    const session = await startSearch(gpu, p, w, t, costModel);
    if (!("search" in session)) return session;
    const { b, search } = session;
    const plans = others.map((c) => c.plan);
    await tryCandidates(gpu, w, plans, name, search, b.reps, b.outputs, t);
    return await finishSearch(gpu, w, session, t, () => {
      const best = at(search.best.tuning);
      return choices.find((c) => at(c.plan) === best)!.choice;
    });
  } finally {
    w.dispose();
  }
}
