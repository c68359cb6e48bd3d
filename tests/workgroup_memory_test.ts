// Workgroup-memory kernels (issue #17, section 2): every kernel that stages data in `var<workgroup>`
// memory, forced on the test adapter with sizes on each side of every tile and workgroup edge
// (1, tile - 1, tile, tile + 1, odd sizes, batches), against the Float64 CPU references. A missing
// barrier or an unguarded edge load shows up as a wrong element here on adapters that schedule
// invocations differently (llvmpipe runs a workgroup's invocations as SIMD lanes in lockstep;
// SwiftShader and GPUs do not), so these cases are also the ones to run in a browser.
//
// The kernels, and the edges that matter for each:
// - the shared-memory GEMM tile (kernels/gemm/shared.ts): C tiles of SHARED_BM x SHARED_BN, k
//   staged SHARED_BK deep: m, n in {1, 63, 64, 65, 129}, k in {1, 15, 16, 17, 47}, every transpose
//   combination, batches, split-K (the k-split index in the grid's z), a bias, beta and an
//   activation in the store, f16 operands;
// - the direct convolution (kernels/conv2d/direct.ts) stages a block of weights: channel counts
//   past its blocks (cOut 9, 17, 33; cIn 1, 7, 17), odd widths, stride 2;
// - the reductions over a workgroup: batch norm's statistics and gradient partials (64 threads,
//   planes of 63, 64, 65 and 129 elements), the merge of a producer's partial statistics (64
//   threads striding over 257 to 385 tiles: tests/ops/batchnorm_stats.ts), depthwise's
//   weight-gradient partials, and softmax cross-entropy's loss and hit sums (256 threads: batches
//   of 255, 256, 257, 513).
// The cases are in tests/ops/workgroup_memory.ts (shared with `deno task test:browser`).
// A last test keeps the list whole: every kernels/ source that declares `var<workgroup>` is one
// of the files above.
import assert from "node:assert/strict";
import { join } from "node:path";
import { testOp } from "./_op.ts";
import { testCheck } from "./_check.ts";
import { WORKGROUP_SUITES } from "./ops/workgroup_memory.ts";
import { BN_MERGE_WORKGROUP_CHECK } from "./ops/batchnorm_stats.ts";

for (const suite of WORKGROUP_SUITES) testOp(suite);
testCheck(BN_MERGE_WORKGROUP_CHECK);

/** The kernels/ sources with a `var<workgroup>` whose kernels this file stresses. */
const COVERED = [
  "gemm/shared.ts",
  "conv2d/direct.ts",
  "batchnorm/passes.ts",
  "batchnorm/partials.ts",
  "depthwise/weight_grad.ts",
  "softmax_ce/kernels.ts",
];

Deno.test("workgroup memory: every kernel that declares var<workgroup> is stressed here", () => {
  const root = new URL("../kernels/", import.meta.url).pathname;
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(join(root, dir))) {
      const path = dir === "" ? e.name : `${dir}/${e.name}`;
      if (e.isDirectory) walk(path);
      else if (
        path.endsWith(".ts") &&
        Deno.readTextFileSync(join(root, path)).match(/^[^*/]*var<workgroup>/m)
      ) {
        found.push(path);
      }
    }
  };
  walk("");
  assert.deepEqual(found.sort(), [...COVERED].sort());
});
