import assert from "node:assert/strict";
import { bertBaseUncasedVocab, vocabToTxt } from "../shared/text/vocab.ts";

const ROOT = new URL("..", import.meta.url);
const VOCAB = bertBaseUncasedVocab();

async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "shared/cli/tokenize.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Hand-written [token, id] pairs, each checked against the vocab array. */
function ids(...pieces: [string, number][]): number[] {
  for (const [token, id] of pieces) assert.equal(VOCAB[id], token);
  return pieces.map(([, id]) => id);
}

Deno.test("tokenize CLI: one JSON line per input line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = `${dir}/model`;
    await Deno.mkdir(model);
    await Deno.writeTextFile(`${model}/vocab.txt`, vocabToTxt(VOCAB));
    const input = `${dir}/in.jsonl`;
    await Deno.writeTextFile(
      input,
      [
        '{"text": "Hello, world!"}',
        "",
        '{"text": "a", "text_pair": "b"}',
        '{"text": "one two three four five six"}',
      ].join("\n") + "\n",
    );
    const short = await run("--model", model, "--input", input, "--max-len", "5");
    assert.equal(short.code, 0, short.stderr);
    const got = short.stdout.trimEnd().split("\n").map((l) => JSON.parse(l));
    const [cls, sep]: [string, number][] = [["[CLS]", 101], ["[SEP]", 102]];
    assert.deepEqual(got, [
      // 6 tokens cut to 5: [CLS] hello , world [SEP]
      {
        input_ids: ids(cls, ["hello", 7592], [",", 1010], ["world", 2088], sep),
        token_type_ids: [0, 0, 0, 0, 0],
      },
      { input_ids: ids(cls, ["a", 1037], sep, ["b", 1038], sep), token_type_ids: [0, 0, 0, 1, 1] },
      {
        input_ids: ids(cls, ["one", 2028], ["two", 2048], ["three", 2093], sep),
        token_type_ids: [0, 0, 0, 0, 0],
      },
    ]);
    // Default --max-len 512 keeps everything; output keys are exactly these two.
    const full = await run("--model", model, "--input=" + input);
    assert.equal(full.code, 0, full.stderr);
    const first = JSON.parse(full.stdout.split("\n")[0]);
    assert.deepEqual(Object.keys(first), ["input_ids", "token_type_ids"]);
    assert.equal(first.input_ids.length, 6);
    // A bad input line is an error naming the file and line.
    await Deno.writeTextFile(input, '{"text": "ok"}\n{"txt": "typo"}\n');
    const bad = await run("--model", model, "--input", input);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /in\.jsonl:2: missing "text"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tokenize CLI: --help, unknown flags and bad values", async () => {
  const [help, unknown, badLen, missing] = await Promise.all([
    run("--help"),
    run("--input", "x.jsonl", "--bogus", "1"),
    run("--input", "x.jsonl", "--max-len", "lots"),
    run("--max-len", "8"),
  ]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: deno task tokenize --model DIR --input FILE\.jsonl/);
  assert.match(help.stdout, /--max-len <int>/);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown flag --bogus/);
  assert.equal(badLen.code, 2);
  assert.match(badLen.stderr, /--max-len needs an integer, got "lots"/);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /missing required flag --input/);
});
