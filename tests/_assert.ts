/**
 * The assertions the shared test modules use (`tests/_op.ts`, `tests/harness.ts`,
 * `tests/ops/*.ts`), without `node:assert`: those modules also run in a browser
 * (`deno task test:browser` bundles them for Chromium, where `node:` modules do not exist). The
 * same semantics as `node:assert/strict`'s `equal` (`Object.is`), `ok` and `deepEqual` (strict
 * deep equality of primitives, arrays, typed arrays and plain objects), with shorter messages.
 *
 * @module
 */

/** A failed assertion (what `node:assert` throws too: tests report both alike). */
export class AssertionError extends Error {
  /**
   * An error with `options.message`.
   *
   * @example
   * ```ts
   * import { AssertionError } from "./_assert.ts";
   * new AssertionError({ message: "x differs" }).name; // "AssertionError"
   * ```
   */
  constructor(options: { readonly message: string }) {
    super(options.message);
    this.name = "AssertionError";
  }
}

function show(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return `${v}n`;
  if (ArrayBuffer.isView(v)) return `${v.constructor.name} [${Array.from(v as never).join(", ")}]`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function fail(message: string | undefined, detail: string): never {
  throw new AssertionError({ message: message ? `${message}\n${detail}` : detail });
}

/** Where `a` and `b` first differ (a path like `[2].kind`), or null when deeply equal. */
function difference(a: unknown, b: unknown, path: string): string | null {
  if (Object.is(a, b)) return null;
  const here = `${path || "value"}: ${show(a)} !== ${show(b)}`;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return here;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return `${here} (types differ)`;
  if (ArrayBuffer.isView(a)) {
    const x = a as unknown as ArrayLike<unknown>, y = b as unknown as ArrayLike<unknown>;
    if (x.length !== y.length) return `${path || "value"}: length ${x.length} !== ${y.length}`;
    for (let i = 0; i < x.length; i++) {
      if (!Object.is(x[i], y[i])) return `${path}[${i}]: ${show(x[i])} !== ${show(y[i])}`;
    }
    return null;
  }
  if (Array.isArray(a)) {
    const y = b as unknown[];
    if (a.length !== y.length) return `${path || "value"}: length ${a.length} !== ${y.length}`;
    for (let i = 0; i < a.length; i++) {
      const d = difference(a[i], y[i], `${path}[${i}]`);
      if (d) return d;
    }
    return null;
  }
  if (a instanceof Map || a instanceof Set || a instanceof Date || a instanceof RegExp) {
    return show(a) === show(b) && String(a) === String(b) ? null : here;
  }
  const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
  if (ka.join() !== kb.join()) return `${path || "value"}: keys [${ka}] !== [${kb}]`;
  for (const k of ka) {
    const d = difference(
      (a as Record<string, unknown>)[k],
      (b as Record<string, unknown>)[k],
      `${path}.${k}`,
    );
    if (d) return d;
  }
  return null;
}

function ok(value: unknown, message?: string): asserts value {
  if (!value) fail(message, `expected a truthy value, got ${show(value)}`);
}

function equal<T>(actual: unknown, expected: T, message?: string): asserts actual is T {
  if (!Object.is(actual, expected)) fail(message, `${show(actual)} !== ${show(expected)}`);
}

function deepEqual<T>(actual: unknown, expected: T, message?: string): asserts actual is T {
  const d = difference(actual, expected, "");
  if (d !== null) fail(message, `not deeply equal: ${d}`);
}

/** The assertions of {@linkcode assert}: the subset of `node:assert/strict` the tests use. */
export interface Assert {
  /** Throws unless `value` is truthy. */
  (value: unknown, message?: string): asserts value;
  /** Throws unless `value` is truthy. */
  ok(value: unknown, message?: string): asserts value;
  /** Throws unless `Object.is(actual, expected)`. */
  equal<T>(actual: unknown, expected: T, message?: string): asserts actual is T;
  /** Throws unless deeply and strictly equal (prototypes, keys, `Object.is` leaves). */
  deepEqual<T>(actual: unknown, expected: T, message?: string): asserts actual is T;
}

/**
 * `node:assert/strict`'s `assert`, `ok`, `equal` and `deepEqual`, throwing
 * {@linkcode AssertionError}.
 *
 * @example
 * ```ts
 * import assert from "./_assert.ts";
 * assert.equal(2, 2);
 * assert.deepEqual({ a: [1, 2] }, { a: [1, 2] });
 * assert.ok(true);
 * ```
 */
const assert: Assert = Object.assign(
  (value: unknown, message?: string): asserts value => ok(value, message),
  { ok, equal, deepEqual },
) as Assert;

export default assert;
