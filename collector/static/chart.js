// Charts over time as inline SVG: trace volume (errors stacked on top), latency p50/p95, tokens.

import { h, s, fmtCompact, fmtInt, fmtMs, fmtTime } from "./dom.js";

let W = 960; // the drawing's width: the width it is shown at, so text is drawn at its real size
const PANEL_H = 120;
const LEFT = 58;
const RIGHT = 10;
const TOP = 22;
const BOTTOM = 20;

function niceMax(value) {
  if (!value || value <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * exp >= value) return m * exp;
  return 10 * exp;
}

function tickLabel(ms, bucketMs, spanMs) {
  const d = new Date(ms);
  const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  const md = `${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  if (spanMs <= 86_400_000) return bucketMs < 60_000 ? `${hm}:${String(d.getSeconds()).padStart(2, "0")}` : hm;
  if (bucketMs < 86_400_000) return `${md} ${hm}`;
  return md;
}

/**
 * One panel. `series`: [{label, cls, kind: "bar"|"line", value: bucket -> number|null}];
 * bars stack in order. `fmt` formats the y axis.
 */
function panel(ts, title, series, fmt, y0) {
  const buckets = ts.buckets;
  const n = buckets.length;
  const plotW = W - LEFT - RIGHT;
  const step = plotW / Math.max(n, 1);
  const bars = series.filter((x) => x.kind === "bar");
  const lines = series.filter((x) => x.kind === "line");
  let peak = 0;
  for (const b of buckets) {
    peak = Math.max(peak, bars.reduce((sum, x) => sum + (x.value(b) || 0), 0));
    for (const l of lines) peak = Math.max(peak, l.value(b) || 0);
  }
  const top = niceMax(peak);
  const y = (v) => y0 + TOP + (PANEL_H - TOP - BOTTOM) * (1 - v / top);
  const g = s("g", { class: "panel" });
  g.append(s("text", { x: LEFT, y: y0 + 14, class: "panel-title" }, title));
  let lx = LEFT + 14 + title.length * 8.2;
  for (const x of series) {
    g.append(s("rect", { x: lx, y: y0 + 6, width: 10, height: 10, class: `key ${x.cls}` }));
    g.append(s("text", { x: lx + 14, y: y0 + 15, class: "legend" }, x.label));
    lx += 24 + x.label.length * 6.5;
  }
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    g.append(s("line", { x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v), class: "grid" }));
    g.append(s("text", { x: LEFT - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, fmt(v)));
  }
  buckets.forEach((b, i) => {
    let base = 0;
    for (const x of bars) {
      const v = x.value(b) || 0;
      if (v > 0) {
        g.append(s("rect", { x: LEFT + i * step + step * 0.12, width: Math.max(step * 0.76, 1),
          y: y(base + v), height: Math.max(y(base) - y(base + v), 0.5), class: `bar ${x.cls}` }));
      }
      base += v;
    }
  });
  for (const l of lines) {
    let d = "";
    let pen = false;
    buckets.forEach((b, i) => {
      const v = l.value(b);
      if (v === null || v === undefined) { pen = false; return; }
      d += `${pen ? "L" : "M"}${(LEFT + (i + 0.5) * step).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    if (d) g.append(s("path", { d, class: `line ${l.cls}` }));
    buckets.forEach((b, i) => {
      const v = l.value(b);
      if (v !== null && v !== undefined) g.append(s("circle", { cx: LEFT + (i + 0.5) * step, cy: y(v), r: 2, class: `dot ${l.cls}` }));
    });
  }
  // hover targets: one per bucket, with every figure of the bucket as its tooltip
  buckets.forEach((b, i) => {
    const hit = s("rect", { x: LEFT + i * step, y: y0 + TOP, width: step, height: PANEL_H - TOP - BOTTOM, class: "hit" });
    hit.append(s("title", {}, `${fmtTime(b.start_ms, false)}\n` + series.map((x) => `${x.label}: ${x.fmtValue ? x.fmtValue(x.value(b)) : fmt(x.value(b) || 0)}`).join("\n")));
    g.append(hit);
  });
  return g;
}

function axis(ts, y0) {
  const g = s("g", {});
  const n = ts.buckets.length;
  if (!n) return g;
  const step = (W - LEFT - RIGHT) / n;
  const every = Math.max(1, Math.ceil(n / 8));
  const span = (ts.to_ms || 0) - (ts.from_ms || 0);
  ts.buckets.forEach((b, i) => {
    if (i % every || LEFT + i * step > W - 80) return;
    g.append(s("text", { x: LEFT + i * step, y: y0, class: "axis" }, tickLabel(b.start_ms, ts.bucket_ms, span)));
  });
  return g;
}

function bucketName(ms) {
  const units = [[86_400_000, "day"], [3_600_000, "hour"], [60_000, "minute"], [1000, "second"]];
  for (const [size, name] of units) {
    if (ms % size === 0) {
      const k = ms / size;
      return k === 1 ? name : `${k} ${name}s`;
    }
  }
  return `${ms} ms`;
}

/** The three panels over `ts` (a /api/timeseries answer), with a text summary for screen readers. */
export function timeChart(ts, { panels = ["volume", "latency", "tokens"], width = 960 } = {}) {
  W = Math.max(480, Math.round(width || 960) - 18);
  const defs = {
    volume: ["Traces", [
      { label: "ok", cls: "ok", kind: "bar", value: (b) => b.count - b.errors, fmtValue: fmtInt },
      { label: "errors", cls: "err", kind: "bar", value: (b) => b.errors, fmtValue: fmtInt },
    ], fmtCompact],
    latency: ["Latency", [
      { label: "p50", cls: "p50", kind: "line", value: (b) => b.p50_ms, fmtValue: fmtMs },
      { label: "p95", cls: "p95", kind: "line", value: (b) => b.p95_ms, fmtValue: fmtMs },
    ], fmtMs],
    tokens: ["Tokens", [
      { label: "input", cls: "tin", kind: "bar", value: (b) => b.input_tokens, fmtValue: fmtInt },
      { label: "output", cls: "tout", kind: "bar", value: (b) => b.output_tokens, fmtValue: fmtInt },
    ], fmtCompact],
  };
  const height = panels.length * PANEL_H + 16;
  const total = ts.buckets.reduce((a, b) => a + b.count, 0);
  const errors = ts.buckets.reduce((a, b) => a + b.errors, 0);
  const peak = ts.buckets.reduce((best, b) => (b.count > (best ? best.count : -1) ? b : best), null);
  const label = `Traces per ${bucketName(ts.bucket_ms)}: ${fmtInt(total)} in all, ${fmtInt(errors)} errors` +
    (peak ? `; busiest ${fmtTime(peak.start_ms, false)} with ${fmtInt(peak.count)}` : "");
  const svg = s("svg", { viewBox: `0 0 ${W} ${height}`, class: "chart", role: "img", "aria-label": label });
  panels.forEach((name, i) => {
    const [title, series, fmt] = defs[name];
    svg.append(panel(ts, title, series, fmt, i * PANEL_H));
  });
  svg.append(axis(ts, height - 4));
  return h("figure", { class: "chart-figure" }, svg,
    h("figcaption", {}, `One bar per ${bucketName(ts.bucket_ms)}. Hover a bar for its figures.`));
}
