/** Prints rows as an aligned text table with a title; empty lists say so. */
export function printTable<T extends object>(title: string, rows: T[], columns: Array<keyof T & string>): void {
  if (rows.length === 0) {
    console.log(`no ${title}`);
    return;
  }
  const cells = rows.map((row) => columns.map((c) => format((row as Record<string, unknown>)[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const render = (values: string[]): string => values.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log(render(columns.map((c) => c.toUpperCase())));
  for (const row of cells) console.log(render(row));
}

function format(value: unknown): string {
  if (value === null || value === undefined) return '-';
  if (Array.isArray(value)) return value.join(',');
  return String(value);
}
