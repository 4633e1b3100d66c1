/**
 * shared/io/hf_cache.ts: `--model NAME` from a Hugging Face hub cache built
 * here as huggingface_hub lays it out (refs/main → snapshots/{hash}/, files
 * symlinked into blobs/), through the functions and through the real CLIs
 * (predict, tokenize, evaluate, coordinator) with HF_HOME / HF_HUB_CACHE
 * pointed at it.
 */
import assert from "node:assert/strict";
import {
  hubCache,
  isHubName,
  ModelNotFound,
  repoFolderName,
  resolveModel,
} from "../shared/io/hf_cache.ts";
import { parseRunFlags } from "../coordinator/run_config.ts";
import { FlagError } from "../shared/cli/flags.ts";
import { tinyModelDir, tinyTaskDir } from "./support/fixtures.ts";
import { runDeno } from "./support/processes.ts";
import { withTempDir } from "./support/temp_dir.ts";

const HASH = "0123456789abcdef0123456789abcdef01234567";

/**
 * Puts the files of folder `model` into `cache` as model `name`: each file a
 * blob named by its SHA-256, the snapshot's entries relative symlinks to them.
 */
async function cacheModel(cache: string, name: string, model: string, hash = HASH) {
  const repo = `${cache}/${repoFolderName(name)}`;
  await Deno.mkdir(`${repo}/blobs`, { recursive: true });
  await Deno.mkdir(`${repo}/refs`, { recursive: true });
  await Deno.mkdir(`${repo}/snapshots/${hash}`, { recursive: true });
  for await (const e of Deno.readDir(model)) {
    const bytes = await Deno.readFile(`${model}/${e.name}`);
    const sha = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)))
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    await Deno.writeFile(`${repo}/blobs/${sha}`, bytes);
    await Deno.symlink(`../../blobs/${sha}`, `${repo}/snapshots/${hash}/${e.name}`);
  }
  await Deno.writeTextFile(`${repo}/refs/main`, hash);
  return `${repo}/snapshots/${hash}`;
}

const envOf = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("hubCache follows huggingface_hub's order of settings", () => {
  const all = {
    HF_HUB_CACHE: "/a",
    HUGGINGFACE_HUB_CACHE: "/b",
    HF_HOME: "/c",
    XDG_CACHE_HOME: "/d",
    HOME: "/home/u",
  };
  assert.equal(hubCache(envOf(all)).dir, "/a");
  const { HF_HUB_CACHE: _a, ...noHub } = all;
  assert.equal(hubCache(envOf(noHub)).dir, "/b");
  const { HUGGINGFACE_HUB_CACHE: _b, ...noLegacy } = noHub;
  assert.deepEqual(hubCache(envOf(noLegacy)), { dir: "/c/hub", from: "$HF_HOME/hub" });
  const { HF_HOME: _c, ...noHome } = noLegacy;
  assert.equal(hubCache(envOf(noHome)).dir, "/d/huggingface/hub");
  assert.equal(hubCache(envOf({ HOME: "/home/u" })).dir, "/home/u/.cache/huggingface/hub");
});

Deno.test("Hub names and their cache folders", () => {
  assert.equal(repoFolderName("FacebookAI/roberta-large"), "models--FacebookAI--roberta-large");
  assert.equal(repoFolderName("bert-base-uncased"), "models--bert-base-uncased");
  for (const ok of ["bert-base-uncased", "FacebookAI/roberta-large", "org/m.v2_x"]) {
    assert.ok(isHubName(ok), ok);
  }
  for (const bad of ["./model", "/abs/path", "a/b/c", "../x", "a/..", "", "-x"]) {
    assert.ok(!isHubName(bad), bad);
  }
});

Deno.test("resolveModel: a folder wins; a name resolves through refs/main to its snapshot", async () => {
  const model = await tinyModelDir(2);
  await withTempDir("adaptmesh-hf-", async (home) => {
    const snap = await cacheModel(`${home}/hub`, "FacebookAI/tiny-bert", model);
    const env = envOf({ HF_HOME: home });
    assert.equal(await resolveModel(model, env), model);
    assert.equal(await resolveModel("FacebookAI/tiny-bert", env), snap);
    // A folder in the working directory with the same name as a cached model wins.
    assert.equal(await resolveModel(home, env), home);
    // Without refs/main, the only snapshot is used; a dangling refs/main is explained.
    const repo = `${home}/hub/${repoFolderName("FacebookAI/tiny-bert")}`;
    await Deno.remove(`${repo}/refs/main`);
    assert.equal(await resolveModel("FacebookAI/tiny-bert", env), snap);
    await Deno.writeTextFile(`${repo}/refs/main`, "f".repeat(40));
    await assert.rejects(
      resolveModel("FacebookAI/tiny-bert", env),
      /refs\/main names f{40}, but snapshots\/f{40} is missing/,
    );
  });
});

Deno.test("resolveModel: a name not in the cache says where it looked and how to put it there", async () => {
  await withTempDir("adaptmesh-hf-", async (cache) => {
    const err = await resolveModel("google-bert/bert-base-uncased", envOf({ HF_HUB_CACHE: cache }))
      .then(() => null, (e) => e);
    assert.ok(err instanceof ModelNotFound);
    const m = err.message;
    assert.match(m, /model "google-bert\/bert-base-uncased" not found; looked in:/);
    assert.ok(m.includes("  google-bert/bert-base-uncased (no such folder)"), m);
    assert.ok(
      m.includes(
        `${cache}/models--google-bert--bert-base-uncased (not there; cache from $HF_HUB_CACHE)`,
      ),
      m,
    );
    assert.ok(m.includes("huggingface-cli download google-bert/bert-base-uncased"), m);
    assert.ok(m.includes(`models--google-bert--bert-base-uncased folder into ${cache}/`), m);
    // A path is not looked up: the loader reads or refuses it.
    assert.equal(await resolveModel("./no/such/dir", envOf({})), "./no/such/dir");
  });
});

/** The predict, tokenize and evaluate CLIs given the same model by name and by folder. */
Deno.test("predict, tokenize and evaluate take --model NAME from the cache HF_HOME points at", async () => {
  const model = await tinyModelDir(4);
  const task = await tinyTaskDir(8, 6);
  await withTempDir("adaptmesh-hf-", async (home) => {
    await cacheModel(`${home}/hub`, "acme/tiny-bert", model);
    const env = { HF_HOME: home };
    const input = `${home}/in.jsonl`;
    await Deno.writeTextFile(input, '{"text": "the movie was great"}\n{"text": "dull plot"}\n');
    const byName = await runDeno("shared/cli/predict.ts", [
      "--model",
      "acme/tiny-bert",
      "--input",
      input,
    ], env);
    assert.equal(byName.code, 0, byName.stderr);
    const byDir = await runDeno("shared/cli/predict.ts", ["--model", model, "--input", input]);
    assert.equal(byDir.code, 0, byDir.stderr);
    assert.equal(byName.stdout.trim().split("\n").length, 2);
    assert.equal(byName.stdout, byDir.stdout);

    const tokName = await runDeno("shared/cli/tokenize.ts", [
      "--model",
      "acme/tiny-bert",
      "--input",
      input,
    ], { HF_HUB_CACHE: `${home}/hub` });
    assert.equal(tokName.code, 0, tokName.stderr);
    const tokDir = await runDeno("shared/cli/tokenize.ts", ["--model", model, "--input", input]);
    assert.equal(tokName.stdout, tokDir.stdout);

    const evalName = await runDeno("shared/cli/evaluate.ts", [
      "--model",
      "acme/tiny-bert",
      "--eval",
      task.eval,
    ], env);
    assert.equal(evalName.code, 0, evalName.stderr);
    const evalDir = await runDeno("shared/cli/evaluate.ts", [
      "--model",
      model,
      "--eval",
      task.eval,
    ]);
    assert.equal(
      evalName.stdout.trim().split("\n").at(-1),
      evalDir.stdout.trim().split("\n").at(-1),
    );

    const missing = await runDeno("shared/cli/predict.ts", [
      "--model",
      "acme/other-model",
      "--input",
      input,
    ], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /error: model "acme\/other-model" not found; looked in:/);
    assert.ok(missing.stderr.includes(`${home}/hub/models--acme--other-model (not there`));
    assert.match(missing.stderr, /huggingface-cli download acme\/other-model/);
  });
});

Deno.test("training: --model NAME resolves to the snapshot; a missing name is a usage error (exit 2)", async () => {
  const model = await tinyModelDir(4);
  await withTempDir("adaptmesh-hf-", async (cache) => {
    const snap = await cacheModel(cache, "bert-tiny", model);
    const before = Deno.env.get("HF_HUB_CACHE");
    Deno.env.set("HF_HUB_CACHE", cache);
    try {
      const { config } = await parseRunFlags(["--model", "bert-tiny"], {}, "");
      assert.equal(config.io.modelDir, snap);
      await assert.rejects(
        parseRunFlags(["--model", "bert-huge"], {}, ""),
        (e) => e instanceof FlagError && /--model: model "bert-huge" not found/.test(e.message),
      );
    } finally {
      if (before === undefined) Deno.env.delete("HF_HUB_CACHE");
      else Deno.env.set("HF_HUB_CACHE", before);
    }
    const r = await runDeno("coordinator/main.ts", ["--model", "bert-huge", "--port", "0"], {
      HF_HUB_CACHE: cache,
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /error: --model: model "bert-huge" not found; looked in:/);
    assert.ok(
      r.stderr.includes(`${cache}/models--bert-huge (not there; cache from $HF_HUB_CACHE)`),
    );
  });
});
