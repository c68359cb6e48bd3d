// The README's sample outputs match what the commands print now (tests/readme.ts --check: the
// same lines, numbers aside, on a slice of the data), and every block is marked with its command.
import assert from "node:assert/strict";
import { outputBlocks, shape } from "./readme.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("shape() keeps the words and drops the numbers", () => {
  assert.equal(
    shape("epoch 1: loss 0.762, train acc 0.725, 1,891.0 examples/sec, lr 1e-3"),
    "epoch #: loss #, train acc #, # examples/sec, lr #",
  );
});

Deno.test("the README's outputs are marked and look like what the commands print", async () => {
  const blocks = outputBlocks(await Deno.readTextFile(`${ROOT}README.md`));
  assert.ok(blocks.length >= 1, "the quick start's output is a marked block");
  for (const b of blocks) {
    assert.equal(b.lines[0], `$ ${b.command}`, "each block starts with its command");
    assert.ok(b.lines.length > 2, `'${b.command}' has its output in the README`);
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}tests/readme.ts`, "--check"],
    cwd: ROOT,
    env: { NO_COLOR: "1", XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert.equal(out.code, 0, dec.decode(out.stderr) + dec.decode(out.stdout));
});
