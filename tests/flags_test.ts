import assert from "node:assert/strict";
import { FlagError, HelpRequested, helpText, parseFlags } from "../shared/cli/flags.ts";

const SPEC = {
  model: { type: "string", help: "model folder", required: true },
  "max-len": { type: "int", help: "maximum length", default: 512 },
  lr: { type: "number", help: "learning rate" },
  "no-shuffle": { type: "boolean", help: "keep file order" },
  name: { type: "string", help: "run name", default: "run" },
} as const;

const USAGE = "Usage: tool --model DIR [options]";

Deno.test("parseFlags: both spellings, types and defaults", () => {
  const f = parseFlags(
    ["--model", "m", "--max-len=128", "--lr", "-1.5e-3", "--no-shuffle"],
    SPEC,
    USAGE,
  );
  assert.deepEqual(f, { model: "m", "max-len": 128, lr: -0.0015, "no-shuffle": true, name: "run" });
  const g = parseFlags(["--model=a=b", "--no-shuffle=false", "--name="], SPEC, USAGE);
  assert.deepEqual(g, {
    model: "a=b",
    "max-len": 512,
    lr: undefined,
    "no-shuffle": false,
    name: "",
  });
  // Typed: these compile without casts.
  const n: number = f["max-len"];
  const s: string = f.model;
  const b: boolean = f["no-shuffle"];
  const maybe: number | undefined = f.lr;
  assert.deepEqual([n, s, b, maybe], [128, "m", true, -0.0015]);
});

Deno.test("parseFlags: usage errors say what was wrong", () => {
  const bad: [string[], RegExp][] = [
    [["--model", "m", "--bogus", "1"], /unknown flag --bogus/],
    [["--model", "m", "--max-len", "12.5"], /--max-len needs an integer, got "12\.5"/],
    [["--model", "m", "--max-len", "abc"], /--max-len needs an integer, got "abc"/],
    [["--model", "m", "--max-len="], /--max-len needs an integer, got ""/],
    [["--model", "m", "--lr", "fast"], /--lr needs a number, got "fast"/],
    [["--model", "m", "--lr", "Infinity"], /--lr needs a number/],
    [["--model"], /--model needs a value \(string\)/],
    [["--model", "--lr", "1"], /--model needs a value/],
    [["--model", "m", "--no-shuffle=maybe"], /--no-shuffle is a switch/],
    [["--max-len", "5"], /missing required flag --model/],
    [["--model", "m", "--model", "n"], /--model given more than once/],
    [["--model", "m", "extra"], /unexpected argument "extra"/],
    [["--model", "m", "--toString", "x"], /unknown flag --toString/],
  ];
  for (const [args, re] of bad) {
    assert.throws(() => parseFlags(args, SPEC, USAGE), (e: unknown) => {
      assert.ok(e instanceof FlagError, `${args.join(" ")}: ${e}`);
      assert.match(e.message, re);
      return true;
    });
  }
});

Deno.test("parseFlags: --help wins and carries the help text", () => {
  for (const args of [["--help"], ["--bogus", "--help"], ["--max-len", "x", "-h"], ["-h"]]) {
    assert.throws(() => parseFlags(args, SPEC, USAGE), (e: unknown) => {
      assert.ok(e instanceof HelpRequested);
      assert.ok(e.text.startsWith(USAGE));
      return true;
    });
  }
  const text = helpText(SPEC, USAGE);
  assert.match(text, /--model <string>\s+model folder \(required\)/);
  assert.match(text, /--max-len <int>\s+maximum length \(default: 512\)/);
  assert.match(text, /--no-shuffle\s+keep file order/);
  assert.match(text, /--help\s+print this help and exit/);
});
