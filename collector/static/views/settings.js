// Governance: a project's capture facets, PII mode, retention and size cap; the audit log.

import { api } from "../api.js";
import { h, clear, empty, errorBox, fmtInt, fmtTime, show, toast } from "../dom.js";

const FACET_LABELS = {
  prompt: "Prompts (span inputs, request messages)",
  response: "Responses (span outputs, choices)",
  user_identity: "User identity (user ids, client addresses)",
  token_usage: "Token usage and cost",
  latency: "Latency and timing",
  custom_metadata: "Custom metadata and attributes",
  "context.user_group": "Context: user group",
  "context.project": "Context: user project",
  "context.project_supergroup": "Context: project supergroup",
  "context.code_owner": "Context: code owner",
  "context.data_classification": "Context: data classification",
  "context.routing": "Context: model routing",
};
const PII_MODES = [
  ["off", "Off", "store text as it arrives"],
  ["detect", "Detect", "tag traces that contain PII (tag pii.detected), keep the text"],
  ["redact", "Redact", "replace PII with [REDACTED:KIND] before it is stored"],
];
const MAX_EVENTS = 2000;
const RETENTION = [["30", "30 days"], ["90", "90 days"], ["120", "120 days"], ["", "No age-off"]];

async function projectChoice(main, params, ctx, route) {
  if (ctx.me && ctx.me.project) return ctx.me.project;
  // open collector (no keys yet): every project is visible; pick one
  const wanted = params.get("project");
  let names = [];
  try {
    names = (await api.pivot({ group_by: "project", limit: 1000 })).rows.map((r) => r.value).filter(Boolean);
  } catch { names = []; }
  const input = h("input", { id: "project-input", list: "project-names", value: wanted || names[0] || "default", autocomplete: "off" });
  const form = h("form", { class: "inline", "aria-label": "Choose a project" },
    h("label", { for: "project-input" }, "Project"), input,
    h("datalist", { id: "project-names" }, names.map((n) => h("option", { value: n }))),
    h("button", { type: "submit", class: "secondary" }, "Show"));
  form.addEventListener("submit", (e) => { e.preventDefault(); location.hash = `#/${route}?project=${encodeURIComponent(input.value.trim())}`; });
  main.append(form);
  return wanted || names[0] || "default";
}

export async function settingsView(main, params, ctx) {
  main.append(h("h1", {}, "Settings"));
  const project = await projectChoice(main, params, ctx, "settings");
  main.append(h("p", { class: "hint" }, "What project ", h("strong", {}, project),
    " captures and keeps. Changes apply to data written from now on and are recorded in the ",
    h("a", { href: "#/audit" }, "audit log"), "."));
  const box = h("div", {});
  main.append(box);
  let current;
  try {
    const data = await api.settings(project);
    current = data.settings || data;
  } catch (err) {
    box.append(err.status === 403
      ? empty("Admins only", "Project settings need an API key with the admin right.", errorBox(err))
      : errorBox(err));
    return;
  }
  renderForm(box, project, current);
}

function renderForm(box, project, current) {
  clear(box);
  const capture = current.capture || {};
  const facets = Object.keys(capture).length ? Object.keys(capture) : Object.keys(FACET_LABELS);
  const checks = facets.map((f) => h("input", { type: "checkbox", id: `facet-${f}`, name: f, checked: Boolean(capture[f]) }));
  const piiRadios = PII_MODES.map(([value]) => h("input", { type: "radio", name: "pii", id: `pii-${value}`, value,
    checked: (current.pii || "off") === value }));
  const retention = h("select", { id: "retention" },
    RETENTION.map(([value, label]) => h("option", { value, selected: String(current.retention_days ?? "") === value }, label)));
  const size = h("input", { id: "max-size", type: "number", min: "1", step: "1", inputmode: "numeric",
    value: current.max_size_bytes ? String(Math.round(current.max_size_bytes / 1e6)) : "", "aria-describedby": "max-size-help" });
  const form = h("form", { class: "settings", id: "settings-form", "aria-label": `Settings of ${project}` },
    h("fieldset", {}, h("legend", {}, "Capture (opt in per facet)"),
      h("p", { class: "hint" }, "A facet that is off is dropped before anything is written."),
      h("div", { class: "facets" }, facets.map((f, i) => h("div", { class: "check-row" }, checks[i],
        h("label", { for: `facet-${f}` }, FACET_LABELS[f] || f)))),
      h("p", {}, h("button", { type: "button", class: "link", on: { click: () => checks.forEach((c) => { c.checked = true; }) } }, "Select all"),
        " · ", h("button", { type: "button", class: "link", on: { click: () => checks.forEach((c) => { c.checked = false; }) } }, "Select none"))),
    h("fieldset", {}, h("legend", {}, "PII"),
      PII_MODES.map(([value, label, help], i) => h("div", { class: "check-row" }, piiRadios[i],
        h("label", { for: `pii-${value}` }, h("strong", {}, label), ` – ${help}`)))),
    h("fieldset", {}, h("legend", {}, "Retention"),
      h("div", { class: "field" }, h("label", { for: "retention" }, "Delete traces older than"), retention),
      h("div", { class: "field" }, h("label", { for: "max-size" }, "Size cap (MB)"), size),
      h("p", { class: "hint", id: "max-size-help" }, "Oldest traces are deleted first when the project passes the cap. Empty: no cap.")),
    h("button", { type: "submit", id: "save-settings" }, "Save settings"),
    h("span", { id: "settings-status", class: "hint", "aria-live": "polite" }));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      capture: Object.fromEntries(facets.map((f, i) => [f, checks[i].checked])),
      pii: piiRadios.find((r) => r.checked).value,
      retention_days: retention.value ? Number(retention.value) : null,
      max_size_bytes: size.value ? Math.round(Number(size.value) * 1e6) : null,
    };
    try {
      const saved = await api.saveSettings(project, body);
      toast(`Saved the settings of ${project}.`);
      renderForm(box, project, saved.settings || saved);
      box.querySelector("#settings-status").textContent = "Saved. The change is in the audit log.";
    } catch (err) {
      toast(err.explain ? err.explain() : String(err), "bad");
    }
  });
  box.append(form);
}

// -- the audit log -------------------------------------------------------------------------------

function change(before, after) {
  if (before && after && typeof before === "object" && typeof after === "object" && !Array.isArray(before)) {
    // what the event set: the keys of `after` whose value changed
    const keys = Object.keys(after).filter((k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]));
    return h("ul", { class: "changes" }, keys.map((k) => h("li", {}, h("code", {}, k), ": ",
      diffValue(before[k], after[k]))));
  }
  return h("span", {}, `${show(before)} → ${show(after)}`);
}

function diffValue(a, b) {
  if (a && b && typeof a === "object" && typeof b === "object") {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
    return keys.map((k) => `${k} ${show(a[k])} → ${show(b[k])}`).join(", ");
  }
  return `${show(a ?? null)} → ${show(b ?? null)}`;
}

export async function auditView(main, params, ctx) {
  main.append(h("h1", {}, "Audit log"),
    h("p", { class: "hint" }, "Every change to capture, PII, retention, keys, and curation of stored traces, hash-chained so that editing the log shows."));
  const verifyBox = h("div", { id: "audit-verify", "aria-live": "polite" });
  const verify = h("button", { type: "button", class: "secondary", id: "verify-audit", on: { click: async () => {
    clear(verifyBox);
    try {
      const r = await api.verifyAudit();
      verifyBox.append(r.ok
        ? h("p", { class: "ok-box" }, `Chain intact: ${fmtInt(r.events)} events${r.head_hash ? `, head ${r.head_hash.slice(0, 16)}… (event ${r.head_seq})` : ""}.`)
        : h("div", { class: "error" }, h("strong", {}, "The chain is broken."),
          h("ul", {}, (r.problems || []).map((p) => h("li", {}, `event ${p.seq}: ${p.kind} – ${p.message}`)))));
    } catch (err) { verifyBox.append(errorBox(err)); }
  } } }, "Verify the chain");
  main.append(h("p", {}, verify), verifyBox);
  let events = [];
  try {
    // pages come oldest first; read them all (up to MAX_EVENTS) and show the newest first
    let after = 0;
    for (let pages = 0; pages < 50 && after !== null; pages++) {
      const data = await api.audit({ after_seq: after, limit: 1000 });
      events = events.concat(data.events || []).slice(-MAX_EVENTS);
      after = data.next_after_seq ?? null;
    }
  } catch (err) {
    main.append(err.status === 403 ? empty("Admins only", "The audit log needs an API key with the admin right.") : errorBox(err));
    return;
  }
  if (!events.length) {
    main.append(empty("No events yet", "Changing a project's settings, creating or revoking a key, or editing traces adds events here."));
    return;
  }
  events = [...events].sort((a, b) => b.seq - a.seq);
  main.append(h("div", { class: "table-wrap" }, h("table", { class: "audit", id: "audit-table" },
    h("thead", {}, h("tr", {}, ["#", "When", "Actor", "Action", "Target", "Change"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, events.map((ev) => h("tr", {},
      h("td", { class: "num" }, String(ev.seq)), h("td", {}, fmtTime(ev.time)), h("td", {}, ev.actor),
      h("td", {}, h("code", {}, ev.action)), h("td", {}, [ev.project, ev.target].filter((x, i, all) => x && all.indexOf(x) === i).join(" · ")),
      h("td", {}, change(ev.before, ev.after))))))));
}
