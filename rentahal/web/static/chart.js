// Charts of numbers over time buckets, drawn as SVG with DOM calls: no library, no innerHTML,
// nothing parsed from text. A chart is a stacked bar chart (counts: they add up) or a line
// chart (means: they do not). Each one says what it shows in its aria-label, names its axes,
// has a legend, and keeps a table of the same numbers in a <details> for screen readers.

import { el } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
// Distinct on white and on a dark card; a ninth series reuses a colour with a dashed line.
export const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#e8710a", "#0f8b8d", "#8c564b", "#c2185b"];
const HEIGHT = 240;
const MARGIN = { top: 14, right: 14, bottom: 46, left: 62 };
const MIN_LABEL_GAP = 64; // px between time labels on the x axis

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** A top of the y axis and its ticks: 1, 2 or 5 times a power of ten, about four of them. */
export function niceTicks(max, integer) {
  if (!(max > 0)) return integer ? [0, 1] : [0, 0.25, 0.5, 0.75, 1];
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  if (integer) step = Math.max(1, Math.ceil(step));
  const ticks = [];
  for (let i = 0; i * step < max + step - 1e-9; i += 1) ticks.push(+(i * step).toPrecision(12));
  return ticks;
}

/** "14:05", or a date and hour when a bucket spans hours. */
function timeLabel(date, bucketSeconds) {
  if (bucketSeconds >= 6 * 3600) {
    return date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit" });
  }
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function duration(secondsTotal) {
  if (secondsTotal % 3600 === 0) return `${secondsTotal / 3600} hour${secondsTotal === 3600 ? "" : "s"}`;
  if (secondsTotal % 60 === 0) return `${secondsTotal / 60} minute${secondsTotal === 60 ? "" : "s"}`;
  return `${secondsTotal} seconds`;
}

const present = (values) => values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));

/** One sentence per series, for the aria-label: totals for counts, ranges for means. */
function describe(options, series) {
  const { title, labels, bucketSeconds, format, stacked } = options;
  const span = labels.length
    ? `from ${timeLabel(labels[0], bucketSeconds)} to ${timeLabel(labels[labels.length - 1], bucketSeconds)}, ` +
      `${labels.length} buckets of ${duration(bucketSeconds)}`
    : "no time buckets";
  if (!series.length) return `${title}, ${span}: no data.`;
  const parts = series.map(({ name, values }) => {
    const known = present(values);
    if (stacked) {
      const total = known.reduce((a, b) => a + b, 0);
      return `${name} ${format(total)} in total, at most ${format(Math.max(...known))} in one bucket`;
    }
    const last = known[known.length - 1];
    return `${name} from ${format(Math.min(...known))} to ${format(Math.max(...known))}, latest ${format(last)}`;
  });
  return `${title}, ${span}: ${parts.join("; ")}.`;
}

function axes(plot, ticks, yMax, options, x) {
  const { width, labels, bucketSeconds, tickFormat, xTitle, yTitle } = options;
  const group = svg("g", { class: "chart-axes" });
  const bottom = HEIGHT - MARGIN.bottom;
  const y = (v) => bottom - (v / yMax) * plot.height;
  for (const tick of ticks) {
    group.append(
      svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(tick), y2: y(tick), class: "chart-grid" }),
      svg("text", { x: MARGIN.left - 6, y: y(tick) + 4, "text-anchor": "end" }, tickFormat(tick)),
    );
  }
  // Label every k-th bucket so labels never overlap, however narrow the chart.
  const every = Math.max(1, Math.ceil(labels.length / Math.max(1, Math.floor(plot.width / MIN_LABEL_GAP))));
  labels.forEach((date, i) => {
    if (i % every) return;
    group.append(svg("text", { x: x(i), y: bottom + 16, "text-anchor": "middle" }, timeLabel(date, bucketSeconds)));
  });
  group.append(
    svg("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: bottom, y2: bottom, class: "chart-axis" }),
    svg("line", { x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: bottom, class: "chart-axis" }),
    svg("text", { x: MARGIN.left + plot.width / 2, y: HEIGHT - 6, "text-anchor": "middle", class: "chart-title" }, xTitle),
    svg("text", {
      x: -(MARGIN.top + plot.height / 2), y: 13, transform: "rotate(-90)", "text-anchor": "middle", class: "chart-title",
    }, yTitle),
  );
  return group;
}

function drawBars(series, options, plot, yMax) {
  const group = svg("g", { class: "chart-bars" });
  const slot = plot.width / options.labels.length;
  const bottom = HEIGHT - MARGIN.bottom;
  options.labels.forEach((date, i) => {
    let base = 0; // stacked: each series sits on the ones before it
    series.forEach(({ name, values }, s) => {
      const value = values[i] || 0;
      if (!value) return;
      const rect = svg("rect", {
        x: MARGIN.left + i * slot + slot * 0.1,
        y: bottom - ((base + value) / yMax) * plot.height,
        width: Math.max(1, slot * 0.8),
        height: (value / yMax) * plot.height,
        fill: PALETTE[s % PALETTE.length],
      });
      rect.append(svg("title", {}, `${name}, ${timeLabel(date, options.bucketSeconds)}: ${options.format(value)}`));
      group.append(rect);
      base += value;
    });
  });
  return group;
}

function drawLines(series, options, plot, yMax, x) {
  const group = svg("g", { class: "chart-lines" });
  const bottom = HEIGHT - MARGIN.bottom;
  const y = (v) => bottom - (v / yMax) * plot.height;
  series.forEach(({ name, values }, s) => {
    const colour = PALETTE[s % PALETTE.length];
    // A bucket with no queries has no mean: the line breaks there instead of dropping to 0.
    let path = "";
    let drawing = false;
    values.forEach((value, i) => {
      if (value === null || value === undefined) { drawing = false; return; }
      path += `${drawing ? "L" : "M"}${x(i).toFixed(1)},${y(value).toFixed(1)} `;
      drawing = true;
    });
    const line = svg("path", { d: path.trim() || "M0,0", fill: "none", stroke: colour, "stroke-width": 2 });
    if (s >= PALETTE.length) line.setAttribute("stroke-dasharray", "6 3");
    group.append(line);
    values.forEach((value, i) => {
      if (value === null || value === undefined) return;
      const dot = svg("circle", { cx: x(i), cy: y(value), r: 3.5, fill: colour });
      dot.append(svg("title", {}, `${name}, ${timeLabel(options.labels[i], options.bucketSeconds)}: ${options.format(value)}`));
      group.append(dot);
    });
  });
  return group;
}

function legend(series, stacked) {
  return el("ul", { class: "chart-legend" }, ...series.map(({ name }, s) => {
    const swatch = svg("svg", { width: 14, height: 14, viewBox: "0 0 14 14", "aria-hidden": "true" });
    const colour = PALETTE[s % PALETTE.length];
    swatch.append(stacked
      ? svg("rect", { x: 1, y: 1, width: 12, height: 12, fill: colour })
      : svg("line", { x1: 0, y1: 7, x2: 14, y2: 7, stroke: colour, "stroke-width": 3 }));
    return el("li", {}, swatch, el("span", { text: name }));
  }));
}

/** The same numbers as a table: one row per bucket that has any. */
function numbers(series, options) {
  const rows = options.labels.map((date, i) => {
    const values = series.map(({ values }) => values[i]);
    if (!present(values).some((v) => v !== 0)) return null;
    return el("tr", {},
      el("th", { attrs: { scope: "row" }, text: timeLabel(date, options.bucketSeconds) }),
      ...values.map((v) => el("td", { text: v === null || v === undefined ? "—" : options.format(v) })));
  }).filter(Boolean);
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { attrs: { colspan: series.length + 1 }, text: "No data in this period." })));
  }
  return el("details", { class: "chart-numbers" },
    el("summary", { text: "Show the numbers" }),
    el("div", { class: "table-scroll" },
      el("table", {},
        el("caption", { text: `${options.title} (buckets with no data left out)` }),
        el("thead", {}, el("tr", {},
          el("th", { attrs: { scope: "col" }, text: "Time" }),
          ...series.map(({ name }) => el("th", { attrs: { scope: "col" }, text: name })))),
        el("tbody", {}, ...rows))));
}

/**
 * A chart as a <figure>: the SVG, its legend and its numbers.
 *
 * options: {title, labels: [Date], bucketSeconds, series: [{name, values: [number|null]}],
 *           stacked (bars of counts) or not (lines of means), format(number) → text,
 *           tickFormat(number) → the y axis's labels (default: format), xTitle, yTitle, width (px the chart is drawn for: text stays readable on a phone)}
 */
export function chart(options) {
  const opts = { xTitle: "Time", yTitle: "", format: String, width: 640, ...options };
  opts.tickFormat = opts.tickFormat || opts.format; // the y axis's title may carry the unit
  opts.width = Math.max(280, Math.round(opts.width));
  // A series with nothing to draw (no queries of that type) only clutters the legend.
  const series = opts.series.filter(({ values }) => present(values).some((v) => !opts.stacked || v !== 0));
  const plot = { width: opts.width - MARGIN.left - MARGIN.right, height: HEIGHT - MARGIN.top - MARGIN.bottom };
  const slot = plot.width / Math.max(1, opts.labels.length);
  const x = (i) => MARGIN.left + (i + 0.5) * slot;

  const heights = opts.stacked
    ? opts.labels.map((_, i) => series.reduce((sum, { values }) => sum + (values[i] || 0), 0))
    : series.flatMap(({ values }) => present(values));
  const ticks = niceTicks(Math.max(0, ...heights), opts.stacked);
  const yMax = ticks[ticks.length - 1];

  const summary = describe(opts, series);
  const picture = svg("svg", {
    class: "chart-svg", role: "img", "aria-label": summary,
    viewBox: `0 0 ${opts.width} ${HEIGHT}`, width: opts.width, height: HEIGHT,
  });
  picture.append(svg("title", {}, summary), axes(plot, ticks, yMax, opts, x));
  if (!series.length) {
    picture.append(svg("text", {
      x: MARGIN.left + plot.width / 2, y: MARGIN.top + plot.height / 2, "text-anchor": "middle", class: "chart-empty",
    }, "No data in this period"));
  } else {
    picture.append(opts.stacked ? drawBars(series, opts, plot, yMax) : drawLines(series, opts, plot, yMax, x));
  }
  return el("figure", { class: "chart" },
    el("figcaption", { text: opts.title }),
    picture,
    series.length ? legend(series, opts.stacked) : null,
    numbers(series, opts));
}
