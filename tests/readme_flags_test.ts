/**
 * README's flag tables equal `--help`. The tables are read from README.md and
 * compared with the flag specs `--help` prints from (training, pretrain,
 * cluster, predict, evaluate, tokenize) and, for the worker, whose flags are
 * declared in its entry point, with `deno task worker --help` itself.
 *
 * The rule of a table (one per command, found by the heading or the
 * "`deno task NAME`:" line above it): one flag per row; the first cell is
 * `` `--name` `` or `` `--name ARG` ``; the second cell is the default:
 * a flag with a default in its spec shows exactly that value in backticks
 * (`` `0.1` ``, `` `5GB` ``), a required flag says `required`, and any other
 * flag shows words or nothing (a default worked out at run time, `off` for
 * switches), never a single backticked value. The third cell is prose and
 * not checked. A flag missing from either side, or a default that differs,
 * fails.
 */
import assert from "node:assert/strict";
import type { FlagSpecs } from "../shared/cli/flags.ts";
import { PRETRAIN_FLAGS, TRAINING_FLAGS } from "../coordinator/run_config.ts";
import { CLUSTER_FLAGS } from "../coordinator/cluster.ts";
import { PREDICT_FLAGS } from "../shared/cli/predict.ts";
import { EVALUATE_FLAGS } from "../shared/cli/evaluate.ts";
import { TOKENIZE_FLAGS } from "../shared/cli/tokenize.ts";
import { ROOT, runDeno } from "./support/processes.ts";

const README = await Deno.readTextFile(`${ROOT}/README.md`);

/** One README row: the flag's name and its default cell. */
interface Row {
  readonly name: string;
  readonly def: string;
}

/** The rows of the first table after the line `marker`. */
function table(marker: string): Row[] {
  const at = README.indexOf(`\n${marker}\n`);
  assert.ok(at >= 0, `README has no "${marker}"`);
  const lines = README.slice(at + marker.length + 2).split("\n");
  const start = lines.findIndex((l) => l.startsWith("|"));
  const rows: Row[] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith("|")) break;
    const cells = line.slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim());
    const m = /^`--([a-z][a-z0-9-]*)(?: [^`]+)?`$/.exec(cells[0]);
    assert.ok(m, `${marker}: a row's first cell must be one flag, got "${cells[0]}"`);
    rows.push({ name: m[1], def: cells[1] });
  }
  return rows;
}

/** What a spec says the README's default cell must be (null: words, checked not to be a value). */
function expectedDefault(spec: { default?: unknown; required?: boolean }): string | null {
  if (spec.required) return "required";
  if (spec.default !== undefined) return `\`${spec.default}\``;
  return null;
}

/** Compares a README table with a command's flags, both ways. */
function check(marker: string, spec: FlagSpecs): void {
  const rows = table(marker);
  const inReadme = rows.map((r) => r.name);
  const inHelp = Object.keys(spec);
  assert.deepEqual(
    inReadme.filter((n) => !inHelp.includes(n)),
    [],
    `${marker}: in README, not in --help`,
  );
  assert.deepEqual(
    inHelp.filter((n) => !inReadme.includes(n)),
    [],
    `${marker}: in --help, not in README`,
  );
  for (const { name, def } of rows) {
    const want = expectedDefault(spec[name]);
    if (want !== null) assert.equal(def, want, `${marker}: --${name}'s default`);
    else {
      assert.ok(
        !/^`[^`]*`$/.test(def) && def !== "required",
        `${marker}: --${name} has no default`,
      );
    }
  }
}

/** A flag spec read back from `--help` (shared/cli/flags.ts, helpText): name, required, default. */
function specFromHelp(help: string): FlagSpecs {
  const out: FlagSpecs = {};
  for (const m of help.matchAll(/^ {2}--([a-z][a-z0-9-]*)(?: <(\w+)>)? +(.*)$/gm)) {
    if (m[1] === "help") continue;
    const text = m[3];
    const def = /\(default: (.+)\)$/.exec(text);
    let value: unknown;
    try {
      value = def ? JSON.parse(def[1]) : undefined;
    } catch {
      value = undefined; // words in the help, not a declared default
    }
    out[m[1]] = {
      type: (m[2] ?? "boolean") as FlagSpecs[string]["type"],
      help: text,
      ...(text.endsWith("(required)") ? { required: true } : {}),
      ...(value !== undefined ? { default: value } : {}),
    };
  }
  return out;
}

Deno.test("README's training-flags table is the training flags of --help", () => {
  check("### Training flags (cluster, coordinator, pretrain)", TRAINING_FLAGS);
});

Deno.test("README names the training flags pretrain leaves out, and they are the ones it leaves out", () => {
  const left = Object.keys(TRAINING_FLAGS).filter((n) => !Object.hasOwn(PRETRAIN_FLAGS, n));
  const sentence = /`deno task pretrain` takes all of them but ([^.]*)/.exec(README);
  assert.ok(sentence, "README says which training flags pretrain does not take");
  const named = [...sentence[1].matchAll(/`--([a-z-]+)`/g)].map((m) => m[1]);
  assert.deepEqual(named.toSorted(), left.toSorted());
});

Deno.test("README's local-worker table is cluster's own flags", () => {
  check("### Local workers of cluster and pretrain", CLUSTER_FLAGS);
});

Deno.test("README's predict, evaluate and tokenize tables are their --help", () => {
  check("`deno task predict`:", PREDICT_FLAGS);
  check("`deno task evaluate`:", EVALUATE_FLAGS);
  check("`deno task tokenize`:", TOKENIZE_FLAGS);
});

Deno.test("README's worker table is `deno task worker --help`", async () => {
  const r = await runDeno("worker/main.ts", ["--help"]);
  assert.equal(r.code, 0, r.stderr);
  const spec = specFromHelp(r.stdout);
  assert.ok(Object.hasOwn(spec, "url") && spec.url.required, r.stdout);
  check("`deno task worker`:", spec);
});
