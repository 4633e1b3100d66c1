import assert from "node:assert/strict";
import { join } from "node:path";
import { atomicWriteFile, atomicWriteStream, replaceDirectory } from "../shared/io/atomic_write.ts";
import { withTempDir } from "./support/temp_dir.ts";

const withDir = (fn: (dir: string) => Promise<void>) => withTempDir("atomic_test_", fn);

const names = (dir: string): string[] => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test("atomicWriteFile writes bytes and strings and replaces an existing file", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "state.bin");
    const bytes = new Uint8Array(100_000).map((_, i) => (i * 7) & 0xff);
    await atomicWriteFile(path, bytes);
    assert.deepEqual(await Deno.readFile(path), bytes);
    await atomicWriteFile(path, "héllo\n");
    assert.equal(await Deno.readTextFile(path), "héllo\n");
    await atomicWriteFile(path, new Uint8Array(0));
    assert.equal((await Deno.readFile(path)).length, 0);
    assert.deepEqual(names(dir), ["state.bin"], "no temporary files left behind");
  });
});

Deno.test("atomicWriteFile writes a subarray view, not its whole buffer", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "part");
    const big = new Uint8Array([1, 2, 3, 4, 5, 6]);
    await atomicWriteFile(path, big.subarray(2, 4));
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([3, 4]));
  });
});

Deno.test("atomicWriteFile failure leaves the target and the directory clean", async () => {
  await withDir(async (dir) => {
    // Renaming a file over a non-empty directory fails after the temp file was written.
    const target = join(dir, "occupied");
    await Deno.mkdir(target);
    await Deno.writeTextFile(join(target, "keep"), "x");
    await assert.rejects(() => atomicWriteFile(target, "data"));
    assert.deepEqual(names(dir), ["occupied"], "temporary file removed");
    assert.equal(await Deno.readTextFile(join(target, "keep")), "x");
  });
  await withDir(async (dir) => {
    await assert.rejects(
      () => atomicWriteFile(join(dir, "missing", "f"), "x"),
      Deno.errors.NotFound,
    );
    assert.deepEqual(names(dir), []);
  });
});

Deno.test("concurrent atomic writes leave one complete version", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "ckpt");
    const versions = Array.from({ length: 8 }, (_, v) => new Uint8Array(50_000).fill(v + 1));
    await Promise.all(versions.map((b) => atomicWriteFile(path, b)));
    const got = await Deno.readFile(path);
    assert.equal(got.length, 50_000);
    assert.ok(got.every((b) => b === got[0]), "no torn mix of two writes");
    assert.ok(got[0] >= 1 && got[0] <= 8);
    assert.deepEqual(names(dir), ["ckpt"]);
  });
});

Deno.test("replaceDirectory swaps a whole folder; a failed fill leaves the old one untouched", async () => {
  const root = await Deno.makeTempDir();
  const target = `${root}/model`;
  await replaceDirectory(target, (tmp) => Deno.writeTextFile(`${tmp}/a.txt`, "one"));
  assert.equal(await Deno.readTextFile(`${target}/a.txt`), "one");

  // The new folder replaces the old one entirely: files it lacks are gone.
  await replaceDirectory(target, (tmp) => Deno.writeTextFile(`${tmp}/b.txt`, "two"));
  assert.equal(await Deno.readTextFile(`${target}/b.txt`), "two");
  await assert.rejects(() => Deno.stat(`${target}/a.txt`), Deno.errors.NotFound);

  await assert.rejects(
    () =>
      replaceDirectory(target, async (tmp) => {
        await Deno.writeTextFile(`${tmp}/b.txt`, "half-written");
        throw new Error("disk full");
      }),
    /disk full/,
  );
  assert.equal(await Deno.readTextFile(`${target}/b.txt`), "two");
  const names = [];
  for await (const e of Deno.readDir(root)) names.push(e.name);
  assert.deepEqual(names, ["model"], "no temporary folders are left behind");
  await Deno.remove(root, { recursive: true });
});

Deno.test("atomicWriteStream writes piece by piece from a reused buffer; a failed fill changes nothing", async () => {
  await withDir(async (dir) => {
    const path = join(dir, "big.bin");
    const scratch = new Uint8Array(1000);
    const total = await atomicWriteStream(path, async (sink) => {
      for (let k = 0; k < 5; k++) {
        scratch.fill(k + 1); // reused once its write has resolved
        await sink.write(scratch.subarray(0, 1000 - k));
      }
    });
    const got = await Deno.readFile(path);
    assert.equal(total, 1000 + 999 + 998 + 997 + 996);
    assert.equal(got.length, total);
    assert.deepEqual([got[0], got[999], got[1000], got[total - 1]], [1, 1, 2, 5]);
    await assert.rejects(
      atomicWriteStream(path, async (sink) => {
        await sink.write(new Uint8Array(10));
        throw new Error("disk full (simulated)");
      }),
      /disk full/,
    );
    assert.deepEqual(await Deno.readFile(path), got, "the old file is untouched");
    assert.deepEqual(names(dir), ["big.bin"], "no temporary file left");
  });
});
