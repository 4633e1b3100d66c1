/**
 * shared/engine/devices/cpu/blas.ts: cblas_sgemm through FFI against a float64 triple
 * loop (every transpose combination, padded strides, offset views, alpha and
 * beta), thread control, and loading that fails softly.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { blasCandidates, isNoBlas, loadBlas } from "../shared/engine/devices/cpu/blas.ts";
import { Rng } from "../shared/method/rng.ts";
import { referenceGemm } from "./support/gemm_reference.ts";

const loaded = loadBlas();
if (!loaded.blas) console.warn(`no BLAS here (${loaded.reason}): FFI sgemm cases are skipped`);
const blas = loaded.blas;

/** A view of `rows`×`cols` at row stride `ld`, starting `offset` elements into a larger buffer. */
function matrix(rng: Rng, rows: number, cols: number, ld: number, offset: number): Float32Array {
  const buf = new Float32Array(offset + Math.max(0, rows - 1) * ld + cols + 3);
  for (let i = 0; i < buf.length; i++) buf[i] = rng.uniform(-1, 1);
  return buf.subarray(offset);
}

Deno.test({
  name: "cblas_sgemm matches float64 on every transpose combination, stride and offset",
  ignore: !blas,
  fn() {
    const rng = new Rng(7);
    const shapes = [[1, 1, 1], [5, 3, 7], [33, 17, 65], [64, 128, 96], [130, 9, 257]];
    let cases = 0;
    for (const [m, n, k] of shapes) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          for (const pad of [0, 3]) {
            for (const [alpha, beta] of [[1, 0], [0.5, 1], [-2, 0.25]]) {
              const [ar, ac] = ta ? [k, m] : [m, k];
              const [br, bc] = tb ? [n, k] : [k, n];
              const lda = ac + pad, ldb = bc + 2 * pad, ldc = n + pad;
              const a = matrix(rng, ar, ac, lda, 5);
              const b = matrix(rng, br, bc, ldb, 2);
              const c = matrix(rng, m, n, ldc, 11);
              const c0 = c.slice();
              if (beta === 0) { // beta 0 ignores C's old contents, even NaN
                for (let i = 0; i < m; i++) c.fill(Number.NaN, i * ldc, i * ldc + n);
              }
              const ref = referenceGemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c0, ldc);
              blas!.gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
              for (let i = 0; i < m; i++) {
                for (let j = 0; j < n; j++) {
                  const got = c[i * ldc + j], want = ref[i * n + j];
                  assert.ok(
                    Math.abs(got - want) <= 1e-5 * (1 + Math.sqrt(k)) * (1 + Math.abs(want)),
                    `m${m} n${n} k${k} ta${ta} tb${tb} pad${pad} α${alpha} β${beta} [${i},${j}]: ${got} vs ${want}`,
                  );
                }
                // Padding between rows of C is left alone.
                for (let j = n; j < ldc && i < m - 1; j++) {
                  assert.equal(c[i * ldc + j], c0[i * ldc + j], "padding of C changed");
                }
              }
              cases++;
            }
          }
        }
      }
    }
    assert.equal(cases, shapes.length * 4 * 2 * 3);
  },
});

Deno.test({
  name: "cblas_sgemm refuses views too small for the shape, and does nothing for empty shapes",
  ignore: !blas,
  fn() {
    const a = new Float32Array(6), b = new Float32Array(6), c = new Float32Array(3);
    assert.throws(
      () => blas!.gemm(false, false, 2, 2, 3, 1, a, 3, b, 2, 0, c, 2),
      /c holds 3 elements/,
    );
    assert.throws(() => blas!.gemm(false, false, 2, 2, 3, 1, a, 2, b, 2, 0, c, 2), /lda 2/);
    const c2 = new Float32Array([7]);
    blas!.gemm(false, false, 0, 1, 3, 1, a, 3, b, 1, 0, c2, 1);
    assert.deepEqual([...c2], [7]);
  },
});

Deno.test({
  name: "BLAS thread control sets what it reports",
  ignore: !blas,
  fn() {
    const before = blas!.threads();
    try {
      if (!blas!.threadControl) {
        assert.equal(blas!.setThreads(2), blas!.threads());
        return;
      }
      assert.equal(blas!.setThreads(1), 1);
      assert.equal(blas!.threads(), 1);
      assert.match(blas!.describe(), /1 thread\b/);
      assert.equal(blas!.setThreads(2), 2);
      assert.match(blas!.describe(), /2 threads/);
      assert.throws(() => blas!.setThreads(0), /positive integer/);
    } finally {
      if (before !== null && blas!.threadControl) blas!.setThreads(before);
    }
  },
});

Deno.test("loadBlas returns a reason, never throws, for a library that is not there", () => {
  const r = loadBlas({ path: "/nonexistent/libopenblas.so.0" });
  assert.equal(r.blas, null);
  assert.match(r.reason!, /cannot load BLAS library \/nonexistent\/libopenblas\.so\.0/);
  assert.deepEqual(r.tried, ["/nonexistent/libopenblas.so.0"]);
  // A file that exists but is no library.
  const notLib = fileURLToPath(import.meta.url);
  const r2 = loadBlas({ path: notLib });
  assert.equal(r2.blas, null);
  assert.ok(r2.reason!.includes(notLib));
});

Deno.test("loadBlas without FFI permission says so instead of throwing", async () => {
  const blasTs = new URL("../shared/engine/devices/cpu/blas.ts", import.meta.url).href;
  const dir = await Deno.makeTempDir();
  const script = `${dir}/probe.ts`;
  await Deno.writeTextFile(
    script,
    `import { loadBlas } from "${blasTs}"; const r = loadBlas(); ` +
      `console.log(JSON.stringify({ blas: r.blas === null, reason: r.reason }));`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    // Reading is allowed (the module and env); FFI is not.
    args: ["run", "--no-config", "--no-prompt", "--allow-read", "--allow-env", script],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  await Deno.remove(dir, { recursive: true });
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const r = JSON.parse(new TextDecoder().decode(out.stdout).trim());
  assert.equal(r.blas, true);
  assert.match(r.reason, /FFI is not permitted/);
});

Deno.test("isNoBlas and the candidate list", () => {
  for (const v of ["none", "NONE", "off", "0", " false "]) assert.ok(isNoBlas(v), v);
  for (const v of [undefined, "", "libopenblas.so.0", "/x/none.so"]) assert.ok(!isNoBlas(v));
  const c = blasCandidates();
  if (Deno.build.os === "linux") {
    assert.equal(c[0], "libopenblas.so.0");
    assert.ok(c.some((p) => p.endsWith("/openblas-pthread/libopenblas.so.0")));
    assert.ok(c.some((p) => p.endsWith("/openblas-openmp/libopenblas.so.0")));
    assert.ok(
      c.includes("libblis.so.4") && c.includes("libmkl_rt.so") && c.includes("libblas.so.3"),
    );
  }
});

Deno.test({
  name: "an own handle closes without touching the shared one",
  ignore: !blas,
  fn() {
    const own = loadBlas({ own: true, threads: 1 }).blas!;
    assert.notEqual(own, blas);
    const a = new Float32Array([1, 2, 3, 4]), c = new Float32Array(4);
    own.gemm(false, false, 2, 2, 2, 1, a, 2, a, 2, 0, c, 2);
    assert.deepEqual([...c], [7, 10, 15, 22]);
    own.close();
    assert.equal(loadBlas().blas, blas, "the shared handle is still the cached one");
    blas!.gemm(false, false, 2, 2, 2, 1, a, 2, a, 2, 0, c.fill(0), 2);
    assert.deepEqual([...c], [7, 10, 15, 22]);
  },
});
