/**
 * The GPU script (bench/device_run.sh) still starts: `--check` runs each part's command far
 * enough to load its modules and parse its flags (engine_devices.ts imported, torch_gpu.py
 * --help where torch is installed, time_to_accuracy.ts --help on a webgpu worker backend), then
 * the summary; and the summary's target checks say met, missed or not measured as they should.
 */
import assert from "node:assert/strict";
import { checkTargets, parsePart } from "../bench/device_summary.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function sh(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command("bash", { args, cwd: ROOT, env, stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: out.code, text: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

Deno.test("device_run.sh: syntax, --help, unknown arguments refused", async () => {
  assert.equal((await sh(["-n", "bench/device_run.sh"])).code, 0);
  const help = await sh(["bench/device_run.sh", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.text, /--smoke/);
  assert.match(help.text, /Exit status/);
  const bad = await sh(["bench/device_run.sh", "--bogus"]);
  assert.equal(bad.code, 1);
  assert.match(bad.text, /unknown argument --bogus/);
});

Deno.test("device_run.sh --check: every part's command starts, the summary is written", async () => {
  const out = await Deno.makeTempDir({ prefix: "device_run_check_" });
  try {
    const r = await sh(["bench/device_run.sh", "--check"], { OUT: out });
    assert.equal(r.code, 0, r.text);
    const summary = JSON.parse(await Deno.readTextFile(`${out}/summary.json`)) as {
      mode: string;
      parts: { name: string; status: string; skipped: string | null }[];
      targets: { met: boolean | null }[];
    };
    assert.equal(summary.mode, "check");
    const status = Object.fromEntries(summary.parts.map((p) => [p.name, p]));
    assert.equal(status.a1.status, "ok");
    assert.equal(status.c.status, "ok");
    // b runs where torch is installed, else it is skipped with the reason printed.
    assert.ok(status.b.status === "ok" || /torch/i.test(status.b.skipped ?? ""), r.text);
    assert.equal(summary.targets.length, 4);
    assert.match(await Deno.readTextFile(`${out}/summary.md`), /Issue 20's GPU targets/);
    // The device tool brings back at most 8 files from $OUT.
    const files = [...Deno.readDirSync(out)].filter((e) => e.isFile);
    assert.ok(files.length <= 8, files.map((f) => f.name).join(", "));
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("device_summary: targets met, missed, not measured", () => {
  const engine = (mb: number, seq: number, clean: number, pgd: number) => ({
    shape: { name: "x", microBatch: mb, seqLen: seq, parameters: 1 },
    machine: { adapter: "gpu" },
    rows: [["clean", clean], ["pgd K=1", pgd]].map(([mode, ms]) => ({
      backend: "webgpu-engine",
      device: "gpu",
      mode: mode as string,
      microBatch: mb,
      seqLen: seq,
      medianMs: ms as number,
      samplesPerSec: mb / ((ms as number) / 1000),
      counts: null,
      profile: null,
      relDiffVsCpu: null,
    })),
  });
  const torch = {
    impl: "hf",
    machine: { gpu: "H200", torch: "2", transformers: "5" },
    rows: [{
      shape: "bert-base",
      precision: "fp32",
      mode: "off",
      microBatch: 32,
      seqLen: 128,
      medianMs: 100,
      samplesPerSec: 320,
    }],
  };
  // 32 / 20 ms = 1,600 samples/s PGD; PGD/clean 20/16 = 1.25; bert-base 200 ms = 160 = 50%.
  const [t1, t2, t3, t4] = checkTargets(engine(32, 128, 16, 20), engine(32, 128, 200, 400), torch);
  assert.equal(t1.met, true);
  assert.equal(t2.met, true);
  assert.equal(t3.met, true);
  assert.equal(t4.met, false); // 2.0× > 1.7×
  // The default model at another shape: not measured, with the shape said.
  const other = checkTargets(engine(8, 64, 16, 20), null, null);
  assert.equal(other[0].met, null);
  assert.match(other[0].note, /mb 8, seq 64/);
  assert.equal(other[1].met, null);
  assert.equal(other[3].met, null);
  assert.deepEqual(parsePart("c:failed(3):12.5"), {
    name: "c",
    status: "failed(3)",
    seconds: 12.5,
  });
  assert.throws(() => parsePart("c:ok"));
});
