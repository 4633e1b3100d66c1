/**
 * The Markdown tables the benchmarks print (bench/README.md shows them).
 *
 * @module
 */

/** A table cell: printed as is (numbers through `String`). */
export type Cell = string | number;

/** A Markdown table: the header row, the `---` row, then one line per row. */
export function table(header: readonly string[], rows: readonly (readonly Cell[])[]): string {
  const line = (cells: readonly Cell[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}
