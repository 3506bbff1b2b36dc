import type { Output } from './output.js';

// A spinner with the elapsed time and the current step, on stderr, for work that takes a while.
// Only when stderr is a terminal and the output is not JSON: in a pipe or a log it would be noise.
// While an answer streams to the same terminal mid-line, it stays hidden (clearing its line would
// erase the answer's text); it shows again once stdout is at the start of a line.

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export class Progress {
  private timer: NodeJS.Timeout | undefined;
  private label = '';
  private frame = 0;
  private shown = false;
  private readonly startedAt = performance.now();
  private readonly enabled: boolean;

  constructor(private readonly output: Output) {
    this.enabled = Boolean(process.stderr.isTTY) && !output.json;
    output.beforeWrite(() => this.clear());
  }

  /** Shows (or changes) what is being waited for: "routing", "step plan". */
  set(label: string): void {
    if (!this.enabled) return;
    this.label = label;
    if (!this.timer) {
      this.timer = setInterval(() => this.draw(), 100);
      this.timer.unref();
    }
    this.draw();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.clear();
  }

  private draw(): void {
    if (process.stdout.isTTY && !this.output.atLineStart) return;
    const seconds = ((performance.now() - this.startedAt) / 1000).toFixed(1);
    this.frame = (this.frame + 1) % FRAMES.length;
    const width = (process.stderr.columns || 80) - 1;
    process.stderr.write(`\r\x1b[2K${`${FRAMES[this.frame]} ${seconds}s ${this.label}`.slice(0, width)}`);
    this.shown = true;
  }

  private clear(): void {
    if (!this.shown) return;
    process.stderr.write('\r\x1b[2K');
    this.shown = false;
  }
}
