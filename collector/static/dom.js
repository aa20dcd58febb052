// Building the page: DOM nodes from data with textContent only (never innerHTML), formatting,
// and the filter language's quoting rules (the same as traceduck.filters.ast.format_value).

/**
 * h("a", {href: "#/x", class: "c", on: {click: fn}}, "text", child, [more]) -> element.
 * Strings become text nodes; null/undefined/false children are skipped.
 */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "text") {
      el.textContent = String(value);
    } else if (name === "checked" || name === "disabled" || name === "selected" || name === "value") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// -- formatting ------------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

export function fmtTime(ms, seconds = true, short = false) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  const sameYear = d.getFullYear() === new Date().getFullYear();
  const date = short && sameYear ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`
    : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? ":" + pad(d.getSeconds()) : ""}`;
  return `${date} ${time}`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`;
  if (ms < 172_800_000) return `${(ms / 3_600_000).toFixed(1)} h`;
  return `${(ms / 86_400_000).toFixed(1)} days`;
}

export function fmtInt(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

export function fmtCompact(n) {
  if (n === null || n === undefined) return "–";
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(0)}k`;
  if (abs >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n * 100) / 100);
}

export function fmtCost(usd) {
  if (usd === null || usd === undefined) return "–";
  if (usd === 0) return "$0";
  if (usd < 0.01) return `$${usd.toFixed(5)}`;
  if (usd < 100) return `$${usd.toFixed(4)}`;
  return `$${usd.toFixed(2)}`;
}

export function fmtPct(rate) {
  if (rate === null || rate === undefined) return "–";
  const pct = rate * 100;
  return `${pct === 0 || pct >= 10 ? pct.toFixed(0) : pct.toFixed(1)}%`;
}

/** A value as text for display: JSON for objects, as-is for strings. */
export function show(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

// -- the filter language -----------------------------------------------------------------------

/** A key in backticks, a backtick inside doubled. */
export function quoteKey(key) {
  return "`" + String(key).replace(/`/g, "``") + "`";
}

/** A string literal: single quotes, backslashes and quotes escaped. */
export function quoteString(value) {
  return "'" + String(value).replace(/\\/g, "\\\\").replace(/'/g, "''") + "'";
}

/** `<prefix>.<key> = <value>` (or IS NULL for null); numbers stay numbers for feedback. */
export function clause(prefix, key, value) {
  const field = `${prefix}.${quoteKey(key)}`;
  if (value === null || value === undefined) return `${field} IS NULL`;
  if (typeof value === "number" && prefix === "feedback") return `${field} = ${value}`;
  if (typeof value === "boolean") return `${field} = ${quoteString(value ? "true" : "false")}`;
  return `${field} = ${quoteString(value)}`;
}

/** The filter narrowed by one more condition. */
export function addClause(filter, extra) {
  const current = (filter || "").trim();
  if (!current) return extra;
  return /\bor\b/i.test(current) ? `(${current}) AND ${extra}` : `${current} AND ${extra}`;
}

// -- page furniture --------------------------------------------------------------------------

let toastTimer = null;

export function toast(message, kind = "ok") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `toast show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = "toast"; }, 6000);
}

export function empty(title, ...lines) {
  return h("div", { class: "empty", role: "note" }, h("h2", {}, title), lines.map((l) => h("p", {}, l)));
}

export function errorBox(err) {
  const text = err && err.explain ? err.explain() : String(err && err.message ? err.message : err);
  return h("div", { class: "error", role: "alert" }, text);
}

export function code(text) {
  return h("code", {}, text);
}

/** An http(s) URL as a link; anything else stays text (never a javascript: link). */
export function safeLink(url, text) {
  let parsed = null;
  try { parsed = new URL(url); } catch { parsed = null; }
  if (!parsed || (parsed.protocol !== "https:" && parsed.protocol !== "http:")) return h("span", {}, text || url);
  return h("a", { href: parsed.href, target: "_blank", rel: "noopener noreferrer" }, text || url);
}
