// Where a command's output goes. stdout carries the result (answer text, a table, or JSON);
// stderr carries notes, progress and errors, so `elexirion chat ... > answer.txt` and
// `elexirion jobs submit ...` in `$(...)` capture only the result. Every write passes through
// redaction of the API key: whatever a server echoes, the key never reaches the terminal.

const REDACTED = '[REDACTED]';

export class Output {
  /** Whether the last character written to stdout ended a line (the spinner waits for it). */
  private stdoutAtLineStart = true;
  private readonly listeners = new Set<() => void>();

  constructor(
    readonly json: boolean,
    private readonly secret: string | undefined,
  ) {}

  redact(text: string): string {
    return this.secret && this.secret.length >= 8 ? text.split(this.secret).join(REDACTED) : text;
  }

  /** Called before anything is written, so the progress display can clear its line first. */
  beforeWrite(listener: () => void): void {
    this.listeners.add(listener);
  }

  get atLineStart(): boolean {
    return this.stdoutAtLineStart;
  }

  /** Text to stdout as it comes (answer deltas). */
  write(text: string): void {
    if (!text) return;
    for (const listener of this.listeners) listener();
    process.stdout.write(this.redact(text));
    this.stdoutAtLineStart = text.endsWith('\n');
  }

  /** A line to stdout. */
  line(text = ''): void {
    this.write(`${text}\n`);
  }

  /** Ends stdout's current line if text left it open. */
  endLine(): void {
    if (!this.stdoutAtLineStart) this.write('\n');
  }

  /** One JSON document (a unary answer). */
  document(value: unknown): void {
    this.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** One JSON line (one message of a stream). */
  jsonLine(value: unknown): void {
    this.write(`${JSON.stringify(value)}\n`);
  }

  /** A note for people, on stderr; silent under --json (scripts read stdout and the exit code). */
  note(text: string): void {
    if (this.json) return;
    this.error(text);
  }

  /** A line on stderr whatever the mode. */
  error(text: string): void {
    // On one terminal, a note must not land in the middle of an answer's line.
    if (process.stdout.isTTY && process.stderr.isTTY) this.endLine();
    for (const listener of this.listeners) listener();
    process.stderr.write(`${this.redact(text)}\n`);
  }

  /** Rows as aligned columns, the first row being the header; a cell's line breaks become spaces. */
  table(rows: string[][]): void {
    const cells = rows.map((row) => row.map((cell) => cell.replace(/\s*\n\s*/g, ' ')));
    const widths = cells[0]!.map((_, column) => Math.max(...cells.map((row) => (row[column] ?? '').length)));
    for (const row of cells) this.line(row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  ').trimEnd());
  }
}
