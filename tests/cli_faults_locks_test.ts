// The CLI fault suite (see tests/_faults.ts), one file, one run: a live lock refuses a second run
// and a stale one is taken over, two concurrent runs, Ctrl-C, and --plot naming a checkpoint.
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  assertFailed,
  assertNoStack,
  lines,
  listDir,
  pool,
  shown,
  snapshot,
  waitFor,
} from "./_cli.ts";
import { assertOk, caseDir, lit, LONG, metadataOf, sandbox, TINY } from "./_faults.ts";

// ------------------------------------------------------------------ 4: locks ----

Deno.test("two runs, one file: a live lock refuses, a stale one is taken over", async () => {
  const sb = await sandbox();
  try {
    const host = Deno.hostname();
    const sleeper = new Deno.Command("sleep", { args: ["30"] }).spawn();
    const finished = new Deno.Command("true").spawn();
    await finished.status;
    try {
      const lockOf = (pid: number) =>
        JSON.stringify({ pid, host, started: new Date().toISOString() });
      const cases = [
        { name: "a live process's lock", lock: lockOf(sleeper.pid), ok: false },
        { name: "an unreadable lock", lock: "{half writ", ok: false },
        { name: "a dead process's lock (stale)", lock: lockOf(finished.pid), ok: true },
      ];
      await pool(cases, async (c) => {
        const dir = await caseDir(sb.dir, c.name);
        const x = join(dir, "x.safetensors");
        assertOk(
          `${c.name}: the first run`,
          await sb.cli("train.ts", ["lenet", ...TINY, "--save", x]),
        );
        await Deno.writeTextFile(`${x}.lock`, c.lock);
        const before = await snapshot(dir);
        const r = await sb.cli("train.ts", ["lenet", ...TINY, "--seed", "1", "--save", x]);
        if (c.ok) {
          assertOk(c.name, r);
          assert.deepEqual(await listDir(dir), ["x.safetensors"], `${c.name}: no lock left`);
          assert.equal((await metadataOf(x)).seed, "1");
        } else {
          assertFailed(c.name, r, {
            code: 1,
            command: "train",
            stderr: new RegExp(
              `--save ${lit(x)} is being written by another run \\(${
                c.lock.startsWith('{"pid') ? `pid ${sleeper.pid} on ${lit(host)}` : "\\?"
              }.*delete ${lit(x)}\\.lock`,
            ),
          });
          assert.deepEqual(await snapshot(dir), before, `${c.name}: files changed`);
        }
      });
    } finally {
      sleeper.kill("SIGKILL");
      await sleeper.status;
    }
    // Two real runs at once, and Ctrl-C: concurrently (independent folders).
    await pool([
      {
        // The second starts once the first holds the lock.
        name: "two concurrent runs with the same --save",
        fn: async () => {
          const dir = await caseDir(sb.dir, "concurrent");
          const x = join(dir, "x.safetensors");
          const first = sb.start("train.ts", [
            "lenet",
            ...LONG,
            "--limit-train",
            "1024",
            "--save",
            x,
          ]);
          assert.ok(await waitFor(`${x}.lock`), "the first run's lock");
          const second = await sb.cli("train.ts", ["lenet", ...TINY, "--save", x]);
          const r = await first.done;
          assertOk("the first run", r);
          assertFailed("the second run", second, {
            code: 1,
            command: "train",
            stderr: new RegExp(
              `--save ${lit(x)} is being written by another run \\(pid ${first.pid} `,
            ),
          });
          assert.deepEqual(await listDir(dir), ["x.safetensors"], "no lock left");
          assert.equal((await metadataOf(x)).epoch, "3", "the first run's checkpoint");
        },
      },
      {
        // Ctrl-C after the first epoch's checkpoint: the cleanups remove the lock, the
        // checkpoint and its optimizer file stay, exit 130.
        name: "SIGINT during training",
        fn: async () => {
          const dir = await caseDir(sb.dir, "interrupted");
          const z = join(dir, "z.safetensors");
          const p = sb.start("train.ts", [
            "lenet",
            ...LONG,
            "--limit-train",
            "2048",
            "--momentum",
            "0.9",
            "--save",
            z,
          ]);
          assert.ok(await waitFor(z), "the first epoch's checkpoint");
          p.kill("SIGINT");
          const r = await p.done;
          assert.equal(r.code, 130, `SIGINT\n${shown(r)}`);
          assert.equal(lines(r.stderr).at(-1), "train: interrupted", shown(r));
          assertNoStack("SIGINT", r);
          assert.deepEqual(await listDir(dir), [
            "z-optimizer-step64.safetensors",
            "z.safetensors",
          ]);
          const m = await metadataOf(z);
          assert.deepEqual([m.epoch, m.optimizer], ["1", "z-optimizer-step64.safetensors"]);
        },
      },
    ], (c) => c.fn());
  } finally {
    await sb.done();
  }
});

Deno.test({
  name: "--plot naming the file of --resume, --init or --save is refused; the checkpoint stays",
  fn: async () => {
    const sb = await sandbox();
    try {
      const good = join(sb.dir, "good.safetensors");
      assertOk("the good run", await sb.cli("train.ts", ["lenet", ...TINY, "--save", good]));
      const cases = [
        { name: "--resume F --plot F", flag: "--resume", args: ["--epochs", "2"] },
        { name: "--init F --plot F", flag: "--init", args: TINY },
        { name: "--save F --plot F", flag: "--save", args: TINY },
      ];
      await pool(cases, async (c) => {
        const dir = await caseDir(sb.dir, c.name);
        const f = join(dir, "ck.safetensors");
        await Deno.copyFile(good, f);
        const before = await snapshot(dir);
        const r = await sb.cli("train.ts", ["lenet", ...c.args, c.flag, f, "--plot", f]);
        assertFailed(c.name, r, {
          code: 2,
          command: "train",
          stderr: new RegExp(`(${c.flag}\\b.*--plot|--plot\\b.*${c.flag})\\b`),
          maxSeconds: 20,
        });
        assert.deepEqual(await snapshot(dir), before, `${c.name}: the checkpoint changed`);
      });
    } finally {
      await sb.done();
    }
  },
});
