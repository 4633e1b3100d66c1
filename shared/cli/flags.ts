/**
 * A small command-line flag parser shared by every adaptmesh CLI.
 *
 * Flags are `--name value` or `--name=value`; a boolean flag is `--name`
 * (or `--name=true|false`). `--help` (or `-h`) asks for the help text.
 * Unknown flags, missing or malformed values, repeated flags and positional
 * arguments are {@link FlagError}s that say what was wrong.
 *
 * @module
 */

/** The value kinds a flag can take. */
export type FlagType = "string" | "number" | "int" | "boolean";

/** One flag's declaration. */
export interface FlagSpec {
  type: FlagType;
  /** One line for `--help`. */
  help: string;
  /** Value when the flag is absent (booleans default to false). */
  default?: unknown;
  /** The flag must be given. */
  required?: boolean;
  /** number/int: the smallest value accepted (shared/cli/flag_rules.ts). */
  min?: number;
  /** number/int: the largest value accepted. */
  max?: number;
}

/** The flag declarations of one command, keyed by flag name (without `--`). */
export type FlagSpecs = Record<string, FlagSpec>;

/** The TypeScript type of a flag's value. */
export type FlagValue<S extends FlagSpec> = S["type"] extends "boolean" ? boolean
  : S["type"] extends "string" ? string
  : number;

/** Parsed flags: a value for every declared flag (undefined if absent, optional and without default). */
export type Flags<T extends FlagSpecs> = {
  [K in keyof T]: T[K] extends { type: "boolean" } ? boolean
    : T[K] extends { required: true } ? FlagValue<T[K]>
    : T[K] extends { default: unknown } ? FlagValue<T[K]>
    : FlagValue<T[K]> | undefined;
};

/** A usage error: unknown flag, bad or missing value. CLIs exit with status 2. */
export class FlagError extends Error {
  override name = "FlagError";
}

/** Thrown by {@link parseFlags} for `--help`; `text` is the help to print (exit 0). */
export class HelpRequested extends Error {
  override name = "HelpRequested";
  /** The full help text. */
  readonly text: string;
  constructor(text: string) {
    super("help requested");
    this.text = text;
  }
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const INT = /^[+-]?\d+$/;

function convert(name: string, spec: FlagSpec, raw: string): string | number | boolean {
  switch (spec.type) {
    case "string":
      return raw;
    case "boolean":
      if (raw === "true" || raw === "1") return true;
      if (raw === "false" || raw === "0") return false;
      throw new FlagError(
        `--${name} is a switch: use --${name} or --${name}=true|false, got "${raw}"`,
      );
    case "int": {
      const v = Number(raw);
      if (!INT.test(raw) || !Number.isSafeInteger(v)) {
        throw new FlagError(`--${name} needs an integer, got "${raw}"`);
      }
      return v;
    }
    case "number": {
      const v = Number(raw);
      if (!NUMBER.test(raw) || !Number.isFinite(v)) {
        throw new FlagError(`--${name} needs a number, got "${raw}"`);
      }
      return v;
    }
  }
}

/** A given number checked against the spec's `min`/`max` (defaults are not checked). */
function inRange<V>(name: string, spec: FlagSpec, v: V): V {
  if (typeof v !== "number") return v;
  if (spec.min !== undefined && v < spec.min) {
    throw new FlagError(`--${name} must be >= ${spec.min}, got ${v}`);
  }
  if (spec.max !== undefined && v > spec.max) {
    throw new FlagError(`--${name} must be <= ${spec.max}, got ${v}`);
  }
  return v;
}

/** The help text: the usage line(s), then one line per flag. */
export function helpText(spec: FlagSpecs, usage: string): string {
  const rows = Object.entries(spec).map(([name, s]) => {
    const arg = s.type === "boolean" ? "" : ` <${s.type}>`;
    const extra = s.required
      ? " (required)"
      : s.default !== undefined
      ? ` (default: ${JSON.stringify(s.default)})`
      : "";
    return [`--${name}${arg}`, s.help + extra];
  });
  rows.push(["--help", "print this help and exit"]);
  const width = Math.max(...rows.map(([f]) => f.length));
  return `${usage.trimEnd()}\n\nOptions:\n` +
    rows.map(([f, h]) => `  ${f.padEnd(width)}  ${h}`).join("\n") + "\n";
}

/**
 * Parses `args` against `spec`. Returns a value for every declared flag
 * (the given one, else the default, else false for booleans, else undefined).
 * Throws {@link HelpRequested} for `--help`/`-h` and {@link FlagError} for
 * usage errors.
 */
export function parseFlags<const T extends FlagSpecs>(
  args: readonly string[],
  spec: T,
  usage: string,
): Flags<T> {
  // --help wins over any other problem on the line.
  if (args.some((a) => a === "--help" || a === "-h")) {
    throw new HelpRequested(helpText(spec, usage));
  }
  const out: Record<string, unknown> = {};
  const given = new Set<string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (!arg.startsWith("--") || arg === "--") {
      throw new FlagError(`unexpected argument "${arg}" (flags look like --name value)`);
    }
    const eq = arg.indexOf("=");
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    if (!Object.hasOwn(spec, name)) {
      throw new FlagError(`unknown flag --${name}`);
    }
    const s = spec[name];
    if (given.has(name)) throw new FlagError(`--${name} given more than once`);
    given.add(name);
    let raw: string;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else if (s.type === "boolean") raw = "true";
    else {
      const next = args[i + 1];
      if (next === undefined || next.startsWith("--")) {
        throw new FlagError(`--${name} needs a value (${s.type})`);
      }
      raw = next;
      i++;
    }
    out[name] = inRange(name, s, convert(name, s, raw));
  }
  for (const [name, s] of Object.entries(spec)) {
    if (given.has(name)) continue;
    if (s.required) throw new FlagError(`missing required flag --${name}`);
    out[name] = s.default !== undefined ? s.default : s.type === "boolean" ? false : undefined;
  }
  return out as Flags<T>;
}

/**
 * Runs a flag-parsing step for a command's entry point: prints the help and
 * exits 0 for `--help`; prints the error and a hint to stderr and exits 2
 * for a usage error; returns the parsed value otherwise.
 */
export function exitOnFlagError<T>(parse: () => T): T {
  const handle = (e: unknown): never => {
    if (e instanceof HelpRequested) {
      console.log(e.text.trimEnd());
      Deno.exit(0);
    }
    if (e instanceof FlagError) {
      console.error(`error: ${e.message}\nRun with --help for usage.`);
      Deno.exit(2);
    }
    throw e;
  };
  try {
    const out = parse();
    return (out instanceof Promise ? out.catch(handle) : out) as T;
  } catch (e) {
    return handle(e);
  }
}

/** {@link parseFlags} for a command's entry point (see {@link exitOnFlagError}). */
export function parseFlagsOrExit<const T extends FlagSpecs>(
  args: readonly string[],
  spec: T,
  usage: string,
): Flags<T> {
  return exitOnFlagError(() => parseFlags(args, spec, usage));
}
