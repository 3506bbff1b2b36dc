// A chart.js chart with its text alternative: the canvas says what it shows in a sentence
// (aria-label), and a "show as table" disclosure holds the same figures for reading and for
// screen readers.
import { useEffect, useId, useRef, useState } from 'preact/hooks';
import type { ComponentChildren } from 'preact';
import { THEME_CHANGED_EVENT, cssVariable } from '../../theme.js';
import { BarController, BarElement, CategoryScale, Chart, Legend, LineController, LineElement, LinearScale, PointElement, Tooltip, type ChartConfiguration } from 'chart.js';

// Only the pieces these charts use: the rest of chart.js is left out of the bundle.
Chart.register(LineController, LineElement, PointElement, BarController, BarElement, CategoryScale, LinearScale, Tooltip, Legend);

export interface Palette {
  fg: string;
  fgSoft: string;
  border: string;
  series: string[];
}

function currentPalette(): Palette {
  return {
    fg: cssVariable('--fg'),
    fgSoft: cssVariable('--fg-soft'),
    border: cssVariable('--border'),
    series: ['--accent', '--warn', '--danger', '--ok', '--fg-soft'].map(cssVariable),
  };
}

/** The colours of the scheme in force, again whenever the shell changes it (the picker or the system's). */
export function usePalette(): Palette {
  const [palette, setPalette] = useState(currentPalette);
  useEffect(() => {
    const update = () => setPalette(currentPalette());
    window.addEventListener(THEME_CHANGED_EVENT, update);
    return () => window.removeEventListener(THEME_CHANGED_EVENT, update);
  }, []);
  return palette;
}

export interface Series {
  label: string;
  values: Array<number | null>;
}

/** A line or bar chart of `series` over `labels`, drawn in the scheme's colours. */
export function ChartFigure({
  kind,
  labels,
  series,
  summary,
  palette,
  yTitle,
  table,
}: {
  kind: 'line' | 'bar';
  labels: string[];
  series: Series[];
  /** One sentence with the figures, for those who do not see the chart. */
  summary: string;
  palette: Palette;
  yTitle: string;
  /** The same figures as a table (a <table> with <th>s); null when the page shows one already. */
  table: ComponentChildren;
}) {
  const captionId = useId();
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<{ instance: Chart; kind: string } | null>(null);

  useEffect(() => {
    if (!canvas.current) return;
    const axis = { ticks: { color: palette.fgSoft, maxTicksLimit: 8, autoSkip: true }, grid: { color: palette.border } };
    const config: ChartConfiguration<'line' | 'bar'> = {
      type: kind,
      data: {
        labels,
        datasets: series.map((entry, index) => {
          const colour = palette.series[index % palette.series.length]!;
          // Points only where they can be told apart, and where a stretch of values starts (a value alone draws no line).
          const pointRadius = entry.values.map((value, at) => (value !== null && (labels.length <= 60 || (entry.values[at - 1] ?? null) === null) ? 2.5 : 0));
          return { label: entry.label, data: entry.values, borderColor: colour, backgroundColor: colour, pointRadius, borderWidth: 2, spanGaps: false, maxBarThickness: 56 };
        }),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        // Short: figures that move every few seconds should not keep the chart sliding.
        animation: { duration: 200 },
        interaction: { mode: 'index', intersect: false },
        scales: { x: axis, y: { ...axis, beginAtZero: true, title: { display: true, text: yTitle, color: palette.fgSoft } } },
        plugins: { legend: { display: series.length > 1, labels: { color: palette.fg } } },
      },
    };
    if (chart.current && chart.current.kind === kind) {
      // The same chart with new figures: updated in place (no flash, tooltips stay).
      chart.current.instance.data = config.data;
      chart.current.instance.options = config.options!;
      chart.current.instance.update();
    } else {
      chart.current?.instance.destroy();
      chart.current = { instance: new Chart(canvas.current, config), kind };
    }
  }, [kind, labels, series, palette, yTitle]);

  useEffect(() => () => chart.current?.instance.destroy(), []);

  return (
    <figure class="chart-figure">
      <div class="chart-canvas">
        <canvas ref={canvas} role="img" aria-labelledby={captionId} />
      </div>
      <figcaption id={captionId} class="muted">
        {summary}
      </figcaption>
      {table ? (
        <details class="chart-table">
          <summary>Show as table</summary>
          {table}
        </details>
      ) : null}
    </figure>
  );
}
