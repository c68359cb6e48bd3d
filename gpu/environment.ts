/**
 * The process environment Deno's WebGPU reads when it first enumerates adapters
 * ({@linkcode prepareDenoEnvironment}). A leaf of the runtime: it imports nothing.
 *
 * @module
 */

/** The variable that picks the backends of Deno's WebGPU. */
export const BACKEND_VAR = "DENO_WEBGPU_BACKEND";
const RUNTIME_DIR_VAR = "XDG_RUNTIME_DIR";
/** Unix systems whose GPU stack is Mesa/libglvnd's (not macOS, not Windows). */
const MESA_OSES = ["linux", "freebsd", "netbsd", "openbsd"];
let environmentPrepared = false;
let vulkanOnly = false;

/**
 * Whether {@linkcode prepareDenoEnvironment} restricted Deno's WebGPU to Vulkan (it set
 * {@linkcode BACKEND_VAR}, which the user had left unset).
 *
 * @example
 * ```ts
 * import { restrictedToVulkan } from "./environment.ts";
 * console.log(restrictedToVulkan()); // false before the first adapter request
 * ```
 */
export function restrictedToVulkan(): boolean {
  return vulkanOnly;
}

/**
 * Deno only, once, before the first adapter request (when Deno creates its wgpu instance and
 * enumerates the adapters, reading these variables): sets two variables inside this process, and
 * only where they are unset, so a user's own settings always win.
 *
 * - `DENO_WEBGPU_BACKEND=vulkan`. Unset, Deno's wgpu starts every backend, OpenGL's included,
 *   which initializes EGL (libglvnd) and makes a context current on the thread running
 *   JavaScript; nothing ever calls `eglReleaseThread`. Where that thread is not the main one
 *   (`deno test` runs each file's isolate on a worker thread; so do Web Workers), the thread's
 *   exit frees libglvnd's per-thread state while the main thread's `exit()` runs libEGL's
 *   destructor, which frees the same state: a double free that glibc aborts on after every test
 *   passed (exit 134, "double free or corruption (fasttop)", "corrupted size vs. prev_size in
 *   fastbins"; cores show exactly these two threads). Where Vulkan sees the same device, wgpu
 *   picks Vulkan's adapter anyway, so this only drops OpenGL as a fallback.
 * - `XDG_RUNTIME_DIR`, when unset (or not absolute): Mesa's Vulkan device-select layer asks
 *   libwayland for the compositor's default GPU while adapters are enumerated, and libwayland
 *   prints `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` twice. A private
 *   per-user folder (mode 0700, as the XDG spec requires) is a harmless value: no socket is found
 *   there and the layer goes on silently, as it does on any machine without a display.
 *
 * Checks permissions with `Deno.permissions.querySync` first, so it never prompts, and gives up
 * silently on anything unexpected: GPU acquisition must not fail for it.
 *
 * @example
 * ```ts
 * import { prepareDenoEnvironment } from "./environment.ts";
 * prepareDenoEnvironment(); // before the first navigator.gpu.requestAdapter()
 * ```
 */
export function prepareDenoEnvironment(): void {
  if (environmentPrepared) return;
  environmentPrepared = true;
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (!deno?.permissions?.querySync || !MESA_OSES.includes(deno.build.os)) return;
  const granted = (desc: Deno.PermissionDescriptor) =>
    deno.permissions.querySync(desc).state === "granted";
  try {
    if (
      granted({ name: "env", variable: BACKEND_VAR }) && deno.env.get(BACKEND_VAR) === undefined
    ) {
      deno.env.set(BACKEND_VAR, "vulkan");
      vulkanOnly = true;
    }
  } catch {
    // leave the backends to Deno
  }
  try {
    if (!granted({ name: "env", variable: RUNTIME_DIR_VAR })) return;
    if (deno.env.get(RUNTIME_DIR_VAR)?.startsWith("/")) return;
    const dir = privateRuntimeDir(deno, granted);
    if (dir) deno.env.set(RUNTIME_DIR_VAR, dir);
  } catch {
    // the warning is cosmetic
  }
}

/**
 * `$TMPDIR/modern-cnn-runtime-<uid>` (or under `/tmp`), created with mode 0700; undefined when
 * it cannot be made or is not private (a symlink, another owner, open to others).
 */
function privateRuntimeDir(
  deno: typeof Deno,
  granted: (desc: Deno.PermissionDescriptor) => boolean,
): string | undefined {
  if (!granted({ name: "sys", kind: "uid" })) return undefined;
  const uid = deno.uid();
  if (uid === null) return undefined;
  const tmp = granted({ name: "env", variable: "TMPDIR" }) ? deno.env.get("TMPDIR") : undefined;
  const base = tmp?.startsWith("/") ? tmp.replace(/\/+$/, "") : "/tmp"; // "" for TMPDIR=/
  const dir = `${base}/modern-cnn-runtime-${uid}`;
  if (!granted({ name: "write", path: dir }) || !granted({ name: "read", path: dir })) {
    return undefined;
  }
  try {
    deno.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if (!(err instanceof deno.errors.AlreadyExists)) return undefined;
  }
  const info = deno.lstatSync(dir);
  if (!info.isDirectory || info.uid !== uid || ((info.mode ?? 0) & 0o077) !== 0) return undefined;
  return dir;
}
