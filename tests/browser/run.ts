// `deno task test:browser [FILTER] [options]`: the test suite in Chromium's WebGPU (Dawn and Tint,
// on SwiftShader: a second WebGPU implementation beside Deno's wgpu on llvmpipe). Bundles
// tests/browser/page.ts (the shared cases: every kernel family's testOp suites and every model's
// PyTorch parity) with `deno bundle`, serves it and the fixtures on 127.0.0.1, drives headless
// Chromium (tests/browser/chromium.ts, as the e2e does) through the checks, and prints each
// failure with its message (the max error), a line per family, then `ok | N passed | N failed |
// N ignored (Ts)` as `deno task test` does. Exits 1 on any failure.
//
// A check that loses the device (a crash of Chromium's GPU process) or runs past --case-timeout
// fails, and a new Chromium goes on past it, so one crash cannot hide the other checks.
import { parseArgs } from "node:util";
import { type Chromium, DEFAULT_CHROMIUM, launchChromium } from "./chromium.ts";
import type { Report, ResultReport } from "./protocol.ts";
import { bundleForBrowser } from "../../cli/demo.ts";

const USAGE = `Usage: deno task test:browser [FILTER] [options]

  FILTER              run the checks whose "<family>: <name>" contains it (families: the test
                      files' names less _test.ts, e.g. conv2d_direct, gemm; and models)
  --chromium PATH     the browser (default ${DEFAULT_CHROMIUM})
  --case-timeout S    seconds one check may run (default 300)
  --headed            show the browser window
  --list              print the checks' outcomes one per line
  --page FILE         another page module to run (experiments; it reports as page.ts does)
`;

const HTML = `<!doctype html><meta charset="utf-8"><title>modern-cnn tests</title>
<script type="module" src="/page.js"></script>`;

const ROOT = new URL("../../", import.meta.url);
const path = (url: URL) => decodeURIComponent(url.pathname);

/** Serves the page, its bundle and tests/fixtures/*.json on 127.0.0.1 (a free port). */
function serve(dir: string): Deno.HttpServer<Deno.NetAddr> {
  const fixtures = path(new URL("tests/fixtures/", ROOT));
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const { pathname } = new URL(req.url);
    const file = pathname === "/page.js" || pathname === "/page.js.map"
      ? `${dir}${pathname}`
      : /^\/fixtures\/[\w.-]+\.json$/.test(pathname)
      ? `${fixtures}${pathname.slice("/fixtures/".length)}`
      : null;
    if (pathname === "/favicon.ico") return new Response(null, { status: 204 });
    if (pathname === "/") {
      return new Response(HTML, { headers: { "content-type": "text/html; charset=utf-8" } });
    }
    if (file === null) return new Response("not found", { status: 404 });
    try {
      const type = file.endsWith(".js") ? "text/javascript" : "application/json";
      return new Response(await Deno.readFile(file), {
        headers: { "content-type": `${type}; charset=utf-8`, "cache-control": "no-store" },
      });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
}

/** A queue of the page's reports, awaited one at a time. */
class Inbox {
  #items: Report[] = [];
  #wake: (() => void) | null = null;
  push(r: Report): void {
    this.#items.push(r);
    this.#wake?.();
  }
  /** The next report, or null after `ms` milliseconds without one. */
  async next(ms: number): Promise<Report | null> {
    if (this.#items.length === 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, ms);
      });
      clearTimeout(timer);
      this.#wake = null;
    }
    return this.#items.shift() ?? null;
  }
}

function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      chromium: { type: "string", default: DEFAULT_CHROMIUM },
      "case-timeout": { type: "string", default: "300" },
      headed: { type: "boolean", default: false },
      list: { type: "boolean", default: false },
      page: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const filter = positionals[0] ?? "";
  const caseTimeout = Number(values["case-timeout"]) * 1000;
  if (!(caseTimeout > 0)) {
    console.error(`test:browser: --case-timeout must be a positive number of seconds\n\n${USAGE}`);
    return 2;
  }
  const t0 = performance.now();
  const dir = await Deno.makeTempDir({ prefix: "modern-cnn-test-browser-" });
  let server: Deno.HttpServer<Deno.NetAddr> | null = null;
  let browser = null as Chromium | null;
  const results: ResultReport[] = [];
  try {
    await bundleForBrowser(
      `${dir}/page.js`,
      values.page ?? path(new URL("tests/browser/page.ts", ROOT)),
    );
    server = serve(dir);
    const url = `http://127.0.0.1:${server.addr.port}/`;
    console.log(`test:browser: bundled in ${secs(performance.now() - t0)}, serving ${url}`);
    let inbox = new Inbox();
    /** A fresh browser (and GPU process) reporting into a new inbox. */
    const relaunch = async () => {
      await browser?.close();
      browser = null;
      const b = await launchChromium({ executablePath: values.chromium, headed: values.headed });
      browser = b;
      const box = inbox = new Inbox();
      await b.page.exposeFunction("__report", (r: Report) => box.push(r));
      b.page.on("pageerror", (e) => box.push({ kind: "fatal", error: e.message }));
      b.page.on("console", (m) => {
        if (m.type() === "error" || values.page) console.log(`test:browser: page: ${m.text()}`);
      });
      b.page.on("crash", () => box.push({ kind: "fatal", error: "the page crashed" }));
      return b.page;
    };
    let page = await relaunch();
    let start = 0, total = -1;
    const families = new Map<
      string,
      { passed: number; failed: number; ignored: number; ms: number }
    >();
    const record = (r: ResultReport) => {
      results.push(r);
      const f = families.get(r.family) ?? { passed: 0, failed: 0, ignored: 0, ms: 0 };
      f[r.status]++;
      f.ms += r.ms;
      families.set(r.family, f);
      if (values.list) console.log(`${r.status} ${secs(r.ms)} ${r.family}: ${r.name}`);
      if (r.status === "failed") {
        console.log(
          `FAILED ${r.family}: ${r.name} (${secs(r.ms)})\n  ${r.error?.replaceAll("\n", "\n  ")}`,
        );
      }
    };
    let fresh = true;
    pages: while (total < 0) {
      // After a check that hung, lost the device or crashed the page: a new browser, since
      // Chromium's GPU process may still be busy with it (a reload then never loads).
      if (!fresh) page = await relaunch();
      fresh = false;
      const query = new URLSearchParams({ filter, start: String(start) });
      await page.goto(`${url}?${query}`, { waitUntil: "load", timeout: 120_000 });
      let running: { index: number; family: string; name: string; since: number } | null = null;
      while (true) {
        const r = await inbox.next(
          running ? caseTimeout - (performance.now() - running.since) : 600_000,
        );
        if (r === null) {
          if (!running) throw new Error("the page stopped reporting (10 minutes without a word)");
          record({
            kind: "result",
            index: running.index,
            family: running.family,
            name: running.name,
            status: "failed",
            ms: performance.now() - running.since,
            error: `timed out after ${caseTimeout / 1000} s (--case-timeout)`,
          });
          start = running.index + 1;
          continue pages;
        }
        if (r.kind === "adapter") {
          if (start === 0) {
            console.log(`test:browser: adapter ${r.description}, shader-f16 ${r.f16}`);
          }
        } else if (r.kind === "start") {
          running = { index: r.index, family: r.family, name: r.name, since: performance.now() };
        } else if (r.kind === "result") {
          running = null;
          record(r);
        } else if (r.kind === "lost") {
          console.log(`test:browser: the device was lost (${r.reason}); restarting Chromium`);
          start = r.index + 1;
          continue pages;
        } else if (r.kind === "fatal") {
          if (running) {
            record({
              kind: "result",
              index: running.index,
              family: running.family,
              name: running.name,
              status: "failed",
              ms: performance.now() - running.since,
              error: r.error,
            });
            start = running.index + 1;
            continue pages;
          }
          throw new Error(`the page failed: ${r.error}`);
        } else if (r.kind === "done") {
          total = r.total;
          break;
        }
      }
    }
    for (const [family, f] of families) {
      console.log(
        `${family}: ${f.passed} passed, ${f.failed} failed` +
          `${f.ignored ? `, ${f.ignored} ignored` : ""} (${secs(f.ms)})`,
      );
    }
  } catch (e) {
    console.error(`test:browser: ${(e as Error).message}`);
    results.push({
      kind: "result",
      index: -1,
      family: "-",
      name: "runner",
      status: "failed",
      ms: 0,
    });
  } finally {
    await browser?.close();
    await server?.shutdown();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  const count = (s: ResultReport["status"]) => results.filter((r) => r.status === s).length;
  const passed = count("passed"), failed = count("failed"), ignored = count("ignored");
  const ok = failed === 0 && passed > 0;
  console.log(
    `${ok ? "ok" : "FAILED"} | ${passed} passed | ${failed} failed` +
      `${ignored ? ` | ${ignored} ignored` : ""} (${
        ((performance.now() - t0) / 1000).toFixed(0)
      }s)`,
  );
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
