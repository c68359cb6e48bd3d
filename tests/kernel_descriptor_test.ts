// defineKernel (kernels/_kernel.ts): a kernel described once generates its WGSL header (enable
// f16, Params, bindings), its packing, its cache key, and checks what a call binds.
import assert from "node:assert/strict";
import { defineKernel, perSizes, variantProduct } from "../kernels/_kernel.ts";
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

// Variants along two axes (variantProduct); a binding that only the "bias" variants have
// and bindings that hold vec4s only in the "v4" variants (`vec4` as a test of the variant).
const part = (name: string) => (variant: string) => variant.split("_").includes(name);
const copy = defineKernel({
  name: "test_copy",
  doc: "thread i computes y[i] = x[i] (+ b[i] with bias), over vec4s with v4",
  params: { n: "u32" },
  bindings: {
    y: { type: "float", access: "read_write", vec4: part("v4") },
    x: { type: "float", access: "read", vec4: part("v4") },
    b: { type: "float", access: "read", vec4: part("v4"), variants: ["s_bias", "v4_bias"] },
  },
  variants: variantProduct(["s", "v4"], ["", "bias"]),
  workgroupSize: 64,
  body: ({ load, store, variant }) => {
    const x = load("x", "x[g.x]");
    return `@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= p.n) { return; }
  ${store("y", "y[g.x]", part("bias")(variant) ? `${x} + ${load("b", "b[g.x]")}` : x)}
}`;
  },
});

Deno.test("variantProduct lists the combinations of its axes", () => {
  assert.deepEqual(copy.descriptor.variants, ["s", "s_bias", "v4", "v4_bias"]);
  const typed: ("m" | "m_x" | "wd_m" | "wd_m_x")[] = variantProduct(["", "wd"], ["m"], ["", "x"]);
  assert.deepEqual(typed, ["m", "m_x", "wd_m", "wd_m_x"]);
});

Deno.test("defineKernel: bindings and vec4s per variant", () => {
  const plain = copy.spec({ y: "f32", x: "f16", b: "f16" }, "v4");
  assert.equal(plain.name, "test_copy_v4_h-x", "a binding the variant lacks is not in the key");
  assert.equal(
    plain.code.split("\n").slice(0, 7).join("\n"),
    `enable f16;
// test_copy_v4_h-x: thread i computes y[i] = x[i] (+ b[i] with bias), over vec4s with v4
const WG = 64u;
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f16>>;`,
  );
  assert.doesNotMatch(plain.code, /b\[g\.x\]|binding\(3\)/);
  const bias = copy.spec({ y: "f32", x: "f32", b: "f32" }, "s_bias");
  assert.equal(bias.name, "test_copy_s_bias");
  assert.match(bias.code, /@binding\(3\) var<storage, read> b: array<f32>;/);
  assert.match(bias.code, /y\[g\.x\] = x\[g\.x\] \+ b\[g\.x\];/);
});

Deno.test("defineKernel dispatches the bindings of the variant", GPU_TEST, async () => {
  const gpu = await testGpu();
  const x = gpu.tensor(Float32Array.from({ length: 72 }, (_, i) => i + 1), { shape: [72] });
  const b = gpu.tensor(new Float32Array(72).fill(10), { shape: [72] });
  const y = gpu.zeros([72]);
  copy.dispatch({ variant: "v4_bias", params: { n: 1 }, bindings: { y, x, b }, workgroups: 1 });
  // Elements 64 and 65 (a range at a byte offset of 256, the largest offset alignment allowed).
  const at64 = (t: typeof x) => ({ tensor: t, offset: 256, size: 8 });
  copy.dispatch({
    variant: "s",
    params: { n: 2 },
    bindings: { y: at64(y), x: at64(x) },
    workgroups: 1,
  });
  const out = await y.toArray();
  assert.deepEqual([...out.slice(0, 6), ...out.slice(63, 67)], [
    11,
    12,
    13,
    14,
    0,
    0,
    0,
    65,
    66,
    0,
  ]);
  assert.throws(
    () => copy.dispatch({ variant: "s", params: { n: 1 }, bindings: { y, x, b }, workgroups: 1 }),
    /test_copy: binding 'b' is not one of variant 's'/,
  );
  assert.throws(
    () => copy.dispatch({ variant: "s_bias", params: { n: 1 }, bindings: { y, x }, workgroups: 1 }),
    /test_copy: binding 'b' is missing/,
  );
});

// A binding that only some variants have (declared, numbered and bound in those only), and a
// fixed f32 binding.
const gather = defineKernel({
  name: "test_gather",
  doc: "thread i sets y[i] = x[i] (+ bias[0] in the bias variant)",
  params: { n: "u32" },
  bindings: {
    y: { type: "float", access: "read_write" },
    bias: { type: "f32", access: "read", variants: ["bias"] },
    x: { type: "float", access: "read" },
  },
  variants: ["plain", "bias"],
  workgroupSize: 64,
  body: ({ load, store, variant }) =>
    `@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < p.n) { ${
      store("y", "y[g.x]", `${load("x", "x[g.x]")}${variant === "bias" ? " + bias[0]" : ""}`)
    } }
}`,
});

Deno.test("defineKernel declares a variant's own bindings only in that variant", () => {
  const plain = gather.spec({ y: "f32", x: "f16" }, "plain");
  assert.equal(plain.name, "test_gather_plain_h-x");
  assert.doesNotMatch(plain.code, /bias:/);
  assert.match(plain.code, /@binding\(2\) var<storage, read> x: array<f16>;/);
  const bias = gather.spec({ y: "f32", x: "f32" }, "bias");
  assert.match(bias.code, /@binding\(2\) var<storage, read> bias: array<f32>;/);
  assert.match(bias.code, /@binding\(3\) var<storage, read> x: array<f32>;/);
  assert.throws(
    () =>
      defineKernel({
        name: "bad",
        doc: "",
        params: {},
        bindings: { y: { type: "u32", access: "read_write", variants: ["other"] } },
        variants: ["one"],
        workgroupSize: 1,
        body: () => "",
      }),
    /bad: binding 'y' names an unknown variant 'other'/,
  );
});

Deno.test("defineKernel binds a variant's own bindings and checks them", GPU_TEST, async () => {
  const gpu = await testGpu();
  const x = gpu.tensor(new Float32Array([1, 2, 3]), { shape: [3] });
  const b = gpu.tensor(new Float32Array([10]), { shape: [1] });
  const y = gpu.zeros([3]);
  gather.dispatch({
    params: { n: 3 },
    bindings: { y, x, bias: b },
    variant: "bias",
    workgroups: 1,
  });
  assert.deepEqual([...await y.toArray()], [11, 12, 13]);
  gather.dispatch({ params: { n: 2 }, bindings: { y, x }, variant: "plain", workgroups: 1 });
  assert.deepEqual([...await y.toArray()], [1, 2, 13]);
  assert.throws(
    () => gather.dispatch({ params: { n: 3 }, bindings: { y, x }, variant: "bias", workgroups: 1 }),
    /test_gather: binding 'bias' is missing/,
  );
  assert.throws(
    () =>
      gather.dispatch({
        params: { n: 3 },
        bindings: { y, x, bias: b },
        variant: "plain",
        workgroups: 1,
      }),
    /binding 'bias' is not one of variant 'plain'/,
  );
  const u = gpu.zeros([1], { dtype: "u32" });
  assert.throws(
    () =>
      gather.dispatch({
        params: { n: 3 },
        bindings: { y, x, bias: u },
        variant: "bias",
        workgroups: 1,
      }),
    /bias .* must be f32/,
  );
});

Deno.test("perSizes builds one description per set of compile-time constants", () => {
  let made = 0;
  const kernel = perSizes((trans: boolean | string, tm: number) => ({ trans, tm, id: made++ }));
  assert.equal(kernel(true, 4), kernel(true, 4), "built once");
  assert.equal(made, 1);
  // Numbers, booleans and strings are told apart, and a string holding a comma is one argument.
  const keys = [kernel(false, 4), kernel("true", 4), kernel("true,4", 4), kernel(true, 8)];
  assert.equal(new Set([kernel(true, 4), ...keys]).size, 5);
  assert.deepEqual(kernel(false, 4), { trans: false, tm: 4, id: 1 });
});

// A binding whose access depends on the variant (written in place or read only), and the
// packed bytes of a u8 tensor read as u32 words.
const bytes = defineKernel({
  name: "test_bytes",
  doc: "thread i sets y[i] = byte i of src (+ y[i] in the acc variant)",
  params: { n: "u32" },
  bindings: {
    y: { type: "float", access: "read_write" },
    src: { type: "u8-words", access: "read" },
    z: { type: "u32", access: (v) => (v === "acc" ? "read_write" : "read") },
  },
  variants: ["set", "acc"],
  workgroupSize: 64,
  body: ({ load, store, variant }) => {
    const byte = "f32((src[g.x >> 2u] >> ((g.x & 3u) * 8u)) & 0xffu)";
    const value = variant === "acc" ? `${load("y", "y[g.x]")} + ${byte}` : byte;
    return `@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x >= p.n) { return; }
  ${store("y", "y[g.x]", value)}
  ${variant === "acc" ? "z[g.x] = z[g.x] + 1u;" : "_ = z[0];"}
}`;
  },
});

Deno.test("defineKernel: access per variant, u8 tensors as u32 words", GPU_TEST, async () => {
  const set = bytes.spec({ y: "f32" }, "set");
  assert.match(set.code, /@binding\(2\) var<storage, read> src: array<u32>;/);
  assert.match(set.code, /@binding\(3\) var<storage, read> z: array<u32>;/);
  const acc = bytes.spec({ y: "f32" }, "acc");
  assert.match(acc.code, /@binding\(3\) var<storage, read_write> z: array<u32>;/);
  const gpu = await testGpu();
  const src = gpu.tensor(new Uint8Array([1, 2, 3, 250, 7]), { shape: [5] });
  const y = gpu.zeros([5]);
  const z = gpu.zeros([5], { dtype: "u32" });
  bytes.dispatch({ variant: "set", params: { n: 5 }, bindings: { y, src, z }, workgroups: 1 });
  bytes.dispatch({ variant: "acc", params: { n: 4 }, bindings: { y, src, z }, workgroups: 1 });
  assert.deepEqual([...await y.toArray()], [2, 4, 6, 500, 7]);
  assert.deepEqual([...await z.toArray()], [1, 1, 1, 1, 0]);
  assert.throws(
    () =>
      bytes.dispatch({
        op: "bytes",
        variant: "set",
        params: { n: 5 },
        bindings: { y, src: gpu.zeros([2], { dtype: "u32" }), z },
        workgroups: 1,
      }),
    /bytes: src .* must be u8/,
  );
});
