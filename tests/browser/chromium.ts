// Headless Chromium with WebGPU, as the browser tests drive it (tests/e2e/e2e.ts, the demo;
// tests/browser/run.ts, the test suite): Debian's chromium through playwright-core, WebGPU on
// SwiftShader's Vulkan (a CPU implementation: no GPU needed), its own temporary profile.
import { type BrowserContext, chromium, type Page } from "playwright-core";

/** Chromium's flags: WebGPU on SwiftShader's Vulkan, quiet and sandbox-free (containers). */
export const CHROMIUM_ARGS: readonly string[] = [
  "--enable-unsafe-webgpu",
  "--use-angle=swiftshader",
  "--enable-features=Vulkan",
  "--use-vulkan=swiftshader",
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** Debian's Chromium (`apt-get install -y chromium`). */
export const DEFAULT_CHROMIUM = "/usr/bin/chromium";

/** Options of {@linkcode launchChromium}. */
export interface LaunchOptions {
  /** The browser (default {@linkcode DEFAULT_CHROMIUM}). */
  readonly executablePath?: string;
  /** Show the window (default headless). */
  readonly headed?: boolean;
  /** Flags (default {@linkcode CHROMIUM_ARGS}). */
  readonly args?: readonly string[];
  /** The page's size (default 1280 x 1000). */
  readonly viewport?: { readonly width: number; readonly height: number };
}

/** A running Chromium and its first page. */
export interface Chromium {
  /** The browser's context. */
  readonly context: BrowserContext;
  /** Its page. */
  readonly page: Page;
  /** Closes the browser and removes its profile. */
  close(): Promise<void>;
}

/**
 * Starts a fresh Chromium (its own temporary profile) with `options.args`, and gives its page.
 * Throws a one-line error when the browser is not installed.
 *
 * @example
 * ```ts ignore
 * const browser = await launchChromium();
 * await browser.page.goto("http://127.0.0.1:8000/");
 * await browser.close();
 * ```
 */
export async function launchChromium(options: LaunchOptions = {}): Promise<Chromium> {
  const executablePath = options.executablePath ?? DEFAULT_CHROMIUM;
  try {
    await Deno.stat(executablePath);
  } catch {
    throw new Error(
      `${executablePath} not found: install Debian's Chromium (apt-get install -y chromium)`,
    );
  }
  const userDataDir = await Deno.makeTempDir({ prefix: "modern-cnn-chromium-" });
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath,
      headless: !options.headed,
      args: [...(options.args ?? CHROMIUM_ARGS)],
      viewport: { ...(options.viewport ?? { width: 1280, height: 1000 }) },
      timeout: 60_000,
    });
  } catch (e) {
    await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
    throw e;
  }
  const page = context.pages()[0] ?? await context.newPage();
  const close = async () => {
    await context.close().catch(() => {});
    await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
  };
  return { context, page, close };
}
