// The trace list: filter, time range, newest first, keyset paging, selection and bulk curation.

import { api } from "../api.js";
import {
  h, clear, clause, addClause, code, quoteKey, empty, errorBox, fmtCompact, fmtCost, fmtInt, fmtMs, fmtPct, fmtTime, toast,
  show,
} from "../dom.js";
import { describeRange, readScope, resolveRange, scopeForm, scopeParams, showFilterError, withRange } from "../controls.js";
import { timeChart } from "../chart.js";
import { exportSft, go } from "../app.js";

const PAGE_SIZE = 50;
const IDENTITY_TAGS = new Set(["trace.user", "trace.session", "trace.environment"]);
const SORTS = {
  newest: ["Newest first", ["timestamp_ms DESC"]],
  oldest: ["Oldest first", ["timestamp_ms ASC"]],
  slowest: ["Slowest first", ["execution_time_ms DESC"]],
};

export async function tracesView(main, params, ctx) {
  const scope = readScope(params);
  const sort = SORTS[params.get("sort")] ? params.get("sort") : "newest";
  const { from, to } = resolveRange(scope);
  const listFilter = withRange(scope.filter, from, to);
  const sortSelect = h("select", { id: "sort-select" },
    Object.entries(SORTS).map(([value, [label]]) => h("option", { value, selected: value === sort }, label)));
  const apply = (next) => go("traces", { ...scopeParams(next), sort: sortSelect.value === "newest" ? null : sortSelect.value });
  const form = scopeForm(scope, apply, [h("label", { for: "sort-select" }, "Order"), sortSelect]);
  sortSelect.addEventListener("change", () => form.requestSubmit());

  const summary = h("section", { class: "summary", "aria-label": "Summary" });
  const toolbar = h("section", { class: "toolbar", "aria-label": "Curate selected traces" });
  const listBox = h("section", { class: "list", "aria-label": "Traces" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages" });
  main.append(h("h1", {}, "Traces"), form, summary, toolbar, listBox, pager);

  const selected = new Map(); // trace id -> info
  let lastTraces = [];
  let lastUsage = {};
  const tokens = [null];
  let page = 0;
  let total = null;

  // the counts and the first page are asked for together; the counts also check the filter
  const tsPromise = api.timeseries({ filter: scope.filter || null, from, to, buckets: 60 });
  const firstPage = fetchPage(0);
  firstPage.catch(() => null); // handled where it is awaited; not an unhandled rejection meanwhile
  let ts;
  try {
    ts = await tsPromise;
  } catch (err) {
    if (err.code === "invalid_filter") {
      showFilterError(form, err, scope.filter);
      listBox.append(empty("Fix the filter to see traces",
        "The filter above could not be read; the caret marks where the problem is."));
    } else {
      listBox.append(errorBox(err));
    }
    return;
  }
  total = ts.buckets.reduce((a, b) => a + b.count, 0);
  renderSummary();
  const updateToolbar = buildToolbar();
  await loadPage(0, firstPage);

  function renderSummary() {
    clear(summary);
    const errors = ts.buckets.reduce((a, b) => a + b.errors, 0);
    const tin = ts.buckets.reduce((a, b) => a + (b.input_tokens || 0), 0);
    const tout = ts.buckets.reduce((a, b) => a + (b.output_tokens || 0), 0);
    const cost = ts.buckets.reduce((a, b) => a + (b.cost_usd || 0), 0);
    summary.append(h("p", { class: "figures" },
      h("strong", { id: "match-count" }, fmtInt(total)), ` trace${total === 1 ? "" : "s"} ${describeRange(scope)}`,
      total ? ` · ${fmtPct(errors / total)} errors · ${fmtCompact(tin)} tokens in · ${fmtCompact(tout)} out · ${fmtCost(cost)}` : ""));
    if (total) summary.append(timeChart(ts, { panels: ["volume"], width: summary.clientWidth }));
  }

  /** The curation toolbar, built once; the function it returns shows the current selection. */
  function buildToolbar() {
    const canWrite = !ctx.me || ctx.me.rights.includes("write");
    const admin = !ctx.me || ctx.me.rights.includes("admin");
    const key = h("input", { id: "bulk-key", type: "text", placeholder: "key", "aria-label": "Tag key", autocomplete: "off" });
    const value = h("input", { id: "bulk-value", type: "text", placeholder: "value (optional)", "aria-label": "Tag value", autocomplete: "off" });
    const selectedOption = h("option", { value: "selected" });
    const target = h("select", { id: "bulk-target", "aria-label": "Apply to" },
      selectedOption, h("option", { value: "matching" }, `all ${fmtInt(total)} matching`));
    const status = h("span", { class: "selection", id: "selection-count" });
    const tagForm = h("form", { class: "bulk", "aria-label": "Tag traces" },
      h("span", { class: "bulk-label" }, "Tag"), key, h("span", {}, "="), value,
      h("label", { for: "bulk-target" }, "on"), target,
      h("button", { type: "submit", value: "add", id: "bulk-add" }, "Add tag"),
      h("button", { type: "submit", value: "remove", class: "secondary", id: "bulk-remove" }, "Remove tag"));
    tagForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const action = event.submitter ? event.submitter.value : "add";
      const k = key.value.trim();
      if (!k) { toast("Enter a tag key first.", "bad"); key.focus(); return; }
      if (target.value === "selected" && !selected.size) { toast("Select some traces first.", "bad"); return; }
      const body = target.value === "matching" ? { filter: listFilter } : { trace_ids: [...selected.keys()] };
      if (action === "add") body.add_tags = { [k]: value.value === "" ? null : value.value };
      else body.remove_tags = [k];
      try {
        const result = await api.bulkTags(body);
        toast(`${action === "add" ? "Tagged" : "Untagged"} ${fmtInt(result.updated)} trace${result.updated === 1 ? "" : "s"} (${k}).`);
        selected.clear();
        await loadPage(page);
      } catch (err) {
        toast(err.explain ? err.explain() : String(err), "bad");
      }
    });
    const exportButton = h("button", { type: "button", class: "secondary", id: "export-sft",
      title: admin ? "Download the selected traces as OpenAI chat fine-tuning JSONL" : "Exporting needs an API key with the admin right",
      on: { click: () => exportSft({ trace_ids: [...selected.keys()] }) } }, "Add to SFT export");
    const clearButton = h("button", { type: "button", class: "link",
      on: { click: () => { selected.clear(); renderRows(lastTraces, lastUsage); } } }, "Clear selection");
    toolbar.append(h("div", { class: "bulk-more" }, status, exportButton, clearButton),
      canWrite ? tagForm : h("span", { class: "hint" }, "This API key may read only: no tagging."));
    return () => {
      const n = selected.size;
      status.textContent = n ? `${n} selected` : "Select traces (checkbox, or Space on a row) to tag or export them.";
      selectedOption.textContent = `the ${n} selected`;
      exportButton.disabled = !n || !admin;
      clearButton.disabled = !n;
    };
  }

  function fetchPage(index) {
    return api.search({ filter: listFilter || null, max_results: PAGE_SIZE, page_token: tokens[index],
      include_spans: false, order_by: SORTS[sort][1] });
  }

  async function loadPage(index, pending = null) {
    let result;
    try {
      result = await (pending || fetchPage(index));
    } catch (err) {
      clear(listBox);
      if (err.code === "invalid_filter") showFilterError(form, err, scope.filter);
      listBox.append(errorBox(err));
      return;
    }
    page = index;
    tokens[index + 1] = result.next_page_token;
    const ids = result.traces.map((t) => t.info.trace_id);
    let usage = {};
    if (ids.length) {
      try { usage = (await api.llmUsage(ids)).usage; } catch { usage = {}; }
    }
    lastTraces = result.traces;
    lastUsage = usage;
    renderRows(result.traces, usage);
    renderPager(result.next_page_token);
  }

  function renderPager(next) {
    clear(pager);
    if (!lastTraces.length) return;
    const first = page * PAGE_SIZE + 1;
    pager.append(
      h("button", { type: "button", class: "secondary", disabled: page === 0, id: "prev-page",
        on: { click: () => loadPage(page - 1).then(() => focusFirstRow()) } }, "← Previous"),
      h("span", {}, `${fmtInt(first)}–${fmtInt(first + lastTraces.length - 1)} of ${fmtInt(total)}`),
      h("button", { type: "button", class: "secondary", disabled: !next, id: "next-page",
        on: { click: () => loadPage(page + 1).then(() => focusFirstRow()) } }, "Next →"));
  }

  function focusFirstRow() {
    const row = listBox.querySelector("tbody tr");
    if (row) row.focus();
  }

  function narrow(extra) {
    apply({ ...scope, filter: addClause(scope.filter, extra) });
  }

  function valueButton(text, extra, label) {
    if (text === null || text === undefined || text === "") return "";
    return h("button", { type: "button", class: "value", title: `Filter by ${label}`,
      "aria-label": `Filter by ${label}`, on: { click: (e) => { e.stopPropagation(); narrow(extra); } } }, text);
  }

  function renderRows(traces, usage) {
    clear(listBox);
    updateToolbar();
    if (!traces.length) {
      if (!scope.filter && scope.range === "all") {
        listBox.append(empty("No traces yet",
          "Send traces to this collector and they appear here within a second. From Python:",
          code(`traceduck.configure("${location.origin}", api_key="td_...")`),
          "or log chat completions with POST /v1/chat/completions, or point any OpenTelemetry exporter at /v1/traces."));
      } else {
        const box = empty("No traces match",
          `No traces ${scope.filter ? "match this filter " : ""}${describeRange(scope)}. Widen the time range${scope.filter ? " or clear the filter" : ""}.`);
        const actions = h("p", { class: "actions" });
        if (scope.range !== "all") actions.append(h("button", { type: "button", on: { click: () => apply({ ...scope, range: "all" }) } }, "Show all time"));
        if (scope.filter) actions.append(h("button", { type: "button", class: "secondary", on: { click: () => apply({ ...scope, filter: "" }) } }, "Clear the filter"));
        box.append(actions);
        listBox.append(box);
      }
      return;
    }
    const all = h("input", { type: "checkbox", id: "select-page", "aria-label": "Select all traces on this page",
      checked: traces.every((t) => selected.has(t.info.trace_id)) });
    all.addEventListener("change", () => {
      for (const t of traces) {
        if (all.checked) selected.set(t.info.trace_id, t.info); else selected.delete(t.info.trace_id);
      }
      renderRows(traces, usage);
      listBox.querySelector("#select-page").focus();
    });
    const head = h("thead", {}, h("tr", {},
      h("th", { scope: "col", class: "check" }, all),
      ["Time", "Name", "Status", "User", "Session", "Env", "Model", "Latency", "Tokens in / out", "Cost", "Feedback", "Tags"]
        .map((t) => h("th", { scope: "col", class: t === "Latency" || t === "Cost" || t.startsWith("Tokens") ? "num" : "" }, t))));
    const body = h("tbody", {});
    traces.forEach((t, i) => body.append(row(t.info, usage[t.info.trace_id], i === 0)));
    const table = h("table", { class: "traces", id: "trace-table" },
      h("caption", { class: "sr-only" }, "Traces, newest first. Arrow keys move between rows, Enter opens a trace, Space selects it."),
      head, body);
    listBox.append(h("div", { class: "table-wrap" }, table));
  }

  function row(info, usage, first) {
    const id = info.trace_id;
    const box = h("input", { type: "checkbox", class: "row-check", checked: selected.has(id),
      "aria-label": `Select trace ${info.name || id} of ${fmtTime(info.request_time)}` });
    box.addEventListener("click", (e) => e.stopPropagation());
    box.addEventListener("change", () => {
      if (box.checked) selected.set(id, info); else selected.delete(id);
      tr.classList.toggle("is-selected", box.checked);
      updateToolbar();
    });
    const tags = info.tags || {};
    const user = tags["trace.user"];
    const sessionId = tags["trace.session"];
    const env = tags["trace.environment"];
    // tags set as tags first, then those generated from metadata keys; two at most
    const auto = (k) => Object.prototype.hasOwnProperty.call(info.metadata || {}, k);
    const shown = Object.entries(tags).filter(([k]) => !IDENTITY_TAGS.has(k))
      .sort(([a], [b]) => Number(auto(a)) - Number(auto(b)));
    const tagChips = shown.slice(0, 2).map(([k, v]) => valueButton(v === null ? k : `${k}=${v}`,
      v === null ? `tags.${quoteKey(k)} IS NOT NULL` : clause("tags", k, v), `tag ${k}${v === null ? "" : " = " + v}`));
    const extraTags = shown.length - tagChips.length;
    const feedback = latestFeedback(info.assessments || []).map((a) =>
      valueButton(`${a.name}: ${show(a.value)}`, clause("feedback", a.name, a.value), `feedback ${a.name} = ${show(a.value)}`));
    const models = usage ? usage.models : [];
    // one tab stop for the whole list (the first row); arrows move between rows
    const tr = h("tr", { tabindex: first ? "0" : "-1", class: selected.has(id) ? "is-selected" : "", dataset: { traceId: id } },
      h("td", { class: "check" }, box),
      h("td", { class: "time" }, h("a", { href: `#/trace/${id}`, tabindex: "-1", title: fmtTime(info.request_time) },
        fmtTime(info.request_time, true, true))),
      h("td", { class: "name" }, info.name || "(unnamed)"),
      h("td", {}, h("span", { class: `badge ${info.state === "ERROR" ? "err" : "ok"}` }, info.state)),
      h("td", {}, valueButton(user, clause("tags", "trace.user", user), `user ${user}`)),
      h("td", { class: "session" }, sessionId ? [
        valueButton(sessionId, clause("tags", "trace.session", sessionId), `session ${sessionId}`),
        h("a", { href: `#/session/${encodeURIComponent(sessionId)}`, class: "open-session", tabindex: "-1",
          "aria-label": `Open session ${sessionId}`, title: "Open the session" }, "↗")] : ""),
      h("td", {}, valueButton(env, clause("tags", "trace.environment", env), `environment ${env}`)),
      h("td", { class: "model" }, models.map((m) => valueButton(m, clause("span.attributes", "gen_ai.request.model", m), `model ${m}`))),
      h("td", { class: "num" }, fmtMs(info.execution_duration)),
      h("td", { class: "num" }, usage ? `${fmtInt(usage.input_tokens)} / ${fmtInt(usage.output_tokens)}${usage.usage_estimated ? " ~" : ""}` : "–"),
      h("td", { class: "num" }, usage ? fmtCost(usage.cost_usd) : "–"),
      h("td", { class: "feedback" }, feedback),
      h("td", { class: "tags" }, tagChips, extraTags > 0 ? h("span", { class: "more", title: `${extraTags} more tags` }, `+${extraTags}`) : ""));
    tr.addEventListener("click", (e) => {
      if (e.target.closest("button, a, input")) return;
      location.hash = `#/trace/${id}`;
    });
    tr.addEventListener("keydown", (e) => {
      if (e.target !== tr) return;
      const move = (other) => {
        if (!other) return;
        e.preventDefault();
        tr.tabIndex = -1;
        other.tabIndex = 0;
        other.focus();
      };
      if (e.key === "ArrowDown" || e.key === "j") move(tr.nextElementSibling);
      else if (e.key === "ArrowUp" || e.key === "k") move(tr.previousElementSibling);
      else if (e.key === "Home") move(tr.parentElement.firstElementChild);
      else if (e.key === "End") move(tr.parentElement.lastElementChild);
      else if (e.key === "Enter") { e.preventDefault(); location.hash = `#/trace/${id}`; }
      else if (e.key === " " || e.key === "x") { e.preventDefault(); box.click(); }
    });
    return tr;
  }
}

/** The latest valid feedback of each name. */
export function latestFeedback(assessments) {
  const latest = new Map();
  for (const a of assessments) {
    if (a.kind !== "feedback" || !a.valid || a.error) continue;
    const seen = latest.get(a.name);
    if (!seen || a.create_time_ms >= seen.create_time_ms) latest.set(a.name, a);
  }
  return [...latest.values()];
}
