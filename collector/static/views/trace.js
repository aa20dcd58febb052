// One trace: header, span tree with a timeline, the selected span (LLM calls as a conversation
// with every choice), metadata, tags, assessments and a feedback form.

import { api } from "../api.js";
import {
  h, clear, clause, empty, errorBox, fmtCost, fmtInt, fmtMs, fmtTime, safeLink, show, toast,
} from "../dom.js";
import { exportSft, tracesLink } from "../app.js";

export async function traceView(main, traceId, ctx) {
  let trace;
  let usage = {};
  try {
    [trace, usage] = await Promise.all([api.trace(traceId), api.llmUsage([traceId]).then((r) => r.usage)]);
  } catch (err) {
    main.append(h("h1", {}, "Trace"), err.status === 404
      ? empty("No such trace", `No trace ${traceId} is stored in this project.`, h("a", { href: "#/traces" }, "Back to the list"))
      : errorBox(err));
    return;
  }
  const info = trace.info;
  const spans = trace.data.spans;
  const call = usage[info.trace_id];
  const tags = info.tags || {};
  const identity = [["user", "trace.user"], ["session", "trace.session"], ["environment", "trace.environment"]]
    .filter(([, k]) => tags[k]);

  main.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/traces" }, "Traces"), " / ", h("span", {}, info.trace_id)),
    h("header", { class: "trace-head" },
      h("h1", {}, info.name || "(unnamed trace)", " ", h("span", { class: `badge ${info.state === "ERROR" ? "err" : "ok"}` }, info.state)),
      h("dl", { class: "facts" },
        fact("Started", fmtTime(info.request_time)),
        fact("Duration", fmtMs(info.execution_duration)),
        identity.map(([label, key]) => fact(label[0].toUpperCase() + label.slice(1),
          label === "session"
            ? h("a", { href: `#/session/${encodeURIComponent(tags[key])}` }, tags[key])
            : h("a", { href: tracesLink(clause("tags", key, tags[key])) }, tags[key]))),
        call ? fact("Model", call.models.join(", ") || "–") : null,
        call ? fact("Tokens in / out", `${fmtInt(call.input_tokens)} / ${fmtInt(call.output_tokens)}${call.usage_estimated ? " (estimated)" : ""}`) : null,
        call ? fact("Cost", fmtCost(call.cost_usd)) : null,
        info.client_request_id ? fact("Client request id", info.client_request_id) : null,
        fact("Project", info.project),
        fact("Trace id", h("code", {}, info.trace_id))),
      h("div", { class: "head-actions" },
        !ctx.me || ctx.me.rights.includes("admin") ? h("button", { type: "button", class: "secondary", id: "export-one",
          on: { click: () => exportSft({ trace_ids: [info.trace_id] }) } }, "Add to SFT export") : null)));

  const detail = h("section", { class: "span-detail", "aria-label": "Selected span", id: "span-detail" });
  const tree = spanTree(spans, (span) => showSpan(detail, span));
  main.append(h("div", { class: "trace-body" },
    h("section", { class: "spans", "aria-labelledby": "spans-title" },
      h("h2", { id: "spans-title" }, trace.data.omitted_spans
        ? `Spans (first ${spans.length} of ${spans.length + trace.data.omitted_spans})` : `Spans (${spans.length})`), tree),
    detail));
  const first = spans.find(isChat) || spans.find((sp) => !sp.parent_id) || spans[0];
  if (first) tree.select(first.span_id, false);
  else detail.append(empty("No spans", "This trace's spans were not stored (or not captured by the project's settings)."));

  const side = h("div", { class: "trace-side" });
  main.append(side);
  renderCuration(side, info, ctx);
}

function fact(label, value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value));
}

// -- the span tree -----------------------------------------------------------------------------

function spanTree(spans, onSelect) {
  const ids = new Set(spans.map((sp) => sp.span_id));
  const children = new Map();
  const roots = [];
  for (const sp of [...spans].sort((a, b) => a.start_time_ns - b.start_time_ns)) {
    if (sp.parent_id && ids.has(sp.parent_id)) {
      if (!children.has(sp.parent_id)) children.set(sp.parent_id, []);
      children.get(sp.parent_id).push(sp);
    } else roots.push(sp);
  }
  const start = Math.min(...spans.map((sp) => sp.start_time_ns));
  const end = Math.max(...spans.map((sp) => sp.end_time_ns ?? sp.start_time_ns));
  const total = Math.max(end - start, 1);
  const list = h("ol", { class: "span-tree", role: "listbox", "aria-label": "Span tree with timeline" });
  const rows = new Map();
  const walk = (sp, depth) => {
    const dur = (sp.end_time_ns ?? sp.start_time_ns) - sp.start_time_ns;
    const bar = h("span", { class: `bar ${sp.status === "ERROR" ? "err" : ""} type-${(sp.span_type || "").toLowerCase()}` });
    bar.style.left = `${((sp.start_time_ns - start) / total) * 100}%`;
    bar.style.width = `${Math.max((dur / total) * 100, 0.4)}%`;
    const label = h("span", { class: "span-name" }, sp.name);
    label.style.paddingLeft = `${depth * 14}px`;
    const item = h("li", { role: "option", tabindex: "-1", "aria-selected": "false", class: "span-row",
      dataset: { spanId: sp.span_id }, "aria-label": `${sp.name}, ${sp.span_type}, ${fmtMs(dur / 1e6)}${sp.status === "ERROR" ? ", error" : ""}` },
      label, h("span", { class: "type" }, sp.span_type === "UNKNOWN" ? "" : sp.span_type),
      h("span", { class: "timeline" }, bar), h("span", { class: "dur" }, fmtMs(dur / 1e6)));
    item.addEventListener("click", () => select(sp.span_id, true));
    rows.set(sp.span_id, [item, sp]);
    list.append(item);
    for (const child of children.get(sp.span_id) || []) walk(child, depth + 1);
  };
  roots.forEach((r) => walk(r, 0));
  function select(spanId, focus) {
    for (const [id, [item]] of rows) {
      const on = id === spanId;
      item.setAttribute("aria-selected", on ? "true" : "false");
      item.tabIndex = on ? 0 : -1;
      if (on && focus) item.focus();
    }
    onSelect(rows.get(spanId)[1]);
  }
  list.addEventListener("keydown", (e) => {
    const current = e.target.closest("li");
    if (!current) return;
    let next = null;
    if (e.key === "ArrowDown") next = current.nextElementSibling;
    else if (e.key === "ArrowUp") next = current.previousElementSibling;
    else if (e.key === "Home") next = list.firstElementChild;
    else if (e.key === "End") next = list.lastElementChild;
    if (next) { e.preventDefault(); select(next.dataset.spanId, true); }
  });
  list.select = select;
  return list;
}

// -- one span ------------------------------------------------------------------------------------

function isChat(span) {
  return span.inputs && Array.isArray(span.inputs.messages);
}

function showSpan(box, sp) {
  clear(box);
  const dur = ((sp.end_time_ns ?? sp.start_time_ns) - sp.start_time_ns) / 1e6;
  box.append(h("h2", {}, sp.name, " ", h("span", { class: "type" }, sp.span_type)),
    h("dl", { class: "facts" },
      fact("Status", h("span", { class: `badge ${sp.status === "ERROR" ? "err" : "ok"}` }, sp.status)),
      sp.status_message ? fact("Message", sp.status_message) : null,
      fact("Start", fmtTime(Math.floor(sp.start_time_ns / 1e6))),
      fact("Duration", fmtMs(dur)),
      fact("Span id", h("code", {}, sp.span_id))));
  if (isChat(sp)) {
    box.append(conversation(sp.inputs, sp.outputs));
  } else {
    box.append(h("h3", {}, "Inputs"), json(sp.inputs), h("h3", {}, "Outputs"), json(sp.outputs));
  }
  for (const ev of sp.events || []) {
    box.append(h("div", { class: ev.name === "exception" ? "error" : "event" },
      h("strong", {}, ev.name), " ", show(ev.attributes["exception.message"] || ""),
      ev.attributes["exception.stacktrace"] ? h("pre", {}, ev.attributes["exception.stacktrace"]) : null));
  }
  box.append(h("details", {}, h("summary", {}, `Attributes (${Object.keys(sp.attributes || {}).length})`), json(sp.attributes)));
  if (isChat(sp)) box.append(h("details", {}, h("summary", {}, "Request and response as stored"), json(sp.inputs), json(sp.outputs)));
}

function json(value) {
  return h("pre", { class: "json" }, value === undefined ? "null" : JSON.stringify(value, null, 2));
}

function content(message) {
  const c = message ? message.content : null;
  if (typeof c === "string") return c;
  if (Array.isArray(c)) return c.map((part) => (part && part.type === "text" ? part.text : JSON.stringify(part))).join("\n");
  return c === null || c === undefined ? "" : JSON.stringify(c);
}

function bubble(message, extraClass = "", badge = null) {
  const role = (message && message.role) || "message";
  return h("div", { class: `msg role-${role} ${extraClass}` },
    h("div", { class: "msg-role" }, role, message && message.name ? ` (${message.name})` : "", badge),
    content(message) ? h("div", { class: "msg-text" }, content(message)) : null,
    message && message.tool_calls ? h("pre", { class: "json" }, JSON.stringify(message.tool_calls, null, 2)) : null);
}

function conversation(request, response) {
  const out = h("section", { class: "conversation", "aria-label": "Conversation" },
    h("h3", {}, "Conversation", request.model ? ` · ${request.model}` : ""));
  for (const message of request.messages) out.append(bubble(message));
  const choices = (response && response.choices) || [];
  const selectedIndex = response ? response.selected_choice_index : null;
  if (response && response.error) out.append(h("div", { class: "error" }, show(response.error)));
  if (choices.length) {
    out.append(h("h3", { id: "choices-title" }, choices.length === 1 ? "Response" : `Choices (${choices.length})`));
    const list = h("ol", { class: "choices", "aria-labelledby": "choices-title" });
    for (const choice of choices) {
      const chosen = choice.index === selectedIndex;
      list.append(h("li", { class: `choice${chosen ? " selected" : ""}`, dataset: { choiceIndex: String(choice.index) },
        "aria-current": chosen ? "true" : null },
        bubble(choice.message, "", h("span", { class: "choice-meta" },
          ` · choice ${choice.index}`, choice.finish_reason ? ` · ${choice.finish_reason}` : "",
          chosen ? h("span", { class: "selected-mark" }, "✓ selected") : null))));
    }
    out.append(list);
  }
  if (response && response.usage) {
    out.append(h("p", { class: "hint" }, `Usage: ${fmtInt(response.usage.prompt_tokens ?? response.usage.input_tokens)} in, ` +
      `${fmtInt(response.usage.completion_tokens ?? response.usage.output_tokens)} out${response.usage_estimated ? " (estimated)" : ""}`));
  }
  return out;
}

// -- metadata, tags, assessments, feedback -------------------------------------------------------

function renderCuration(side, info, ctx) {
  clear(side);
  const canWrite = !ctx.me || ctx.me.rights.includes("write");
  const refresh = async () => {
    const fresh = await api.trace(info.trace_id);
    renderCuration(side, fresh.info, ctx);
  };
  side.append(metadataSection(info), tagsSection(info, canWrite, refresh), assessmentsSection(info),
    canWrite ? feedbackForm(info, ctx, refresh) : h("p", { class: "hint" }, "This API key may read only: no tagging or feedback."));
}

function metadataSection(info) {
  const rows = Object.entries(info.metadata || {});
  const section = h("section", { class: "card", "aria-labelledby": "metadata-title" }, h("h2", { id: "metadata-title" }, "Metadata"));
  if (!rows.length) {
    section.append(h("p", { class: "hint" }, "No metadata. Applications set it with update_current_trace(metadata={...})."));
    return section;
  }
  section.append(h("table", { class: "kv", id: "metadata-table" }, h("tbody", {}, rows.map(([k, v]) =>
    h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, metadataValue(v)))))));
  return section;
}

function metadataValue(value) {
  if (value && typeof value === "object" && value.type === "url") return safeLink(value.url, value.text);
  if (value && typeof value === "object" && value.type === "string") return value.value;
  return show(value);
}

function tagsSection(info, canWrite, refresh) {
  const section = h("section", { class: "card", "aria-labelledby": "tags-title" }, h("h2", { id: "tags-title" }, "Tags"));
  const list = h("ul", { class: "chips", id: "trace-tags" });
  const entries = Object.entries(info.tags || {});
  for (const [k, v] of entries) {
    list.append(h("li", { class: "chip", dataset: { tag: k } },
      h("a", { href: tracesLink(clause("tags", k, v === null ? undefined : v).replace(/ IS NULL$/, " IS NOT NULL")) }, v === null ? k : `${k} = ${v}`),
      canWrite ? h("button", { type: "button", class: "remove", "aria-label": `Remove tag ${k}`, title: `Remove tag ${k}`,
        on: { click: async () => {
          try {
            await api.patchTrace(info.trace_id, { remove_tags: [k] });
            toast(`Removed tag ${k}.`);
            await refresh();
          } catch (err) { toast(err.explain ? err.explain() : String(err), "bad"); }
        } } }, "×") : null));
  }
  section.append(entries.length ? list : h("p", { class: "hint" }, "No tags yet."));
  if (canWrite) {
    const key = h("input", { id: "tag-key", type: "text", required: true, autocomplete: "off" });
    const value = h("input", { id: "tag-value", type: "text", autocomplete: "off" });
    const form = h("form", { class: "inline", "aria-label": "Add a tag" },
      h("label", { for: "tag-key" }, "Key"), key, h("label", { for: "tag-value" }, "Value"), value,
      h("button", { type: "submit" }, "Add tag"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api.patchTrace(info.trace_id, { add_tags: { [key.value.trim()]: value.value === "" ? null : value.value } });
        toast(`Added tag ${key.value.trim()}.`);
        await refresh();
        document.getElementById("tag-key").focus();
      } catch (err) { toast(err.explain ? err.explain() : String(err), "bad"); }
    });
    section.append(form);
  }
  return section;
}

function assessmentsSection(info) {
  const items = info.assessments || [];
  const section = h("section", { class: "card", "aria-labelledby": "assessments-title" },
    h("h2", { id: "assessments-title" }, `Assessments (${items.length})`));
  if (!items.length) {
    section.append(h("p", { class: "hint" }, "No feedback or expectations yet. Log feedback below, or with traceduck.log_feedback()."));
    return section;
  }
  section.append(h("table", { class: "assessments", id: "assessments-table" },
    h("thead", {}, h("tr", {}, ["Name", "Value", "Source", "Rationale", "When"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, items.map((a) => h("tr", { class: a.valid ? "" : "overridden" },
      h("td", {}, a.name, a.kind === "expectation" ? h("span", { class: "type" }, " expectation") : "",
        a.valid ? "" : h("span", { class: "type" }, " overridden")),
      h("td", {}, a.error ? h("span", { class: "badge err" }, a.error.error_message) : show(a.value)),
      h("td", {}, a.source.source_type, a.source.source_id ? ` · ${a.source.source_id}` : ""),
      h("td", { class: "rationale" }, a.rationale || ""),
      h("td", {}, fmtTime(a.create_time_ms)))))));
  return section;
}

function parseValue(text) {
  const t = text.trim();
  if (t === "true" || t === "false") return t === "true";
  if (t !== "" && !Number.isNaN(Number(t))) return Number(t);
  return t;
}

function feedbackForm(info, ctx, refresh) {
  const name = h("input", { id: "feedback-name", type: "text", required: true, value: "is_correct", autocomplete: "off" });
  const value = h("input", { id: "feedback-value", type: "text", required: true, autocomplete: "off",
    "aria-describedby": "feedback-value-help" });
  const rationale = h("textarea", { id: "feedback-rationale", rows: "2" });
  const quick = (v, label) => h("button", { type: "button", class: "secondary", on: { click: () => { value.value = v; value.focus(); } } }, label);
  const form = h("form", { class: "card feedback", "aria-labelledby": "feedback-title" },
    h("h2", { id: "feedback-title" }, "Log feedback"),
    h("div", { class: "field" }, h("label", { for: "feedback-name" }, "Name"), name),
    h("div", { class: "field" }, h("label", { for: "feedback-value" }, "Value"), value, quick("true", "true"), quick("false", "false")),
    h("p", { class: "hint", id: "feedback-value-help" }, "true, false, a number or text."),
    h("div", { class: "field" }, h("label", { for: "feedback-rationale" }, "Rationale"), rationale),
    h("button", { type: "submit", id: "feedback-submit" }, "Log feedback"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api.feedback({ trace_id: info.trace_id, name: name.value.trim(), value: parseValue(value.value),
        rationale: rationale.value.trim() || null,
        source: { source_type: "HUMAN", source_id: ctx.me && ctx.me.key_id ? `key:${ctx.me.key_id}` : "dashboard" } });
      toast(`Logged feedback ${name.value.trim()}.`);
      await refresh();
    } catch (err) { toast(err.explain ? err.explain() : String(err), "bad"); }
  });
  return form;
}
