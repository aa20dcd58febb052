// The dashboard's shell: the router (#/traces, #/trace/<id>, #/pivot, #/session/<id>, #/settings,
// #/audit), the API key dialog, and the helpers views share.

import { api, getKey, setKey } from "./api.js";
import { h, clear, code, empty, errorBox, toast } from "./dom.js";
import { scopeParams } from "./controls.js";
import { tracesView } from "./views/traces.js";
import { traceView } from "./views/trace.js";
import { pivotView } from "./views/pivot.js";
import { sessionView } from "./views/session.js";
import { auditView, settingsView } from "./views/settings.js";

const ctx = { me: null };
const main = document.getElementById("main");

/** Go to a view with URL parameters (empty values dropped). */
export function go(view, params = {}) {
  location.hash = hashFor(view, params);
}

function hashFor(view, params) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") search.set(k, String(v));
  const text = search.toString();
  return `#/${view}${text ? "?" + text : ""}`;
}

/** A link to the trace list with a filter (and the time range of `scope`, default all time). */
export function tracesLink(filter, scope = { range: "all" }) {
  return hashFor("traces", { ...scopeParams({ ...scope, filter }) });
}

/** POST /api/export/sft and save the JSONL it answers (OpenAI chat fine-tuning format). */
export async function exportSft(body) {
  try {
    const { text, headers } = await api.exportSft(body);
    let manifest = {};
    try { manifest = JSON.parse(headers.get("X-Traceduck-Manifest") || "{}"); } catch { manifest = {}; }
    const lines = text.split("\n").filter((l) => l.trim()).length;
    const skipped = Object.entries(manifest.skipped || {}).map(([why, n]) => `${n} ${why}`).join(", ");
    if (!lines) {
      toast(`Nothing to export: none of these traces holds a chat conversation${skipped ? ` (${skipped})` : ""}.`, "bad");
      return;
    }
    const url = URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" }));
    const link = h("a", { href: url, download: `traceduck-sft-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.jsonl` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
    toast(`Exported ${lines} example${lines === 1 ? "" : "s"} for fine-tuning (JSONL)${skipped ? `; skipped ${skipped}` : ""}.`);
  } catch (err) {
    toast(err.explain ? err.explain() : String(err), "bad");
  }
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search] = raw.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { view: parts[0] || "traces", arg: parts.slice(1).join("/"), params: new URLSearchParams(search || "") };
}

async function loadMe() {
  try {
    ctx.me = await api.me();
  } catch (err) {
    ctx.me = null;
    return err;
  }
  const who = document.getElementById("who");
  clear(who);
  who.append(ctx.me.open
    ? h("span", { class: "badge warn", title: "No API key exists yet: the collector serves this machine only" }, "open collector")
    : h("span", {}, "project ", h("strong", {}, ctx.me.project), ` · ${ctx.me.rights.join(", ")}`));
  for (const item of document.querySelectorAll("[data-nav=settings], [data-nav=audit]")) {
    item.parentElement.hidden = !ctx.me.rights.includes("admin");
  }
  return null;
}

let renderId = 0;

async function render() {
  const id = ++renderId;
  const { view, arg, params } = parseHash();
  for (const link of document.querySelectorAll("[data-nav]")) {
    const on = link.dataset.nav === view || (view === "trace" && link.dataset.nav === "traces");
    if (on) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const fresh = h("div", { class: `view view-${view}`, dataset: { hash: location.hash } });
  clear(main).append(fresh);
  if (!ctx.me) {
    const err = await loadMe();
    if (id !== renderId) return;
    if (err) {
      fresh.append(err.status === 401
        ? empty(getKey() ? "That API key was refused" : "Enter an API key",
          getKey() ? "The collector does not accept the saved key (it may be revoked). Enter another one."
            : "This collector requires an API key for every request. Paste yours once; it stays in this browser.",
          h("button", { type: "button", id: "enter-key", on: { click: openKeyDialog } }, "Enter API key"),
          h("p", { class: "hint" }, "No key yet? On the collector's machine: ",
            code("traceduck keys create --store traces.duckdb --project NAME --rights read,write,admin")))
        : errorBox(err));
      fresh.dataset.ready = "true";
      return;
    }
  }
  document.title = `traceduck · ${view}`;
  try {
    if (view === "trace" && arg) await traceView(fresh, arg, ctx);
    else if (view === "pivot") await pivotView(fresh, params, ctx);
    else if (view === "session" && arg) await sessionView(fresh, arg, ctx);
    else if (view === "settings") await settingsView(fresh, params, ctx);
    else if (view === "audit") await auditView(fresh, params, ctx);
    else await tracesView(fresh, params, ctx);
  } catch (err) {
    fresh.append(errorBox(err));
  }
  if (id === renderId) fresh.dataset.ready = "true";
}

// -- the API key dialog ------------------------------------------------------------------------

const dialog = document.getElementById("key-dialog");

function openKeyDialog() {
  document.getElementById("key-input").value = getKey();
  dialog.showModal();
  document.getElementById("key-input").focus();
}

document.getElementById("key-button").addEventListener("click", openKeyDialog);
dialog.addEventListener("close", () => {
  const action = dialog.returnValue;
  if (action === "save") setKey(document.getElementById("key-input").value.trim());
  else if (action === "forget") setKey("");
  else return;
  ctx.me = null;
  toast(action === "save" ? "API key saved." : "API key forgotten.");
  render();
});

// "/" focuses the filter box, as in most log viewers
document.addEventListener("keydown", (e) => {
  if (e.key !== "/" || e.target.closest("input, textarea, select")) return;
  const box = document.getElementById("filter-input");
  if (box) { e.preventDefault(); box.focus(); }
});

// the skip link moves focus without touching the route in the URL's hash
document.querySelector(".skip").addEventListener("click", (e) => { e.preventDefault(); main.focus(); });

window.addEventListener("hashchange", render);
render();
