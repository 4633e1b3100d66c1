/**
 * The tree's own rules, read from the files: no import cycle, the layers of
 * docs/architecture.md ("Layout"), and every reference to the docs — from a
 * doc comment, the README or the docs themselves — resolving inside the
 * repository, down to the section it names.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const CODE_DIRS = ["coordinator", "worker", "shared", "bench", "tests"] as const;

async function* filesUnder(dir: string, ext: RegExp): AsyncGenerator<string> {
  for await (const e of Deno.readDir(join(ROOT, dir))) {
    const rel = join(dir, e.name);
    if (e.isDirectory && e.name !== "results" && e.name !== "node_modules") {
      yield* filesUnder(rel, ext);
    } else if (e.isFile && ext.test(e.name)) yield rel;
  }
}

async function codeFiles(): Promise<string[]> {
  const out: string[] = [];
  for (const d of CODE_DIRS) for await (const f of filesUnder(d, /\.ts$/)) out.push(f);
  return out.sort();
}

/** The bare (package) specifiers a module imports (static, dynamic and type-only). */
function packageImports(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']([^."'][^"']*)["']/g;
  for (const m of text.matchAll(re)) out.push(m[1]);
  return out;
}

/** Every module `start` reaches through relative imports, itself included. */
function reachable(graph: Map<string, string[]>, start: string): Set<string> {
  const seen = new Set<string>();
  const todo = [start];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const d of graph.get(f) ?? []) todo.push(d);
  }
  return seen;
}

/** The repository files a module imports by relative path (static, dynamic and type-only). */
function relativeImports(file: string, text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["'](\.{1,2}\/[^"']+)["']/g;
  for (const m of text.matchAll(re)) out.push(relative(ROOT, resolve(ROOT, dirname(file), m[1])));
  return out;
}

/** One cycle in the graph as a path a → … → a, or null. */
function findCycle(graph: Map<string, string[]>): string[] | null {
  const state = new Map<string, "open" | "done">();
  const stack: string[] = [];
  const visit = (n: string): string[] | null => {
    state.set(n, "open");
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      const s = state.get(m);
      if (s === "open") return [...stack.slice(stack.indexOf(m)), m];
      if (s === undefined && graph.has(m)) {
        const c = visit(m);
        if (c) return c;
      }
    }
    stack.pop();
    state.set(n, "done");
    return null;
  };
  for (const n of graph.keys()) {
    if (state.has(n)) continue;
    const c = visit(n);
    if (c) return c;
  }
  return null;
}

Deno.test("findCycle finds a three-module cycle and accepts a diamond", () => {
  const cyclic = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]]]);
  assert.deepEqual(findCycle(cyclic), ["a", "b", "c", "a"]);
  const diamond = new Map([["a", ["b", "c"]], ["b", ["d"]], ["c", ["d"]], ["d", []]]);
  assert.equal(findCycle(diamond), null);
});

Deno.test("no module imports itself back, and the layers hold", async () => {
  const graph = new Map<string, string[]>();
  for (const f of await codeFiles()) {
    graph.set(f, relativeImports(f, await Deno.readTextFile(join(ROOT, f))));
  }
  const missing = [...graph].flatMap(([f, deps]) =>
    deps.filter((d) => !graph.has(d) && d.endsWith(".ts")).map((d) => `${f} → ${d}`)
  );
  assert.deepEqual(missing, [], "imports of files that do not exist");
  const cycle = findCycle(graph);
  assert.equal(cycle, null, `import cycle: ${cycle?.join(" → ")}`);
  // docs/architecture.md: the core knows no server; workers meet the coordinator only over the wire.
  const crossings = [...graph].flatMap(([f, deps]) =>
    deps.filter((d) =>
      (f.startsWith("shared/") && /^(coordinator|worker)\//.test(d)) ||
      (f.startsWith("worker/") && d.startsWith("coordinator/")) ||
      (f.startsWith("coordinator/") && d.startsWith("worker/"))
    ).map((d) => `${f} → ${d}`)
  );
  assert.deepEqual(crossings, [], "imports across the layers");
});

/**
 * Where tfjs may be imported, and what each folder of shared/ may import
 * (docs/architecture.md, "Principles"): the engine is device code over the
 * model's meaning, never tfjs; the model's meaning and the wire know no
 * implementation.
 */
const TFJS_HOME = "shared/tfjs/";
const LAYERS: readonly { from: string; allowed?: RegExp; forbidden?: RegExp }[] = [
  {
    from: "shared/engine/",
    allowed: /^shared\/(engine|model|method)\/|^shared\/compute\/task\.ts$/,
  },
  { from: "shared/model/", forbidden: /^shared\/(engine|tfjs|compute|wire)\// },
  { from: "shared/method/", forbidden: /^shared\/(engine|tfjs|compute|wire)\// },
  { from: "shared/wire/", forbidden: /^shared\/(engine|tfjs|compute)\// },
];

Deno.test("tfjs stays in shared/tfjs/, the engine never reaches it, and shared/'s folders keep their layers", async () => {
  const graph = new Map<string, string[]>();
  const packages = new Map<string, string[]>();
  for (const f of await codeFiles()) {
    const text = await Deno.readTextFile(join(ROOT, f));
    graph.set(f, relativeImports(f, text));
    packages.set(f, packageImports(text));
  }
  const tfjs = (f: string) => (packages.get(f) ?? []).some((p) => p.startsWith("@tensorflow/"));
  // The application (coordinator/, worker/, shared/) imports @tensorflow only in shared/tfjs/ —
  // its set-up (shared/tfjs/backend.ts, called by the one factory shared/compute/create.ts, which
  // itself imports none) included. Tests and benchmarks may use tfjs directly (it is the oracle).
  const outside = [...graph.keys()].filter((f) =>
    /^(coordinator|worker|shared)\//.test(f) && !f.startsWith(TFJS_HOME) && tfjs(f)
  );
  assert.deepEqual(outside, [], "modules outside shared/tfjs/ that import @tensorflow");
  const engine = [...graph.keys()].filter((f) => f.startsWith("shared/engine/"));
  assert.ok(engine.length > 5, `only ${engine.length} engine modules found`);
  const leaks = engine.flatMap((f) =>
    [...reachable(graph, f)].filter(tfjs).map((t) => `${f} ⇒ ${t}`)
  );
  assert.deepEqual(leaks, [], "engine modules that reach @tensorflow through their imports");
  const crossings = [...graph].flatMap(([f, deps]) =>
    LAYERS.filter((l) => f.startsWith(l.from)).flatMap((l) =>
      deps.filter((d) =>
        d.startsWith("shared/") &&
        ((l.allowed && !l.allowed.test(d)) || (l.forbidden && l.forbidden.test(d)))
      ).map((d) => `${f} → ${d}`)
    )
  );
  assert.deepEqual(crossings, [], "imports across shared/'s layers");
});

Deno.test("the tree rules see what they check: a bare specifier and a transitive tfjs import", () => {
  assert.deepEqual(
    packageImports(`import * as tf from "@tensorflow/tfjs-core";\nimport "./x.ts";`),
    ["@tensorflow/tfjs-core"],
  );
  const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", []]]);
  assert.deepEqual([...reachable(g, "a")].sort(), ["a", "b", "c"]);
});

/** Headings of a markdown file, without the leading #s and backticks. */
function headings(md: string): Set<string> {
  return new Set(
    [...md.matchAll(/^#+\s+(.+)$/gm)].map((m) => m[1].replaceAll("`", "").trim()),
  );
}

/** Text with comment continuation markers removed, so a reference split over lines reads whole. */
function joinComments(text: string): string {
  return text.replace(/\s*\n\s*(?:\*(?!\/)|\/\/)?\s*/g, " ");
}

Deno.test("every reference to docs/ names a file and section that exist", async () => {
  const docs = new Map<string, Set<string>>();
  for await (const f of filesUnder("docs", /\.md$/)) {
    docs.set(f, headings(await Deno.readTextFile(join(ROOT, f))));
  }
  const architecture = await Deno.readTextFile(join(ROOT, "docs/architecture.md"));
  const principles = new Set(
    [...architecture.matchAll(/^(\d+)\. \*\*/gm)].map((m) => Number(m[1])),
  );
  const sources = [...await codeFiles(), "README.md", "bench/README.md", ...docs.keys()]
    .filter((f) => f !== "tests/tree_test.ts");
  const bad: string[] = [];
  let seen = 0, sections = 0;
  for (const f of sources) {
    const text = joinComments(await Deno.readTextFile(join(ROOT, f)));
    for (const m of text.matchAll(/\bdocs\/([\w-]+\.md)(?:,?\s*\(?["“]([^"”]{1,60})["”])?/g)) {
      seen++;
      const doc = docs.get(`docs/${m[1]}`);
      if (!doc) bad.push(`${f}: docs/${m[1]} does not exist`);
      else if (
        m[2] && ++sections && ![...doc].some((h) => h.startsWith(m[2].replaceAll("`", "")))
      ) {
        bad.push(`${f}: docs/${m[1]} has no section "${m[2]}"`);
      }
    }
    for (const m of text.matchAll(/docs\/architecture\.md[^)]{0,20}principles? (\d+)/g)) {
      if (!principles.has(Number(m[1]))) bad.push(`${f}: no principle ${m[1]}`);
    }
    if (/\.\.\/shared\/spec\/|\bspec\/(?:method|architecture|platform-notes)/.test(text)) {
      bad.push(`${f}: points at the spec outside the repository`);
    }
  }
  assert.ok(seen > 20 && sections > 5, `only ${seen} references (${sections} with a section)`);
  assert.deepEqual(bad, []);
});

Deno.test("every repository path the README and docs name exists", async () => {
  const pages = ["README.md", "bench/README.md"];
  for await (const f of filesUnder("docs", /\.md$/)) pages.push(f);
  const bad: string[] = [];
  for (const page of pages) {
    const text = await Deno.readTextFile(join(ROOT, page));
    const re =
      /`((?:coordinator|worker|shared|bench|tests|docs)\/[\w./-]+\.(?:ts|md|sh|py|html|txt))/g;
    for (const m of text.matchAll(re)) {
      try {
        await Deno.stat(join(ROOT, m[1]));
      } catch {
        bad.push(`${page}: ${m[1]}`);
      }
    }
  }
  assert.deepEqual(bad, []);
});

Deno.test("the README's table of Prometheus families matches the ones coordinator/metrics.ts registers", async () => {
  const source = await Deno.readTextFile(join(ROOT, "coordinator/metrics.ts"));
  const registered = new Set([...source.matchAll(/"adaptmesh_([a-z_]+)"/g)].map((m) => m[1]));
  const readme = await Deno.readTextFile(join(ROOT, "README.md"));
  const start = readme.indexOf("| families (`adaptmesh_");
  const table = readme.slice(readme.lastIndexOf("\n", start) + 1, readme.indexOf("\n\n", start));
  const listed = new Set<string>();
  for (const row of table.split("\n").slice(2)) {
    const families = (row.split("|")[2] ?? "").replace(/\([^)]*\)/g, ""); // notes, labels
    for (const m of families.matchAll(/`([a-z_]*[a-z])(?:_\{([a-z,]+)\}|\{[a-z_,]+\})?`/g)) {
      if (m[2]) { for (const part of m[2].split(",")) listed.add(`${m[1]}_${part}`); }
      else listed.add(m[1]);
    }
  }
  assert.ok(registered.size > 30, `only ${registered.size} families found in metrics.ts`);
  assert.deepEqual([...listed].sort(), [...registered].sort());
});
