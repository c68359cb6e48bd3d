// The package as a JSR user gets it: a project that links this folder in place of
// `jsr:@modern-cnn/webgpu` (deno.json "links", so nothing is fetched) runs the commands from the
// package's exports (`deno run -A jsr:@modern-cnn/webgpu/train ...`) and imports the library.
import assert from "node:assert/strict";
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;

async function inProject(
  dir: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: dir,
    env: { NO_COLOR: "1", XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("the commands run from the package's exports, as jsr:@modern-cnn/webgpu/<command>", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "deno.json"), JSON.stringify({ links: [ROOT] }));
  for (const cmd of ["train", "eval", "predict", "summary", "tune"]) {
    const r = await inProject(dir, ["run", "-A", `jsr:@modern-cnn/webgpu/${cmd}`, "--help"]);
    assert.equal(r.code, 0, `${cmd}: ${r.stderr}`);
    assert.match(r.stdout, /usage: deno task/, cmd);
  }
  const s = await inProject(dir, ["run", "-A", "jsr:@modern-cnn/webgpu/summary", "lenet"]);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /parameters: 61,706/);
  const ck = join(dir, "w.safetensors");
  const t = await inProject(dir, [
    "run",
    "-A",
    "jsr:@modern-cnn/webgpu/train",
    "lenet-bn",
    "--dataset",
    "synthetic",
    "--limit-train",
    "64",
    "--limit-test",
    "32",
    "--batch-size",
    "32",
    "--epochs",
    "1",
    "--save",
    ck,
  ]);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /^epoch 1: loss [\d.]+/m);
  await Deno.writeTextFile(
    join(dir, "use.ts"),
    `import { createModel, decodeSafetensors, getGpu } from "jsr:@modern-cnn/webgpu";
const model = createModel(await getGpu(), { name: "lenet-bn" });
model.loadStateDict(decodeSafetensors(await Deno.readFile(${JSON.stringify(ck)})).tensors);
console.log("loaded", model.params.length);
`,
  );
  const u = await inProject(dir, ["run", "-A", "use.ts"]);
  assert.equal(u.code, 0, u.stderr);
  assert.match(u.stdout, /^loaded \d+/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("train without XDG_RUNTIME_DIR prints no 'error:' line", async () => {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const k of ["PATH", "HOME", "DENO_DIR"]) {
    const v = Deno.env.get(k);
    if (v !== undefined) env[k] = v;
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      join(ROOT, "cli", "train.ts"),
      "lenet",
      "--dataset",
      "synthetic",
      "--limit-train",
      "64",
      "--limit-test",
      "32",
      "--batch-size",
      "32",
      "--epochs",
      "1",
    ],
    clearEnv: true,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.doesNotMatch(stderr, /^error:/m);
  assert.match(new TextDecoder().decode(out.stdout), /^epoch 1: loss [\d.]+/m);
});
