// defineKernel (kernels/_kernel.ts): a kernel described once generates its WGSL header (enable
// f16, Params, bindings), its packing, its cache key, and checks what a call binds.
import assert from "node:assert/strict";
import { defineKernel } from "../kernels/_kernel.ts";
import { F16_TEST, GPU_TEST, testGpu } from "./harness.ts";

const axpy = defineKernel({
  name: "test_axpy",
  doc: "thread i computes y[i] = alpha * x[i] + y[i]",
  params: { n: "u32", alpha: "f32" },
  bindings: {
    y: { type: "float", access: "read_write" },
    x: { type: "float", access: "read" },
  },
  variants: ["plus", "minus"],
  workgroupSize: 64,
  body: ({ load, store, variant }) =>
    `@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= p.n) { return; }
  ${
      store(
        "y",
        "y[g.x]",
        `p.alpha * ${load("x", "x[g.x]")} ${variant === "minus" ? "-" : "+"} ${
          load("y", "y[g.x]")
        }`,
      )
    }
}`,
});

Deno.test("defineKernel generates the header, names and caches specializations", () => {
  const f32 = axpy.spec({ y: "f32", x: "f32" }, "plus");
  assert.equal(f32.name, "test_axpy_plus");
  assert.equal(
    f32.code.split("\n").slice(0, 5).join("\n"),
    `// test_axpy_plus: thread i computes y[i] = alpha * x[i] + y[i]
const WG = 64u;
struct Params { n: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;`,
  );
  assert.match(f32.code, /y\[g\.x\] = p\.alpha \* x\[g\.x\] \+ y\[g\.x\];/);
  const half = axpy.spec({ y: "f16", x: "f32" }, "minus");
  assert.equal(half.name, "test_axpy_minus_h-y");
  assert.match(half.code, /^enable f16;\n/);
  assert.match(half.code, /var<storage, read_write> y: array<f16>;/);
  assert.match(half.code, /y\[g\.x\] = f16\(p\.alpha \* x\[g\.x\] - f32\(y\[g\.x\]\)\);/);
  assert.equal(axpy.spec({ y: "f16", x: "f32" }, "minus"), half, "built once");
  assert.throws(() => axpy.spec({ y: "f32", x: "f32" }, "times" as "plus"), RangeError);
});

for (const dtype of ["f32", "f16"] as const) {
  Deno.test(
    `defineKernel dispatches with packed params (${dtype})`,
    dtype === "f16" ? F16_TEST : GPU_TEST,
    async () => {
      const gpu = await testGpu();
      const arr = (v: number[]) => (dtype === "f32" ? new Float32Array(v) : new Float16Array(v));
      const y = gpu.tensor(arr([1, 2, 3, 4, 5]), { shape: [5] });
      const x = gpu.tensor(new Float32Array([1, 1, 1, 1, 1]), { shape: [5] });
      axpy.dispatch({
        params: { n: 4, alpha: 0.5 },
        bindings: { y, x },
        variant: "minus",
        workgroups: 1,
      });
      assert.deepEqual([...await y.toArray()], [-0.5, -1.5, -2.5, -3.5, 5]);
    },
  );
}

Deno.test("defineKernel checks what a call binds", GPU_TEST, async () => {
  const gpu = await testGpu();
  const y = gpu.zeros([4]);
  const i = gpu.zeros([4], { dtype: "u32" });
  assert.throws(
    () =>
      axpy.dispatch({
        op: "axpy",
        params: { n: 4, alpha: 1 },
        bindings: { y, x: i },
        workgroups: 1,
      }),
    /axpy: x .* must be f32 or f16/,
  );
  assert.throws(
    // @ts-expect-error: a missing param
    () => axpy.dispatch({ params: { n: 4 }, bindings: { y, x: y }, workgroups: 1 }),
    /param 'alpha' is missing/,
  );
  assert.throws(
    () => axpy.dispatch({ params: { n: -1, alpha: 1 }, bindings: { y, x: y }, workgroups: 1 }),
    RangeError,
  );
});
