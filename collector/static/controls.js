// The filter box and the time-range picker shared by the trace list and the pivot view.
// Their state lives in the URL (#/traces?filter=...&range=24h), so views link to each other.

import { h, clear, code } from "./dom.js";

export const RANGES = [
  ["15m", "Last 15 minutes", 15 * 60_000],
  ["1h", "Last hour", 3_600_000],
  ["24h", "Last 24 hours", 86_400_000],
  ["7d", "Last 7 days", 7 * 86_400_000],
  ["30d", "Last 30 days", 30 * 86_400_000],
  ["all", "All time", null],
  ["custom", "Custom range", null],
];
export const DEFAULT_RANGE = "7d";

/** The view state a URL holds. */
export function readScope(params) {
  const range = RANGES.some(([v]) => v === params.get("range")) ? params.get("range") : DEFAULT_RANGE;
  const num = (name) => (params.get(name) && /^\d+$/.test(params.get(name)) ? Number(params.get(name)) : null);
  return { filter: params.get("filter") || "", range, from: num("from"), to: num("to") };
}

export function scopeParams(scope) {
  const out = { filter: scope.filter || null, range: scope.range };
  if (scope.range === "custom") Object.assign(out, { from: scope.from, to: scope.to });
  return out;
}

/** Concrete [from, to) epoch ms for a scope, resolved now (null: unbounded). */
export function resolveRange(scope, now = Date.now()) {
  if (scope.range === "custom") return { from: scope.from, to: scope.to };
  const found = RANGES.find(([v]) => v === scope.range);
  if (!found || found[2] === null) return { from: null, to: null };
  return { from: now - found[2], to: now + 1 };
}

export function describeRange(scope) {
  if (scope.range === "custom") {
    const f = scope.from ? new Date(scope.from).toLocaleString() : "the beginning";
    const t = scope.to ? new Date(scope.to).toLocaleString() : "now";
    return `from ${f} to ${t}`;
  }
  const found = RANGES.find(([v]) => v === scope.range);
  return found ? found[1].toLowerCase() : "";
}

/** The user's filter plus the time range, for endpoints that take only a filter. */
export function withRange(filter, from, to) {
  const parts = [];
  if (filter && filter.trim()) parts.push(`(${filter.trim()})`);
  if (from !== null && from !== undefined) parts.push(`timestamp_ms >= ${from}`);
  if (to !== null && to !== undefined) parts.push(`timestamp_ms < ${to}`);
  return parts.join(" AND ");
}

function toLocalInput(ms) {
  if (!ms) return "";
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

function fromLocalInput(text) {
  if (!text) return null;
  const ms = new Date(text).getTime();
  return Number.isFinite(ms) ? ms : null;
}

/**
 * The filter form. `onApply(scope)` runs with the new state; `extra` are more controls
 * (e.g. the pivot's group-by) placed before the button.
 */
export function scopeForm(scope, onApply, extra = []) {
  const input = h("input", {
    id: "filter-input", name: "filter", type: "text", class: "filter-input", value: scope.filter,
    spellcheck: "false", autocomplete: "off", "aria-describedby": "filter-error filter-help-summary",
    placeholder: "tags.`trace.user` = 'alice' AND status = 'ERROR'",
  });
  const range = h("select", { id: "range-select", name: "range" },
    RANGES.map(([value, label]) => h("option", { value, selected: value === scope.range }, label)));
  const fromInput = h("input", { type: "datetime-local", id: "range-from", value: toLocalInput(scope.from) });
  const toInput = h("input", { type: "datetime-local", id: "range-to", value: toLocalInput(scope.to) });
  const custom = h("span", { class: "custom-range" },
    h("label", { for: "range-from" }, "From"), fromInput, h("label", { for: "range-to" }, "to"), toInput);
  const syncCustom = () => { custom.hidden = range.value !== "custom"; };
  range.addEventListener("change", syncCustom);
  syncCustom();
  const error = h("div", { id: "filter-error", class: "filter-error", "aria-live": "polite" });
  const form = h("form", { class: "scope", role: "search", "aria-label": "Filter traces" },
    h("div", { class: "filter-row" },
      h("label", { for: "filter-input", class: "filter-label" }, "Filter"),
      input,
      h("button", { type: "submit" }, "Apply")),
    error,
    h("div", { class: "scope-row" },
      h("label", { for: "range-select" }, "Time range"), range, custom, extra,
      help()));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = { filter: input.value.trim(), range: range.value, from: null, to: null };
    if (next.range === "custom") {
      next.from = fromLocalInput(fromInput.value);
      next.to = fromLocalInput(toInput.value);
    }
    onApply(next);
  });
  range.addEventListener("change", () => { if (range.value !== "custom") form.requestSubmit(); });
  return form;
}

function help() {
  return h("details", { class: "filter-help" },
    h("summary", { id: "filter-help-summary" }, "Filter syntax"),
    h("ul", {},
      h("li", {}, code("tags.`trace.user` = 'alice'"), " – one user (click any user, session or tag in the list)"),
      h("li", {}, code("status = 'ERROR' AND execution_time_ms > 2000"), " – slow failures"),
      h("li", {}, code("metadata.app_version LIKE '1.4.%'"), " – LIKE, ILIKE, RLIKE, IN (...), IS NULL"),
      h("li", {}, code("feedback.is_correct = 'false'"), " – the latest feedback of a name"),
      h("li", {}, code("span.type = 'LLM' AND NOT tags.reviewed IS NOT NULL"), " – OR, NOT and parentheses")));
}

/** Show an invalid_filter error under the box: the message and a caret under the character. */
export function showFilterError(form, err, text) {
  const box = form.querySelector("#filter-error");
  const input = form.querySelector("#filter-input");
  clear(box);
  if (!err) {
    input.removeAttribute("aria-invalid");
    return;
  }
  input.setAttribute("aria-invalid", "true");
  const oneLine = (text || "").replace(/[\r\n\t]/g, " ");
  const pos = Math.max(0, Math.min(err.position ?? 0, oneLine.length));
  box.append(
    h("p", { class: "filter-message" }, `Invalid filter at position ${pos}: ${err.detail}`),
    h("pre", { class: "caret", "aria-hidden": "true" },
      h("span", {}, oneLine || " "), "\n", h("span", { class: "caret-mark" }, " ".repeat(pos) + "^")));
  input.focus();
  if (input.setSelectionRange) input.setSelectionRange(pos, Math.min(pos + 1, oneLine.length));
}
