// A session: its traces in order (request -> response), with totals.

import { api } from "../api.js";
import { h, clause, empty, errorBox, fmtCost, fmtInt, fmtMs, fmtPct, fmtTime } from "../dom.js";
import { tracesLink } from "../app.js";

export async function sessionView(main, sessionId) {
  main.append(h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/traces" }, "Traces"), " / session"),
    h("h1", {}, "Session ", h("code", {}, sessionId)));
  let data;
  try {
    data = await api.session(sessionId);
  } catch (err) {
    main.append(errorBox(err));
    return;
  }
  if (!data.traces.length) {
    main.append(empty("No traces in this session", `No stored trace has the session id ${sessionId}.`));
    return;
  }
  const t = data.total;
  const span = t.first_ms !== null ? t.last_ms - t.first_ms : null;
  main.append(h("dl", { class: "facts totals", id: "session-totals" },
    total("Traces", fmtInt(t.count)), total("Errors", `${fmtInt(Math.round((t.error_rate || 0) * t.count))} (${fmtPct(t.error_rate)})`),
    total("From", fmtTime(t.first_ms)), total("Over", fmtMs(span)),
    total("Latency p50 / p95", `${fmtMs(t.p50_ms)} / ${fmtMs(t.p95_ms)}`),
    total("Tokens in / out", `${fmtInt(t.input_tokens)} / ${fmtInt(t.output_tokens)}`), total("Cost", fmtCost(t.cost_usd))),
  h("p", {}, h("a", { href: tracesLink(clause("tags", "trace.session", sessionId), { range: "all" }) }, "List these traces with the filter")));
  const list = h("ol", { class: "session-list", id: "session-traces" });
  for (const info of data.traces) {
    const usage = data.llm[info.trace_id];
    list.append(h("li", { class: info.state === "ERROR" ? "has-error" : "" },
      h("div", { class: "turn-head" },
        h("a", { href: `#/trace/${info.trace_id}` }, fmtTime(info.request_time)), " ",
        h("strong", {}, info.name || "(unnamed)"), " ",
        h("span", { class: `badge ${info.state === "ERROR" ? "err" : "ok"}` }, info.state), " ",
        h("span", { class: "hint" }, fmtMs(info.execution_duration),
          usage ? ` · ${usage.models.join(", ")} · ${fmtInt(usage.input_tokens)} / ${fmtInt(usage.output_tokens)} tokens · ${fmtCost(usage.cost_usd)}` : "")),
      info.request_preview ? h("div", { class: "msg role-user" }, h("div", { class: "msg-role" }, "request"), h("div", { class: "msg-text" }, info.request_preview)) : null,
      info.response_preview ? h("div", { class: "msg role-assistant" }, h("div", { class: "msg-role" }, "response"), h("div", { class: "msg-text" }, info.response_preview)) : null));
  }
  main.append(list);
  if (data.next_page_token) main.append(h("p", { class: "hint" }, `Showing the first ${data.traces.length} traces of ${fmtInt(t.count)}.`));
}

function total(label, value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value));
}
