// End-to-end test of the browser demo (`deno task e2e`): starts the demo server, drives Debian's
// Chromium headless through playwright-core with WebGPU on SwiftShader, trains LeNet on
// Fashion-MNIST in the page, checks that the loss falls and that the test accuracy beats chance
// by a wide margin, and saves a screenshot; then chooses a folder of images (3 classes) in the
// page's file input and trains a few steps on it. Exits 1 with a message on any failure.
//
// Not named *_test.ts: `deno task test` does not run it (it takes minutes and needs Chromium:
// `apt-get install -y chromium dataset-fashion-mnist`).
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { encode as encodePng } from "fast-png";
import { type DemoServer, startDemoServer } from "../../cli/demo.ts";
import type { DemoStatus } from "../../web/session.ts";
import { CHROMIUM_ARGS, DEFAULT_CHROMIUM, launchChromium } from "../browser/chromium.ts";

const USAGE = `Usage: deno task e2e [options]

  --model NAME        lenet (default), lenet-bn or resnet
  --steps N           SGD steps (default: lenet 470, two epochs, as LeNet leaves its sigmoid
                      plateau only after about 250; lenet-bn 100; resnet 40)
  --min-acc X         test accuracy to beat (default: lenet 0.4, lenet-bn 0.5, resnet 0.3;
                      chance is 0.1)
  --timeout S         seconds for the whole run (default 900)
  --chromium PATH     the browser (default /usr/bin/chromium)
  --screenshot PATH   where to save the page (default: a new temporary folder; pass
                      docs/demo.png to refresh the README's picture)
  --data-dir FOLDER   Fashion-MNIST's files (default: found as by deno task train)
  --headed            show the browser window
`;

/** Per model: steps, and the final test accuracy to beat. */
const DEFAULTS: Record<string, { steps: number; minAcc: number }> = {
  "lenet": { steps: 470, minAcc: 0.4 },
  "lenet-bn": { steps: 100, minAcc: 0.5 },
  "resnet": { steps: 40, minAcc: 0.3 },
};

class E2eFailure extends Error {}

function fail(message: string): never {
  throw new E2eFailure(message);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string", default: "lenet" },
      steps: { type: "string" },
      "min-acc": { type: "string" },
      timeout: { type: "string", default: "900" },
      chromium: { type: "string", default: DEFAULT_CHROMIUM },
      screenshot: { type: "string" },
      "data-dir": { type: "string" },
      headed: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const defaults = DEFAULTS[values.model];
  if (!defaults) {
    console.error(`e2e: unknown model '${values.model}'\n\n${USAGE}`);
    return 2;
  }
  const steps = Number(values.steps ?? defaults.steps);
  const minAcc = Number(values["min-acc"] ?? defaults.minAcc);
  const deadline = performance.now() + Number(values.timeout) * 1000;
  const left = () => Math.max(1, deadline - performance.now());
  const t0 = performance.now();
  const secs = () => ((performance.now() - t0) / 1000).toFixed(1);

  if (!(await exists(values.chromium))) {
    fail(`${values.chromium} not found: install Debian's Chromium (apt-get install -y chromium)`);
  }
  let server: DemoServer | null = null;
  const cleanups: (() => Promise<void>)[] = [];
  try {
    server = await startDemoServer({ port: 0, dataDir: values["data-dir"] });
    console.log(`e2e: demo at ${server.url} (bundled in ${server.bundleSeconds.toFixed(1)} s)`);

    /** A fresh Chromium (own temp profile) with `args`, and its page. */
    const launch = async (args: readonly string[]) => {
      const browser = await launchChromium({
        executablePath: values.chromium,
        headed: values.headed,
        args,
      });
      cleanups.push(() => browser.close());
      const { context, page } = browser;
      const pageErrors: string[] = [];
      page.on("console", (m) => {
        if (m.type() === "error" || m.type() === "warning") {
          console.log(`e2e: page ${m.type()}: ${m.text()}`);
        }
      });
      page.on("pageerror", (e) => pageErrors.push(e.message));
      const read = async (): Promise<DemoStatus | null> => {
        const s = await page.evaluate(() =>
          (globalThis as { __demo?: DemoStatus }).__demo ?? null
        ) as DemoStatus | null;
        if (pageErrors.length > 0) fail(`uncaught error in the page: ${pageErrors.join("; ")}`);
        return s;
      };
      return { context, page, read };
    };

    // 1. Without --enable-unsafe-webgpu, Chromium on Linux gives no adapter: the page must say so.
    {
      console.log(
        "e2e: loading the page without WebGPU (Chromium will warn 'No available adapters')",
      );
      const { context, page, read } = await launch(
        CHROMIUM_ARGS.filter((a) => !/webgpu|vulkan|angle/i.test(a)),
      );
      await page.goto(server.url, { timeout: 60_000, waitUntil: "load" });
      const until = performance.now() + Math.min(60_000, left());
      let s = await read();
      while (s?.state === "starting" && performance.now() < until) {
        await new Promise((r) => setTimeout(r, 250));
        s = await read();
      }
      if (s?.state !== "no-webgpu") {
        fail(`without WebGPU the page should end in 'no-webgpu', got '${s?.state}': ${s?.message}`);
      }
      const notice = await page.textContent("#notice", { timeout: 10_000 }) ?? "";
      if (!/no WebGPU adapter/i.test(notice)) fail(`the no-WebGPU notice is unclear: ${notice}`);
      if (!(await page.isDisabled("#start", { timeout: 10_000 }))) {
        fail("the Train button is enabled without WebGPU");
      }
      console.log(`e2e: without WebGPU the page says: ${notice.slice(0, 100)}…`);
      await context.close();
    }

    // 2. With WebGPU on SwiftShader: train, then check the curves and the accuracy.
    const { page, read } = await launch(CHROMIUM_ARGS);
    const query = new URLSearchParams({
      model: values.model,
      steps: String(steps),
      autostart: "1",
    });
    await page.goto(`${server.url}?${query}`, { timeout: 60_000, waitUntil: "load" });
    console.log(`e2e: page loaded at ${secs()} s; training ${values.model} for ${steps} steps`);
    let status: DemoStatus | null = null;
    let lastLog = performance.now();
    while (true) {
      status = await read();
      if (status && ["done", "stopped", "error", "no-webgpu"].includes(status.state)) break;
      if (left() <= 1) {
        fail(
          `timed out after ${secs()} s in state '${status?.state}' at step ${status?.steps}/${steps}`,
        );
      }
      if (status && performance.now() - lastLog > 30_000) {
        lastLog = performance.now();
        const loss = status.losses.at(-1);
        console.log(
          `e2e: ${secs()} s: ${status.state}, step ${status.steps}/${steps}, loss ` +
            `${loss?.toFixed(3) ?? "-"}, test acc ${status.testAcc ?? "-"}, ` +
            `${status.meanExamplesPerSec.toFixed(0)} examples/s`,
        );
      }
      await new Promise((r) => setTimeout(r, Math.min(2000, left())));
    }
    console.log(`e2e: adapter ${status.adapter} ${JSON.stringify(status.adapterInfo)}`);
    // Screenshot whatever happened (an error page is worth seeing too).
    const shot = values.screenshot ?? `${await Deno.makeTempDir({ prefix: "e2e-" })}/demo.png`;
    await Deno.mkdir(dirname(resolve(shot)), { recursive: true });
    await page.screenshot({ path: shot, fullPage: true, timeout: 30_000 });
    console.log(`e2e: screenshot saved to ${shot}`);

    if (status.state !== "done") {
      fail(`the page ended in state '${status.state}': ${status.message}`);
    }
    const n = status.losses.length;
    if (n < 2) fail(`only ${n} loss values were recorded`);
    const k = Math.max(1, Math.floor(n / 5));
    const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
    const first = mean(status.losses.slice(0, k));
    const last = mean(status.losses.slice(-k));
    console.log(
      `e2e: loss ${first.toFixed(3)} (first fifth of the chunks) -> ${last.toFixed(3)} (last ` +
        `fifth); final test accuracy ${status.testAcc} on ${status.evals.at(-1)?.images} images; ` +
        `${status.steps} steps in ${status.elapsedSeconds.toFixed(1)} s, ` +
        `${status.meanExamplesPerSec.toFixed(0)} examples/s`,
    );
    if (!Number.isFinite(last) || !(last < 0.8 * first)) {
      fail(
        `the loss did not fall: ${first.toFixed(4)} at the start, ${last.toFixed(4)} at the end`,
      );
    }
    if (status.testAcc === null || !(status.testAcc > minAcc)) {
      fail(`test accuracy ${status.testAcc} does not beat ${minAcc} (chance is 0.1)`);
    }
    if (status.predictions.length === 0 || status.predictions.some((p) => p.pred < 0)) {
      fail("the prediction grid was not filled");
    }
    const right = status.predictions.filter((p) => p.pred === p.label).length;
    console.log(`e2e: prediction grid ${right}/${status.predictions.length} right`);

    // 3. Your own images: a folder of 3 classes (PNG, 12 each) chosen in the file input trains.
    const folder = await Deno.makeTempDir({ prefix: "modern-cnn-e2e-folder-" });
    cleanups.push(() => Deno.remove(folder, { recursive: true }));
    const shades: Record<string, number> = { dark: 30, mid: 128, light: 230 };
    for (const [name, v] of Object.entries(shades)) {
      await Deno.mkdir(`${folder}/shapes/${name}`, { recursive: true });
      for (let i = 0; i < 12; i++) {
        const png = encodePng({
          width: 20,
          height: 20,
          data: new Uint8Array(400).map((_, p) => v + ((p + i) % 7)),
          channels: 1,
        });
        await Deno.writeFile(`${folder}/shapes/${name}/${i}.png`, png);
      }
    }
    await page.setInputFiles("#folder", `${folder}/shapes`);
    const untilReady = performance.now() + Math.min(60_000, left());
    status = await read();
    while (!(status?.state === "ready" && /your folder/.test(status.message))) {
      if (performance.now() > untilReady || status?.state === "error") {
        fail(`the folder was not loaded: '${status?.state}': ${status?.message}`);
      }
      await new Promise((r) => setTimeout(r, 250));
      status = await read();
    }
    console.log(`e2e: ${status.message}`);
    if (!/3 classes \(dark, light, mid\), 30 training and 6 test images/.test(status.message)) {
      fail(`the folder's summary is wrong: ${status.message}`);
    }
    await page.fill("#batchSize", "9");
    await page.fill("#steps", "6");
    await page.fill("#evalEvery", "3");
    await page.click("#start");
    const untilDone = performance.now() + Math.min(120_000, left());
    do {
      await new Promise((r) => setTimeout(r, 500));
      status = await read();
      if (performance.now() > untilDone) fail(`training on the folder timed out: ${status?.state}`);
    } while (status && !["done", "stopped", "error"].includes(status.state));
    if (status?.state !== "done" || status.steps !== 6) {
      fail(`training on the folder ended in '${status?.state}': ${status?.message}`);
    }
    if (
      status.predictions.length !== 6 || status.predictions.some((p) => p.pred < 0 || p.pred > 2)
    ) {
      fail(`the folder's prediction grid is wrong: ${JSON.stringify(status.predictions)}`);
    }
    console.log(`e2e: trained 6 steps on the folder: ${status.message}`);
    console.log(`e2e: ok in ${secs()} s`);
    return 0;
  } catch (err) {
    const msg = err instanceof E2eFailure ? err.message : (err as Error).stack ?? String(err);
    console.error(`e2e: FAILED after ${secs()} s: ${msg}`);
    return 1;
  } finally {
    for (const f of cleanups.reverse()) await f().catch(() => {});
    await server?.close().catch(() => {});
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
