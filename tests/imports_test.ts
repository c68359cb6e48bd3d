// No import cycle in kernels/ and gpu/. The graph is built from the source files: every static
// `import ... from "./x.ts"` / `export ... from "./x.ts"` between files of those folders.
//
// The rule: a cycle of value imports fails (modules that import each other at run time are
// evaluated in an order that depends on who is imported first). An `import type` / `export type`
// statement, or one whose every binding is `type X`, is erased when TypeScript is compiled and
// loads nothing, but a loop of them still ties modules together for a reader, so kernels/ and
// gpu/ are held to more: no cycle even counting type-only imports (shared records live in leaf
// modules such as kernels/_binding.ts, _types.ts and _geometry.ts, which import no kernel; the
// types `Tensor` and `Gpu`, which name each other, are declared together in gpu/tensor.ts, and
// the runtime that implements `Gpu` imports them).
import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;

/** One static import or re-export of a relative module. */
export interface ImportEdge {
  /** The imported file, absolute. */
  readonly to: string;
  /** Whether the statement is erased at run time (type-only). */
  readonly typeOnly: boolean;
}

const STATEMENT = /^[ \t]*(import|export)\s+(type\s+)?([^;]*?)\s*from\s*["']([^"']+)["']/gm;
const SIDE_EFFECT = /^[ \t]*import\s*["']([^"']+)["']/gm;

/** The relative imports and re-exports of one source text (`file` is its absolute path). */
export function importsOf(file: string, source: string): ImportEdge[] {
  const out: ImportEdge[] = [];
  for (const m of source.matchAll(STATEMENT)) {
    const [, , typeKw, clause, spec] = m;
    if (!spec.startsWith(".")) continue;
    // `{ type A, type B }`: every binding is a type; `{}` or `* as x` or a default: a value.
    const names = clause.match(/^\{([\s\S]*)\}$/)?.[1].split(",").map((s) => s.trim())
      .filter((s) => s !== "");
    const allTypes = names !== undefined && names.length > 0 &&
      names.every((n) => n.startsWith("type "));
    out.push({ to: join(dirname(file), spec), typeOnly: typeKw !== undefined || allTypes });
  }
  for (const m of source.matchAll(SIDE_EFFECT)) {
    if (m[1].startsWith(".")) out.push({ to: join(dirname(file), m[1]), typeOnly: false });
  }
  return out;
}

/** The .ts files of `dir` and its subfolders (`kernels/conv2d/`, ...), absolute. */
function tsFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)].flatMap((e) =>
    e.isDirectory
      ? tsFiles(join(dir, e.name))
      : e.isFile && e.name.endsWith(".ts")
      ? [join(dir, e.name)]
      : []
  );
}

/**
 * The import graph of the .ts files of `dirs` (absolute paths) and their subfolders: value
 * imports only, or type-only ones too with `withTypes`. Imports of files outside `dirs` are left
 * out.
 */
export function moduleGraph(dirs: readonly string[], withTypes = false): Map<string, string[]> {
  const files = dirs.flatMap(tsFiles).sort();
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const edges = importsOf(file, Deno.readTextFileSync(file))
      .filter((e) => (withTypes || !e.typeOnly) && files.includes(e.to)).map((e) => e.to);
    graph.set(file, [...new Set(edges)]);
  }
  return graph;
}

/** One cycle of a graph, and every module of its strongly connected component. */
export interface Cycle {
  /** A shortest cycle, `[a, b, a]`. */
  readonly cycle: string[];
  /** The modules that all reach each other (sorted). */
  readonly component: string[];
}

/** The cycles of a graph: one per strongly connected component (Tarjan). */
export function cycles(graph: Map<string, string[]>): Cycle[] {
  let next = 0;
  const index = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], onStack = new Set<string>();
  const found: Cycle[] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc = new Set<string>();
    for (let w = stack.pop()!;; w = stack.pop()!) {
      onStack.delete(w);
      scc.add(w);
      if (w === v) break;
    }
    if (scc.size > 1 || (graph.get(v) ?? []).includes(v)) {
      found.push({ cycle: cycleIn(graph, scc, v), component: [...scc].sort() });
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return found;
}

/** A shortest cycle through `start` inside the component `scc` (breadth first). */
function cycleIn(graph: Map<string, string[]>, scc: Set<string>, start: string): string[] {
  const prev = new Map<string, string>();
  const queue = [start];
  for (let i = 0; i < queue.length; i++) {
    for (const w of graph.get(queue[i]) ?? []) {
      if (!scc.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let u = queue[i]; u !== start; u = prev.get(u)!) path.splice(1, 0, u);
        return [...path, start];
      }
      if (!prev.has(w)) {
        prev.set(w, queue[i]);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

Deno.test("importsOf tells value imports from type-only ones", () => {
  const src = [
    'import type { Gpu } from "./device.ts";',
    'import { type A, type B } from "./a.ts";',
    'import {\n  type C,\n  d,\n} from "./c.ts";',
    'export * from "./e.ts";',
    'export type { F } from "./f.ts";',
    'import "./g.ts";',
    'import { h } from "../gpu/mod.ts";',
    'import assert from "node:assert";',
    ' * import { example } from "./doc.ts";',
  ].join("\n");
  const got = importsOf("/r/k/x.ts", src).map((e) => `${e.to}${e.typeOnly ? " (type)" : ""}`);
  assert.deepEqual(got, [
    "/r/k/device.ts (type)",
    "/r/k/a.ts (type)",
    "/r/k/c.ts",
    "/r/k/e.ts",
    "/r/k/f.ts (type)",
    "/r/gpu/mod.ts",
    "/r/k/g.ts",
  ]);
});

Deno.test("cycles names each cycle of a graph", () => {
  const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a", "d"]], ["d", []], ["e", ["e"]]]);
  assert.deepEqual(cycles(g), [
    { cycle: ["a", "b", "c", "a"], component: ["a", "b", "c"] },
    { cycle: ["e", "e"], component: ["e"] },
  ]);
});

function assertNoCycle(graph: Map<string, string[]>): void {
  assert.ok(graph.size > 10, `only ${graph.size} modules found`);
  const rel = (f: string) => relative(ROOT, f);
  const found = cycles(graph).map(({ cycle, component }) =>
    `${cycle.map(rel).join(" -> ")} (${component.length} modules reach each other: ` +
    `${component.map(rel).join(", ")})`
  );
  assert.deepEqual(found, [], `import cycles:\n${found.join("\n")}`);
}

Deno.test("kernels/ and gpu/ have no cycle of value imports", () => {
  assertNoCycle(moduleGraph([join(ROOT, "kernels"), join(ROOT, "gpu")]));
});

Deno.test("kernels/ has no import cycle, type-only imports included", () => {
  assertNoCycle(moduleGraph([join(ROOT, "kernels")], true));
});

Deno.test("kernels/ and gpu/ have no import cycle, type-only imports included", () => {
  assertNoCycle(moduleGraph([join(ROOT, "kernels"), join(ROOT, "gpu")], true));
});
