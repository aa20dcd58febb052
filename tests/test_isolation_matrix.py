"""Project isolation as a FULL matrix: every route of the collector x every kind of API key x
three projects, on the real collector process (no mocks).

Three projects (``iso-a``, ``iso-b``, ``iso-c``) are seeded through the real ingest paths (OTLP,
the chat-log API, the feedback API, the governance API) with data that SHARES identifiers across
projects: client request ids, a session, a user, tag keys and values, metadata keys, an LLM
response id, a trace id (one "twin" trace id stored in every project, with different LLM calls),
feedback names and pending feedback. What each project stores as CONTENT carries the project's
token (``Aardvark``, ``Bison``, ``Cobra``), so any answer to a key of one project that carries
another project's token is a leak, whatever the route.

The matrix: ``CASES`` maps each (method, path) of the OpenAPI schema to a case; ``NON_OPENAPI``
does the same for the routes the schema leaves out (the page, static files, the docs). For a
route, ``test_route_isolation`` runs:

1. rights: every key lacking the route's right answers 403 (naming the right), no key and an
   invalid key answer 401;
2. foreign keys (projects B and C, with the right): the case aims at project A's data and
   checks the answer: 404 exactly like an unknown id, 403, or results holding only the caller's
   own data (exact counts differ per project: 4, 2 and 1 "shared" traces);
3. project A's complete state, read with A's key (traces with spans and assessments, pending
   assessments, settings, audit log, LLM usage, ingest counters), is the same before and after
   steps 1-2 (public routes, which serve fixed content, compare that content instead); no answer
   to a key of B or C, or to no key, carries another project's token;
4. own keys (project A, with the right): the same request works (so the case can fail).

``test_every_openapi_operation_has_a_case`` and ``test_every_route_of_the_app_has_a_case`` make
a new route without an isolation case fail the suite. ``test_store_file_after_the_matrix``
stops the collector and checks the DuckDB file itself: project A's rows are exactly what A's key
saw, no A row carries a foreign write's marker, no denied request left anything anywhere.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from _collector import Collector, new_span_id, new_trace_id, otlp_request, otlp_span, post_otlp, trace_fields
from _hostile import Api, KeyInfo, create_keys, query_store, start_collector
from traceduck.governance.policy import ProjectSettings

PROJECTS = {"a": "iso-a", "b": "iso-b", "c": "iso-c"}
#: Content of each project carries its token; identifiers never do (other projects use them too).
TOKENS = {"a": "Aardvark", "b": "Bison", "c": "Cobra"}
RIGHTS = {"rw": "read,write", "read": "read", "write": "write", "admin": "admin", "all": "read,write,admin"}
KEY_SPECS: dict[str, tuple[str, str]] = {
    **{f"{p}_{r}": (PROJECTS[p], rights) for p in ("a", "b") for r, rights in RIGHTS.items()},
    "c_all": (PROJECTS["c"], RIGHTS["all"]),
    "c_read": (PROJECTS["c"], RIGHTS["read"]),
}
BOGUS_KEY = "td_0123456789ab_" + "x" * 43
CALLERS = (*KEY_SPECS, "none", "bogus")
#: How many traces with the shared client request id / session / user / team tag each project has.
SHARED_COUNT = {"a": 4, "b": 2, "c": 1}
TWIN_TOKENS = {"a": 1111, "b": 222, "c": 33}
SHARED_CRID = "crid-shared"
SHARED_SESSION = "sess-shared"
SHARED_USER = "user-shared"
SHARED_RESPONSE = "chatcmpl-iso-shared"
PENDING_CRID = "crid-pending-shared"
#: Marks what keys of B and C write (allowed in their own projects, never in A's rows) ...
INTRUDER = "INTRUDER"
#: ... and what requests that must be refused carry (must not be stored anywhere).
DENIED = "DENIED"
DAY_NS = 86_400 * 10**9


# -- seeding ---------------------------------------------------------------------------------------


@dataclass
class Seed:
    """What one project holds (ids as 32 hex digits)."""

    label: str
    name: str
    token: str
    shared: list[str] = field(default_factory=list)  # crid-shared, team=shared, shared user and session
    only: str = ""  # a trace of this project alone, with its own crid and session
    only_crid: str = ""
    only_session: str = ""
    secret: str = ""  # names an A-only tag key, metadata key and feedback name (guessable by no one)
    old: str = ""  # started 60 days ago (retention 30 days in A and B)
    chat: str = ""  # chat completion logged with SHARED_RESPONSE (2 choices)
    chat_only: str = ""  # chat completion with a response id of this project alone
    chat_only_response: str = ""
    quality: list[str] = field(default_factory=list)  # feedback "quality" on the shared traces
    only_feedback: str = ""
    expectation: str = ""
    pending: list[str] = field(default_factory=list)

    def all_ids(self) -> set[str]:
        return {*self.shared, self.only, self.old, self.chat, self.chat_only}


class Recorder(Api):
    """An ``Api`` that keeps every answer, so the test can look for other projects' tokens."""

    def __init__(self, base_url: str, key: str | None, project: str | None) -> None:
        super().__init__(base_url, key)
        self.project = project
        self.seen: list[httpx.Response] = []

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = super().request(method, path, **kwargs)
        self.seen.append(response)
        return response


@dataclass
class Caller:
    label: str
    api: Recorder
    info: KeyInfo | None

    @property
    def plabel(self) -> str | None:
        return self.label.split("_")[0] if self.info else None

    @property
    def project(self) -> str | None:
        return self.info.project if self.info else None

    @property
    def rights(self) -> frozenset[str]:
        return self.info.rights if self.info else frozenset()


class World:
    def __init__(self, server: Collector, keys: dict[str, KeyInfo], directory: Path) -> None:
        self.server = server
        self.keys = keys
        self.directory = directory
        self.apis: dict[str, Recorder] = {label: Recorder(server.base_url, info.key, info.project)
                                          for label, info in keys.items()}  # fmt: skip
        self.apis["none"] = Recorder(server.base_url, None, None)
        self.apis["bogus"] = Recorder(server.base_url, BOGUS_KEY, None)
        self.seeds: dict[str, Seed] = {}
        self.twin = new_trace_id()
        self.late_trace = new_trace_id().hex()  # A's pending feedback names these; B sends them later
        self.late_crid = f"crid-late-{uuid.uuid4().hex[:8]}"
        self.late_response = f"chatcmpl-late-{uuid.uuid4().hex[:8]}"
        self.scratch: dict[str, Any] = {}
        self._state: dict[str, Any] | None = None

    def api(self, label: str) -> Recorder:
        return self.apis[label]

    def caller(self, label: str) -> Caller:
        return Caller(label, self.apis[label], self.keys.get(label))

    @property
    def a(self) -> Seed:
        return self.seeds["a"]

    def seed_of(self, caller: Caller) -> Seed:
        assert caller.plabel is not None
        return self.seeds[caller.plabel]

    # -- project A's complete state, through A's key -------------------------------------------
    def state(self) -> dict[str, Any]:
        if self._state is None:
            self._state = read_state(self.api("a_all"), PROJECTS["a"])
        return self._state

    def forget_state(self) -> None:
        self._state = None


def ok(response: httpx.Response, status: int = 200) -> httpx.Response:
    assert response.status_code == status, f"{response.request.method} {response.request.url} -> " \
                                           f"{response.status_code} {response.text[:500]}"  # fmt: skip
    return response


def read_state(api: Api, project: str) -> dict[str, Any]:
    traces = ok(api.get("/api/traces", params={"max_results": 50_000})).json()["traces"]
    traces.sort(key=lambda t: t["info"]["trace_id"])
    ids = [t["info"]["trace_id"] for t in traces]
    stats = ok(api.get("/api/stats")).json()
    return {
        "traces": {t["info"]["trace_id"]: t for t in traces},
        "pending": sorted(ok(api.get("/api/assessments/pending")).json(), key=lambda a: a["assessment_id"]),
        "settings": ok(api.get(f"/api/projects/{project}/settings")).json(),
        "audit": ok(api.get("/api/audit", params={"limit": 1000})).json()["events"],
        "llm_usage": ok(api.post("/api/llm_usage", json={"trace_ids": ids})).json(),
        "ingest": {k: v for k, v in stats.items() if not k.endswith("_time")},
    }


def _differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as 'path: before -> after' (the first few)."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(before.keys() | after.keys(), key=str):
            if key not in after:
                out.append(f"{path}.{key}: removed")
            elif key not in before:
                out.append(f"{path}.{key}: added {json.dumps(after[key])[:300]}")
            else:
                out += _differences(before[key], after[key], f"{path}.{key}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in _differences(b, a, f"{path}[{i}]")]
    return [f"{path}: {json.dumps(before)[:300]} -> {json.dumps(after)[:300]}"]


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    return "\n    ".join(_differences(before, after)[:12])


def _root_trace(name: str, text: str, *, start_ns: int | None = None, trace_id: bytes | None = None,
                **fields: Any) -> tuple[str, list[Any]]:  # fmt: skip
    trace_id = trace_id or new_trace_id()
    start = start_ns if start_ns is not None else time.time_ns()
    root = new_span_id()
    attrs = {"traceduck.span_type": "CHAIN", "traceduck.inputs": json.dumps({"q": text}),
             "traceduck.outputs": json.dumps(f"answer to {text}"),
             **trace_fields(**{k: v for k, v in fields.items() if v is not None})}  # fmt: skip
    spans = [otlp_span(trace_id, f"step of {name}", parent=root, start_ns=start + 1_000, duration_ns=1_000),
             otlp_span(trace_id, name, span_id=root, start_ns=start, duration_ns=5_000, attributes=attrs)]  # fmt: skip
    return trace_id.hex(), spans


def _twin_spans(trace_id: bytes, x: str) -> list[Any]:
    """The twin trace as project ``x`` stores it: one root LLM span with two choices."""
    tok = TOKENS[x]
    choices = [{"index": i, "message": {"role": "assistant", "content": f"twin {i} from {tok}"},
                "finish_reason": "stop"} for i in range(2)]  # fmt: skip
    outputs = {"object": "chat.completion", "model": f"model-{tok}", "choices": choices,
               "selected_choice_index": 0, "selected_message": choices[0]["message"]}  # fmt: skip
    attrs = {"traceduck.span_type": "LLM", "gen_ai.request.model": f"model-{tok}",
             "gen_ai.usage.input_tokens": TWIN_TOKENS[x], "gen_ai.usage.output_tokens": 5,
             "traceduck.inputs": json.dumps({"model": f"model-{tok}",
                                             "messages": [{"role": "user", "content": f"twin question from {tok}"}]}),
             "traceduck.outputs": json.dumps(outputs), **trace_fields(tags={"kind": "twin"})}  # fmt: skip
    return [otlp_span(trace_id, f"chat model-{tok}", start_ns=time.time_ns() - 10**9, duration_ns=2_000_000,
                      attributes=attrs)]  # fmt: skip


def chat_body(project: str, response_id: str, tok: str, **extra: Any) -> dict[str, Any]:
    body = {
        "application": project,
        "request": {"model": "gpt-4o-mini", "n": 2,
                    "messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": f"chat question from {tok}"}]},
        "response": {"id": response_id, "object": "chat.completion", "created": int(time.time()), "model": "gpt-4o-mini",
                     "choices": [{"index": i, "message": {"role": "assistant", "content": f"answer {i} from {tok}"},
                                  "finish_reason": "stop"} for i in range(2)],
                     "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}},
        "tags": {"kind": "chat"},
    }  # fmt: skip
    body.update(extra)
    return body


def _seed(world: World, x: str) -> Seed:
    api, tok, name = world.api(f"{x}_all"), TOKENS[x], PROJECTS[x]
    seed = Seed(x, name, tok, only_crid=f"crid-only-{uuid.uuid4().hex[:8]}",
                only_session=f"sess-only-{uuid.uuid4().hex[:8]}",
                chat_only_response=f"chatcmpl-only-{uuid.uuid4().hex[:8]}", secret=uuid.uuid4().hex[:10])  # fmt: skip
    now = time.time_ns()
    spans: list[Any] = []
    for i in range(SHARED_COUNT[x]):
        trace_id, part = _root_trace(
            f"shared {tok}", f"question from {tok}", start_ns=now - (i + 2) * 10**9, client_request_id=SHARED_CRID,
            tags={"team": "shared", f"only_{tok}": "1"},
            metadata={"trace.user": SHARED_USER, "trace.session": SHARED_SESSION, "shared_meta": f"v-{tok}",
                      f"meta_only_{tok}": "1"},
        )  # fmt: skip
        seed.shared.append(trace_id)
        spans += part
    seed.only, part = _root_trace(f"only {tok}", f"only question from {tok}", client_request_id=seed.only_crid,
                                  tags={"kind": "only", f"only_{seed.secret}": "1"},
                                  metadata={"trace.session": seed.only_session, f"meta_{seed.secret}": "1"})  # fmt: skip
    spans += part
    seed.old, part = _root_trace(f"old {tok}", f"old question from {tok}", start_ns=now - 60 * DAY_NS,
                                 tags={"kind": "old"})  # fmt: skip
    spans += part
    spans += _twin_spans(world.twin, x)
    ok(post_otlp(api.client, otlp_request(spans, resource={"service.name": f"svc-{tok}"})))

    shared_chat = ok(api.post("/v1/chat/completions", json=chat_body(name, SHARED_RESPONSE, tok,
                                                                        feedback={"chat_quality": f"chat-{tok}"}))).json()  # fmt: skip
    seed.chat = shared_chat["trace_id"]
    seed.chat_only = ok(api.post("/v1/chat/completions", json=chat_body(name, seed.chat_only_response, tok))).json()[
        "trace_id"]
    for trace_id in seed.shared:
        seed.quality.append(ok(api.post("/api/feedback", json={"trace_id": trace_id, "name": "quality",
                                                               "value": f"q-{tok}"})).json()["assessment_id"])  # fmt: skip
    seed.only_feedback = ok(api.post("/api/feedback", json={"trace_id": seed.only, "name": f"fb_{seed.secret}",
                                                            "value": 1})).json()["assessment_id"]  # fmt: skip
    seed.expectation = ok(api.post("/api/expectations", json={"trace_id": seed.only, "name": "expected",
                                                              "value": f"exp-{tok}"})).json()["assessment_id"]  # fmt: skip
    if x == "a":  # feedback on A's copy of the twin trace id (the others have none)
        ok(api.post("/api/feedback", json={"trace_id": world.twin.hex(), "name": "twin_fb", "value": f"tw-{tok}"}))
    targets = [{"client_request_id": PENDING_CRID}]
    if x == "a":  # B later sends traces and a chat completion with exactly these ids
        targets += [{"trace_id": world.late_trace}, {"client_request_id": world.late_crid},
                    {"response_id": world.late_response}]  # fmt: skip
    for target in targets:
        logged = ok(api.post("/api/feedback", json={**target, "name": "pending", "value": f"p-{tok}"})).json()
        assert logged["trace_id"] is None, logged
        seed.pending.append(logged["assessment_id"])
    if x in ("a", "b"):
        ok(api.put(f"/api/projects/{name}/settings", json={"retention_days": 30}))
    return seed


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("isolation")
    store = str(directory / "iso.duckdb")
    keys = create_keys(store, KEY_SPECS, opt_in=PROJECTS.values())
    server = start_collector(directory, "iso")
    w = World(server, keys, directory)
    try:
        for x in PROJECTS:
            w.seeds[x] = _seed(w, x)
        yield w
    finally:
        for api in w.apis.values():
            api.close()
        server.stop()


# -- checks ----------------------------------------------------------------------------------------


class Check:
    """Problems found for one route, each with the caller and what was asked."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.context = ""

    def that(self, condition: Any, message: str) -> bool:
        if not condition:
            self.items.append(f"[{self.context}] {message}")
        return bool(condition)

    def status(self, response: httpx.Response, *allowed: int) -> bool:
        return self.that(response.status_code in allowed,
                         f"{response.request.method} {response.request.url.path}?{response.request.url.query.decode()}"
                         f" -> {response.status_code} (expected {allowed}): {response.text[:300]}")  # fmt: skip

    def like_unknown(self, response: httpx.Response, unknown: httpx.Response, target: str, unknown_id: str,
                     statuses: tuple[int, ...] = (404,)) -> None:  # fmt: skip
        """``response`` (about another project's ``target``) is exactly the answer for an id that
        does not exist (the ids themselves replaced)."""
        where = f"{response.request.method} {response.request.url.path}"
        if not self.that(response.status_code == unknown.status_code and response.status_code in statuses,
                         f"{where}: {response.status_code} {response.text[:300]} but an unknown id answers "
                         f"{unknown.status_code} (expected one of {statuses})"):  # fmt: skip
            return
        mine, theirs = response.text.replace(target, "<ID>"), unknown.text.replace(unknown_id, "<ID>")
        self.that(mine == theirs, f"{where}: answers {mine[:300]!r}, an unknown id {theirs[:300]!r}")

    def json(self, response: httpx.Response, *allowed: int) -> Any:
        return response.json() if self.status(response, *(allowed or (200,))) else None


def unknown_id() -> str:
    return uuid.uuid4().hex


def leaked(response: httpx.Response, caller: Recorder) -> list[str]:
    """Other projects' tokens in an answer (and their names in a successful one: a 403 may echo
    the project the caller itself named)."""
    own = next((x for x, name in PROJECTS.items() if name == caller.project), None)
    markers = [t for x, t in TOKENS.items() if x != own]
    if response.is_success:
        markers += [n for x, n in PROJECTS.items() if x != own]
    text = response.text + " " + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    return [m for m in markers if m in text]


# -- the cases -------------------------------------------------------------------------------------

Fn = Callable[[World, Caller, Check], None]
Probe = Callable[[World, Api], httpx.Response]


@dataclass
class Case:
    """How to call a route for a target of project A, with a foreign key and with A's own key."""

    right: str | None  # None: a public route
    checks: str
    probe: Probe  # one representative request (the rights step)
    foreign: Fn
    own: Fn
    #: Runs before A's state is read (makes fresh targets, or records counters).
    prepare: Callable[[World], None] | None = None


# GET /api/traces ---------------------------------------------------------------------------------


def search_foreign(w: World, c: Caller, chk: Check) -> None:
    mine = w.seed_of(c)
    found = chk.json(c.api.get("/api/traces", params={"filter": f"client_request_id = '{SHARED_CRID}'"}))
    if found is not None:
        ids = {t["info"]["trace_id"] for t in found["traces"]}
        chk.that(ids == set(mine.shared), f"crid-shared search found {sorted(ids)}, own {sorted(mine.shared)}")
    everything = chk.json(c.api.get("/api/traces", params={"max_results": 50_000, "include_spans": "false"}))
    if everything is not None:
        projects = {t["info"]["project"] for t in everything["traces"]}
        chk.that(projects == {c.project}, f"a search of everything shows projects {projects}")
        ids = {t["info"]["trace_id"] for t in everything["traces"]}
        chk.that(not ids & (w.a.all_ids() - {w.twin.hex()}), "a search of everything shows A's trace ids")
    for flt in (f"client_request_id = '{w.a.only_crid}'", f"tags.`only_{w.a.secret}` = '1'",
                f"metadata.`meta_{w.a.secret}` = '1'", f"feedback.`fb_{w.a.secret}` IS NOT NULL",
                f"tags.`trace.session` = '{w.a.only_session}'", "feedback.twin_fb IS NOT NULL",
                f"span.attributes.`gen_ai.usage.input_tokens` = {TWIN_TOKENS['a']}"):  # fmt: skip
        found = chk.json(c.api.get("/api/traces", params={"filter": flt}))
        chk.that(found is None or found["traces"] == [], f"filter {flt} finds {found}")
    twin = chk.json(c.api.get("/api/traces", params={"filter": "tags.kind = 'twin'"}))
    if twin is not None:
        chk.that([t["info"]["project"] for t in twin["traces"]] == [c.project], f"the twin search: {twin}")
    token = ok(w.api("a_read").get("/api/traces", params={"max_results": 1})).json()["next_page_token"]
    assert token, "project A has more than one trace: its first page has a next page token"
    paged = c.api.get("/api/traces", params={"max_results": 1, "page_token": token})
    chk.that(paged.status_code == 400 and paged.json().get("error") == "invalid_page_token",
             f"A's page token with another key: {paged.status_code} {paged.text[:200]}")  # fmt: skip


def search_own(w: World, c: Caller, chk: Check) -> None:
    found = chk.json(c.api.get("/api/traces", params={"filter": f"client_request_id = '{SHARED_CRID}'"}))
    chk.that(found and {t["info"]["trace_id"] for t in found["traces"]} == set(w.a.shared), f"own search: {found}")
    for flt in ("feedback.twin_fb IS NOT NULL", f"span.attributes.`gen_ai.usage.input_tokens` = {TWIN_TOKENS['a']}",
                f"feedback.`fb_{w.a.secret}` IS NOT NULL"):  # fmt: skip
        found = chk.json(c.api.get("/api/traces", params={"filter": flt}))
        chk.that(found and len(found["traces"]) == 1, f"own search {flt}: {found}")


# GET /api/trace_count ----------------------------------------------------------------------------


def count_foreign(w: World, c: Caller, chk: Check) -> None:
    def count(flt: str | None) -> int | None:
        body = chk.json(c.api.get("/api/trace_count", params={"filter": flt} if flt else None))
        return body and body["count"]

    chk.that(count("tags.team = 'shared'") == SHARED_COUNT[c.plabel], "count of the shared team")
    chk.that(count(f"client_request_id = '{SHARED_CRID}'") == SHARED_COUNT[c.plabel], "count of crid-shared")
    chk.that(count(f"tags.`trace.user` = '{SHARED_USER}'") == SHARED_COUNT[c.plabel], "count of the shared user")
    chk.that(count(f"client_request_id = '{w.a.only_crid}'") == 0, "count of A's own crid")
    chk.that(count("tags.kind = 'twin'") == 1, "count of the twin trace id")
    total = count(None)
    listed = ok(c.api.get("/api/traces", params={"max_results": 50_000, "include_spans": "false"})).json()["traces"]
    chk.that(total == len(listed), f"count {total} but the search lists {len(listed)}")


def count_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/trace_count", params={"filter": "tags.team = 'shared'"}))
    chk.that(body == {"count": SHARED_COUNT["a"]}, f"own count {body}")


# GET / PATCH /api/traces/{trace_id} --------------------------------------------------------------


def get_trace_foreign(w: World, c: Caller, chk: Check) -> None:
    for target in (w.a.only, w.a.old, w.a.chat, w.a.shared[0]):
        other = unknown_id()
        chk.like_unknown(c.api.get(f"/api/traces/{target}"), c.api.get(f"/api/traces/{other}"), target, other)
    twin = chk.json(c.api.get(f"/api/traces/{w.twin.hex()}"))
    if twin is not None:
        chk.that(twin["info"]["project"] == c.project, f"the twin trace shows project {twin['info']['project']}")
        model = twin["data"]["spans"][0]["attributes"].get("gen_ai.request.model")
        chk.that(model == f"model-{w.seed_of(c).token}", f"the twin trace shows the LLM call of {model}")


def get_trace_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get(f"/api/traces/{w.a.only}"))
    chk.that(body and body["info"]["project"] == PROJECTS["a"], f"own trace {body}")


PATCHES = ({"metadata": {"x": INTRUDER}}, {"tags": {"x": INTRUDER}}, {"remove_tags": ["team", "kind"]},
           {"metadata": {"x": INTRUDER}, "add_tags": {"y": INTRUDER}, "remove_tags": ["kind"]})  # fmt: skip


def patch_trace_foreign(w: World, c: Caller, chk: Check) -> None:
    for body in PATCHES:
        other = unknown_id()
        unknown = c.api.patch(f"/api/traces/{other}", json=body)
        for target in (w.a.only, w.a.shared[0]):
            chk.like_unknown(c.api.patch(f"/api/traces/{target}", json=body), unknown, target, other)
    # the twin id names the caller's own trace: the edit lands there, never in A's
    patched = chk.json(c.api.patch(f"/api/traces/{w.twin.hex()}", json={"add_tags": {"patched": INTRUDER}}))
    if patched is not None:
        chk.that(patched["project"] == c.project and patched["tags"].get("patched") == INTRUDER, f"{patched}")


def patch_trace_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.patch(f"/api/traces/{w.a.only}", json={"add_tags": {"owner": c.label}}))
    chk.that(body and body["tags"].get("owner") == c.label, f"own patch {body}")


# GET /api/trace_lookup ---------------------------------------------------------------------------


def lookup_foreign(w: World, c: Caller, chk: Check) -> None:
    mine = w.seed_of(c)
    for param, target in (("client_request_id", w.a.only_crid), ("response_id", w.a.chat_only_response)):
        other = f"nothing-{uuid.uuid4().hex[:8]}"
        chk.like_unknown(c.api.get("/api/trace_lookup", params={param: target}),
                         c.api.get("/api/trace_lookup", params={param: other}), target, other)  # fmt: skip
    shared = chk.json(c.api.get("/api/trace_lookup", params={"client_request_id": SHARED_CRID}))
    chk.that(shared is None or shared["info"]["trace_id"] in mine.shared, f"crid-shared finds {shared and shared['info']}")
    chat = chk.json(c.api.get("/api/trace_lookup", params={"response_id": SHARED_RESPONSE}))
    chk.that(chat is None or chat["info"]["trace_id"] == mine.chat, f"the shared response id finds {chat and chat['info']}")


def lookup_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/trace_lookup", params={"response_id": w.a.chat_only_response}))
    chk.that(body and body["info"]["trace_id"] == w.a.chat_only, f"own lookup {body and body['info']}")


# POST /api/traces/tags ---------------------------------------------------------------------------


def bulk_tags_foreign(w: World, c: Caller, chk: Check) -> None:
    a_ids = sorted(w.a.all_ids() - {w.twin.hex()})
    bodies = [
        ({"trace_ids": a_ids, "add_tags": {INTRUDER: "ids"}, "remove_tags": ["team", "kind"]}, 0),
        ({"trace_ids": a_ids, "filter": "tags.team = 'shared'", "add_tags": {INTRUDER: "both"}}, 0),
        ({"filter": f"client_request_id = '{w.a.only_crid}'", "remove_tags": ["kind"]}, 0),
        ({"filter": f"feedback.`fb_{w.a.secret}` IS NOT NULL", "add_tags": {INTRUDER: "feedback"}}, 0),
        ({"filter": f"tags.`only_{w.a.secret}` = '1'", "add_tags": {INTRUDER: "tag"}}, 0),
        ({"filter": "tags.team = 'shared'", "add_tags": {"bulk": INTRUDER}}, SHARED_COUNT[c.plabel]),
        ({"trace_ids": [w.twin.hex()], "add_tags": {"bulk_twin": INTRUDER}}, 1),
    ]
    for body, expected in bodies:
        answer = chk.json(c.api.post("/api/traces/tags", json=body))
        chk.that(answer == {"updated": expected}, f"bulk tags {body}: {answer}, expected {expected}")


def bulk_tags_own(w: World, c: Caller, chk: Check) -> None:
    answer = chk.json(c.api.post("/api/traces/tags", json={"trace_ids": [w.a.only], "add_tags": {"bulk_own": c.label}}))
    chk.that(answer == {"updated": 1}, f"own bulk tags: {answer}")


# POST /api/feedback, /api/expectations -----------------------------------------------------------


def _assessment_foreign(path: str) -> Fn:
    def foreign(w: World, c: Caller, chk: Check) -> None:
        mine = w.seed_of(c)
        body = {"name": f"{INTRUDER}_name", "value": INTRUDER}
        for kind, target in (("trace_id", w.a.only), ("client_request_id", w.a.only_crid),
                             ("response_id", w.a.chat_only_response), ("trace_id", w.a.shared[0])):  # fmt: skip
            theirs = chk.json(c.api.post(path, json={**body, kind: target}))
            unknown = chk.json(c.api.post(path, json={**body, kind: unknown_id()}))
            if theirs is not None and unknown is not None:
                chk.that(theirs["trace_id"] is None and unknown["trace_id"] is None and theirs["project"] == c.project,
                         f"{kind} of A's trace: attached to {theirs['trace_id']} in {theirs['project']}")  # fmt: skip
                chk.that(theirs.keys() == unknown.keys(), f"{kind}: answers unlike an unknown id")
        # shared ids resolve to the caller's own traces
        for kind, target, expected in (("client_request_id", SHARED_CRID, set(mine.shared)),
                                       ("response_id", SHARED_RESPONSE, {mine.chat}),
                                       ("trace_id", w.twin.hex(), {w.twin.hex()})):  # fmt: skip
            logged = chk.json(c.api.post(path, json={**body, kind: target}))
            if logged is not None:
                chk.that(logged["trace_id"] in expected and logged["project"] == c.project,
                         f"{kind} {target}: attached to {logged['trace_id']} in {logged['project']}")  # fmt: skip
        reader = w.api(f"{c.plabel}_all")
        twin = ok(reader.get(f"/api/traces/{w.twin.hex()}")).json()["info"]
        chk.that(any(a["name"] == f"{INTRUDER}_name" for a in twin["assessments"]), "the caller's twin has no assessment")

    return foreign


def _assessment_own(path: str) -> Fn:
    def own(w: World, c: Caller, chk: Check) -> None:
        logged = chk.json(c.api.post(path, json={"trace_id": w.a.only, "name": "own", "value": c.label}))
        chk.that(logged and logged["trace_id"] == w.a.only, f"own {path}: {logged}")

    return own


# GET /api/assessments/pending, /api/assessments/{id} (GET, PATCH, DELETE, override) ---------------


def pending_foreign(w: World, c: Caller, chk: Check) -> None:
    listed = chk.json(c.api.get("/api/assessments/pending"))
    if listed is not None:
        ids = {a["assessment_id"] for a in listed}
        chk.that(not ids & set(w.a.pending), "A's pending assessments are listed")
        chk.that({a["project"] for a in listed} == {c.project}, f"projects {({a['project'] for a in listed})}")
        chk.that(set(w.seed_of(c).pending) <= ids, "the caller's own pending assessments are missing")


def pending_own(w: World, c: Caller, chk: Check) -> None:
    listed = chk.json(c.api.get("/api/assessments/pending"))
    chk.that(listed and set(w.a.pending) <= {a["assessment_id"] for a in listed}, "own pending missing")


def a_assessments(w: World) -> list[str]:
    return [w.a.quality[0], w.a.only_feedback, w.a.expectation, w.a.pending[0], w.a.pending[-1]]


def _by_id_foreign(method: str, suffix: str = "", body: dict | None = None) -> Fn:
    def foreign(w: World, c: Caller, chk: Check) -> None:
        for target in a_assessments(w):
            other = str(uuid.uuid4())
            kwargs = {"json": body} if body is not None else {}
            chk.like_unknown(c.api.request(method, f"/api/assessments/{target}{suffix}", **kwargs),
                             c.api.request(method, f"/api/assessments/{other}{suffix}", **kwargs), target, other)  # fmt: skip

    return foreign


def _fresh_feedback(w: World, name: str) -> str:
    return ok(w.api("a_all").post("/api/feedback", json={"trace_id": w.a.only, "name": name, "value": 1})).json()[
        "assessment_id"]


def get_assessment_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get(f"/api/assessments/{w.a.quality[0]}"))
    chk.that(body and body["project"] == PROJECTS["a"] and body["value"] == f"q-{w.a.token}", f"own get {body}")


def patch_assessment_own(w: World, c: Caller, chk: Check) -> None:
    target = _fresh_feedback(w, "own_patch")
    body = chk.json(c.api.patch(f"/api/assessments/{target}", json={"value": 7, "rationale": c.label}))
    chk.that(body and body["value"] == 7 and body["rationale"] == c.label, f"own patch {body}")


def override_own(w: World, c: Caller, chk: Check) -> None:
    target = _fresh_feedback(w, "own_override")
    body = chk.json(c.api.post(f"/api/assessments/{target}/override", json={"value": 8}))
    chk.that(body and body["overrides"] == target and body["project"] == PROJECTS["a"], f"own override {body}")


def delete_assessment_own(w: World, c: Caller, chk: Check) -> None:
    target = _fresh_feedback(w, "own_delete")
    chk.that(chk.json(c.api.delete(f"/api/assessments/{target}")) == {"deleted": target}, "own delete")
    chk.status(w.api("a_all").get(f"/api/assessments/{target}"), 404)


ASSESSMENT_WRITE = {"value": INTRUDER, "rationale": INTRUDER, "metadata": {"x": INTRUDER},
                    "source": {"source_type": "HUMAN", "source_id": INTRUDER}}  # fmt: skip


# GET /api/stats, /metrics: the ingest counters ---------------------------------------------------

COUNTERS = ("received_spans", "stored_spans", "duplicate_spans", "uncaptured_spans", "rejected_spans",
            "refused_spans", "failed_spans", "batches", "requests")  # fmt: skip


def _stats(api: Api) -> dict[str, Any]:
    return {k: v for k, v in ok(api.get("/api/stats")).json().items() if k in COUNTERS}


def _metrics(api: Api) -> dict[str, float]:
    values = {}
    for line in ok(api.get("/metrics")).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return {k: v for k, v in values.items() if k != "traceduck_queued_spans"}


def counters_prepare(w: World) -> None:
    """Counters of every project, then project A ingests one trace of 2 spans (and one bad span)."""
    w.scratch["stats"] = {x: _stats(w.api(f"{x}_all")) for x in PROJECTS}
    w.scratch["metrics"] = {x: _metrics(w.api(f"{x}_all")) for x in PROJECTS}
    _, spans = _root_trace("counted", f"counted from {TOKENS['a']}")
    bad = otlp_span(bytes(16), "zero trace id")
    ok(post_otlp(w.api("a_write").client, otlp_request([*spans, bad])))


def stats_foreign(w: World, c: Caller, chk: Check) -> None:
    now = _stats(c.api)
    before = w.scratch["stats"][c.plabel]
    chk.that(now == before, f"project A's ingest changed {c.project}'s counters: {before} -> {now}")


def stats_own(w: World, c: Caller, chk: Check) -> None:
    before, now = w.scratch["stats"]["a"], _stats(c.api)
    delta = {k: now[k] - before[k] for k in ("received_spans", "stored_spans", "rejected_spans", "requests")}
    chk.that(delta == {"received_spans": 2, "stored_spans": 2, "rejected_spans": 1, "requests": 1},
             f"own counters moved by {delta}")  # fmt: skip


def metrics_foreign(w: World, c: Caller, chk: Check) -> None:
    now = _metrics(c.api)
    before = w.scratch["metrics"][c.plabel]
    chk.that(now == before, f"project A's ingest changed {c.project}'s metrics: {before} -> {now}")


def metrics_own(w: World, c: Caller, chk: Check) -> None:
    before, now = w.scratch["metrics"]["a"], _metrics(c.api)
    chk.that(now["traceduck_stored_spans_total"] - before["traceduck_stored_spans_total"] == 2, f"own metrics {now}")


# POST /api/keys, DELETE /api/keys/{key_id} -------------------------------------------------------


def create_key_foreign(w: World, c: Caller, chk: Check) -> None:
    for project in (PROJECTS["a"], "iso-nobody"):
        refused = c.api.post("/api/keys", json={"project": project, "rights": ["read", "write", "admin"],
                                                "description": DENIED})  # fmt: skip
        chk.status(refused, 403)
    made = chk.json(c.api.post("/api/keys", json={"project": c.project, "rights": ["read"], "description": INTRUDER}))
    if made is None:
        return
    chk.that(made["project"] == c.project, f"made {made}")
    key = Api(w.server.base_url, made["key"])
    try:
        chk.that(ok(key.get("/api/me")).json()["project"] == c.project, "the new key's project")
        other = unknown_id()
        chk.like_unknown(key.get(f"/api/traces/{w.a.only}"), key.get(f"/api/traces/{other}"), w.a.only, other)
    finally:
        key.close()
    chk.status(c.api.delete(f"/api/keys/{made['key_id']}"), 200)


def create_key_own(w: World, c: Caller, chk: Check) -> None:
    made = chk.json(c.api.post("/api/keys", json={"project": PROJECTS["a"], "rights": ["read"]}))
    if made:
        key = Api(w.server.base_url, made["key"])
        chk.that(ok(key.get(f"/api/traces/{w.a.only}")).json()["info"]["project"] == PROJECTS["a"], "own new key")
        key.close()
        ok(c.api.delete(f"/api/keys/{made['key_id']}"))


def revoke_key_foreign(w: World, c: Caller, chk: Check) -> None:
    for label in ("a_rw", "a_admin", "a_all"):
        target, other = w.keys[label].key_id, uuid.uuid4().hex[:12]
        chk.like_unknown(c.api.delete(f"/api/keys/{target}"), c.api.delete(f"/api/keys/{other}"), target, other)
    for label in ("a_rw", "a_read", "a_all"):
        chk.status(w.api(label).get("/api/me"), 200)


def revoke_key_own(w: World, c: Caller, chk: Check) -> None:
    made = ok(w.api("a_all").post("/api/keys", json={"project": PROJECTS["a"], "rights": ["read"]})).json()
    chk.that(chk.json(c.api.delete(f"/api/keys/{made['key_id']}")) == {"revoked": made["key_id"]}, "own revoke")
    key = Api(w.server.base_url, made["key"])
    chk.status(key.get("/api/me"), 401)
    key.close()


# POST /v1/chat/completions, /v1/chat/completions/feedback, /api/llm/select_choice ----------------


def chat_log_prepare(w: World) -> None:
    response_id = f"chatcmpl-victim-{uuid.uuid4().hex[:8]}"
    logged = ok(w.api("a_all").post("/v1/chat/completions", json=chat_body(PROJECTS["a"], response_id, TOKENS["a"])))
    w.scratch["victim_chat"] = (logged.json()["trace_id"], response_id)


def chat_log_foreign(w: World, c: Caller, chk: Check) -> None:
    victim, victim_response = w.scratch["victim_chat"]
    refused = c.api.post("/v1/chat/completions", json=chat_body(PROJECTS["a"], SHARED_RESPONSE, INTRUDER))
    chk.status(refused, 403)
    for response_id in (victim_response, w.late_response, SHARED_RESPONSE):
        logged = chk.json(c.api.post("/v1/chat/completions", json=chat_body(
            c.project, response_id, INTRUDER, feedback={"chat_quality": INTRUDER})))  # fmt: skip
        if logged is None:
            continue
        stored = ok(w.api(f"{c.plabel}_all").get(f"/api/traces/{logged['trace_id']}")).json()["info"]
        chk.that(stored["project"] == c.project and len(stored["assessments"]) == 1,
                 f"the logged call is in {stored['project']} with {stored['assessments']}")  # fmt: skip
    found = ok(w.api("a_read").get("/api/trace_lookup", params={"response_id": victim_response})).json()
    chk.that(found["info"]["trace_id"] == victim, "A's response id now finds another trace in A")


def chat_log_own(w: World, c: Caller, chk: Check) -> None:
    logged = chk.json(c.api.post("/v1/chat/completions", json=chat_body(PROJECTS["a"], f"chatcmpl-own-{c.label}",
                                                                          TOKENS["a"])))  # fmt: skip
    chk.that(logged and logged["trace_id"], f"own chat log {logged}")


def chat_feedback_foreign(w: World, c: Caller, chk: Check) -> None:
    body = {"feedback": {"chat_quality": INTRUDER}}
    chk.status(c.api.post("/v1/chat/completions/feedback", json={**body, "application": PROJECTS["a"],
                                                                 "chat_id": w.a.chat_only_response}), 403)  # fmt: skip
    theirs = chk.json(c.api.post("/v1/chat/completions/feedback",
                                 json={**body, "application": c.project, "chat_id": w.a.chat_only_response}))  # fmt: skip
    other = f"chatcmpl-{uuid.uuid4().hex[:12]}"
    unknown = chk.json(c.api.post("/v1/chat/completions/feedback",
                                  json={**body, "application": c.project, "chat_id": other}))  # fmt: skip
    if theirs and unknown:
        chk.that((theirs["trace_id"], theirs["pending"]) == (unknown["trace_id"], unknown["pending"]) == (None, True),
                 f"A's response id: {theirs}; an unknown one: {unknown}")  # fmt: skip
    shared = chk.json(c.api.post("/v1/chat/completions/feedback",
                                 json={**body, "application": c.project, "chat_id": SHARED_RESPONSE}))  # fmt: skip
    chk.that(shared is None or shared["trace_id"] == w.seed_of(c).chat, f"the shared response id: {shared}")


def chat_feedback_own(w: World, c: Caller, chk: Check) -> None:
    logged = chk.json(c.api.post("/v1/chat/completions/feedback", json={
        "application": PROJECTS["a"], "chat_id": w.a.chat_only_response, "feedback": {"own": c.label}}))  # fmt: skip
    chk.that(logged and logged["trace_id"] == w.a.chat_only, f"own chat feedback {logged}")


def select_choice_foreign(w: World, c: Caller, chk: Check) -> None:
    for kind, target in (("trace_id", w.a.chat_only), ("trace_id", w.a.chat), ("response_id", w.a.chat_only_response)):
        other = unknown_id() if kind == "trace_id" else f"chatcmpl-{uuid.uuid4().hex[:12]}"
        chk.like_unknown(c.api.post("/api/llm/select_choice", json={"index": 1, kind: target}),
                         c.api.post("/api/llm/select_choice", json={"index": 1, kind: other}), target, other)  # fmt: skip
    for kind, target, expected in (("response_id", SHARED_RESPONSE, w.seed_of(c).chat),
                                   ("trace_id", w.twin.hex(), w.twin.hex())):  # fmt: skip
        chosen = chk.json(c.api.post("/api/llm/select_choice", json={"index": 1, kind: target}))
        chk.that(chosen is None or (chosen["trace_id"] == expected and w.seed_of(c).token in str(chosen)),
                 f"select_choice {kind}={target}: {chosen}")  # fmt: skip


def select_choice_own(w: World, c: Caller, chk: Check) -> None:
    chosen = chk.json(c.api.post("/api/llm/select_choice", json={"index": 1, "response_id": w.a.chat_only_response}))
    chk.that(chosen and chosen["selected_message"]["content"] == f"answer 1 from {TOKENS['a']}", f"own select {chosen}")


# governance: settings, audit, purge, export ------------------------------------------------------


def get_settings_foreign(w: World, c: Caller, chk: Check) -> None:
    theirs, nobody = c.api.get(f"/api/projects/{PROJECTS['a']}/settings"), c.api.get("/api/projects/iso-nobody/settings")
    chk.status(theirs, 403)
    chk.that(theirs.text == nobody.text, f"A's settings {theirs.text} vs a project nobody has {nobody.text}")
    own = chk.json(c.api.get(f"/api/projects/{c.project}/settings"))
    chk.that(own is None or own["project"] == c.project, f"own settings of the caller: {own}")


def get_settings_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get(f"/api/projects/{PROJECTS['a']}/settings"))
    chk.that(body and body["retention_days"] == 30, f"own settings {body}")


def put_settings_foreign(w: World, c: Caller, chk: Check) -> None:
    change = {"capture": "none", "pii": "redact", "retention_days": 120, "max_size_bytes": 1}
    theirs = c.api.put(f"/api/projects/{PROJECTS['a']}/settings", json=change)
    nobody = c.api.put("/api/projects/iso-nobody/settings", json=change)
    chk.status(theirs, 403)
    chk.that(theirs.text == nobody.text, f"A's settings {theirs.text} vs a project nobody has {nobody.text}")
    own = chk.json(c.api.put(f"/api/projects/{c.project}/settings", json={"pii": "off"}))
    chk.that(own is None or own["project"] == c.project, f"{own}")


def put_settings_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.put(f"/api/projects/{PROJECTS['a']}/settings", json={"pii": "off", "retention_days": 30}))
    chk.that(body and body["project"] == PROJECTS["a"], f"own settings {body}")


def audit_foreign(w: World, c: Caller, chk: Check) -> None:
    for params in ({"limit": 1000}, {"action": "retention.changed"}, {"action": "trace.tags_edited"}, {"limit": 1}):
        body = chk.json(c.api.get("/api/audit", params=params))
        if body is not None:
            projects = {e["project"] for e in body["events"]}
            chk.that(projects <= {c.project}, f"audit {params} shows projects {projects}")
            actors = {e["actor"] for e in body["events"]}
            a_actors = {f"key:{k.key_id}" for k in w.keys.values() if k.project == PROJECTS["a"]}
            chk.that(not actors & a_actors, f"audit {params} shows actions of A's keys")


def audit_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/audit", params={"action": "retention.changed"}))
    chk.that(body and body["events"] and {e["project"] for e in body["events"]} == {PROJECTS["a"]}, f"own audit {body}")


def verify_foreign(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/audit/verify"))
    chk.that(body is None or (body["ok"] is True and body["problems"] == []), f"verify {body}")
    # The hash chain is global: "events" and "head_seq" count every project's events, as the
    # seq numbers of /api/audit do (a known, design-level count leak: see the report). What the
    # answer must never carry is another project's event content (the token check does that).


def verify_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/audit/verify"))
    chk.that(body and body["ok"] is True, f"own verify {body}")


def purge_foreign(w: World, c: Caller, chk: Check) -> None:
    for body in ({"dry_run": True}, {"dry_run": False}, None):
        report = chk.json(c.api.post("/api/purge", json=body) if body else c.api.post("/api/purge"))
        if report is not None:
            names = {p["project"] for p in report["projects"]}
            chk.that(names <= {c.project}, f"purge {body} reports projects {names}")


def purge_own(w: World, c: Caller, chk: Check) -> None:
    report = chk.json(c.api.post("/api/purge", json={"dry_run": True}))
    chk.that(report and [(p["project"], p["traces"]) for p in report["projects"]] == [(PROJECTS["a"], 1)],
             f"own dry-run purge {report}")  # fmt: skip


def export_foreign(w: World, c: Caller, chk: Check) -> None:
    mine = w.seed_of(c)
    a_ids = [w.a.chat, w.a.chat_only, w.a.only]
    theirs = chk.json(c.api.post("/api/export/sft", json={"trace_ids": a_ids, "format": "json"}))
    chk.that(theirs is None or (theirs["manifest"]["counts"]["matched"] == 0 and theirs["train"] == []),
             f"export of A's trace ids: {theirs and theirs['manifest']}")  # fmt: skip
    both = chk.json(c.api.post("/api/export/sft", json={"trace_ids": [*a_ids, mine.chat], "filter": "tags.kind = 'chat'",
                                                        "format": "json", "redact": False}))  # fmt: skip
    chk.that(both is None or (both["manifest"]["counts"]["matched"] == 1 and both["manifest"]["project"] == c.project),
             f"export of A's ids and the caller's chat: {both and both['manifest']}")  # fmt: skip
    jsonl = c.api.post("/api/export/sft", json={"filter": "tags.kind = 'twin'", "redact": False})
    if chk.status(jsonl, 200):
        lines = [json.loads(line) for line in jsonl.text.splitlines()]
        chk.that(len(lines) == 1 and mine.token in json.dumps(lines[0]), f"the twin exports as {lines}")
        manifest = json.loads(jsonl.headers["x-traceduck-manifest"])
        chk.that(manifest["project"] == c.project and manifest["counts"]["matched"] == 1, f"manifest {manifest}")


def export_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.post("/api/export/sft", json={"trace_ids": [w.a.chat], "format": "json", "redact": False}))
    chk.that(body and body["manifest"]["counts"]["exported"] == 1 and TOKENS["a"] in json.dumps(body["train"]),
             f"own export {body and body['manifest']}")  # fmt: skip


# dashboard reads: me, pivot, timeseries, llm_usage, sessions, fields -----------------------------


def me_foreign(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/me"))
    assert c.info is not None
    chk.that(body == {"project": c.project, "rights": sorted(c.rights), "key_id": c.info.key_id, "open": False},
             f"me {body}")  # fmt: skip


PIVOTS = ("project", "user", "session", "environment", "model", "status", "name", "tags.team", "tags.kind",
          "metadata.shared_meta", "feedback.quality", "feedback.chat_quality", "feedback.twin_fb")  # fmt: skip
#: Also asked without a filter (over everything the caller's project holds).
WHOLE_PIVOTS = ("project", "model", "tags.team", "feedback.quality", "feedback.twin_fb")


def pivot_foreign(w: World, c: Caller, chk: Check) -> None:
    n = SHARED_COUNT[c.plabel]
    total = ok(c.api.get("/api/trace_count")).json()["count"]
    for group_by in PIVOTS:
        shared = chk.json(c.api.get("/api/pivot", params={"group_by": group_by, "filter": "tags.team = 'shared'"}))
        if shared is not None:
            chk.that(shared["total"]["count"] == n and sum(r["count"] for r in shared["rows"]) >= n,
                     f"pivot {group_by} of the shared team: total {shared['total']['count']}, expected {n}")  # fmt: skip
        whole = chk.json(c.api.get("/api/pivot", params={"group_by": group_by})) if group_by in WHOLE_PIVOTS else None
        if whole is not None:
            chk.that(whole["total"]["count"] == total, f"pivot {group_by}: total {whole['total']['count']} of {total}")
    by_project = ok(c.api.get("/api/pivot", params={"group_by": "project", "limit": 1000})).json()
    chk.that([r["value"] for r in by_project["rows"]] == [c.project] and by_project["groups"] == 1,
             f"projects {by_project['rows']}")  # fmt: skip
    by_user = ok(c.api.get("/api/pivot", params={"group_by": "user"})).json()
    shared_user = [r["count"] for r in by_user["rows"] if r["value"] == SHARED_USER]
    chk.that(shared_user == [n], f"the shared user's group counts {shared_user}, expected {n}")
    twin = ok(c.api.get("/api/pivot", params={"group_by": "model", "filter": "tags.kind = 'twin'"})).json()
    chk.that(twin["total"]["input_tokens"] == TWIN_TOKENS[c.plabel], f"the twin's tokens {twin['total']}")


def pivot_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/pivot", params={"group_by": "feedback.quality", "filter": "tags.team = 'shared'"}))
    chk.that(body and [(r["value"], r["count"]) for r in body["rows"]] == [(f"q-{TOKENS['a']}", SHARED_COUNT["a"])],
             f"own pivot {body}")  # fmt: skip


def timeseries_foreign(w: World, c: Caller, chk: Check) -> None:
    now_ms = int(time.time() * 1000)
    for params, count, tokens in (
        ({"filter": "tags.team = 'shared'"}, SHARED_COUNT[c.plabel], None),
        ({"filter": "tags.kind = 'twin'"}, 1, TWIN_TOKENS[c.plabel]),
        ({"filter": "tags.kind = 'old'", "from": now_ms - 61 * 86_400_000, "to": now_ms + 60_000, "buckets": 61},
         None if c.plabel == "b" else 1, None),  # B's own purge may have removed its old trace
        ({"filter": f"client_request_id = '{w.a.only_crid}'"}, 0, None),
    ):  # fmt: skip
        body = chk.json(c.api.get("/api/timeseries", params=params))
        if body is None:
            continue
        got = sum(b["count"] for b in body["buckets"])
        chk.that(count is None or got == count, f"timeseries {params}: {got} traces, expected {count}")
        if tokens is not None:
            chk.that(sum(b["input_tokens"] or 0 for b in body["buckets"]) == tokens, f"timeseries tokens {body}")


def timeseries_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/timeseries", params={"filter": "tags.kind = 'twin'"}))
    chk.that(body and sum(b["input_tokens"] or 0 for b in body["buckets"]) == TWIN_TOKENS["a"], f"own series {body}")


def llm_usage_foreign(w: World, c: Caller, chk: Check) -> None:
    theirs = chk.json(c.api.post("/api/llm_usage", json={"trace_ids": [w.a.chat, w.a.chat_only, w.a.only]}))
    chk.that(theirs is None or theirs == {"usage": {}}, f"usage of A's traces: {theirs}")
    twin = chk.json(c.api.post("/api/llm_usage", json={"trace_ids": [w.twin.hex(), w.a.chat]}))
    if twin is not None:
        usage = twin["usage"]
        expected = {"models": [f"model-{w.seed_of(c).token}"], "calls": 1, "input_tokens": TWIN_TOKENS[c.plabel]}
        chk.that(list(usage) == [w.twin.hex()] and {k: usage[w.twin.hex()][k] for k in expected} == expected,
                 f"usage of the twin id: {usage}")  # fmt: skip


def llm_usage_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.post("/api/llm_usage", json={"trace_ids": [w.twin.hex()]}))
    chk.that(body and body["usage"][w.twin.hex()]["input_tokens"] == TWIN_TOKENS["a"], f"own usage {body}")


def session_foreign(w: World, c: Caller, chk: Check) -> None:
    n = SHARED_COUNT[c.plabel]
    shared = chk.json(c.api.get(f"/api/sessions/{SHARED_SESSION}"))
    if shared is not None:
        chk.that({t["project"] for t in shared["traces"]} == {c.project} and len(shared["traces"]) == n
                 and shared["total"]["count"] == n, f"the shared session: {shared['total']}")  # fmt: skip
        chk.that(set(shared["llm"]) <= set(w.seed_of(c).shared), f"the shared session's LLM usage {shared['llm']}")
    other = f"sess-{uuid.uuid4().hex[:8]}"
    chk.like_unknown(c.api.get(f"/api/sessions/{w.a.only_session}"), c.api.get(f"/api/sessions/{other}"),
                     w.a.only_session, other, statuses=(200,))  # fmt: skip


def session_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get(f"/api/sessions/{SHARED_SESSION}"))
    chk.that(body and body["total"]["count"] == SHARED_COUNT["a"], f"own session {body and body['total']}")


def fields_foreign(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/fields"))
    if body is None:
        return
    keys = {kind: {f["key"]: f["count"] for f in body[kind]} for kind in ("tags", "metadata", "feedback")}
    others = [seed.secret for seed in w.seeds.values() if seed is not w.seed_of(c)]
    chk.that(not [k for kind in keys.values() for k in kind if any(s in k for s in others)],
             f"keys of other projects: {keys}")  # fmt: skip
    chk.that(keys["tags"].get("team") == SHARED_COUNT[c.plabel], f"tag team counted {keys['tags'].get('team')}")
    chk.that(keys["metadata"].get("shared_meta") == SHARED_COUNT[c.plabel], f"metadata counts {keys['metadata']}")
    chk.that(keys["feedback"].get("quality") == SHARED_COUNT[c.plabel], f"feedback counts {keys['feedback']}")
    chk.that("twin_fb" not in keys["feedback"], f"A's feedback on its twin is counted: {keys['feedback']}")


def fields_own(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/api/fields"))
    chk.that(body and any(f["key"] == f"fb_{w.a.secret}" for f in body["feedback"])
             and any(f["key"] == f"meta_{w.a.secret}" for f in body["metadata"]), f"own fields {body}")


# POST /v1/traces -------------------------------------------------------------------------------


def ingest_prepare(w: World) -> None:
    trace_id, spans = _root_trace("victim", f"victim of {TOKENS['a']}", client_request_id="crid-victim",
                                  tags={"owner": "a"})  # fmt: skip
    ok(post_otlp(w.api("a_all").client, otlp_request(spans)))
    w.scratch["victim"] = (trace_id, next(s for s in spans if s.name == "victim"))


def ingest_foreign(w: World, c: Caller, chk: Check) -> None:
    victim_id, root = w.scratch["victim"]
    intruder_fields = trace_fields(client_request_id=w.late_crid, tags={"owner": INTRUDER}, metadata={"x": INTRUDER})
    messages = [
        # a span into A's trace, carrying trace fields (its root is A's)
        [otlp_span(root.trace_id, INTRUDER, parent=root.span_id, start_ns=root.start_time_unix_nano + 10,
                   duration_ns=10, attributes=intruder_fields)],
        # a root with A's trace id, and a root naming A's project in its attributes
        [otlp_span(root.trace_id, INTRUDER, start_ns=root.start_time_unix_nano, duration_ns=10,
                   attributes={**intruder_fields, "traceduck.trace.project": PROJECTS["a"]})],
        # a root with the trace id A's pending feedback names
        [otlp_span(bytes.fromhex(w.late_trace), INTRUDER, duration_ns=10, attributes=intruder_fields)],
    ]  # fmt: skip
    for spans in messages:
        chk.status(post_otlp(c.api.client, otlp_request(spans, resource={"traceduck.project": PROJECTS["a"],
                                                                          "service.name": INTRUDER})), 200)  # fmt: skip
    reader = w.api(f"{c.plabel}_all")
    for trace_id in (victim_id, w.late_trace):
        mine = chk.json(reader.get(f"/api/traces/{trace_id}"))
        chk.that(mine is None or mine["info"]["project"] == c.project, f"the sent trace: {mine and mine['info']}")


def ingest_own(w: World, c: Caller, chk: Check) -> None:
    trace_id, spans = _root_trace("own ingest", f"own from {TOKENS['a']}")
    chk.status(post_otlp(c.api.client, otlp_request(spans)), 200)
    chk.that(ok(w.api("a_all").get(f"/api/traces/{trace_id}")).json()["info"]["project"] == PROJECTS["a"], "own ingest")


# public routes: /healthz, the page, static files, the docs --------------------------------------


def healthz_check(w: World, c: Caller, chk: Check) -> None:
    body = chk.json(c.api.get("/healthz"))
    chk.that(body is None or set(body) == {"status", "queued_spans", "last_error"}, f"healthz {body}")


def _same_for_everyone(method: str, path: str) -> Fn:
    """The answer with the caller's key is the answer without any key (fetched once)."""

    def check(w: World, c: Caller, chk: Check) -> None:
        mine = c.api.request(method, path)
        if (method, path) not in w.scratch.setdefault("anonymous", {}):
            w.scratch["anonymous"][(method, path)] = ok(w.api("none").request(method, path))
        anonymous = w.scratch["anonymous"][(method, path)]
        chk.status(mine, 200)
        chk.that(mine.content == anonymous.content and mine.headers.get("content-type") == anonymous.headers.get(
            "content-type"), f"{method} {path} differs with key {c.label}")  # fmt: skip

    return check


def _static_files() -> list[str]:
    static = Path(__file__).resolve().parent.parent / "collector" / "static"
    return sorted(str(p.relative_to(static)) for p in static.rglob("*") if p.is_file())


def static_check(w: World, c: Caller, chk: Check) -> None:
    files = _static_files() if c.label in ("none", "b_all", "bogus") else ["app.js", "api.js", "index.html"]
    for name in files:
        _same_for_everyone("GET", f"/static/{name}")(w, c, chk)


def _get(path: str) -> Probe:
    return lambda w, api: api.get(path)


def _post(path: str, body: Any) -> Probe:
    return lambda w, api: api.post(path, json=body(w) if callable(body) else body)


def _denied_trace(w: World, api: Api) -> httpx.Response:
    _, spans = _root_trace(DENIED, DENIED, client_request_id=DENIED, tags={DENIED: DENIED})
    return post_otlp(api.client, otlp_request(spans))


A = PROJECTS["a"]
CASES: dict[tuple[str, str], Case] = {
    ("GET", "/api/traces"): Case(
        "read", "search by shared crid/everything/A-only filters: only own traces, exact ids; A's page token -> 400",
        _get("/api/traces"), search_foreign, search_own),
    ("GET", "/api/trace_count"): Case(
        "read", "counts by shared tag/crid/user are exactly the caller's (4/2/1); A's crid counts 0",
        _get("/api/trace_count"), count_foreign, count_own),
    ("GET", "/api/traces/{trace_id}"): Case(
        "read", "A's trace ids answer 404 exactly like unknown ids; the twin id shows the caller's own trace",
        lambda w, api: api.get(f"/api/traces/{w.a.only}"), get_trace_foreign, get_trace_own),
    ("PATCH", "/api/traces/{trace_id}"): Case(
        "write", "metadata/tags/add/remove on A's traces: 404 like unknown, A unchanged; twin edit stays own",
        lambda w, api: api.patch(f"/api/traces/{w.a.only}", json={"add_tags": {DENIED: DENIED}}),
        patch_trace_foreign, patch_trace_own),
    ("GET", "/api/trace_lookup"): Case(
        "read", "A's crid / response id: 404 like unknown; shared crid / response id find the caller's own",
        lambda w, api: api.get("/api/trace_lookup", params={"client_request_id": SHARED_CRID}), lookup_foreign, lookup_own),
    ("POST", "/api/traces/tags"): Case(
        "write", "bulk tags by A's ids, by A-only filters, by both: 0 updated; by shared filter: only own count",
        _post("/api/traces/tags", lambda w: {"trace_ids": [w.a.only], "add_tags": {DENIED: DENIED}}),
        bulk_tags_foreign, bulk_tags_own),
    ("POST", "/api/feedback"): Case(
        "write", "feedback naming A's trace/crid/response id stays pending in the caller's project like an "
                 "unknown id; shared ids attach to the caller's own traces",
        _post("/api/feedback", lambda w: {"trace_id": w.a.only, "name": DENIED, "value": DENIED}),
        _assessment_foreign("/api/feedback"), _assessment_own("/api/feedback")),
    ("POST", "/api/expectations"): Case(
        "write", "as feedback, for expectations",
        _post("/api/expectations", lambda w: {"trace_id": w.a.only, "name": DENIED, "value": DENIED}),
        _assessment_foreign("/api/expectations"), _assessment_own("/api/expectations")),
    ("GET", "/api/assessments/pending"): Case(
        "read", "lists only the caller's pending assessments (all projects have one with the same crid)",
        _get("/api/assessments/pending"), pending_foreign, pending_own),
    ("GET", "/api/assessments/{assessment_id}"): Case(
        "read", "A's feedback/expectation/pending ids: 404 like unknown",
        lambda w, api: api.get(f"/api/assessments/{w.a.quality[0]}"), _by_id_foreign("GET"), get_assessment_own),
    ("PATCH", "/api/assessments/{assessment_id}"): Case(
        "write", "update of A's assessments (attached and pending): 404 like unknown, A unchanged",
        lambda w, api: api.patch(f"/api/assessments/{w.a.quality[0]}", json={"value": DENIED}),
        _by_id_foreign("PATCH", body=ASSESSMENT_WRITE), patch_assessment_own),
    ("DELETE", "/api/assessments/{assessment_id}"): Case(
        "write", "delete of A's assessments: 404 like unknown, A unchanged",
        lambda w, api: api.delete(f"/api/assessments/{w.a.quality[0]}"), _by_id_foreign("DELETE"),
        delete_assessment_own),
    ("POST", "/api/assessments/{assessment_id}/override"): Case(
        "write", "override of A's assessments: 404 like unknown, A unchanged",
        lambda w, api: api.post(f"/api/assessments/{w.a.quality[0]}/override", json={"value": DENIED}),
        _by_id_foreign("POST", "/override", {"value": INTRUDER, "rationale": INTRUDER}), override_own),
    ("GET", "/api/stats"): Case(
        "read", "A's ingest (2 spans + 1 rejected) moves only A's counters, not B's or C's",
        _get("/api/stats"), stats_foreign, stats_own, prepare=counters_prepare),
    ("GET", "/metrics"): Case(
        "read", "A's ingest moves only A's Prometheus counters",
        _get("/metrics"), metrics_foreign, metrics_own, prepare=counters_prepare),
    ("POST", "/api/keys"): Case(
        "admin", "keys for A (or a project nobody has): 403; own-project keys see only their project",
        _post("/api/keys", {"project": A, "rights": ["read"], "description": DENIED}), create_key_foreign,
        create_key_own),
    ("DELETE", "/api/keys/{key_id}"): Case(
        "admin", "revoking A's keys: 404 like an unknown key id; A's keys keep working",
        lambda w, api: api.delete(f"/api/keys/{w.keys['a_rw'].key_id}"), revoke_key_foreign, revoke_key_own),
    ("POST", "/v1/chat/completions"): Case(
        "write", "application A: 403; A's response ids logged in the caller's project stay there (A's "
                 "lookup and pending feedback unchanged)",
        _post("/v1/chat/completions", lambda w: chat_body(A, f"chatcmpl-{DENIED}", DENIED)), chat_log_foreign,
        chat_log_own, prepare=chat_log_prepare),
    ("POST", "/v1/chat/completions/feedback"): Case(
        "write", "application A: 403; A's response id: pending like an unknown one; shared id: own call",
        _post("/v1/chat/completions/feedback", lambda w: {"application": A, "chat_id": w.a.chat_only_response,
                                                          "feedback": {DENIED: DENIED}}),
        chat_feedback_foreign, chat_feedback_own),
    ("POST", "/api/llm/select_choice"): Case(
        "write", "A's chat traces / response id: 404 like unknown; shared response id and twin id select "
                 "the caller's own choice; A's selection (SFT export) unchanged",
        _post("/api/llm/select_choice", lambda w: {"index": 1, "response_id": w.a.chat_only_response}),
        select_choice_foreign, select_choice_own),
    ("GET", "/api/projects/{name}/settings"): Case(
        "admin", "A's settings: 403, the same answer as for a project nobody has",
        _get(f"/api/projects/{A}/settings"), get_settings_foreign, get_settings_own),
    ("PUT", "/api/projects/{name}/settings"): Case(
        "admin", "changing A's settings: 403 like a project nobody has; A's settings unchanged",
        lambda w, api: api.put(f"/api/projects/{A}/settings", json={"capture": "none", "retention_days": 120}),
        put_settings_foreign, put_settings_own),
    ("GET", "/api/audit"): Case(
        "admin", "only the caller's project's events, never an action of A's keys (all filters)",
        _get("/api/audit"), audit_foreign, audit_own),
    ("GET", "/api/audit/verify"): Case(
        "admin", "verifies; carries no other project's event content",
        _get("/api/audit/verify"), verify_foreign, verify_own),
    ("POST", "/api/purge"): Case(
        "admin", "purges (and reports) only the caller's project: A's expired trace stays",
        _post("/api/purge", {"dry_run": False}), purge_foreign, purge_own),
    ("POST", "/api/export/sft"): Case(
        "admin", "export by A's ids: 0 matched; by filter/twin id: only the caller's examples and manifest",
        _post("/api/export/sft", lambda w: {"trace_ids": [w.a.chat], "format": "json"}), export_foreign, export_own),
    ("GET", "/api/me"): Case(
        "read", "the caller's own project, rights and key id", _get("/api/me"), me_foreign, me_foreign),
    ("GET", "/api/pivot"): Case(
        "read", "12 group-bys, with and without filter: totals equal the caller's counts, groups only its values",
        lambda w, api: api.get("/api/pivot", params={"group_by": "project"}), pivot_foreign, pivot_own),
    ("GET", "/api/timeseries"): Case(
        "read", "bucket counts and tokens are the caller's (shared tag, twin trace, old traces, A's crid: 0)",
        _get("/api/timeseries"), timeseries_foreign, timeseries_own),
    ("POST", "/api/llm_usage"): Case(
        "read", "A's trace ids: no usage; the twin id: the caller's own model and tokens only",
        _post("/api/llm_usage", lambda w: {"trace_ids": [w.a.chat]}), llm_usage_foreign, llm_usage_own),
    ("GET", "/api/sessions/{session_id}"): Case(
        "read", "the shared session holds only the caller's traces and totals; A's session answers like an unknown one",
        lambda w, api: api.get(f"/api/sessions/{SHARED_SESSION}"), session_foreign, session_own),
    ("GET", "/api/fields"): Case(
        "read", "tag/metadata keys and feedback names only the caller's, counted over its traces only",
        _get("/api/fields"), fields_foreign, fields_own),
    ("POST", "/v1/traces"): Case(
        "write", "spans into A's trace id, a root with A's trace id, a project attribute naming A, A's pending "
                 "trace id: all stored in the caller's project, A unchanged",
        _denied_trace, ingest_foreign, ingest_own, prepare=ingest_prepare),
    ("GET", "/healthz"): Case(
        None, "public: status and queue depth only, for any key or none", _get("/healthz"), healthz_check,
        healthz_check),
}  # fmt: skip

NON_OPENAPI: dict[tuple[str, str], Case] = {
    (method, path): Case(None, "public: the same bytes for every key and none, no project data", _get(path),
                         _same_for_everyone(method, path), _same_for_everyone(method, path))
    for path in ("/", "/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect") for method in ("GET", "HEAD")
}  # fmt: skip
NON_OPENAPI[("GET", "/static/{path}")] = Case(None, "public: every dashboard file, the same bytes for every key",
                                              _get("/static/app.js"), static_check, static_check)  # fmt: skip
MATRIX = {**CASES, **NON_OPENAPI}


# -- the tests -------------------------------------------------------------------------------------


def test_every_openapi_operation_has_a_case(world):
    """A route added to the collector without an isolation case fails here."""
    schema = ok(httpx.get(world.server.base_url + "/openapi.json", timeout=30)).json()
    documented = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    missing, stale = sorted(documented - CASES.keys()), sorted(CASES.keys() - documented)
    assert not missing, f"routes in /openapi.json without an isolation case in CASES: {missing}"
    assert not stale, f"CASES names routes /openapi.json does not have: {stale}"
    assert not documented & NON_OPENAPI.keys(), "a NON_OPENAPI route is in the schema: move it to CASES"


def _app_routes() -> set[tuple[str, str]]:
    """Every (method, path) the collector application serves, read from its route table."""
    from collector.app import create_app  # noqa: PLC0415
    from collector.settings import CollectorSettings  # noqa: PLC0415
    from starlette.routing import Mount  # noqa: PLC0415
    from traceduck.store.duckdb_store import DuckDBStore  # noqa: PLC0415

    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "routes.duckdb")
        app = create_app(CollectorSettings(store=path), store=DuckDBStore(path))
        try:
            found: set[tuple[str, str]] = set()

            def walk(routes: list[Any], prefix: str = "") -> None:
                for route in routes:
                    context = getattr(route, "include_context", None)
                    if context is not None:  # an included router (FastAPI >= 0.16x keeps them nested)
                        walk(route.original_router.routes, prefix + context.prefix)
                    elif isinstance(route, Mount):
                        found.add(("GET", prefix + route.path + "/{path}"))
                    else:
                        for method in getattr(route, "methods", None) or ():
                            found.add((method, prefix + route.path))

            walk(app.routes)
            return found
        finally:
            app.state.ingest.close()


def test_every_route_of_the_app_has_a_case(world):
    """Routes outside the schema too (the page, static files, the docs) each have a case."""
    served = _app_routes()
    assert ("POST", "/v1/traces") in served and ("GET", "/api/pivot") in served, sorted(served)
    missing, stale = sorted(served - MATRIX.keys()), sorted(MATRIX.keys() - served)
    assert not missing, f"routes the collector serves without an isolation case: {missing}"
    assert not stale, f"isolation cases for routes the collector does not serve: {stale}"


@pytest.mark.parametrize("route", list(MATRIX), ids=[f"{m} {p}" for m, p in MATRIX])
def test_route_isolation(world, route):
    case = MATRIX[route]
    chk = Check()
    if case.prepare is not None:
        case.prepare(world)
        world.forget_state()
    public = case.right is None  # static answers: no state to compare (their content is compared)
    before = None if public else world.state()
    for api in world.apis.values():
        api.seen.clear()

    # 1. rights: 401 without a valid key, 403 without the route's right
    callers = [world.caller(label) for label in CALLERS]
    if case.right is not None:
        for c in callers:
            chk.context = f"{route[0]} {route[1]} as {c.label}"
            if c.info is None:
                chk.status(case.probe(world, c.api), 401)
            elif case.right not in c.rights:
                answer = case.probe(world, c.api)
                if chk.status(answer, 403):
                    chk.that(f"lacks the {case.right!r} right" in answer.json()["detail"], f"403 says {answer.text}")

    # 2. keys of B and C with the right (every caller for a public route)
    for c in callers:
        if c.plabel != "a" and (case.right is None or case.right in c.rights):
            chk.context = f"{route[0]} {route[1]} as {c.label}"
            case.foreign(world, c, chk)

    # 3. A's state is unchanged; no answer to B, C or no key carries another project's token
    chk.context = f"{route[0]} {route[1]}"
    if before is not None:
        world.forget_state()
        after = world.state()
        chk.that(before == after, "project A's state changed:\n    " + describe_change(before, after))
    for label, api in world.apis.items():
        if not label.startswith("a_"):
            for answer in api.seen:
                found = leaked(answer, api)
                chk.that(not found, f"{label} got {found} from {answer.request.method} {answer.request.url}: "
                                    f"{answer.text[:300]}")  # fmt: skip

    # 4. A's own keys with the right: the request is a valid one
    for c in callers:
        if c.plabel == "a" and (case.right is None or case.right in c.rights):
            chk.context = f"{route[0]} {route[1]} as {c.label}"
            case.own(world, c, chk)
    if route[0] not in ("GET", "HEAD"):
        world.forget_state()
    if chk.items:
        pytest.fail(f"{len(chk.items)} isolation problem(s) ({case.checks}):\n  " + "\n  ".join(chk.items[:40]))


def test_a_matrix_case_fails_when_it_should(world):
    """The checks bite: a foreign case run with A's OWN key (where A's data is visible) reports
    problems, and a state change of A is seen."""
    chk = Check()
    fake = Caller("b_all", world.api("a_all"), world.keys["b_all"])  # B's expectations, A's key
    get_trace_foreign(world, fake, chk)
    count_foreign(world, fake, chk)
    pending_foreign(world, fake, chk)
    assert len(chk.items) >= 6, chk.items
    before = world.state()
    ok(world.api("a_all").post("/api/traces/tags", json={"trace_ids": [world.a.only], "add_tags": {"probe": "1"}}))
    world.forget_state()
    after = world.state()
    assert before != after and ".info.tags.probe: added" in describe_change(before, after)


def test_store_file_after_the_matrix(world):
    """The DuckDB file itself: A's rows are what A's key saw; no foreign marker in A's rows; no
    trace anywhere of a request that was refused."""
    world.forget_state()
    seen = world.state()
    world.server.stop()
    store = world.server.store
    a = PROJECTS["a"]
    tables = [r[0] for r in query_store(store, "SELECT table_name FROM information_schema.tables "
                                               "WHERE table_schema = 'main' ORDER BY 1")]  # fmt: skip
    problems = []
    for table in tables:
        columns = [r[0] for r in query_store(store, f'DESCRIBE "{table}"')]
        for row in query_store(store, f'SELECT * FROM "{table}"'):
            text = str(row)
            record = dict(zip(columns, row))
            if DENIED in text:
                problems.append(f"{table}: a refused request left {text[:300]}")
            if record.get("project") == a and INTRUDER in text:
                problems.append(f"{table}: a row of {a} holds a foreign write: {text[:300]}")
    trace_ids = {r[0] for r in query_store(store, "SELECT replace(CAST(trace_id AS VARCHAR), '-', '') FROM traces "
                                                  "WHERE project = ?", [a])}  # fmt: skip
    if trace_ids != set(seen["traces"]):
        problems.append(f"A's traces in the file {sorted(trace_ids ^ set(seen['traces']))} differ from the API")
    for trace_id, tags, metadata_json in query_store(
            store, "SELECT replace(CAST(trace_id AS VARCHAR), '-', ''), tags, metadata_json FROM traces WHERE project = ?",
            [a]):  # fmt: skip
        info = seen["traces"].get(trace_id, {}).get("info", {})
        if dict(tags or {}) != info.get("tags") or (json.loads(metadata_json) if metadata_json else {}) != info.get(
                "metadata"):  # fmt: skip
            problems.append(f"trace {trace_id}: the file holds {tags} {metadata_json}, the API showed {info}")
    spans = {(r[0], r[1]): r[2] for r in query_store(
        store, "SELECT replace(CAST(trace_id AS VARCHAR), '-', ''), span_id, outputs FROM spans WHERE project = ?", [a])}
    api_spans = {(s["trace_id"], s["span_id"]): s["outputs"] for t in seen["traces"].values() for s in t["data"]["spans"]}
    if {k: json.loads(v) if v else None for k, v in spans.items()} != api_spans:
        problems.append(f"A's spans in the file differ from the API: {sorted(spans.keys() ^ api_spans.keys())[:5]}")
    assessments = {r[0]: (r[1], json.loads(r[2]) if r[2] else None, r[3]) for r in query_store(
        store, "SELECT assessment_id, replace(CAST(trace_id AS VARCHAR), '-', ''), value_json, valid FROM assessments "
               "WHERE project = ?", [a])}  # fmt: skip
    api_assessments = {x["assessment_id"]: (x["trace_id"], x["value"], x["valid"])
                       for x in [*seen["pending"], *(x for t in seen["traces"].values() for x in t["info"]["assessments"])]}
    if assessments != api_assessments:
        diff = sorted(k for k in assessments.keys() | api_assessments.keys()
                      if assessments.get(k) != api_assessments.get(k))  # fmt: skip
        problems.append(f"A's assessments in the file differ from the API: {diff[:5]}")
    a_actors = {f"key:{k.key_id}" for k in world.keys.values() if k.project == a}
    for (actor,) in query_store(store, "SELECT DISTINCT actor FROM audit_log WHERE project = ?", [a]):
        if actor not in a_actors and not actor.startswith("cli:"):
            problems.append(f"an audit event of {a} by {actor}")
    revoked = query_store(store, "SELECT key_id FROM api_keys WHERE revoked_at IS NOT NULL AND key_id IN "
                                 f"({', '.join('?' for _ in world.keys)})", [k.key_id for k in world.keys.values()])  # fmt: skip
    if revoked:
        problems.append(f"seeded keys were revoked: {revoked}")
    orphans = query_store(store, "SELECT response_id FROM llm_responses r WHERE project = ? AND NOT EXISTS (SELECT 1 "
                                 "FROM traces t WHERE t.trace_id = r.trace_id AND t.project = r.project)", [a])  # fmt: skip
    if orphans:
        problems.append(f"A's response ids point outside A's traces: {orphans}")
    [(settings_json,)] = query_store(store, "SELECT settings_json FROM projects WHERE name = ?", [a])
    settings = ProjectSettings.from_json(settings_json).to_dict()
    if settings != {k: v for k, v in seen["settings"].items() if k not in ("project", "configured")}:
        problems.append(f"A's settings in the file {settings} differ from the API {seen['settings']}")
    assert not problems, "\n  ".join(problems)
