"""SQL injection through every string that can reach a query (issue 9, hostile input).

The corpus of ``_hostile.py`` (quote break-outs, comments, stacked statements, ATTACH/COPY to
``/tmp/traceduck-injected.*``, NULs, unicode quotes, placeholders, an 8000-character value) goes
through every place a caller's string can reach SQL, in process and through a real collector:

- filter values (``=``, ``!=``, LIKE, ILIKE, RLIKE, IN, NOT IN on tags, metadata, feedback, span
  names and attributes, client request ids, names, trace ids, the identity columns) and hostile
  keys in backticks and double quotes: ``search_traces``/``count_traces``/``pivot_traces`` in
  process; ``/api/trace_count``, ``/api/traces``, ``/api/pivot`` (hostile ``group_by`` keys, and
  the drill filter printed for each hostile group value must select that group again) and
  ``POST /api/traces/tags`` by filter;
- ``order_by`` entries (hostile field names, directions and keys) and page tokens (garbage, and
  forged tokens carrying hostile sort-key values, which must act as plain data);
- tags and metadata, keys and values, set by OTLP trace fields, ``update_current_trace``,
  ``PATCH /api/traces/{id}`` and bulk tagging (by ids and by filter): stored as plain data, read
  back identically, found again by exact equality;
- feedback addressing (client request id, response id, trace id), assessment names, values,
  rationales and metadata, chat-log feedback, LLM response ids, trace/session/assessment/key ids
  and project names in URLs;
- project names: ``traceduck keys create`` / ``project set`` / ``project show`` and the API's
  project parameters (settings, key creation, chat ``application``, audit ``action``);
- the strings only JSON can carry (lone surrogates) through every JSON body field, and escaped
  inside OTLP trace fields.

Every answer is plain data or a clean error (no 5xx; a 4xx with a JSON message; in process a
``ValueError``/``TraceduckError``). Afterwards the collector is alive, the other project, the API
keys and the set of tables are unchanged, row counts grew by exactly what the tests added, no
project was created by a hostile name and no ``/tmp/traceduck-injected.*`` file exists.

Expected search results come from an oracle: an in-memory DuckDB given the same values and
patterns as BOUND parameters, i.e. what "plain data" means.
"""

from __future__ import annotations

import glob
import re
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import duckdb
import pytest

import traceduck
from _collector import (
    REPO,
    clean_env,
    new_span_id,
    new_trace_id,
    otlp_request,
    otlp_span,
    post_otlp,
    simple_trace,
    trace_fields,
)
from _hostile import (
    JSON_ONLY_INJECTION,
    SHORT_INJECTION,
    SQL_INJECTION,
    VERY_LONG,
    Api,
    Problems,
    assert_alive,
    create_keys,
    describe,
    filter_key,
    filter_literal,
    query_store,
    start_collector,
    table_counts,
)
from traceduck.errors import InvalidFilterError, TraceduckError
from traceduck.filters import parse_order_by
from traceduck.filters.regex import regex_error
from traceduck.paging import InvalidPageTokenError, encode_token, query_fingerprint
from traceduck.store.keys import PROJECT_NAME

N = len(SQL_INJECTION)
NO_TRACE = "f" * 32  # a well-formed id that no trace has
INJECTED = "/tmp/traceduck-injected.*"
JSON = "application/json"


# -- filters and their expected answers ----------------------------------------------------------


def dq_key(key: str) -> str:
    """``key`` as a double-quoted filter key (backslashes escaped, quotes doubled)."""
    return '"' + key.replace("\\", "\\\\").replace('"', '""') + '"'


def is_short(p: str) -> bool:
    return p in SHORT_INJECTION


def feedback_name(i: int) -> str:
    """Seeded trace ``i`` has one feedback, valued by the payload and (if short) named by it."""
    p = SQL_INJECTION[i]
    return p if is_short(p) else "fb"


def feedback_key(i: int) -> str:
    return filter_key(feedback_name(i))


def key_value(i: int) -> str:
    """The value stored under the hostile KEY ``SQL_INJECTION[i]`` (short payloads only)."""
    return f"v{i}"


class Oracle:
    """What a pattern matches among the seeded values when both are plain bound data."""

    def __init__(self, values: tuple[str, ...]) -> None:
        self.con = duckdb.connect(":memory:")
        self.con.execute("CREATE TABLE v (i INTEGER, x VARCHAR)")
        self.con.executemany("INSERT INTO v VALUES (?, ?)", list(enumerate(values)))

    def match(self, op: str, pattern: str) -> frozenset[int]:
        condition = {"LIKE": "x LIKE ?", "ILIKE": "x ILIKE ?", "RLIKE": "regexp_matches(x, ?)", ">": "x > ?",
                     "<": "x < ?"}[op]  # fmt: skip
        return frozenset(r[0] for r in self.con.execute(f"SELECT i FROM v WHERE {condition}", [pattern]).fetchall())


ORACLE = Oracle(SQL_INJECTION)


@dataclass(frozen=True)
class Form:
    """A filter and the seeded traces (indices into SQL_INJECTION) it must match; ``expected``
    None means the filter must be refused cleanly (an RLIKE pattern RE2 does not accept)."""

    text: str
    expected: frozenset[int] | None


def forms(i: int) -> list[Form]:
    """Every way payload ``i`` reaches a filter, on the seeded traces (see ``seed_fields``)."""
    p = SQL_INJECTION[i]
    lit = filter_literal(p)
    one, none = frozenset({i}), frozenset()
    others = frozenset(range(N)) - one
    rlike = None if regex_error(p) else ORACLE.match("RLIKE", p)
    out = [
        Form(f"tags.k = {lit}", one),
        Form(f"tags.k != {lit}", others),
        Form(f"tags.k IN ({lit}, 'no such value',)", one),
        Form(f"tags.k NOT IN ({lit})", others),
        Form(f"tags.k LIKE {lit}", ORACLE.match("LIKE", p)),
        Form(f"tags.k ILIKE {lit}", ORACLE.match("ILIKE", p)),
        Form(f"tags.k RLIKE {lit}", rlike),
        Form(f"tag.k = {lit} AND tags.k IS NOT NULL", one),
        Form(f"metadata.m = {lit}", one),
        Form(f"request_metadata.m IN ({lit})", one),
        Form(f"client_request_id = {lit}", one),
        Form(f"name = {lit}", one),
        Form(f"span.name = {lit}", one),
        Form(f"span.attributes.a = {lit}", one),
        Form(f"tags.`trace.user` = {lit}", one),
        Form(f"metadata.`trace.session` = {lit}", one),
        Form(f"feedback.{feedback_key(i)} = {lit}", one),
        Form(f"trace_id = {lit} OR request_id IN ({lit})", none),
        Form(f"status = {lit} OR span.type = {lit} OR span.status IN ({lit})", none),
        Form(f"request_preview = {lit}", none),
    ]
    if is_short(p):
        key = filter_key(p)
        value = filter_literal(key_value(i))
        out += [
            Form(f"tags.{key} = {value}", one),
            Form(f"tags.{dq_key(p)} = {value}", one),
            Form(f"`tags`.{key} IS NOT NULL", one),
            Form(f"metadata.{dq_key(p)} = {value}", one),
            Form(f"span.attributes.{key} = {lit}", one),
            Form(f"feedback.{dq_key(p)} IS NOT NULL", one),
        ]
    return out


#: Longest combined filter sent in a URL (the 8000-character payload is split into several).
MAX_COMBINED_CHARS = 24_000


def combine(parts: list[Form], joiner: str) -> list[str]:
    """``parts`` joined with AND or OR, in as few filters of at most MAX_COMBINED_CHARS as fit."""
    out: list[list[str]] = [[]]
    for part in parts:
        if out[-1] and sum(len(t) + 7 for t in out[-1]) + len(part.text) > MAX_COMBINED_CHARS:
            out.append([])
        out[-1].append(f"({part.text})")
    return [f" {joiner} ".join(texts) for texts in out if texts]


@dataclass(frozen=True)
class Checks:
    """The forms of one payload as few queries that still pin every form down exactly.

    A form that must match exactly the payload's own trace is checked in two combined queries:
    all of them AND-ed must count 1 (each matches that trace) and all of them OR-ed must find
    exactly that trace (none matches another). Forms that must match nothing are OR-ed (count 0);
    the rest (patterns, negations) are counted one by one.
    """

    ands: list[str]  # each counts exactly 1
    ors: list[str]  # each finds exactly the payload's trace
    nothing: list[str]  # each counts 0
    single: list[Form]  # each counts len(expected), or is refused when expected is None


def checks(i: int) -> Checks:
    every = forms(i)
    one = [f for f in every if f.expected == frozenset({i})]
    nothing = [f for f in every if f.expected == frozenset()]
    single = [f for f in every if f not in one and f not in nothing]
    return Checks(combine(one, "AND"), combine(one, "OR"), combine(nothing, "OR"), single)


def seed_fields(i: int) -> dict[str, Any]:
    """The trace fields of seeded trace ``i``: payload ``i`` as client request id, tag and
    metadata values, user and session; as a tag and metadata KEY too when it is short."""
    p = SQL_INJECTION[i]
    tags = {"k": p, "seed": "T"}
    metadata = {"m": p, "trace.user": p, "trace.session": p}
    if is_short(p):
        tags[p] = key_value(i)
        metadata[p] = key_value(i)
    return {"client_request_id": p, "tags": tags, "metadata": metadata}


def child_attributes(i: int) -> dict[str, str]:
    p = SQL_INJECTION[i]
    return {"a": p, **({p: p} if is_short(p) else {})}


def json_content(value: Any) -> dict[str, Any]:
    """A JSON request body as a hostile client sends it (lone surrogates as \\u escapes)."""
    return {"content": json.dumps(value).encode(), "headers": {"Content-Type": JSON}}


def short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


# -- the deployment ------------------------------------------------------------------------------


@dataclass
class Deployment:
    server: Any
    store: str
    api: Api
    other: Api
    baseline: dict[str, int]
    keys_before: list[tuple]
    seeded: list[str]  # trace id of payload i (project inj)
    patched: list[str]  # plain traces to PATCH and bulk-tag, one per payload
    victim: str  # a plain trace for the JSON-only strings
    other_traces: Any
    feedback_ids: list[str]
    #: Rows the tests legitimately add, per table.
    added: dict[str, int] = field(default_factory=lambda: {"traces": 0, "spans": 0, "assessments": 0})
    stopped: bool = False


def keep_alive(api: Api) -> Api:
    """``api`` reusing its connections (~2 ms a request less, over ~2000 requests); a connection
    the server drops after an error is replaced by ``Api.request``'s one retry."""
    del api.client.headers["Connection"]
    return api


def seeded_spans(i: int) -> tuple[str, list[Any]]:
    """Seeded trace ``i``: a root named by the payload carrying its trace fields, and a child
    named by it whose attributes carry it."""
    p = SQL_INJECTION[i]
    trace_id, root_id = new_trace_id(), new_span_id()
    start = time.time_ns() - (N - i) * 1_000_000
    root = otlp_span(trace_id, p, span_id=root_id, start_ns=start, duration_ns=10_000,
                     attributes={"traceduck.span_type": "CHAIN", **trace_fields(**seed_fields(i))})  # fmt: skip
    child = otlp_span(trace_id, p, parent=root_id, start_ns=start + 1_000, duration_ns=1_000,
                      attributes=child_attributes(i))  # fmt: skip
    return trace_id.hex(), [root, child]


@pytest.fixture(scope="module")
def dep(tmp_path_factory):
    directory = tmp_path_factory.mktemp("injection")
    store = str(directory / "inj.duckdb")
    keys = create_keys(store, {"inj": ("inj", "read,write,admin"), "other": ("other", "read,write")},
                       opt_in=["inj", "other"])  # fmt: skip
    baseline = table_counts(store)
    keys_before = query_store(store, "SELECT * FROM api_keys ORDER BY key_id")
    server = start_collector(directory, "inj")
    api, other = keep_alive(Api(server.base_url, keys["inj"].key)), Api(server.base_url, keys["other"].key)
    try:
        other_id, other_spans = simple_trace(2, client_request_id="other-request", tags={"suite": "other"})
        assert post_otlp(other.client, otlp_request(other_spans)).status_code == 200
        assert other.post("/api/feedback", json={"trace_id": other_id, "name": "fb", "value": "x"}).status_code == 200

        seeded, spans = [], []
        for i in range(N):
            trace_id, trace_spans = seeded_spans(i)
            seeded.append(trace_id)
            spans += trace_spans
        response = post_otlp(api.client, otlp_request(spans))
        assert response.status_code == 200, describe(response)
        patched, spans = [], []
        for i in range(N):
            trace_id, trace_spans = simple_trace(0, client_request_id=f"patch-{i}", tags={"seed": "P"})
            patched.append(trace_id)
            spans += trace_spans
        victim, victim_spans = simple_trace(0, client_request_id="victim", tags={"seed": "V"}, metadata={"vm": "1"})
        response = post_otlp(api.client, otlp_request(spans + victim_spans))
        assert response.status_code == 200, describe(response)

        # feedback addressed by the payload as client request id, valued and named by it
        feedback_ids = []
        for i, p in enumerate(SQL_INJECTION):
            logged = api.post("/api/feedback", json={"client_request_id": p, "name": feedback_name(i), "value": p})
            assert logged.status_code == 200, describe(logged)
            assert logged.json()["trace_id"] == seeded[i], logged.json()
            feedback_ids.append(logged.json()["assessment_id"])
        others = other.get("/api/traces", params={"max_results": 1000}).json()
        deployment = Deployment(server, store, api, other, baseline, keys_before, seeded, patched, victim, others,
                                feedback_ids)  # fmt: skip
        deployment.added["traces"] += 1 + 2 * N + 1
        deployment.added["spans"] += 3 + 2 * N + N + 1
        deployment.added["assessments"] += 1 + len(feedback_ids)
        yield deployment
    finally:
        api.close()
        other.close()
        server.stop()


def ids_of(dep: Deployment, indices: frozenset[int]) -> set[str]:
    return {dep.seeded[i] for i in indices}


def check_count(dep: Deployment, form: Form, problems: Problems, context: str) -> None:
    response = dep.api.get("/api/trace_count", params={"filter": form.text})
    if not problems.check(response, context, {200, 400}):
        return
    if form.expected is None:
        if response.status_code != 400 or response.json().get("error") != "invalid_filter":
            problems.add(f"an RLIKE pattern RE2 refuses answered {describe(response)}", context)
    elif response.status_code != 200:
        problems.add(f"refused: {describe(response)}", context)
    elif response.json()["count"] != len(form.expected):
        problems.add(f"count {response.json()['count']}, expected {len(form.expected)}", context)


# -- stored as plain data, read back identically -------------------------------------------------


def test_otlp_trace_fields_and_span_strings_read_back_identically(dep):
    problems = Problems()
    for i, p in enumerate(SQL_INJECTION):
        context = f"payload {i} {short(p)}"
        response = dep.api.get(f"/api/traces/{dep.seeded[i]}")
        if not problems.check(response, context, {200}):
            continue
        trace = response.json()
        info, spans = trace["info"], trace["data"]["spans"]
        fields = seed_fields(i)
        expected_tags = {**fields["tags"], **fields["metadata"]}  # every metadata key is also a tag
        got_tags = {k: v for k, v in info["tags"].items() if k != "service.name"}
        checks = {
            "client_request_id": (info["client_request_id"], p),
            "name": (info["name"], p),
            "tags": (got_tags, expected_tags),
            "metadata": ({k: v for k, v in info["metadata"].items() if k != "service.name"}, fields["metadata"]),
            "span names": (sorted(s["name"] for s in spans), [p, p]),
            "child attributes": ([s["attributes"] for s in spans if s["parent_id"]], [child_attributes(i)]),
        }
        for what, (got, want) in checks.items():
            if got != want:
                problems.add(f"{what} read back as {str(got)[:200]!r}, stored {str(want)[:200]!r}", context)
    problems.assert_none("reading hostile OTLP strings back")


# -- filters -------------------------------------------------------------------------------------


def count_is(dep: Deployment, text: str, expected: int, problems: Problems, context: str) -> None:
    check_count(dep, Form(text, frozenset(range(expected))), problems, context)


def test_filter_values_and_keys_through_count_search_pivot_and_bulk_tags(dep):
    problems = Problems()
    for i, p in enumerate(SQL_INJECTION):
        ctx = f"payload {i} {short(p)}"
        plan = checks(i)
        for text in plan.ands:
            count_is(dep, text, 1, problems, f"{ctx}: the single-match forms AND-ed {short(text)}")
        for text in plan.nothing:
            count_is(dep, text, 0, problems, f"{ctx}: the no-match forms OR-ed {short(text)}")
        for form in plan.single:
            check_count(dep, form, problems, f"{ctx}: filter {short(form.text)}")
        for text in plan.ors:
            context = f"{ctx}: the single-match forms OR-ed {short(text)}"
            response = dep.api.get("/api/traces", params={"filter": text, "include_spans": "false"})
            if problems.check(response, context, {200}):
                got = [t["info"]["trace_id"] for t in response.json()["traces"]]
                if got != [dep.seeded[i]]:
                    problems.add(f"found {got}, expected [{dep.seeded[i]}]", context)
        everything = " OR ".join(f"({t})" for t in [*plan.ors, *plan.nothing,
                                                     *(f.text for f in plan.single if f.expected is not None)])
        tagged = dep.api.post("/api/traces/tags", json={"trace_ids": [NO_TRACE], "filter": everything,
                                                          "add_tags": {"hit": p}})  # fmt: skip
        if problems.check(tagged, ctx + " bulk tags by every form", {200}) and tagged.json() != {"updated": 0}:
            problems.add(f"bulk tagging a trace the ids exclude: {tagged.text}", ctx)
        if is_short(p):
            group_by = f"tags.{filter_key(p)}"
            pivot = dep.api.get("/api/pivot", params={"group_by": group_by, "filter": f"tags.k = {filter_literal(p)}"})
            if problems.check(pivot, f"{ctx}: pivot by {short(group_by)}", {200}):
                rows = [(r["value"], r["count"]) for r in pivot.json()["rows"]]
                if rows != [(key_value(i), 1)]:
                    problems.add(f"pivot rows {rows}", f"{ctx}: pivot by {short(group_by)}")
    problems.assert_none("through the API's filters")


@pytest.mark.parametrize("group_by", ["tags.k", "user", "name"])
def test_pivot_groups_of_hostile_values_drill_back_to_their_trace(dep, group_by):
    """Each group's drill filter (printed by traceduck) selects exactly that group again."""
    problems = Problems()
    response = dep.api.get("/api/pivot", params={"group_by": group_by, "filter": "tags.seed = 'T'"})
    assert response.status_code == 200, describe(response)
    rows = response.json()["rows"]
    assert sorted(r["value"] for r in rows) == sorted(SQL_INJECTION), [r["value"] for r in rows][:5]
    for row in rows:
        drill = Form(f"({row['filter']}) AND tags.seed = 'T'", frozenset({SQL_INJECTION.index(row["value"])}))
        check_count(dep, drill, problems, f"group {short(row['value'])} drill filter {short(row['filter'])}")
    problems.assert_none(f"drilling into pivot groups by {group_by}")


def test_hostile_group_by_keys_are_plain_keys(dep):
    problems = Problems()
    for i, p in enumerate(SHORT_INJECTION):
        index = SQL_INJECTION.index(p)
        for prefix, value in (("metadata", key_value(index)), ("feedback", p)):
            group_by = f"{prefix}.{filter_key(p)}"
            response = dep.api.get("/api/pivot", params={"group_by": group_by, "filter": "tags.seed = 'T'"})
            context = f"pivot by {short(group_by)}"
            if problems.check(response, context, {200}):
                rows = sorted(((r["value"] is None, r["value"]), r["count"]) for r in response.json()["rows"])
                if rows != [((False, value), 1), ((True, None), N - 1)]:
                    problems.add(f"rows {rows[:3]}", context)
                elif prefix == "feedback":  # the group's drill filter selects exactly its trace
                    drill = next(r["filter"] for r in response.json()["rows"] if r["value"] is not None)
                    check_count(dep, Form(f"({drill}) AND tags.seed = 'T'", frozenset({index})), problems,
                                f"{context}: drill filter {short(drill)}")  # fmt: skip
        raw = dep.api.get("/api/pivot", params={"group_by": p})
        if problems.check(raw, f"pivot by the raw string {short(p)}", {200, 400}) and raw.status_code == 400:
            if raw.json().get("error") != "invalid_filter":
                problems.add(f"a bad group_by answered {describe(raw)}", f"pivot by {short(p)}")
    problems.assert_none("grouping by hostile keys")


# -- order_by and page tokens --------------------------------------------------------------------


def test_order_by_hostile_fields_directions_and_keys(dep):
    problems = Problems()
    for i, p in enumerate(SQL_INJECTION):
        # a hostile string as the whole entry and as the direction: the API answers as the parser
        for entry in (p, f"tags.k {p}"):
            try:
                parse_order_by([entry])
                accepted = True
            except InvalidFilterError:
                accepted = False
            response = dep.api.get("/api/traces", params={"order_by": entry, "max_results": 1, "include_spans": "false"})
            context = f"order_by {short(entry)}"
            if problems.check(response, context, {200, 400}) and accepted != (response.status_code == 200):
                problems.add(f"the parser accepts={accepted}, the API answered {describe(response)}", context)
        if not is_short(p):
            continue
        # hostile keys sort as plain keys: the one trace that has them comes first (NULLs last)
        entries = [f"tags.{filter_key(p)} DESC", f"metadata.{dq_key(p)} ASC", "timestamp_ms DESC"]
        params = {"order_by": entries, "filter": "tags.seed = 'T'", "max_results": 1, "include_spans": "false"}
        response = dep.api.get("/api/traces", params=params)
        context = f"order_by {short(str(entries))}"
        if not problems.check(response, context, {200}):
            continue
        first = [t["info"]["trace_id"] for t in response.json()["traces"]]
        if first != [dep.seeded[i]]:
            problems.add(f"first trace {first}, expected {dep.seeded[i]}", context)
        nxt = dep.api.get("/api/traces", params={**params, "page_token": response.json()["next_page_token"]})
        if problems.check(nxt, context + " (next page)", {200}) and dep.seeded[i] in str(nxt.json()):
            problems.add("the next page repeats the first trace", context)
    problems.assert_none("ordering by hostile entries")


def test_page_tokens_garbage_and_forged_with_hostile_sort_keys(dep):
    problems = Problems()
    flt, order = "tags.seed = 'T'", ["tags.k ASC"]
    fingerprint = query_fingerprint(flt, order, "inj")
    for i, p in enumerate(SQL_INJECTION):
        context = f"page_token {short(p)}"
        garbage = dep.api.get("/api/traces", params={"page_token": p, "max_results": 1})
        if problems.check(garbage, context, {400}) and garbage.json().get("error") != "invalid_page_token":
            problems.add(f"answered {describe(garbage)}", context)
        # a well-formed token whose sort keys are the payload: "rows after k = payload"; the
        # trace-id key is not a UUID (NULL), so exactly the traces whose k sorts after it follow
        token = encode_token([p, p], fingerprint)
        forged = dep.api.get("/api/traces", params={"filter": flt, "order_by": order, "page_token": token,
                                                    "max_results": 1000, "include_spans": "false"})  # fmt: skip
        context = f"forged page_token with sort keys {short(p)}"
        if len(token) > 8192:  # longer than any token a search hands out: refused unread
            if problems.check(forged, context, {400}) and forged.json().get("error") != "invalid_page_token":
                problems.add(f"answered {describe(forged)}", context)
        elif problems.check(forged, context, {200}):
            got = [t["info"]["trace_id"] for t in forged.json()["traces"]]
            expected = ORACLE.match(">", p)
            if set(got) != ids_of(dep, expected):
                problems.add(f"{len(got)} traces follow, expected {len(expected)}", context)
        if i == 0:
            wrong = dep.api.get("/api/traces", params={"filter": flt, "order_by": ["tags.k DESC"], "page_token": token})
            if problems.check(wrong, context + " (another order)", {400}):
                if wrong.json().get("error") != "invalid_page_token":
                    problems.add(f"answered {describe(wrong)}", context)
    problems.assert_none("with hostile page tokens")


# -- feedback addressing, assessments, ids in URLs -----------------------------------------------


def test_feedback_addressing_names_values_and_lookups(dep):
    problems = Problems()
    seen_feedback = dep.api.get(f"/api/traces/{dep.seeded[0]}").json()["info"]["assessments"]
    if not any(a["name"] == SQL_INJECTION[0] and a["value"] == SQL_INJECTION[0] for a in seen_feedback):
        problems.add(f"the feedback of payload 0 reads back as {seen_feedback}")
    for i, p in enumerate(SQL_INJECTION):
        ctx = f"payload {i} {short(p)}"
        lookup = dep.api.get("/api/trace_lookup", params={"client_request_id": p})
        if problems.check(lookup, ctx + " trace_lookup by client_request_id", {200}):
            if lookup.json()["info"]["trace_id"] != dep.seeded[i]:
                problems.add(f"found {lookup.json()['info']['trace_id']}", ctx + " trace_lookup")
        by_response = dep.api.get("/api/trace_lookup", params={"response_id": p})
        problems.check(by_response, ctx + " trace_lookup by response_id", {404})
        chat = dep.api.post("/v1/chat/completions/feedback", json={"application": "inj", "chat_id": p,
                                                                    "feedback": {feedback_name(i): p}})  # fmt: skip
        if problems.check(chat, ctx + " chat feedback", {200}):
            dep.added["assessments"] += 1
            if chat.json()["pending"] is not True or chat.json()["chat_id"] != p:
                problems.add(f"chat feedback answered {chat.text[:200]}", ctx)
        by_trace_id = dep.api.post("/api/feedback", json={"trace_id": p, "name": "x", "value": 1})
        problems.check(by_trace_id, ctx + " feedback by trace_id", {400})
        if is_short(p):
            aid = dep.feedback_ids[i]  # named and valued by p
            patch = dep.api.patch(f"/api/assessments/{aid}", json={"rationale": p, "metadata": {p: p}, "value": [p]})
            if problems.check(patch, ctx + " assessment PATCH", {200}):
                got = patch.json()
                if (got["name"], got["rationale"], got["metadata"].get(p), got["value"]) != (p, p, p, [p]):
                    problems.add(f"assessment reads back as {str(got)[:300]}", ctx)
        choice = dep.api.post("/api/llm/select_choice", json={"index": 0, "response_id": p})
        problems.check(choice, ctx + " select_choice", {404})
    usage = dep.api.post("/api/llm_usage", json={"trace_ids": [*SQL_INJECTION, *dep.seeded]})
    if problems.check(usage, "llm_usage of hostile trace ids", {200}) and usage.json() != {"usage": {}}:
        problems.add(f"llm_usage {usage.text[:200]}")
    pending = dep.api.get("/api/assessments/pending")
    if problems.check(pending, "pending assessments", {200}):
        stored = {(a["target"], a["name"], a["value"]) for a in pending.json() if a["target_kind"] == "response_id"}
        if stored != {(p, feedback_name(i), p) for i, p in enumerate(SQL_INJECTION)}:
            problems.add(f"{len(stored)} pending chat feedbacks read back, {N} logged")
    problems.assert_none("addressing feedback with hostile ids")


def test_hostile_ids_in_url_paths(dep):
    problems = Problems()
    for i, p in enumerate(SQL_INJECTION):
        path = quote(p, safe="")
        routed = "/" not in p  # a decoded '/' makes another path, which no route serves
        ctx = f"payload {i} {short(p)} in a path"
        calls = [
            ("GET", f"/api/traces/{path}", None, {404}),
            ("GET", f"/api/assessments/{path}", None, {404}),
            ("PUT", f"/api/projects/{path}/settings", {"pii": "off"}, {403} if routed else {404, 405}),
        ]
        for method, url, body, allowed in calls:
            kwargs = {"json": body} if body is not None else {}
            problems.check(dep.api.request(method, url, **kwargs), f"{ctx}: {method} {url[:60]}", allowed)
        session = dep.api.get(f"/api/sessions/{path}")
        if problems.check(session, ctx + " session", {200} if routed else {404}) and routed:
            got = [t["trace_id"] for t in session.json()["traces"]]
            if got != [dep.seeded[i]]:
                problems.add(f"session holds {got}, expected [{dep.seeded[i]}]", ctx)
    problems.assert_none("with hostile ids in URLs")


# -- edits ---------------------------------------------------------------------------------------


def test_patched_tags_and_metadata_read_back_and_are_found(dep):
    problems = Problems()
    for i, p in enumerate(SQL_INJECTION):
        ctx = f"payload {i} {short(p)}"
        keyed = {p: f"pv{i}"} if is_short(p) else {}
        body = {"metadata": {"pm": p, **keyed}, "tags": {"pa": p, "seed": "P", **keyed}}
        patch = dep.api.patch(f"/api/traces/{dep.patched[i]}", json=body)
        if problems.check(patch, ctx + " PATCH", {200}):
            info = patch.json()
            if info["tags"] != body["tags"] or info["metadata"] != body["metadata"]:
                problems.add(f"PATCH read back tags {str(info['tags'])[:200]} metadata {str(info['metadata'])[:200]}", ctx)
        found = f"tags.pa = {filter_literal(p)} AND metadata.pm = {filter_literal(p)}"
        if is_short(p):
            found += f" AND tags.{filter_key(p)} = 'pv{i}' AND metadata.{filter_key(p)} = 'pv{i}'"
        search = dep.api.get("/api/traces", params={"filter": found, "include_spans": "false"})
        if problems.check(search, ctx + " search", {200}):
            got = [t["info"]["trace_id"] for t in search.json()["traces"]]
            if got != [dep.patched[i]]:
                problems.add(f"exact search found {got}", ctx)
    problems.assert_none("patching hostile tags and metadata")


def test_bulk_tags_by_ids_and_by_filter(dep):
    problems = Problems()
    for i, p in enumerate(SQL_INJECTION):
        ctx = f"payload {i} {short(p)}"
        key = p if is_short(p) else "bk-long"
        by_ids = dep.api.post("/api/traces/tags", json={"trace_ids": [dep.patched[i]], "add_tags": {"bk": p, key: "b"}})
        if problems.check(by_ids, ctx + " bulk by ids", {200}) and by_ids.json() != {"updated": 1}:
            problems.add(f"bulk by ids answered {by_ids.text}", ctx)
        by_filter = dep.api.post("/api/traces/tags", json={"filter": f"tags.bk = {filter_literal(p)} AND tags.seed = 'P'",
                                                             "add_tags": {"bf": p}, "remove_tags": [key]})  # fmt: skip
        if problems.check(by_filter, ctx + " bulk by filter", {200}) and by_filter.json() != {"updated": 1}:
            problems.add(f"bulk by filter answered {by_filter.text}", ctx)
        back = dep.api.get("/api/traces", params={"filter": f"tags.bf = {filter_literal(p)}", "include_spans": "false"})
        if problems.check(back, ctx + " read back", {200}):
            found = [(t["info"]["trace_id"], t["info"]["tags"]) for t in back.json()["traces"]]
            keyed = {p: f"pv{i}"} if is_short(p) else {}
            want = {"seed": "P", "pa": p, "bk": p, "bf": p, **{k: v for k, v in keyed.items() if k != key}}
            if found != [(dep.patched[i], want)]:
                problems.add(f"found {str(found)[:300]}", ctx)
    long = dep.api.post("/api/traces/tags", json={"filter": f"tags.bk = {filter_literal(VERY_LONG)}",
                                                    "add_tags": {"x": "y"}})  # fmt: skip
    if problems.check(long, "bulk by a 200k-character literal", {200, 400}) and long.status_code == 200:
        if long.json() != {"updated": 0}:
            problems.add(f"a 200k literal tagged {long.text}")
    problems.assert_none("bulk tagging with hostile strings")


# -- strings only JSON can carry -----------------------------------------------------------------


def test_lone_surrogates_in_every_json_field_are_clean_errors(dep):
    """A lone surrogate is not Unicode text: every JSON field that reaches SQL refuses it with a
    4xx (or stores it replaced), and nothing the refused request named changes."""
    problems = Problems()
    before = dep.api.get(f"/api/traces/{dep.victim}").json()
    assessment = dep.feedback_ids[0]
    assessment_before = dep.api.get(f"/api/assessments/{assessment}").json()
    for s in JSON_ONLY_INJECTION:
        lit = filter_literal(s)
        calls = [
            ("PATCH", f"/api/traces/{dep.victim}", {"tags": {"vk": s}}),
            ("PATCH", f"/api/traces/{dep.victim}", {"add_tags": {s: "x"}}),
            ("PATCH", f"/api/traces/{dep.victim}", {"metadata": {"vm": s}}),
            ("PATCH", f"/api/traces/{dep.victim}", {"metadata": {s: "x"}}),
            ("PATCH", f"/api/traces/{dep.victim}", {"remove_tags": [s]}),
            ("POST", "/api/traces/tags", {"filter": f"tags.seed = {lit}", "add_tags": {"x": "y"}}),
            ("POST", "/api/traces/tags", {"filter": f"tags.{filter_key(s)} IS NULL AND tags.seed = 'V'",
                                          "add_tags": {"x": "y"}}),
            ("POST", "/api/traces/tags", {"trace_ids": [dep.victim], "add_tags": {"x": s}}),
            ("POST", "/api/traces/tags", {"trace_ids": [s], "add_tags": {"x": "y"}}),
            ("POST", "/api/feedback", {"client_request_id": s, "name": "n", "value": 1}),
            ("POST", "/api/feedback", {"response_id": s, "name": "n", "value": 1}),
            ("POST", "/api/feedback", {"trace_id": dep.victim, "name": s, "value": 1}),
            ("POST", "/api/feedback", {"trace_id": dep.victim, "name": "n", "value": s}),
            ("POST", "/api/expectations", {"trace_id": dep.victim, "name": "n", "value": {s: 1}}),
            ("POST", "/api/feedback", {"trace_id": dep.victim, "name": "n", "value": 1, "rationale": s}),
            ("POST", "/api/feedback", {"trace_id": dep.victim, "name": "n", "value": 1, "metadata": {s: s}}),
            ("POST", "/api/feedback", {"trace_id": dep.victim, "name": "n", "error": {"error_message": s}}),
            ("POST", "/api/feedback", {"trace_id": dep.victim, "name": "n", "value": 1,
                                       "source": {"source_type": "HUMAN", "source_id": s}}),
            ("PATCH", f"/api/assessments/{assessment}", {"rationale": s}),
            ("PATCH", f"/api/assessments/{assessment}", {"metadata": {s: s}}),
            ("PATCH", f"/api/assessments/{assessment}", {"error": {"error_message": "e", "error_code": s}}),
            ("POST", f"/api/assessments/{assessment}/override", {"value": s}),
            ("POST", f"/api/assessments/{assessment}/override", {"value": 1, "metadata": {"m": s}}),
            ("POST", "/api/traces/tags", {"filter": lit, "add_tags": {"x": "y"}}),
            ("POST", "/api/traces/tags", {"filter": f"tags.seed RLIKE {lit}", "add_tags": {"x": "y"}}),
            ("POST", "/api/keys", {"project": "inj", "rights": ["read"], "description": s}),
            ("POST", "/api/export/sft", {"filter": f"tags.seed = {lit}"}),
            ("POST", "/api/export/sft", {"trace_ids": [s]}),
            ("POST", "/api/llm_usage", {"trace_ids": [s]}),
            ("POST", "/api/llm/select_choice", {"index": 0, "response_id": s}),
            ("POST", "/v1/chat/completions/feedback", {"application": "inj", "chat_id": s, "feedback": {"n": 1}}),
            ("POST", "/api/keys", {"project": s}),
            ("PUT", "/api/projects/inj/settings", {"capture": [s]}),
        ]
        for method, path, body in calls:
            response = dep.api.request(method, path, **json_content(body))
            context = f"{method} {path} {json.dumps(body)[:120]}"
            if problems.check(response, context) and response.status_code == 200:
                problems.add(f"a lone surrogate was accepted: {describe(response)}", context)
    after = dep.api.get(f"/api/traces/{dep.victim}").json()
    if after != before:
        problems.add(f"refused edits changed the trace: {str(after['info'])[:300]}")
    if dep.api.get(f"/api/assessments/{assessment}").json() != assessment_before:
        problems.add("refused edits changed the assessment")
    problems.assert_none("with lone surrogates")


def test_lone_surrogates_in_otlp_trace_fields_are_stored_replaced(dep):
    """Trace fields are JSON text inside an attribute: a \\ud800 escape there decodes to a lone
    surrogate, which the collector stores replaced by U+FFFD rather than losing the batch."""
    problems = Problems()
    spans, ids = [], []
    for j, s in enumerate(JSON_ONLY_INJECTION):
        trace_id, trace_spans = simple_trace(0, client_request_id=f"jk-{j}-{s}", tags={"jk": s, "seed": "J"},
                                             metadata={"jm": s})  # fmt: skip
        ids.append(trace_id)
        spans += trace_spans
    plain_id, plain_spans = simple_trace(0, client_request_id="next-to-surrogates", tags={"seed": "J"})
    response = post_otlp(dep.api.client, otlp_request(spans + plain_spans, resource={"service.name": "inj"}))
    if problems.check(response, "OTLP with lone surrogates in trace fields", {200}):
        dep.added["traces"] += len(ids) + 1
        dep.added["spans"] += len(ids) + 1
        for j, (trace_id, s) in enumerate(zip(ids, JSON_ONLY_INJECTION)):
            replaced = re.sub("[\ud800-\udfff]", "\ufffd", s)
            got = dep.api.get(f"/api/traces/{trace_id}")
            if problems.check(got, f"reading trace {j} back", {200}):
                info = got.json()["info"]
                if (info["tags"]["jk"], info["metadata"]["jm"]) != (replaced, replaced):
                    problems.add(f"read back {info['tags']['jk']!r} / {info['metadata']['jm']!r}, expected {replaced!r}")
            found = dep.api.get("/api/trace_count", params={"filter": f"tags.jk = {filter_literal(replaced)}"})
            if problems.check(found, f"searching trace {j}", {200}) and found.json()["count"] != 1:
                problems.add(f"searching the replaced value found {found.json()['count']}")
        problems.check(dep.api.get(f"/api/traces/{plain_id}"), "the plain trace of the same request", {200})
    problems.assert_none("ingesting lone surrogates")


# -- project names -------------------------------------------------------------------------------


def test_hostile_project_names_through_the_api(dep):
    problems = Problems()
    for p in SQL_INJECTION:
        ctx = f"project {short(p)}"
        problems.check(dep.api.post("/api/keys", json={"project": p, "rights": ["read"]}), ctx + " key", {400, 403})
        chat = {"application": p, "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                "response": {"id": "chatcmpl-inj", "object": "chat.completion", "model": "m",
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}]}}  # fmt: skip
        problems.check(dep.api.post("/v1/chat/completions", json=chat), ctx + " chat log", {400, 403})
        problems.check(dep.api.post("/v1/chat/completions/feedback", json={"application": p, "chat_id": "c",
                                                                            "feedback": {"n": 1}}),
                       ctx + " chat feedback", {400, 403})  # fmt: skip
        audit = dep.api.get("/api/audit", params={"action": p})
        if problems.check(audit, ctx + " audit action", {200}) and audit.json()["events"]:
            problems.add(f"audit events of action {short(p)}: {audit.text[:200]}")
        export = dep.api.post("/api/export/sft", json={"filter": f"tags.k = {filter_literal(p)}", "format": "json"})
        if problems.check(export, ctx + " SFT export", {200}):
            manifest = export.json()["manifest"]
            if manifest["counts"]["matched"] != 1 or manifest["project"] != "inj":
                problems.add(f"export manifest {str(manifest)[:300]}", ctx)
    problems.assert_none("with hostile project names")


# -- in process ----------------------------------------------------------------------------------


def test_in_process_update_current_trace_then_search_and_count(tmp_path):
    """The same corpus without a collector: recorded by ``update_current_trace``, read back, found
    by ``search_traces``/``count_traces`` on the store path; hostile order_by entries and page
    tokens are refused. (Pivots and ordering by hostile keys run the same SDK functions through the
    collector above.)"""
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    path = str(tmp_path / "local.duckdb")
    traceduck.configure(path, tracer_provider=TracerProvider())
    seeded: list[str] = []
    for i, p in enumerate(SQL_INJECTION):
        fields = seed_fields(i)
        with traceduck.start_span(p) as root:
            metadata = {k: v for k, v in fields["metadata"].items() if not k.startswith("trace.")}
            traceduck.update_current_trace(tags=fields["tags"], metadata=metadata, client_request_id=p, user=p,
                                           session_id=p)  # fmt: skip
            with traceduck.start_span(p, attributes=child_attributes(i)):
                pass
        seeded.append(root.trace_id)
    surrogates = 0
    for s in JSON_ONLY_INJECTION:  # a lone surrogate in process: refused, or stored replaced
        with traceduck.start_span("surrogate"):
            surrogates += 1
            try:
                traceduck.update_current_trace(tags={"jk": s, "seed": "J"}, client_request_id=s)
            except ValueError:
                pass
    assert traceduck.flush()
    assessments = 0
    for i, p in enumerate(SQL_INJECTION):
        got = traceduck.log_feedback(client_request_id=p, name=feedback_name(i), value=p, store=path)
        assert got.trace_id == seeded[i], (i, got)
        assessments += 1

    problems = Problems()

    def count_is(text: str, expected: int | None, context: str) -> None:
        try:
            got = traceduck.count_traces(text, store=path)
        except InvalidFilterError as exc:
            if expected is not None:
                problems.add(f"refused: {exc}", context)
            return
        if expected is None:
            problems.add(f"an RLIKE pattern RE2 refuses was accepted (count {got})", context)
        elif got != expected:
            problems.add(f"count {got}, expected {expected}", context)

    for i, p in enumerate(SQL_INJECTION):
        ctx = f"payload {i} {short(p)}"
        plan = checks(i)
        for text in plan.ands:
            count_is(text, 1, f"{ctx}: the single-match forms AND-ed {short(text)}")
        for text in plan.nothing:
            count_is(text, 0, f"{ctx}: the no-match forms OR-ed {short(text)}")
        for form in plan.single:
            count_is(form.text, None if form.expected is None else len(form.expected), f"{ctx}: {short(form.text)}")
        fields = seed_fields(i)
        for text in plan.ors:
            found = traceduck.search_traces(text, return_type="list", include_spans=False, store=path)
            if [t.info.trace_id for t in found] != [seeded[i]]:
                problems.add(f"found {[t.info.trace_id for t in found]}", f"{ctx}: the single-match forms OR-ed")
                continue
            info = found[0].info
            tags = {k: v for k, v in info.tags.items() if k not in ("service.name", "service.version")}
            if (tags, info.client_request_id, info.name) != ({**fields["tags"], **fields["metadata"]}, p, p):
                problems.add(f"read back tags {str(tags)[:200]}, client_request_id {info.client_request_id!r}", ctx)
        for entry in (p, f"tags.k {p}"):
            try:
                parse_order_by([entry])
            except InvalidFilterError:
                continue
            problems.add(f"order_by {short(entry)} was accepted", ctx)
        try:
            traceduck.search_traces_page("tags.seed = 'T'", page_token=p, store=path)
            problems.add("a garbage page token was accepted", ctx)
        except InvalidPageTokenError:
            pass
    for flt in (f"tags.k = {filter_literal(VERY_LONG)}", f"tags.k LIKE {filter_literal(VERY_LONG)}"):
        count_is(flt, 0, "a 200k-character literal")
    count_is("tags.seed = 'J'", surrogates, "the traces whose trace fields held a lone surrogate")
    for s in JSON_ONLY_INJECTION:
        replaced = re.sub("[\ud800-\udfff]", "\ufffd", s)
        count_is(f"tags.jk = {filter_literal(replaced)} AND client_request_id = {filter_literal(replaced)}", 1,
                 f"the lone surrogate of {s!r} stored replaced")  # fmt: skip
    for s in JSON_ONLY_INJECTION:  # searching with a lone surrogate: a clean ValueError or nothing found
        lit = filter_literal(s)
        for what, call in (
            ("count", lambda: traceduck.count_traces(f"tags.jk = {lit}", store=path)),
            ("search", lambda: traceduck.search_traces(f"tags.{filter_key(s)} IS NOT NULL", return_type="list",
                                                       store=path)),
            ("tag_traces", lambda: traceduck.tag_traces(filter_string=f"tags.jk = {lit}", add={"x": "y"}, store=path)),
            ("log_feedback", lambda: traceduck.log_feedback(client_request_id=s, name="n", value=1, store=path)),
            ("get_trace", lambda: traceduck.get_trace(client_request_id=s, store=path)),
            ("pivot", lambda: traceduck.pivot_traces(f"feedback.{filter_key(s)}", store=path)),
        ):
            try:
                result = call()
            except (ValueError, TraceduckError):
                continue
            except Exception as exc:  # noqa: BLE001  (anything else is the finding)
                problems.add(f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:200]!r}", f"{what} with {s!r}")
                continue
            if result not in (0, None, []):
                problems.add(f"found {str(result)[:200]}", f"{what} with {s!r}")
    problems.assert_none("in process")

    traceduck.shutdown()
    counts = table_counts(path)
    assert counts["traces"] == N + surrogates, counts
    assert counts["spans"] == 2 * N + surrogates, counts
    assert counts["assessments"] == assessments, counts
    assert counts["api_keys"] == 0, counts
    assert not glob.glob(INJECTED)


# -- afterwards ----------------------------------------------------------------------------------

_CLI_TOLERANT = """
import contextlib, io, json, sys, traceback
from traceduck.cli import main
out = []
for argv in json.loads(sys.stdin.read()):
    stdout, stderr, crash = io.StringIO(), io.StringIO(), None
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException:
            rc, crash = None, traceback.format_exc()
    out.append({"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "crash": crash})
print(json.dumps(out))
"""


def cli_results(commands: list[list[str]]) -> list[dict[str, Any]]:
    """Run ``traceduck`` commands in one interpreter; failures are results, not errors."""
    proc = subprocess.run([sys.executable, "-c", _CLI_TOLERANT], input=json.dumps(commands), capture_output=True,
                          text=True, env=clean_env(), cwd=str(REPO), timeout=180)  # fmt: skip
    assert proc.returncode == 0, f"the CLI batch died ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_store_intact_after_everything(dep):
    """Run last: alive, the other project and the keys unchanged; then, on the stopped store, the
    CLI with hostile project names changes nothing; every table holds what was added, no more."""
    assert_alive(dep.server)
    assert dep.other.get("/api/traces", params={"max_results": 1000}).json() == dep.other_traces
    inj_traces = dep.api.get("/api/trace_count").json()["count"]
    assert not glob.glob(INJECTED), glob.glob(INJECTED)
    dep.stopped = True
    dep.server.stop()

    before_cli = table_counts(dep.store)
    commands: list[list[str]] = []
    payloads: list[str] = []
    for p in SQL_INJECTION:
        commands += [
            ["keys", "create", "--store", dep.store, f"--project={p}", "--rights", "read"],
            ["project", "set", p, "--store", dep.store, "--capture", "all"],
            ["project", "show", p, "--store", dep.store],
        ]
        payloads += [p] * 3
    # a hostile string that is still a well-formed project name ("NULL") is a project like any other
    accepted = sorted({p for p in SQL_INJECTION if PROJECT_NAME.match(p)})
    problems = Problems()
    for argv, p, result in zip(commands, payloads, cli_results(commands)):
        ctx = f"traceduck {argv[0]} {argv[1]} with {short(p)}"
        if result["crash"]:
            problems.add(f"crashed:\n{result['crash'][-1500:]}", ctx)
        elif argv[1] == "show":  # a read: the project's settings, or that it has none
            shown = f"project    {p}\ncapture    all" if p in accepted else f"project {p} has no settings"
            if result["rc"] != 0 or not result["stdout"].startswith(shown):
                problems.add(f"rc {result['rc']}: {result['stdout'][:200]!r} {result['stderr'][:200]!r}", ctx)
        elif p in accepted:
            if result["rc"] != 0:
                problems.add(f"rc {result['rc']}: {result['stderr'][:200]!r}", ctx)
        elif result["rc"] != 1 or "is not allowed" not in result["stderr"]:
            problems.add(f"rc {result['rc']}: {result['stderr'][:200]!r} {result['stdout'][:100]!r}", ctx)
    problems.assert_none("from the CLI with hostile project names")

    counts = table_counts(dep.store)
    grown = {t: counts[t] - before_cli[t] for t in counts if counts[t] != before_cli.get(t)}
    # each accepted name: its key, its project, and two audit events (key created, capture changed)
    assert grown == ({"api_keys": len(accepted), "projects": len(accepted), "audit_log": 2 * len(accepted)}
                     if accepted else {}), f"the CLI with hostile names changed the store: {grown}"  # fmt: skip
    keys_after = query_store(dep.store, "SELECT * FROM api_keys ORDER BY key_id")
    assert [k for k in keys_after if k[2] not in accepted] == dep.keys_before, "api_keys changed"
    assert sorted(k[2] for k in keys_after if k[2] in accepted) == accepted
    extra = sorted(r[0] for r in query_store(dep.store, "SELECT name FROM projects WHERE name NOT IN ('inj', 'other')"))
    assert extra == accepted, extra
    counts = {t: n - grown.get(t, 0) for t, n in counts.items()}
    assert set(counts) == set(dep.baseline), f"tables changed: {sorted(dep.baseline)} -> {sorted(counts)}"
    for table, added in dep.added.items():
        assert counts[table] == dep.baseline[table] + added, (table, dep.baseline[table], added, counts[table])
    assert counts["traces"] == inj_traces + 1
    for table in ("api_keys", "projects", "schema_version", "llm_calls", "llm_responses"):
        assert counts[table] == dep.baseline[table], (table, dep.baseline[table], counts[table])
    assert query_store(dep.store, "SELECT DISTINCT project FROM traces ORDER BY 1") == [("inj",), ("other",)]
    assert query_store(dep.store, "SELECT count(*) FROM traces WHERE project = 'other'")[0][0] == 1
    for table in counts:
        query_store(dep.store, f'SELECT * FROM "{table}"')  # every row of every table reads
    assert not glob.glob(INJECTED), glob.glob(INJECTED)
