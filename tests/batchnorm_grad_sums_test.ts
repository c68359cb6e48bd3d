// Tests of the batch-norm gradient sums gathered by the producer after it
// (kernels/batchnorm/grad_sums.ts, kernels/gemm/grad_sums.ts): the suites of
// tests/ops/batchnorm_grad_sums.ts (GPU vs the Float64 CPU reference, fused and unfused), and the
// pure decision whether a path fuses.
import assert from "node:assert/strict";
import { WEBGPU_DEFAULT_PROFILE } from "../kernels/_adapter.ts";
import {
  forceGradSums,
  gradSumsMode,
  MAX_GRAD_SUMS_SLOTS,
  planGradSums,
} from "../kernels/batchnorm/grad_sums.ts";
import { testOp } from "./_op.ts";
import { GRAD_SUMS_SUITES } from "./ops/batchnorm_grad_sums.ts";

for (const suite of GRAD_SUMS_SUITES) testOp(suite);

Deno.test("gradient sums: the decision per adapter, path and mode", () => {
  const gpu = WEBGPU_DEFAULT_PROFILE;
  const cpu = { ...gpu, isCpu: true, mesaCpu: true, description: "llvmpipe" };
  const q = { path: "gemm-register", slots: 16 } as const;
  assert.equal(planGradSums(gpu, q, "auto"), true);
  assert.equal(planGradSums(cpu, q, "auto"), true); // measured no slower on llvmpipe
  assert.equal(planGradSums(gpu, q, "off"), false);
  assert.equal(planGradSums(cpu, q, "on"), true);
  assert.equal(planGradSums(gpu, { path: undefined, slots: 16 }, "on"), false);
  assert.equal(planGradSums(gpu, { ...q, slots: MAX_GRAD_SUMS_SLOTS + 1 }, "on"), false);
  assert.equal(planGradSums(gpu, { ...q, slots: 0 }, "on"), false);
  const before = forceGradSums("off");
  assert.equal(gradSumsMode(), "off");
  forceGradSums(before);
});
