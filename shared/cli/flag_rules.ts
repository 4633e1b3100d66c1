/**
 * One rule per flag that several commands share, checked at flag parsing
 * (shared/cli/flags.ts, `min`/`max`; a value outside is a usage error, exit 2):
 * `--max-len` (every command that tokenizes), `--port` (cluster,
 * coordinator), `--batch-size` (predict).
 *
 * @module
 */

/** The fewest tokens an example may be cut to: `[CLS] a [SEP] b [SEP]` needs room for specials. */
export const MIN_MAX_LEN = 4;

/** `--max-len N`: tokens per example, specials included; at least {@link MIN_MAX_LEN}. */
export function maxLenFlag(defaultValue: number, help = "maximum tokens per example") {
  return {
    type: "int",
    default: defaultValue,
    min: MIN_MAX_LEN,
    help: `${help} (>= ${MIN_MAX_LEN}; capped at the model's max_position_embeddings)`,
  } as const;
}

/** `--port N`: a TCP port, 0 for any free one. */
export function portFlag(defaultValue: number) {
  return {
    type: "int",
    default: defaultValue,
    min: 0,
    max: 65535,
    help: "port to listen on (0: any free port)",
  } as const;
}

/** `--batch-size N`: examples per forward pass, at least 1. */
export function batchSizeFlag(defaultValue: number) {
  return {
    type: "int",
    default: defaultValue,
    min: 1,
    help: "examples per forward pass",
  } as const;
}
