import assert from "node:assert/strict";
import { parseJsonl, readJsonl, recordsToExamples } from "../shared/data/jsonl.ts";

Deno.test("parseJsonl: records, pairs, labels, blank lines, line numbers", () => {
  const text = [
    '{"text": "good film", "label": "pos"}',
    "",
    '{"text": "q?", "text_pair": "a.", "label": 1}',
    '  {"text": "no label", "text_pair": null, "label": null}  ',
    '{"text": "quote \\" and tab\\t", "label": 2.5, "extra": true}',
    "",
  ].join("\r\n");
  assert.deepEqual(parseJsonl("\uFEFF" + text, "f.jsonl"), [
    { line: 1, text: "good film", label: "pos" },
    { line: 3, text: "q?", textPair: "a.", label: 1 },
    { line: 4, text: "no label" },
    { line: 5, text: 'quote " and tab\t', label: 2.5 },
  ]);
  assert.deepEqual(parseJsonl("", "f"), []);
});

Deno.test("parseJsonl: clear, line-numbered errors", () => {
  const bad: [string, RegExp][] = [
    ['{"text": "a"}\n{"text": "b"', /f\.jsonl:2: bad JSON/],
    ['{"text": "a"}\n\n[1, 2]', /f\.jsonl:3: expected a JSON object, got an array/],
    ['"just a string"', /f\.jsonl:1: expected a JSON object, got string/],
    ['{"label": 1}', /f\.jsonl:1: missing "text"/],
    ['{"text": 5}', /f\.jsonl:1: "text" must be a string, got number 5/],
    ['{"text": null}', /f\.jsonl:1: "text" must be a string, got null/],
    [
      '{"text": "a", "text_pair": ["b"]}',
      /f\.jsonl:1: "text_pair" must be a string, got an array/,
    ],
    ['{"text": "a", "label": true}', /f\.jsonl:1: "label" must be a string or a number/],
    ['{"text": "a", "label": {"x": 1}}', /f\.jsonl:1: "label" must be a string or a number/],
  ];
  for (const [text, re] of bad) assert.throws(() => parseJsonl(text, "f.jsonl"), re, text);
});

Deno.test("recordsToExamples: string labels through the label list, numbers as ids", () => {
  const recs = parseJsonl(
    [
      '{"text": "a", "label": "neg"}',
      '{"text": "b", "text_pair": "c", "label": "pos"}',
      '{"text": "d", "label": 1}',
    ].join("\n"),
    "t",
  );
  assert.deepEqual(recordsToExamples(recs, "t", ["neg", "pos"]), [
    { text: "a", label: 0 },
    { text: "b", textPair: "c", label: 1 },
    { text: "d", label: 1 },
  ]);
  assert.throws(
    () => recordsToExamples(recs, "t", ["pos", "other"]),
    /^Error: t:1: unknown label "neg" \(known: "pos", "other"\)/,
  );
  assert.throws(
    () => recordsToExamples(recs.slice(2), "t", ["only"]),
    /t:3: label 1 is outside \[0, 1\)/,
  );
  // Regression keeps numbers and refuses names.
  const scores = parseJsonl('{"text": "a", "label": 3.25}\n{"text": "b", "label": "x"}', "s");
  assert.deepEqual(recordsToExamples(scores.slice(0, 1), "s", null), [{ text: "a", label: 3.25 }]);
  assert.throws(() => recordsToExamples(scores, "s", null), /s:2: regression needs a number label/);
  assert.throws(
    () => recordsToExamples(parseJsonl('{"text": "a"}', "m"), "m", ["x"]),
    /m:1: missing "label"/,
  );
});

Deno.test("readJsonl: reads a file, names it in errors", async () => {
  const path = await Deno.makeTempFile({ suffix: ".jsonl" });
  try {
    await Deno.writeTextFile(path, '{"text": "x", "label": 0}\n{"text": 1}\n');
    await assert.rejects(readJsonl(path), (e: Error) => e.message.startsWith(`${path}:2: "text"`));
    await Deno.writeTextFile(path, '{"text": "x", "label": 0}\n');
    assert.deepEqual(await readJsonl(path), [{ line: 1, text: "x", label: 0 }]);
  } finally {
    await Deno.remove(path);
  }
  await assert.rejects(readJsonl("/nonexistent/x.jsonl"), /\/nonexistent\/x\.jsonl: cannot read/);
});
