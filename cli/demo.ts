// `deno task demo`: bundles the browser demo (web/main.ts) with `deno bundle` and serves it, with
// Fashion-MNIST's four IDX files, on 127.0.0.1.
import { parseFlags } from "./common.ts";
import { locateDataset, type Split } from "../data/locate.ts";
import { CliError, runCommand, UsageError } from "./_run.ts";
import { decimal } from "./checkpoint.ts";

const USAGE = `Usage: deno task demo [--port N] [--host ADDRESS] [--data-dir FOLDER]

Bundles the browser demo (web/main.ts → main.js) and serves it with Fashion-MNIST, then open the
printed URL in a browser with WebGPU (Chrome/Edge 113+, or Chromium with --enable-unsafe-webgpu).

Options:
  --port N            port to listen on (default 8000; 0 picks a free one)
  --host ADDRESS      address to listen on (default 127.0.0.1)
  --data-dir FOLDER   folder with Fashion-MNIST's IDX files (.gz or plain); by default they are
                      found as by \`deno task train\` ($MODERN_CNN_DATA, the cache,
                      /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist,
                      else a download into the cache)
  -h, --help          this help
`;

/** Options of {@linkcode startDemoServer}. */
export interface DemoServerOptions {
  /** Port; default 8000, 0 for any free port. */
  readonly port?: number;
  /** Address; default `127.0.0.1`. */
  readonly hostname?: string;
  /** A folder with Fashion-MNIST's files, looked at first. */
  readonly dataDir?: string;
  /** Download Fashion-MNIST into the cache when no folder has it (as `deno task train`); default true. */
  readonly download?: boolean;
  /** Logs each request's errors to stderr; default true. */
  readonly log?: boolean;
}

/** A running demo server. */
export interface DemoServer {
  /** The page's URL, e.g. `http://127.0.0.1:8000/`. */
  readonly url: string;
  /** The port listened on. */
  readonly port: number;
  /** The data files served, by URL path. */
  readonly files: Readonly<Record<string, string>>;
  /** Seconds the bundling took. */
  readonly bundleSeconds: number;
  /** Stops the server and removes the bundle. */
  close(): Promise<void>;
}

const WEB_DIR = new URL("../web/", import.meta.url);

function path(url: URL): string {
  return decodeURIComponent(url.pathname);
}

/**
 * Bundles `entry` (a TypeScript module for the browser, with the repository's import map) into
 * `outFile` with `deno bundle` (ESM, linked source map). Shared by the demo and
 * `deno task test:browser`.
 */
export async function bundleForBrowser(outFile: string, entry: string): Promise<void> {
  const config = path(new URL("../deno.json", import.meta.url));
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--config",
      config,
      "--platform",
      "browser",
      "--format",
      "esm",
      "--sourcemap",
      "linked",
      "-o",
      outFile,
      entry,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    throw new Error(`deno bundle ${entry} failed (exit ${out.code}):\n${text}`);
  }
}

/**
 * Bundles `web/main.ts` for the browser into `outFile` with `deno bundle`; throws with its
 * output on failure.
 *
 * @example
 * ```ts
 * import { bundleDemo } from "./demo.ts";
 * await bundleDemo("/tmp/main.js");
 * ```
 */
export async function bundleDemo(outFile: string): Promise<void> {
  await bundleForBrowser(outFile, path(new URL("main.ts", WEB_DIR)));
}

/** The data files' URL paths (see `web/session.ts`), mapped to the files found on disk. */
async function findData(options: DemoServerOptions): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const split of ["train", "test"] as Split[]) {
    const found = await locateDataset("fashion-mnist", {
      split,
      dataDir: options.dataDir,
      npm: false,
      download: options.download ?? true,
    });
    const [images, labels] = found.paths;
    files[`/data/${split}-images`] = images;
    files[`/data/${split}-labels`] = labels;
  }
  return files;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json; charset=utf-8",
};

async function fileResponse(file: string, type: string, head: boolean): Promise<Response> {
  const info = await Deno.stat(file);
  const headers = {
    "content-type": type,
    "content-length": String(info.size),
    "cache-control": "no-store",
  };
  if (head) return new Response(null, { headers });
  const f = await Deno.open(file, { read: true });
  return new Response(f.readable, { headers });
}

/**
 * Bundles the demo and serves it: `/` (web/index.html), `/main.js` (the bundle) and
 * `/data/{train,test}-{images,labels}` (Fashion-MNIST's IDX files as found on disk, gzipped or
 * plain, sent as they are: the page inflates them with `DecompressionStream`).
 *
 * @example
 * ```ts
 * import { startDemoServer } from "./demo.ts";
 * const server = await startDemoServer({ port: 0 });
 * console.log(server.url);
 * await server.close();
 * ```
 */
export async function startDemoServer(options: DemoServerOptions = {}): Promise<DemoServer> {
  const files = await findData(options);
  const outDir = await Deno.makeTempDir({ prefix: "modern-cnn-demo-" });
  const t0 = performance.now();
  try {
    await bundleDemo(`${outDir}/main.js`);
  } catch (err) {
    await Deno.remove(outDir, { recursive: true });
    throw err;
  }
  const bundleSeconds = (performance.now() - t0) / 1000;
  const routes: Record<string, [string, string]> = {
    "/": [path(new URL("index.html", WEB_DIR)), TYPES[".html"]],
    "/index.html": [path(new URL("index.html", WEB_DIR)), TYPES[".html"]],
    "/main.js": [`${outDir}/main.js`, TYPES[".js"]],
    "/main.js.map": [`${outDir}/main.js.map`, TYPES[".map"]],
  };
  for (const [p, file] of Object.entries(files)) routes[p] = [file, "application/octet-stream"];
  const log = options.log ?? true;
  const hostname = options.hostname ?? "127.0.0.1";
  const { promise: listening, resolve } = Promise.withResolvers<number>();
  const server = Deno.serve({
    port: options.port ?? 8000,
    hostname,
    onListen: ({ port }) => resolve(port),
  }, async (req) => {
    const url = new URL(req.url);
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed", { status: 405 });
    }
    if (url.pathname === "/favicon.ico") return new Response(null, { status: 204 });
    const route = routes[url.pathname];
    if (!route) return new Response(`not found: ${url.pathname}`, { status: 404 });
    try {
      return await fileResponse(route[0], route[1], req.method === "HEAD");
    } catch (err) {
      if (log) console.error(`demo: ${url.pathname}: ${(err as Error).message}`);
      return new Response(`cannot read ${url.pathname}`, { status: 500 });
    }
  });
  const port = await listening;
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  return {
    url: `http://${host}:${port}/`,
    port,
    files,
    bundleSeconds,
    async close() {
      await server.shutdown();
      await Deno.remove(outDir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * The command: parses flags, starts the server and runs until interrupted. Returns the exit
 * code (2 for bad usage).
 *
 * @example
 * ```ts
 * import { main } from "./demo.ts";
 * await main(["--help"]); // prints the usage, returns 0
 * ```
 */
export async function main(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, {
    port: { type: "string" },
    host: { type: "string" },
    "data-dir": { type: "string" },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const port = values.port === undefined ? 8000 : decimal(values.port) ?? NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new UsageError(`--port must be an integer in 0..65535, got '${values.port}'`);
  }
  let server: DemoServer;
  try {
    server = await startDemoServer({ port, hostname: values.host, dataDir: values["data-dir"] });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse || err instanceof Deno.errors.PermissionDenied) {
      throw new CliError(`cannot serve on port ${port}: ${(err as Error).message.split(":")[0]}`);
    }
    throw err;
  }
  console.log(`demo: bundled web/main.ts in ${server.bundleSeconds.toFixed(1)} s`);
  for (const [p, f] of Object.entries(server.files)) console.log(`demo: ${p} -> ${f}`);
  console.log(`demo: open ${server.url} (Ctrl-C to stop)`);
  const { promise, resolve } = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", () => resolve());
  await promise;
  await server.close();
  return 0;
}

// Ctrl-C is how the demo stops: it closes the server itself (no "interrupted" exit).
if (import.meta.main) await runCommand("demo", main, { signals: false });
