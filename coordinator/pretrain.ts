/**
 * `deno task pretrain [flags]`: masked-LM pre-training — `deno task cluster`
 * with the objective fixed to mlm (coordinator/cluster.ts, `runCluster`). Its
 * `--help` lists the flags an MLM run reads (`PRETRAIN_FLAGS` in
 * coordinator/run_config.ts, plus the local workers' flags): no
 * `--objective`, and none of the labelled task's flags (`--task`, `--data`,
 * `--train`, `--eval`, `--train-limit`), which are refused as unknown.
 *
 * @module
 */
import { runCluster } from "./cluster.ts";

/** The help's first lines. */
export const PRETRAIN_USAGE = `deno task pretrain [flags]

Masked-LM pre-training on the coordinator and local workers of \`deno task cluster\`:
on the built-in corpora, or on --corpus FILE (one document per line).`;

if (import.meta.main) {
  Deno.exit(await runCluster(Deno.args, { usage: PRETRAIN_USAGE, objective: "mlm" }));
}
