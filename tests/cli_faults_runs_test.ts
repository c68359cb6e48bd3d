// The CLI fault suite (see tests/_faults.ts), work is never lost: a diverging run writes nothing;
// a checkpoint and its optimizer file are one unit (kills between them, missing and foreign
// optimizer files); --resume restores the run's recipe.
import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeSafetensors, type HostStateDict } from "../models/mod.ts";
import { assertFailed, listDir, pool, ROOT, sha256, shown, snapshot } from "./_cli.ts";
import { assertOk, caseDir, metadataOf, sandbox, SYN, TINY } from "./_faults.ts";

// ------------------------------------------------------------------ 1: divergence ----

Deno.test("a diverging run writes nothing: the last good checkpoint and plot stay", async () => {
  const sb = await sandbox();
  try {
    const base = await caseDir(sb.dir, "base");
    const good = join(base, "good.safetensors");
    assertOk("the good run", await sb.cli("train.ts", ["lenet", ...TINY, "--save", good]));
    const DIVERGE = [
      "--dataset",
      "synthetic",
      "--limit-train",
      "512",
      "--limit-test",
      "64",
      "--epochs",
      "3",
      "--lr",
      "1e38",
    ];
    const diverged = (epoch: number) =>
      new RegExp(
        `^train: training diverged in epoch ${epoch} at step \\d+ of the epoch \\(step \\d+ of ` +
          `the run\\): .* became Inf or NaN; nothing was written.*; try a lower --lr ` +
          `\\(this run: 1e\\+38`,
        "m",
      );
    const cases = [
      { name: "resumed, --save over its checkpoint", json: false },
      { name: "resumed, --save over its checkpoint, --json and --plot", json: true },
    ];
    await pool([
      ...cases,
      { name: "fresh run with --save", json: false },
    ], async (c) => {
      const dir = await caseDir(sb.dir, c.name);
      const fresh = c.name.startsWith("fresh");
      const save = join(dir, fresh ? "fresh.safetensors" : "good.safetensors");
      if (!fresh) await Deno.copyFile(good, save);
      const plot = join(dir, "curves.svg");
      if (c.json) await Deno.writeTextFile(plot, "<svg><!-- an earlier run's plot --></svg>");
      const before = await snapshot(dir);
      const r = await sb.cli("train.ts", [
        "lenet",
        ...DIVERGE,
        ...(fresh ? [] : ["--resume", save]),
        "--save",
        save,
        ...(c.json ? ["--json", "--plot", plot] : []),
      ]);
      assertFailed(c.name, r, {
        code: 1,
        command: "train",
        stderr: diverged(fresh ? 1 : 2),
        lines: fresh ? 1 : 2, // resumed: the "resuming ..." line first
      });
      if (c.json) assert.equal(r.stdout, "", `${c.name}: no JSON line\n${shown(r)}`);
      // Byte-identical checkpoint and plot; a fresh run's --save file does not exist; no lock
      // or temporary file is left.
      assert.deepEqual(await snapshot(dir), before, `${c.name}: files changed or left behind`);
    });
  } finally {
    await sb.done();
  }
});

Deno.test({
  name: "a fresh diverging run does not claim that its never-written --save file keeps an epoch",
  fn: async () => {
    const sb = await sandbox();
    try {
      const save = join(sb.dir, "fresh.safetensors");
      const r = await sb.cli("train.ts", [
        "lenet",
        "--dataset",
        "synthetic",
        "--limit-train",
        "512",
        "--limit-test",
        "64",
        "--epochs",
        "3",
        "--lr",
        "1e38",
        "--save",
        save,
      ]);
      assertFailed("fresh", r, { code: 1, command: "train", stderr: /diverged in epoch 1/ });
      assert.doesNotMatch(r.stderr, /keeps the last good epoch/, shown(r));
      assert.deepEqual(await listDir(sb.dir), [".tune"]);
    } finally {
      await sb.done();
    }
  },
});

// ------------------------------------------------------------------ 2: checkpoint as a unit ----

Deno.test("checkpoint and optimizer state are one unit: kills, missing and foreign optimizer files", async () => {
  const sb = await sandbox();
  try {
    const MOM = ["lenet", ...TINY, "--momentum", "0.9"];
    const dirA = await caseDir(sb.dir, "killed-between");
    const dirB = await caseDir(sb.dir, "other-run");
    const dirC = await caseDir(sb.dir, "source");
    const [a, b, c] = [dirA, dirB, dirC].map((d) => join(d, "ck.safetensors"));
    await pool([
      { name: "good run A", args: [...MOM, "--save", a] },
      { name: "good run B (2 epochs)", args: [...MOM, "--epochs", "2", "--save", b] },
      { name: "good run C", args: [...MOM, "--save", c] },
    ], async (s) => assertOk(s.name, await sb.cli("train.ts", s.args)));
    assert.deepEqual(await listDir(dirA), ["ck-optimizer-step2.safetensors", "ck.safetensors"]);
    assert.deepEqual(await listDir(dirB), ["ck-optimizer-step4.safetensors", "ck.safetensors"]);
    const optA = await Deno.readFile(join(dirA, "ck-optimizer-step2.safetensors"));
    const optB = await Deno.readFile(join(dirB, "ck-optimizer-step4.safetensors"));
    /** A copy of C in a new folder, its optimizer file replaced by `opt` (null: deleted). */
    const copyOfC = async (name: string, opt: Uint8Array | null) => {
      const dir = await caseDir(sb.dir, name);
      await Deno.copyFile(c, join(dir, "ck.safetensors"));
      if (opt) await Deno.writeFile(join(dir, "ck-optimizer-step2.safetensors"), opt);
      return dir;
    };
    const refusal = (name: string, dir: string, re: RegExp) => ({
      name,
      fn: async () => {
        const before = await snapshot(dir);
        const ck = join(dir, "ck.safetensors");
        const r = await sb.cli("train.ts", [
          "lenet",
          "--epochs",
          "2",
          "--resume",
          ck,
          "--save",
          ck,
        ]);
        assertFailed(name, r, { code: 1, command: "train", stderr: re });
        assert.deepEqual(await snapshot(dir), before, `${name}: files changed or left behind`);
        return { dir, ck };
      },
    });
    const tracks = [
      {
        // (a) kill -9 after the optimizer file of the next step is written, before the model.
        name: "(a) killed between the optimizer file and the model file",
        fn: async () => {
          const before = await snapshot(dirA);
          const killed = await sb.cli(
            "train.ts",
            ["lenet", "--epochs", "2", "--resume", a, "--save", a],
            { MODERN_CNN_TEST_KILL_AT: "between-optimizer-and-model" },
          );
          assert.equal(killed.signal, "SIGKILL", `killed\n${shown(killed)}`);
          const after = await snapshot(dirA);
          for (const f of Object.keys(before)) {
            assert.equal(after[f], before[f], `${f} unchanged by the killed run`);
          }
          assert.ok(after["ck-optimizer-step4.safetensors"], "the killed step's optimizer file");
          // The old pair still resumes: the model of epoch 1 with its optimizer file.
          const resumed = await sb.cli("train.ts", ["lenet", "--epochs", "2", "--resume", a]);
          assertOk("resume after the kill", resumed);
          assert.match(resumed.stderr, /resuming \S+ after epoch 1 \(step 2\): momentum 0\.9/);
          assert.match(resumed.stdout, /^epoch 2: loss [\d.]+/m);
          assert.equal(await sha256(a), before["ck.safetensors"]);
          // A further run (another batch size: step 2 + 4 = 6) cleans the orphan of step 4.
          const further = await sb.cli("train.ts", [
            "lenet",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--resume",
            a,
            "--save",
            a,
          ]);
          assertOk("the run after the kill", further);
          assert.deepEqual(await listDir(dirA), [
            "ck-optimizer-step6.safetensors",
            "ck.safetensors",
          ]);
          const m = await metadataOf(a);
          assert.equal(m.optimizer, "ck-optimizer-step6.safetensors");
          assert.equal(m.step, "6");
          assert.equal(m.epoch, "2");
        },
      },
      {
        // (b) kill -9 with the model's temporary file written: the next --save removes it (a
        // temporary file of a live process, here pid 1, is not touched).
        name: "(b) killed with the model's temporary file written",
        fn: async () => {
          const dir = await caseDir(sb.dir, "killed-temp");
          const ck = join(dir, "ck.safetensors");
          const killed = await sb.cli("train.ts", ["lenet", ...TINY, "--save", ck], {
            MODERN_CNN_TEST_KILL_AT: "model-temp-written",
          });
          assert.equal(killed.signal, "SIGKILL", `killed\n${shown(killed)}`);
          const left = (await listDir(dir)).filter((n) =>
            /^ck\.safetensors\.tmp-\d+-killed$/.test(n)
          );
          assert.equal(left.length, 1, `the killed write's temporary file: ${await listDir(dir)}`);
          await Deno.writeTextFile(join(dir, "ck.safetensors.tmp-1-live"), "pid 1 is alive");
          assertOk("the next --save", await sb.cli("train.ts", ["lenet", ...TINY, "--save", ck]));
          assert.deepEqual(await listDir(dir), ["ck.safetensors", "ck.safetensors.tmp-1-live"]);
          assert.equal((await metadataOf(ck)).epoch, "1");
        },
      },
      {
        // (c) the optimizer file is missing: refused, naming it and --reset-optimizer.
        name: "(c) the optimizer file is missing",
        fn: async () => {
          const dir = await copyOfC("missing", null);
          const { ck } = await refusal(
            "(c) missing",
            dir,
            /^train: the optimizer state of \S+ck\.safetensors \(\S+ck-optimizer-step2\.safetensors\) is missing; pass --reset-optimizer/m,
          ).fn();
          const r = await sb.cli("train.ts", [
            "lenet",
            "--epochs",
            "2",
            "--resume",
            ck,
            "--save",
            ck,
            "--reset-optimizer",
          ]);
          assertOk("(c) with --reset-optimizer", r);
          assert.match(r.stderr, /--reset-optimizer: the momentum starts from zero/);
          assert.match(r.stdout, /^epoch 2: /m);
          assert.deepEqual(await listDir(dir), [
            "ck-optimizer-step4.safetensors",
            "ck.safetensors",
          ]);
        },
      },
      refusal(
        "(d) another run's optimizer file of the same step",
        await copyOfC("foreign-same-step", optA),
        /^train: the optimizer state \S+ck-optimizer-step2\.safetensors \(step 2, run \S+\) does not belong to \S+ck\.safetensors \(step 2, run \S+\); pass --reset-optimizer/m,
      ),
      refusal(
        "(d) another run's optimizer file of another step",
        await copyOfC("foreign-other-step", optB),
        /^train: the optimizer state \S+ck-optimizer-step2\.safetensors \(step 4, run \S+\) does not belong to \S+ck\.safetensors \(step 2, run \S+\); pass --reset-optimizer/m,
      ),
      {
        // (e) the model file is a plain state dict: the reference's names (PyTorch wrote the
        // fixture), momentum only in the optimizer file.
        name: "(e) the model file holds exactly the state dict",
        fn: async () => {
          const dir = await caseDir(sb.dir, "state-dict");
          const ck = join(dir, "ck.safetensors");
          const r = await sb.cli("train.ts", [
            "lenet-bn",
            ...TINY,
            "--momentum",
            "0.9",
            "--save",
            ck,
          ]);
          assertOk("(e) lenet-bn with momentum", r);
          const saved = decodeSafetensors(await Deno.readFile(ck));
          const torch = decodeSafetensors(
            await Deno.readFile(join(ROOT, "tests", "fixtures", "torch_lenet-bn.safetensors")),
          );
          const shapes = (sd: HostStateDict) =>
            Object.fromEntries([...sd].map(([k, t]) => [k, `${t.dtype}[${t.shape}]`]));
          assert.deepEqual(shapes(saved.tensors), shapes(torch.tensors));
          const opt = decodeSafetensors(await Deno.readFile(join(dir, saved.metadata.optimizer)));
          assert.ok(opt.tensors.size > 0);
          for (const k of opt.tensors.keys()) assert.ok(saved.tensors.has(k), `momentum of ${k}`);
        },
      },
    ];
    await pool(tracks, (t) => t.fn().then(() => {}));
  } finally {
    await sb.done();
  }
});

Deno.test({
  name: "a save leaves the optimizer file of another checkpoint of the same stem alone",
  fn: async () => {
    const sb = await sandbox();
    try {
      const MOM = ["lenet", ...TINY, "--momentum", "0.9"];
      const ck = join(sb.dir, "ck.safetensors");
      assertOk("ck.safetensors", await sb.cli("train.ts", [...MOM, "--save", ck]));
      const opt = join(sb.dir, "ck-optimizer-step2.safetensors");
      const before = await sha256(opt);
      const other = await sb.cli("train.ts", [
        ...MOM,
        "--limit-train",
        "128",
        "--save",
        join(sb.dir, "ck"),
      ]);
      assertOk("ck (no extension)", other);
      const after = await sha256(opt).catch(() => "deleted");
      assert.equal(after, before, "the optimizer file of ck.safetensors");
      assertOk(
        "resume ck.safetensors",
        await sb.cli("train.ts", ["lenet", "--epochs", "2", "--resume", ck]),
      );
    } finally {
      await sb.done();
    }
  },
});

// ------------------------------------------------------------------ 3: resume restores ----

Deno.test("--resume restores the run's recipe; a flag overrides it and says so", async () => {
  const sb = await sandbox();
  try {
    const ck = join(sb.dir, "ck.safetensors");
    assertOk(
      "the first run",
      await sb.cli("train.ts", [
        "lenet",
        ...SYN,
        "--epochs",
        "1",
        "--momentum",
        "0.9",
        "--weight-decay",
        "1e-4",
        "--lr",
        "0.3",
        "--seed",
        "5",
        "--batch-size",
        "32",
        "--save",
        ck,
      ]),
    );
    // No recipe flag: data set, limits, batch, lr, momentum, weight decay and seed come back.
    const r = await sb.cli("train.ts", ["lenet", "--epochs", "2", "--resume", ck, "--save", ck]);
    assertOk("resume without the recipe's flags", r);
    assert.match(
      r.stderr,
      /^train: resuming \S+ck\.safetensors after epoch 1 \(step 2\): momentum 0\.9, weight decay 0\.0001, seed 5 and the rest of its recipe restored/m,
    );
    assert.match(
      r.stdout,
      /^lenet on synthetic \(64 train \/ 32 test, 28x28\), batch 32, lr 0\.3, /,
    );
    const m = await metadataOf(ck);
    assert.deepEqual(
      [m.epoch, m.momentum, m.lr, m.seed, m.batch_size, m.weight_decay, m.dataset],
      ["2", "0.9", "0.3", "5", "32", "0.0001", "synthetic"],
    );
    // A flag given overrides the checkpoint's value, and the header says so.
    const o = await sb.cli("train.ts", ["lenet", "--epochs", "3", "--resume", ck, "--lr", "0.1"]);
    assertOk("resume with --lr 0.1", o);
    assert.match(o.stderr, /overridden by flags: .*--lr 0\.1 \(checkpoint: 0\.3\)/);
    assert.match(o.stdout, /, lr 0\.1, /);
  } finally {
    await sb.done();
  }
});
