// Checkpoint interop with PyTorch: a state_dict written from the reference module tree loads here
// and gives PyTorch's logits; a checkpoint written here loads into the reference module tree with
// load_state_dict(strict=True) and gives our logits (this direction needs Debian's python3-torch,
// which CI installs; without it the test is reported as ignored).
import assert from "node:assert/strict";
import { join } from "node:path";
import { createModel, decodeSafetensors, encodeSafetensors } from "../models/mod.ts";
import { detValues } from "./det.ts";
import { assertClose, GPU_TEST, testGpu } from "./harness.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;

Deno.test(
  "a checkpoint written by PyTorch loads and gives PyTorch's logits",
  GPU_TEST,
  async () => {
    const gpu = await testGpu();
    const bytes = await Deno.readFile(join(FIX, "torch_lenet-bn.safetensors"));
    const expected = JSON.parse(await Deno.readTextFile(join(FIX, "torch_lenet-bn.json")));
    const model = createModel(gpu, { name: "lenet-bn" });
    model.loadStateDict(decodeSafetensors(bytes, { file: "torch_lenet-bn.safetensors" }).tensors);
    const x = gpu.tensor(detValues("input", 2 * 28 * 28, 0, 1), { shape: [2, 1, 28, 28] });
    const y = await model.forward(x, { gpu, training: false, seed: 0 }).y.toArray();
    assertClose(y, expected.logits, {
      rtol: 1e-4,
      atol: 1e-5,
      what: "logits from a PyTorch checkpoint",
    });
    const sd = await model.stateDict();
    assert.equal((sd.get("1.num_batches_tracked")!.data as BigInt64Array)[0], 1n);
    model.dispose();
  },
);

function hasTorch(): boolean {
  try {
    const r = new Deno.Command("/usr/bin/python3", { args: ["-c", "import torch"], stderr: "null" })
      .outputSync();
    return r.success;
  } catch {
    return false;
  }
}

for (const name of ["lenet-bn", "googlenet", "mobilenet"] as const) {
  Deno.test({
    name: `a checkpoint written here loads into PyTorch's ${name} with strict=True`,
    ignore: !hasTorch(),
    ...GPU_TEST,
    async fn() {
      const gpu = await testGpu();
      const size = name === "lenet-bn" ? 28 : 64;
      const model = createModel(gpu, { name, seed: 7 });
      // A training forward makes the running stats and num_batches_tracked non-trivial.
      const warm = gpu.tensor(detValues("warm", 2 * size * size, 0, 1), {
        shape: [2, 1, size, size],
      });
      model.forward(warm, { gpu, training: true, seed: 0 }).y.dispose();
      const file = await Deno.makeTempFile({ suffix: ".safetensors" });
      await Deno.writeFile(file, encodeSafetensors(await model.stateDict(), { model: name }));
      const x = gpu.tensor(detValues("input", 2 * size * size, 0, 1), {
        shape: [2, 1, size, size],
      });
      const ours = await model.forward(x, { gpu, training: false, seed: 0 }).y.toArray();
      const out = await new Deno.Command("/usr/bin/python3", {
        args: [join(FIX, "torch_checkpoint.py"), "check", name, file, String(size)],
        cwd: FIX,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, `PyTorch could not load our checkpoint: ${err}`);
      const theirs = JSON.parse(new TextDecoder().decode(out.stdout));
      assertClose(ours, theirs, {
        rtol: 1e-4,
        atol: 1e-4,
        what: `${name}: PyTorch's logits from our checkpoint`,
      });
      await Deno.remove(file);
      model.dispose();
    },
  });
}
