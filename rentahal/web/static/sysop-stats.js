// The statistics pane: totals, totals by query type, and charts of the timeline per query
// type or per worker.

import { $, dollars, el, option, seconds, when } from "./dom.js";
import { chart } from "./chart.js";
import { cell, scrollTable, syncRows } from "./sysop-widgets.js";

const view = {};
let timeline = null; // the last stats_timeline
let chartBy = "type";
let chartKey = ""; // what the charts were last drawn from

export function buildStats(pane) {
  view.figures = el("dl", { class: "figures" });
  view.typeRows = el("tbody");
  view.chartBy = el("select", { attrs: { id: "sysop-chart-by" } },
    option("type", "per query type"), option("worker", "per worker"));
  view.chartBy.addEventListener("change", () => {
    chartBy = view.chartBy.value;
    renderCharts();
  });
  view.charts = el("div", { class: "charts" }, el("p", { class: "empty", text: "No timeline yet." }));
  pane.append(
    el("h3", { text: "Totals" }),
    view.figures,
    el("h3", { text: "By query type" }),
    scrollTable("Totals by query type", ["Type", "Queries", "Processing time", "Mean time", "Cost"], view.typeRows),
    el("h3", { text: "Over time" }),
    el("div", { class: "field inline-field" }, el("label", { text: "Show", attrs: { for: "sysop-chart-by" } }), view.chartBy),
    view.charts,
  );
}

function figure(label, value) {
  return el("div", { class: "figure" }, el("dt", { text: label }), el("dd", { text: value }));
}

/** The totals system_stats sends. */
export function setStats(stats) {
  if (!stats) {
    view.figures.replaceChildren();
    return;
  }
  view.figures.replaceChildren(
    figure("Queries", String(stats.total_queries)),
    figure("Processing time", seconds(stats.total_processing_time)),
    figure("Cost", dollars(stats.total_cost)),
    figure("Connected now", String(stats.connected_users)),
    figure("Most connected", String(stats.max_connected_users)),
    figure("Updated", stats.last_updated ? when(stats.last_updated) : "never"),
  );
  const byType = stats.by_type || {};
  const types = [...new Set([...Object.keys(byType), ...Object.keys(stats.average_times || {})])].sort();
  const rows = types.map((type) => ({
    type, ...(byType[type] || { queries: 0, processing_time: 0, cost: 0 }), mean: (stats.average_times || {})[type] ?? null,
  }));
  syncRows(view.typeRows, rows, (r) => r.type, (row) => el("tr", {},
    el("th", { attrs: { scope: "row" }, text: row.type }),
    cell(String(row.queries)),
    cell(seconds(row.processing_time)),
    cell(row.mean === null ? "" : seconds(row.mean)),
    cell(dollars(row.cost))));
}

/** The buckets stats_timeline sends. */
export function setTimeline(data) {
  timeline = data;
  renderCharts();
}

/** At stop: the next sysop's charts are drawn from their own timeline. */
export function forgetStats() {
  timeline = null;
  chartKey = "";
}

/** The timeline's start as a Date: epoch seconds or an ISO timestamp. */
function startOf({ start }) {
  return new Date(typeof start === "number" ? start * 1000 : start);
}

export function renderCharts() {
  if (!view.charts || !timeline || $("pane-stats").hidden) return; // drawn when shown, at its width
  const width = view.charts.clientWidth || 640;
  const key = JSON.stringify([timeline, chartBy, width]);
  if (key === chartKey) return; // nothing new: keep the open tables open and the reader in place
  chartKey = key;
  const perWorker = chartBy === "worker";
  const counts = (perWorker ? timeline.by_worker : timeline.by_type) || {};
  const means = (perWorker ? timeline.latency_by_worker : timeline.latency_by_type) || {};
  const step = timeline.bucket_seconds * 1000;
  const first = startOf(timeline).getTime();
  const labels = Array.from({ length: timeline.buckets }, (_, i) => new Date(first + i * step));
  const series = (table) => Object.keys(table).sort().map((name) => ({ name, values: table[name] }));
  const open = [...view.charts.querySelectorAll("details")].map((d) => d.open);
  const by = perWorker ? "worker" : "query type";
  view.charts.replaceChildren(
    chart({
      title: `Queries per ${by}`, labels, bucketSeconds: timeline.bucket_seconds, series: series(counts),
      stacked: true, format: (n) => String(Math.round(n)), yTitle: "Queries", width,
    }),
    chart({
      title: `Mean latency per ${by}`, labels, bucketSeconds: timeline.bucket_seconds, series: series(means),
      stacked: false, format: (n) => `${n < 10 ? n.toFixed(2) : n.toFixed(1)} s`,
      tickFormat: (n) => String(+n.toFixed(2)), yTitle: "Seconds", width,
    }),
  );
  view.charts.querySelectorAll("details").forEach((d, i) => { d.open = Boolean(open[i]); });
}
