// The Inf/NaN watch's kernel checks (kernels/finite.ts), shared by tests/finite_test.ts and
// `deno task test:browser`: finiteCheck lowers a watch word to the smallest mark of a check that
// saw a non-finite element, for f32 and f16 tensors of odd sizes, and never for finite ones (the
// largest finite values and subnormals included). No Deno API.
import { createFiniteWatch, finiteCheck, readFiniteWatch } from "../../kernels/finite.ts";
import assert from "../_assert.ts";
import type { KernelCheck } from "../_check.ts";
import { Rng } from "../harness.ts";

/** finiteCheck on f32 and f16 tensors of odd sizes, a bad element or none. */
export const FINITE_CHECKS: readonly KernelCheck[] = (["f32", "f16"] as const).map((dtype) => ({
  name: `finiteCheck (${dtype}): first bad mark per slot, odd sizes`,
  gpu: true,
  f16: dtype === "f16",
  run: async (gpu) => {
    const rng = new Rng(5);
    const big = dtype === "f32" ? 3.4028234663852886e38 : 65504;
    for (const n of [1, 3, 7, 1023, 4099]) {
      for (const bad of [null, Infinity, -Infinity, NaN] as const) {
        const data = Array.from({ length: n }, () => rng.uniform(-1, 1));
        data[0] = big;
        data[n - 1] = -big;
        if (n > 2) data[1] = dtype === "f32" ? 1e-45 : 6e-8; // subnormal
        const at = bad === null ? -1 : rng.int(n);
        if (at >= 0) data[at] = bad!;
        const arr = dtype === "f32" ? new Float32Array(data) : new Float16Array(data);
        const x = gpu.tensor(arr, { shape: [n] });
        const watch = createFiniteWatch(gpu, 2);
        finiteCheck({ watch, x }, { mark: 9, slot: 1 });
        finiteCheck({ watch, x }, { mark: 4, slot: 1 });
        finiteCheck({ watch, x }, { mark: 6, slot: 1 });
        const got = await readFiniteWatch(watch);
        assert.deepEqual(got, [null, at >= 0 ? 4 : null], `${dtype} n=${n} bad=${bad} at ${at}`);
        x.dispose();
        watch.dispose();
      }
    }
  },
}));
