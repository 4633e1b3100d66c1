/** shared/engine/devices/cpu/fast_math.ts against Math.exp and the float64 reference erf. */
import assert from "node:assert/strict";
import { erf as fastMathErf, fastExp, geluTable } from "../shared/engine/devices/cpu/fast_math.ts";
import { biasGelu } from "../shared/engine/devices/cpu/layers.ts";
import { erf } from "./support/reference_bert.ts";

Deno.test("fastExp is within 1e-8 (relative) of Math.exp over the float32 range", () => {
  let worst = 0;
  for (let x = -87.2; x < 88.7; x += 0.000731) {
    worst = Math.max(worst, Math.abs(fastExp(x) - Math.exp(x)) / Math.exp(x));
  }
  assert.ok(worst < 1e-8, `worst relative error ${worst}`);
  assert.equal(fastExp(-100), 0);
  assert.equal(fastExp(-Infinity), 0);
  assert.equal(fastExp(100), Infinity);
  assert.equal(fastExp(0), 1);
});

Deno.test("erf (the tables' source) gives tabulated values to 1e-14, odd", () => {
  // Abramowitz & Stegun, Table 7.1 (and any erf table to 16 digits).
  const known: [number, number][] = [
    [0.5, 0.5204998778130465],
    [1, 0.8427007929497149],
    [2, 0.9953222650189527],
    [3.5, 0.9999992569016276],
  ];
  for (const [x, v] of known) {
    assert.ok(Math.abs(fastMathErf(x) - v) < 1e-14, `erf(${x}) = ${fastMathErf(x)}, not ${v}`);
    assert.equal(fastMathErf(-x), -fastMathErf(x));
  }
});

Deno.test("table GELU and its derivative are within 2e-7 of the exact ones, inside and outside [-8, 8]", () => {
  const n = 40001;
  const u = Float32Array.from({ length: n }, (_, i) => -12 + 24 * i / (n - 1));
  const bias = new Float32Array(n), g = new Float32Array(n), d = new Float32Array(n);
  biasGelu(u, bias, g, d, 1, n);
  for (let i = 0; i < n; i++) {
    const z = u[i], cdf = 0.5 * (1 + erf(z / Math.SQRT2));
    const want = z * cdf, slope = cdf + z * Math.exp(-z * z / 2) / Math.sqrt(2 * Math.PI);
    assert.ok(
      Math.abs(g[i] - want) <= 2e-7 + 6e-8 * Math.abs(want),
      `gelu(${z}): ${g[i]} vs ${want}`,
    );
    assert.ok(Math.abs(d[i] - slope) <= 2e-7, `gelu'(${z}): ${d[i]} vs ${slope}`);
  }
  assert.equal(geluTable(), geluTable(), "built once");
});
