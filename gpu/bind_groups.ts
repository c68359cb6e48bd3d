/**
 * Bind groups that outlive a dispatch. Creating one costs ~40 µs of host time on Deno, as much
 * as the rest of a dispatch's recording; a training step's dispatches bind the same buffer ranges
 * every step (buffers come back from the pool), so the {@linkcode Recorder} keeps them in a
 * {@linkcode BindGroupCache} keyed by the bind group layout and the exact (buffer, offset, size)
 * of every storage binding.
 *
 * The `Params` uniform changes with every dispatch, so it takes a dynamic offset into the shared
 * uniform buffer: its layout is explicit ({@linkcode uniformLayoutEntries}, read from the WGSL's
 * declarations), and the bind group does not depend on where this dispatch's params were packed.
 * A kernel whose declarations cannot be read that way keeps the automatic layout, and its bind
 * groups key on the uniform's offset too (a step that repeats still packs its params at the same
 * offsets, since the uniform buffer restarts at every submit).
 *
 * @module
 */

/** One `@group(0) @binding(i) var<...> name` declaration. */
const DECLARATION =
  /@group\(\s*(\d+)\s*\)\s*@binding\(\s*(\d+)\s*\)\s*var\s*<\s*(uniform|storage)\s*(?:,\s*(read_write|read)\s*)?>\s*([A-Za-z_]\w*)/g;

/**
 * The explicit bind group layout of a kernel whose `Params` uniform is binding 0 (with a dynamic
 * offset) and whose other bindings are storage buffers 1, 2, ..., read from its WGSL; null for
 * anything else (no uniform, other groups, a declaration not in that form or never used, so not
 * in the automatic layout), which keeps the automatic layout.
 *
 * @example
 * ```ts
 * import { uniformLayoutEntries } from "./bind_groups.ts";
 * const entries = uniformLayoutEntries(`
 *   struct Params { n: u32 }
 *   @group(0) @binding(0) var<uniform> p: Params;
 *   @group(0) @binding(1) var<storage, read_write> y: array<f32>;
 *   @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
 *     if (g.x < p.n) { y[g.x] = 0.0; }
 *   }`);
 * console.log(entries?.map((e) => e.buffer?.type)); // ["uniform", "storage"]
 * ```
 */
export function uniformLayoutEntries(code: string): GPUBindGroupLayoutEntry[] | null {
  const text = code.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*/g, "");
  const declared = text.match(/@binding\s*\(/g)?.length ?? 0;
  const entries: GPUBindGroupLayoutEntry[] = [];
  for (const m of text.matchAll(DECLARATION)) {
    const [, group, binding, space, access, name] = m;
    if (group !== "0" || Number(binding) !== entries.length) return null;
    // A declaration the entry point never uses is left out of the automatic layout.
    if ((text.match(new RegExp(`\\b${name}\\b`, "g"))?.length ?? 0) < 2) return null;
    const uniform = space === "uniform";
    if (uniform !== (entries.length === 0)) return null;
    entries.push({
      binding: entries.length,
      visibility: 4, // GPUShaderStage.COMPUTE
      buffer: uniform
        ? { type: "uniform", hasDynamicOffset: true }
        : { type: access === "read_write" ? "storage" : "read-only-storage" },
    });
  }
  return entries.length > 0 && entries.length === declared ? entries : null;
}

/** A cached bind group and the buffers it binds (the uniform buffer aside). */
interface Cached {
  readonly group: GPUBindGroup;
  readonly buffers: readonly GPUBuffer[];
}

/**
 * Bind groups by key (see {@linkcode BindGroupCache.key}), least recently used first out beyond
 * `capacity`, and indexed by buffer so that a destroyed buffer's groups are dropped at once.
 *
 * @example
 * ```ts
 * import { BindGroupCache } from "./bind_groups.ts";
 * const cache = new BindGroupCache(1024);
 * console.log(cache.size); // 0
 * ```
 */
export class BindGroupCache {
  /** The most groups kept. */
  readonly capacity: number;
  #groups = new Map<string, Cached>();
  #byBuffer = new Map<GPUBuffer, Set<string>>();
  #ids = new WeakMap<GPUBuffer, number>();
  #nextId = 0;

  /**
   * An empty cache of at most `capacity` groups.
   *
   * @example
   * ```ts
   * import { BindGroupCache } from "./bind_groups.ts";
   * new BindGroupCache(16384);
   * ```
   */
  constructor(capacity: number) {
    this.capacity = capacity;
  }

  /**
   * Groups held.
   *
   * @example
   * ```ts
   * import { BindGroupCache } from "./bind_groups.ts";
   * console.log(new BindGroupCache(8).size); // 0
   * ```
   */
  get size(): number {
    return this.#groups.size;
  }

  /**
   * The key of a bind group: `prefix` (the layout, and the uniform's range where it is not
   * dynamic) and each storage binding's buffer identity, offset and size.
   *
   * @example
   * ```ts
   * import { BindGroupCache } from "./bind_groups.ts";
   * const device = await (await navigator.gpu.requestAdapter())!.requestDevice();
   * const buffer = device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE });
   * new BindGroupCache(8).key("L0", [{ buffer, offset: 0, size: 64 }]); // "L0|0:0:64"
   * ```
   */
  key(prefix: string, storage: readonly GPUBufferBinding[]): string {
    let key = prefix;
    for (const r of storage) {
      let id = this.#ids.get(r.buffer);
      if (id === undefined) this.#ids.set(r.buffer, id = this.#nextId++);
      key += `|${id}:${r.offset ?? 0}:${r.size ?? "w"}`;
    }
    return key;
  }

  /**
   * The group cached under `key` (now the most recently used), or undefined.
   *
   * @example
   * ```ts
   * import { BindGroupCache } from "./bind_groups.ts";
   * console.log(new BindGroupCache(8).get("L0|0:0:64")); // undefined
   * ```
   */
  get(key: string): GPUBindGroup | undefined {
    const hit = this.#groups.get(key);
    if (hit === undefined) return undefined;
    this.#groups.delete(key);
    this.#groups.set(key, hit);
    return hit.group;
  }

  /**
   * Caches `group`, which binds `storage`, under `key`; drops the least recently used group
   * beyond the capacity.
   *
   * @example
   * ```ts
   * import { BindGroupCache } from "./bind_groups.ts";
   * const device = await (await navigator.gpu.requestAdapter())!.requestDevice();
   * const buffer = device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE });
   * const layout = device.createBindGroupLayout({
   *   entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "storage" } }],
   * });
   * const group = device.createBindGroup({ layout, entries: [{ binding: 0, resource: { buffer } }] });
   * const cache = new BindGroupCache(8);
   * cache.set(cache.key("L0", [{ buffer }]), group, [{ buffer }]);
   * ```
   */
  set(key: string, group: GPUBindGroup, storage: readonly GPUBufferBinding[]): void {
    const buffers = [...new Set(storage.map((r) => r.buffer))];
    this.#groups.set(key, { group, buffers });
    for (const b of buffers) {
      let keys = this.#byBuffer.get(b);
      if (!keys) this.#byBuffer.set(b, keys = new Set());
      keys.add(key);
    }
    if (this.#groups.size > this.capacity) this.#drop(this.#groups.keys().next().value!);
  }

  /**
   * Drops every group that binds `buffer` (call it before the buffer is destroyed).
   *
   * @example
   * ```ts
   * import { BindGroupCache } from "./bind_groups.ts";
   * const device = await (await navigator.gpu.requestAdapter())!.requestDevice();
   * const buffer = device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE });
   * new BindGroupCache(8).forget(buffer);
   * buffer.destroy();
   * ```
   */
  forget(buffer: GPUBuffer): void {
    const keys = this.#byBuffer.get(buffer);
    if (!keys) return;
    for (const key of [...keys]) this.#drop(key);
  }

  /**
   * Drops every group.
   *
   * @example
   * ```ts
   * import { BindGroupCache } from "./bind_groups.ts";
   * new BindGroupCache(8).clear();
   * ```
   */
  clear(): void {
    this.#groups.clear();
    this.#byBuffer.clear();
  }

  #drop(key: string): void {
    const cached = this.#groups.get(key);
    if (!cached) return;
    this.#groups.delete(key);
    for (const b of cached.buffers) {
      const keys = this.#byBuffer.get(b);
      keys?.delete(key);
      if (keys?.size === 0) this.#byBuffer.delete(b);
    }
  }
}
