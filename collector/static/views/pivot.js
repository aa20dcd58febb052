// Pivot: group the traces matching a filter by any field, with a chart over time.

import { api } from "../api.js";
import { h, clear, empty, errorBox, fmtCost, fmtInt, fmtMs, fmtPct, fmtTime, addClause } from "../dom.js";
import { describeRange, readScope, resolveRange, scopeForm, scopeParams, showFilterError } from "../controls.js";
import { timeChart } from "../chart.js";
import { go, tracesLink } from "../app.js";

const NAMED = [
  ["user", "User"], ["session", "Session"], ["environment", "Environment"], ["project", "Project"],
  ["model", "Model"], ["status", "Status"], ["name", "Trace name"], ["pii", "PII detected"],
  ["classification", "Data classification"],
];

export async function pivotView(main, params) {
  const scope = readScope(params);
  const groupBy = params.get("group_by") || "user";
  const { from, to } = resolveRange(scope);

  const select = h("select", { id: "group-by", name: "group_by" });
  const custom = h("input", { id: "group-by-custom", type: "text", placeholder: "tags.<key>", autocomplete: "off",
    "aria-label": "Or group by a field written out, e.g. tags.tier" });
  const apply = (next) => {
    const chosen = custom.value.trim() || select.value;
    go("pivot", { ...scopeParams(next), group_by: chosen });
  };
  const form = scopeForm(scope, apply, [h("label", { for: "group-by" }, "Group by"), select, custom]);
  select.addEventListener("change", () => { custom.value = ""; form.requestSubmit(); });
  const chartBox = h("section", { class: "chart-box", "aria-label": "Over time" });
  const tableBox = h("section", { class: "pivot", "aria-label": "Groups" });
  main.append(h("h1", {}, "Pivot"), form, chartBox, tableBox);

  // the group-by choices: named fields, then the keys in use
  let fields = { tags: [], metadata: [], feedback: [] };
  try { fields = await api.fields({ from, to }); } catch { /* the named fields still work */ }
  const option = (value, label) => h("option", { value, selected: value === groupBy }, label);
  const group = (label, prefix, items) => items.length
    ? h("optgroup", { label }, items.map((f) => option(`${prefix}.${quoteIfNeeded(f.key)}`, `${f.key} (${fmtInt(f.count)})`))) : null;
  select.append(h("optgroup", { label: "Trace" }, NAMED.map(([v, l]) => option(v, l))),
    group("Tags", "tags", fields.tags), group("Metadata", "metadata", fields.metadata), group("Feedback", "feedback", fields.feedback));
  if (![...select.options].some((o) => o.value === groupBy)) custom.value = groupBy;

  let pivot;
  let ts;
  try {
    [pivot, ts] = await Promise.all([
      api.pivot({ group_by: groupBy, filter: scope.filter || null, from, to, limit: 100 }),
      api.timeseries({ filter: scope.filter || null, from, to, buckets: 60 }),
    ]);
  } catch (err) {
    if (err.code === "invalid_filter" && /^group_by:/.test(err.detail)) {
      tableBox.append(errorBox(err));
    } else if (err.code === "invalid_filter") {
      showFilterError(form, err, scope.filter);
      tableBox.append(empty("Fix the filter to pivot", "The caret under the filter marks the problem."));
    } else {
      tableBox.append(errorBox(err));
    }
    return;
  }
  if (!pivot.total.count) {
    tableBox.append(empty("Nothing to pivot",
      `No traces match ${scope.filter ? "this filter" : ""} ${describeRange(scope)}. Widen the time range or clear the filter.`));
    return;
  }
  chartBox.append(h("h2", {}, "Over time"), timeChart(ts, { width: chartBox.clientWidth }));
  const t = pivot.total;
  const max = Math.max(...pivot.rows.map((r) => r.count), 1);
  const label = NAMED.find(([v]) => v === pivot.group_by);
  const rows = pivot.rows.map((r) => {
    const bar = h("span", { class: "share" });
    bar.style.width = `${(r.count / max) * 100}%`;
    const drill = r.filter ? addClause(scope.filter, r.filter) : null;
    const name = r.value === null ? "(none)" : r.value;
    const cell = drill
      ? h("a", { href: tracesLink(drill, scope), title: `Traces where ${r.filter}` }, name)
      : h("span", {}, name);
    return h("tr", {},
      h("th", { scope: "row", class: "group-value" }, cell,
        pivot.group_by === "session" && r.value !== null
          ? h("a", { href: `#/session/${encodeURIComponent(r.value)}`, class: "open-session", "aria-label": `Open session ${r.value}` }, " ↗") : null),
      h("td", { class: "num count" }, h("span", { class: "share-wrap" }, bar), fmtInt(r.count)),
      h("td", { class: `num ${r.error_rate > 0 ? "has-errors" : ""}` }, fmtPct(r.error_rate)),
      h("td", { class: "num" }, fmtMs(r.p50_ms)),
      h("td", { class: "num" }, fmtMs(r.p95_ms)),
      h("td", { class: "num" }, fmtInt(r.input_tokens)),
      h("td", { class: "num" }, fmtInt(r.output_tokens)),
      h("td", { class: "num" }, fmtCost(r.cost_usd)),
      h("td", { class: "when" }, fmtTime(r.last_ms, false)));
  });
  tableBox.append(
    h("h2", {}, `By ${label ? label[1].toLowerCase() : pivot.group_by}`),
    h("p", { class: "hint" }, pivot.groups > pivot.rows.length
      ? `The ${pivot.rows.length} largest of ${fmtInt(pivot.groups)} groups. Click a value to list its traces.`
      : `${fmtInt(pivot.groups)} group${pivot.groups === 1 ? "" : "s"}. Click a value to list its traces.`),
    h("div", { class: "table-wrap" }, h("table", { class: "pivot-table", id: "pivot-table" },
      h("thead", {}, h("tr", {}, ["Value", "Traces", "Error rate", "p50", "p95", "Tokens in", "Tokens out", "Cost", "Last seen"]
        .map((c, i) => h("th", { scope: "col", class: i && i < 8 ? "num" : "" }, c)))),
      h("tbody", {}, rows),
      h("tfoot", {}, h("tr", {},
        h("th", { scope: "row" }, "All matching"),
        h("td", { class: "num" }, fmtInt(t.count)), h("td", { class: "num" }, fmtPct(t.error_rate)),
        h("td", { class: "num" }, fmtMs(t.p50_ms)), h("td", { class: "num" }, fmtMs(t.p95_ms)),
        h("td", { class: "num" }, fmtInt(t.input_tokens)), h("td", { class: "num" }, fmtInt(t.output_tokens)),
        h("td", { class: "num" }, fmtCost(t.cost_usd)), h("td", { class: "when" }, fmtTime(t.last_ms, false)))))));
}

function quoteIfNeeded(key) {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? key : "`" + key.replace(/`/g, "``") + "`";
}
