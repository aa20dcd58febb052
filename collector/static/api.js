// The collector's JSON API, as any client calls it: Authorization: Bearer <the key the user pasted>.

const KEY = "traceduck.apiKey";

export function getKey() {
  try { return localStorage.getItem(KEY) || ""; } catch { return ""; }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY, key); else localStorage.removeItem(KEY);
  } catch { /* storage disabled: the key lives for this page only */ }
  sessionKey = key || "";
}

let sessionKey = getKey();

/** An answer of 4xx/5xx: `status`, `code` (e.g. invalid_filter), `detail`, `position`. */
export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body.detail === "string" ? body.detail
      : body && body.detail !== undefined ? JSON.stringify(body.detail) : `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.code = (body && body.error) || null;
    this.detail = detail;
    this.position = body && Number.isInteger(body.position) ? body.position : null;
  }

  /** What to tell the user. */
  explain() {
    if (this.status === 401) {
      return getKey() ? "The API key was refused (not valid or revoked). Enter another key."
        : "This collector needs an API key. Enter one with the API key button.";
    }
    if (this.status === 403) return `Not allowed: ${this.detail}.`;
    if (this.status === 404 && this.code === null) return "This collector does not offer that yet.";
    return this.detail;
  }
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => search.append(name, v));
    else search.append(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** fetch + JSON (text for `as: "text"`, {text, headers} for "response"); throws ApiError for an error answer. */
export async function call(method, path, { params, body, as = "json" } = {}) {
  const headers = { Accept: as === "json" ? "application/json" : "*/*" };
  if (sessionKey) headers.Authorization = `Bearer ${sessionKey}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path + query(params), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, { detail: `the collector did not answer (${err.message})`, error: "network" });
  }
  if (!response.ok) {
    let payload = null;
    try { payload = await response.json(); } catch { payload = { detail: response.statusText }; }
    throw new ApiError(response.status, payload);
  }
  if (as === "response") return { text: await response.text(), headers: response.headers };
  return as === "text" ? response.text() : response.json();
}

export const api = {
  me: () => call("GET", "/api/me"),
  search: (params) => call("GET", "/api/traces", { params }),
  trace: (id) => call("GET", `/api/traces/${encodeURIComponent(id)}`),
  patchTrace: (id, body) => call("PATCH", `/api/traces/${encodeURIComponent(id)}`, { body }),
  bulkTags: (body) => call("POST", "/api/traces/tags", { body }),
  feedback: (body) => call("POST", "/api/feedback", { body }),
  pivot: (params) => call("GET", "/api/pivot", { params }),
  timeseries: (params) => call("GET", "/api/timeseries", { params }),
  llmUsage: (traceIds) => call("POST", "/api/llm_usage", { body: { trace_ids: traceIds } }),
  session: (id, params) => call("GET", `/api/sessions/${encodeURIComponent(id)}`, { params }),
  fields: (params) => call("GET", "/api/fields", { params }),
  settings: (project) => call("GET", `/api/projects/${encodeURIComponent(project)}/settings`),
  saveSettings: (project, body) => call("PUT", `/api/projects/${encodeURIComponent(project)}/settings`, { body }),
  audit: (params) => call("GET", "/api/audit", { params }),
  verifyAudit: () => call("GET", "/api/audit/verify"),
  exportSft: (body) => call("POST", "/api/export/sft", { body, as: "response" }),
};
