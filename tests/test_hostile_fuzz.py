"""Fuzzing the collector with structurally plausible but wrong input (issue 9, hostile input).

One real collector serves the module. Every input kind is fuzzed twice: by hypothesis (its own
random choices, shrunk to a small example on failure) and by a fixed corpus drawn from
``random.Random(1234)``, so CI runs the very same cases every time. Both go through the same
generators: a generator takes a ``Picker`` (hypothesis draws, or the seeded ``Random``).

Kinds: filter strings and ``order_by`` entries (the parser alone is fuzzed in
``test_filter_fuzz.py``; here the whole API path, whose answer must agree with the parser),
OTLP protobuf bodies (bytes flipped, inserted, deleted, truncated in a valid
``ExportTraceServiceRequest``), OTLP/JSON bodies (one field given a wrong type, a huge number,
a non-hex id, deep nesting), chat-log bodies (the same, and garbage streams), SSE streams
(broken ``data:`` lines), PATCH bodies of traces and assessments, bulk-tag bodies.

For every request: no 5xx; a 4xx carries a JSON message; OTLP ingest answers 200 with an
``ExportTraceServiceResponse`` or a 4xx. What a 200 stored must read back. After each test the
collector is alive (``/healthz`` ok), a trace stored before fuzzing reads back identically, the
other project is untouched and trace counts only grew by what was accepted; at the end the store
file opens and every table reads.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _collector import (
    JSON,
    PROTOBUF,
    REPO,
    export_response,
    otlp_request,
    otlp_span,
    post_otlp,
    simple_trace,
    to_otlp_json,
)
from _hostile import Api, Problems, assert_alive, create_keys, nested_value, query_store, start_collector, table_counts
from collector import otlp as collector_otlp
from traceduck.errors import InvalidFilterError
from traceduck.filters import parse_filter, parse_order_by
from traceduck.llm import normalize_chat
from traceduck.llm.streaming import parse_stream, reassemble

FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
CORPUS_SEED = 1234
CORPUS_CASES = 40  # per input kind
SEED_STREAM = (REPO / "tests" / "fixtures" / "gantry_stream.txt").read_text()
NO_TRACE = "f" * 32  # a well-formed id no trace has


# -- pickers: one generator, two sources of choices ----------------------------------------------


class RngPicker:
    """Choices from a seeded ``random.Random`` (the fixed corpus)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, options: list[Any] | tuple[Any, ...]) -> Any:
        return options[self.rng.randrange(len(options))]

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def chance(self, percent: int) -> bool:
        return self.rng.randrange(100) < percent

    def text(self, max_size: int = 12) -> str:
        alphabet = "ab'\"`\\%_ .=()\x00\u00e9\u2019\U0001f986-;/*?$\n"
        return "".join(self.choice(alphabet) for _ in range(self.integer(0, max_size)))


class DataPicker:
    """Choices drawn by hypothesis (``st.data()``): shrinkable and shown on failure."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def choice(self, options: list[Any] | tuple[Any, ...]) -> Any:
        return self.data.draw(st.sampled_from(list(options)))

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def chance(self, percent: int) -> bool:
        return self.data.draw(st.integers(0, 99)) < percent

    def text(self, max_size: int = 12) -> str:
        return self.data.draw(st.text(max_size=max_size))


# -- hostile values ------------------------------------------------------------------------------

HOSTILE_SCALARS: tuple[Any, ...] = (
    None, True, False, 0, -1, 1.5, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30,
    1e308, -1e308, float("nan"), float("inf"), "", " ", "abc", "NaN", "Infinity", "18446744073709551615",
    "-1", "0x10", "1e999", "zz" * 16, "00" * 16, "00" * 8, "ff" * 17, "f" * 31, "\x00", "\ud800", "\u2019'",
    "'; DROP TABLE traces; --", "a" * 9000,
)  # fmt: skip


def hostile_value(pick: Any, depth: int = 0) -> Any:
    """A value of the wrong type or shape: scalars, containers, deep nesting, random text."""
    kind = pick.integer(0, 9)
    if kind <= 4:
        return pick.choice(HOSTILE_SCALARS)
    if kind == 5:
        return pick.integer(-(2**70), 2**70)
    if kind == 6:
        return pick.text()
    if kind == 7 and depth < 2:
        return [hostile_value(pick, depth + 1) for _ in range(pick.integer(0, 3))]
    if kind == 8 and depth < 2:
        return {pick.choice(["a", "", "value", "key", "\x00", "type", "url"]): hostile_value(pick, depth + 1)
                for _ in range(pick.integer(0, 3))}  # fmt: skip
    return nested_value(pick.choice([3, 40, 120, 255, 300]), pick.choice(["list", "dict"]))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (dict keys and list indices) into a JSON value, the root excluded."""
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append((*prefix, index))
            out.extend(_paths(value, (*prefix, index)))
    return out


def mutate_json(pick: Any, document: Any) -> Any:
    """A copy of ``document`` with one to three fields replaced, deleted or added."""
    doc = copy.deepcopy(document)
    for _ in range(pick.integer(1, 3)):
        paths = _paths(doc)
        if not paths:
            return hostile_value(pick)
        path = pick.choice(paths)
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        action = pick.integer(0, 9)
        if action <= 6:
            parent[path[-1]] = hostile_value(pick)
        elif action == 7:
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[pick.choice(["extra", "traceId", "spanId", "name", "response", "request"])] = hostile_value(pick)
        else:
            parent.append(hostile_value(pick))
    return doc


def json_body(value: Any) -> bytes:
    """JSON text as a hostile client may send it: NaN/Infinity allowed, lone surrogates escaped."""
    return json.dumps(value, allow_nan=True).encode()


# -- the deployment ------------------------------------------------------------------------------


@dataclass
class Fuzzed:
    server: Any
    store: str
    api: Api
    other: Api
    known_id: str
    known: dict[str, Any]
    other_traces: dict[str, Any]
    traces_before: int
    patch_target: str
    assessment_id: str
    #: Upper bound of the traces the fuzz project may have gained (roots of accepted requests).
    accepted_roots: int = 0
    stopped: bool = False


@pytest.fixture(scope="module")
def fz(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    store = str(directory / "fuzz.duckdb")
    keys = create_keys(store, {"fuzz": ("fuzz", "read,write,admin"), "other": ("other", "read,write")},
                       opt_in=["fuzz", "other"])  # fmt: skip
    server = start_collector(directory, "fuzz")
    api, other = Api(server.base_url, keys["fuzz"].key), Api(server.base_url, keys["other"].key)
    known_id, spans = simple_trace(3, client_request_id="known-request", tags={"suite": "fuzz"},
                                   metadata={"app_version": "1.0"})  # fmt: skip
    assert post_otlp(api.client, otlp_request(spans)).status_code == 200
    feedback = api.post("/api/feedback", json={"trace_id": known_id, "name": "known", "value": 1})
    assert feedback.status_code == 200, feedback.text
    other_id, other_spans = simple_trace(2, client_request_id="other-request", tags={"suite": "other"})
    assert post_otlp(other.client, otlp_request(other_spans)).status_code == 200
    patch_target, target_spans = simple_trace(1, client_request_id="patch-target")
    assert post_otlp(api.client, otlp_request(target_spans)).status_code == 200
    logged = api.post("/api/feedback", json={"trace_id": patch_target, "name": "patched", "value": "x"})
    assert logged.status_code == 200, logged.text
    known = api.get(f"/api/traces/{known_id}").json()
    others = other.get("/api/traces", params={"max_results": 1000}).json()
    count = api.get("/api/trace_count").json()["count"]
    yield Fuzzed(server, store, api, other, known_id, known, others, count, patch_target,
                 logged.json()["assessment_id"])  # fmt: skip
    api.close()
    other.close()
    server.stop()


@pytest.fixture(autouse=True)
def _intact_after_each_batch(fz):
    """After each test's batch of examples: alive, healthy, nothing stored before has changed."""
    yield
    if not fz.stopped:
        assert_intact(fz)


def assert_intact(fz: Fuzzed) -> None:
    """Alive and healthy; the known trace and the other project unchanged; counts plausible."""
    assert_alive(fz.server)
    assert fz.api.get(f"/api/traces/{fz.known_id}").json() == fz.known, "the trace stored before fuzzing changed"
    assert fz.other.get("/api/traces", params={"max_results": 1000}).json() == fz.other_traces, (
        "the other project's traces changed"
    )
    count = fz.api.get("/api/trace_count").json()["count"]
    assert fz.traces_before <= count <= fz.traces_before + fz.accepted_roots, (
        f"{count} traces; expected between {fz.traces_before} and {fz.traces_before + fz.accepted_roots}"
    )


# -- filters and order_by through the API --------------------------------------------------------

FRAGMENTS = [
    "tags", "tag", "metadata", "feedback", "expectation", "span", "trace", "attributes", "status", "name",
    "timestamp_ms", "execution_time_ms", "trace_id", "client_request_id", "request_preview", "type", "env",
    "suite", "`k`", "`a``b`", '"k"', "'v'", '"v"', "''", "'fuzz'", "5", "-1.5e3", "1e400", "99999999999999999999",
    ".", "=", "!=", "<", "<=", ">", ">=", "AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "RLIKE", "IS", "NULL", "(",
    ")", ",", "`", "'", '"', "\\", "true", "'%'", "'_'", "'[a-'", "'(?P<x>a)'", "'\\\\d+'", "'(a'", "'a{99999}'",
    "'; DROP TABLE traces; --", "\x00", "\u2019", "ASC", "DESC",
]  # fmt: skip
PIVOTS = ["user", "session", "model", "status", "tags.suite", "metadata.app_version", "feedback.known"]


def gen_filter(pick: Any) -> str:
    if pick.chance(20):
        return pick.text(40)
    joiner = pick.choice([" ", "", "  "])
    return joiner.join(pick.choice(FRAGMENTS) for _ in range(pick.integer(1, 12)))


def check_filter(fz: Fuzzed, text: str, pick: Any, problems: Problems) -> None:
    """Through count, search, pivot and bulk tagging: 200 exactly when the parser accepts, else
    400 invalid_filter at the parser's position."""
    try:
        parse_filter(text)
        expected: InvalidFilterError | None = None
    except InvalidFilterError as exc:
        expected = exc
    calls = [
        ("GET", "/api/trace_count", {"params": {"filter": text}}),
        ("GET", "/api/traces", {"params": {"filter": text, "max_results": 2, "include_spans": "false"}}),
        ("GET", "/api/pivot", {"params": {"filter": text, "group_by": pick.choice(PIVOTS)}}),
        ("POST", "/api/traces/tags", {"json": {"trace_ids": [NO_TRACE], "filter": text, "add_tags": {"hit": "1"}}}),
    ]
    for method, path, kwargs in calls:
        response = fz.api.request(method, path, **kwargs)
        context = f"filter {text!r} on {path}"
        if not problems.check(response, context):
            continue
        if text == "" and path != "/api/traces/tags":
            continue  # an empty filter is no filter (the parser's None)
        if expected is None:
            problems.add(None if response.status_code == 200 else f"the parser accepts it: {response.text[:200]}", context)
            if path == "/api/traces/tags" and response.status_code == 200 and response.json() != {"updated": 0}:
                problems.add(f"tagged traces that the ids exclude: {response.text}", context)
        else:
            body = response.json()
            if response.status_code != 400 or body.get("error") != "invalid_filter":
                problems.add(f"the parser says {expected.message!r}; the API answered {response.status_code} {body}", context)
            elif body.get("position") != expected.position:
                problems.add(f"position {body.get('position')} != the parser's {expected.position}", context)


def gen_order_by(pick: Any) -> list[str]:
    entries = []
    for _ in range(pick.integer(1, 3)):
        if pick.chance(50):
            entries.append(" ".join(pick.choice(FRAGMENTS) for _ in range(pick.integer(1, 4))))
        else:
            field_name = pick.choice(["timestamp_ms", "name", "status", "trace_id", "client_request_id",
                                      "tags.suite", "metadata.app_version", "tags.`a``b`", "execution_time_ms"])  # fmt: skip
            entries.append(f"{field_name} {pick.choice(['ASC', 'DESC', 'asc', '', 'UP'])}".strip())
    return entries


def check_order_by(fz: Fuzzed, order_by: list[str], problems: Problems) -> None:
    try:
        parse_order_by(order_by)
        accepted = True
    except InvalidFilterError:
        accepted = False
    params = {"order_by": order_by, "max_results": 1, "include_spans": "false"}
    response = fz.api.get("/api/traces", params=params)
    context = f"order_by {order_by!r}"
    if not problems.check(response, context):
        return
    if accepted != (response.status_code == 200):
        problems.add(f"parser accepts={accepted} but the API answered {describe_short(response)}", context)
    token = response.json().get("next_page_token") if response.status_code == 200 else None
    if token:
        problems.check(fz.api.get("/api/traces", params={**params, "page_token": token}), context + " (next page)", {200})


def describe_short(response: Any) -> str:
    return f"{response.status_code} {response.text[:200]}"


@FUZZ
@given(st.data())
def test_filter_strings_through_the_api_answer_like_the_parser(fz, data):
    problems = Problems()
    pick = DataPicker(data)
    check_filter(fz, gen_filter(pick), pick, problems)
    problems.assert_none()


@FUZZ
@given(st.data())
def test_order_by_entries_through_the_api_answer_like_the_parser(fz, data):
    problems = Problems()
    check_order_by(fz, gen_order_by(DataPicker(data)), problems)
    problems.assert_none()


# -- OTLP protobuf -------------------------------------------------------------------------------


def valid_otlp_bytes() -> bytes:
    """A valid request: a root with trace fields, children, events, nested attribute values."""
    _, spans = simple_trace(3, client_request_id="pb-" + secrets.token_hex(4), tags={"t": "v"}, metadata={"m": 1})
    spans[0].events.add(time_unix_nano=time.time_ns(), name="ev")
    spans[1].attributes.add(key="nested").value.kvlist_value.values.add(key="k").value.string_value = "v"
    return otlp_request(spans, resource={"service.name": "fuzz", "n": 5}).SerializeToString()


def mutate_bytes(pick: Any, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(pick.integer(1, 6)):
        position = pick.integer(0, len(out))
        action = pick.integer(0, 5)
        if action <= 1 and out:
            out[min(position, len(out) - 1)] = pick.integer(0, 255)
        elif action == 2 and out:
            out[min(position, len(out) - 1)] ^= 1 << pick.integer(0, 7)
        elif action == 3:
            out[position:position] = bytes(pick.integer(0, 255) for _ in range(pick.integer(1, 8)))
        elif action == 4:
            del out[position: position + pick.integer(1, 8)]
        else:
            out = out[:position]
    return bytes(out)


def expected_ingest(body: bytes, content_type: str) -> tuple[bool, int, int]:
    """What the collector's own decoder makes of ``body``: (decodable, rejected spans, roots)."""
    try:
        message = collector_otlp.parse_request(body, content_type)
        raw = collector_otlp.RawSpans("fuzz")
        rejected, _ = collector_otlp.to_raw_spans(message, raw, "fuzz")
    except collector_otlp.BadRequest:
        return False, 0, 0
    return True, rejected, len(raw.root_ids)


def check_ingest(fz: Fuzzed, body: bytes, content_type: str, problems: Problems, context: str) -> None:
    decodable, rejected, roots = expected_ingest(body, content_type)
    response = fz.api.post("/v1/traces", content=body, headers={"Content-Type": content_type})
    if not problems.check(response, context):
        return
    if response.status_code == 200:
        fz.accepted_roots += roots
        if not decodable:
            problems.add(f"accepted a body its own decoder refuses: {describe_short(response)}", context)
            return
        try:
            answer = export_response(response)
        except Exception as exc:  # noqa: BLE001  (any decoding problem is the finding)
            problems.add(f"200 without an ExportTraceServiceResponse ({exc}): {response.content[:100]!r}", context)
            return
        if answer.partial_success.rejected_spans != rejected:
            problems.add(f"rejected {answer.partial_success.rejected_spans} spans, its decoder says {rejected}", context)
    elif decodable and response.status_code not in (413, 429):
        problems.add(f"refused a body its decoder reads: {describe_short(response)}", context)


@FUZZ
@given(st.data())
def test_mutated_otlp_protobuf_bodies_are_accepted_or_refused_cleanly(fz, data):
    problems = Problems()
    body = mutate_bytes(DataPicker(data), valid_otlp_bytes())
    check_ingest(fz, body, PROTOBUF, problems, f"protobuf body {base64.b64encode(body)[:120]!r}")
    problems.assert_none()


# -- OTLP JSON -----------------------------------------------------------------------------------


def valid_otlp_json() -> dict[str, Any]:
    _, spans = simple_trace(2, client_request_id="js-" + secrets.token_hex(4), tags={"t": "v"})
    spans[0].events.add(time_unix_nano=time.time_ns(), name="ev")
    spans.append(otlp_span(spans[-1].trace_id, "leaf", parent=spans[0].span_id, attributes={"list": [1, 2], "d": 0.5}))
    return json.loads(to_otlp_json(otlp_request(spans)))


@FUZZ
@given(st.data())
def test_otlp_json_bodies_with_wrong_types_are_accepted_or_refused_cleanly(fz, data):
    problems = Problems()
    document = mutate_json(DataPicker(data), valid_otlp_json())
    body = json_body(document)
    check_ingest(fz, body, JSON, problems, f"OTLP/JSON {body[:300]!r}")
    problems.assert_none()


# -- chat-log bodies and SSE streams -------------------------------------------------------------


def valid_chat_body() -> dict[str, Any]:
    response_id = "chatcmpl-fuzz-" + secrets.token_hex(6)
    return {
        "application": "fuzz",
        "request": {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "be brief"},
                                                         {"role": "user", "content": "hi"}],
                    "temperature": 0.2, "n": 2},
        "response": {"id": response_id, "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"},
                                 {"index": 1, "message": {"role": "assistant", "content": "hey"}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}},
        "request_attributes": {"user_id": "u1"},
        "response_attributes": {"latency_ms": 12},
        "tags": {"suite": "chat-fuzz"},
        "session_id": "s-1",
        "feedback": {"thumbs": 1},
        "selected_choice_index": 1,
    }  # fmt: skip


def mutate_sse(pick: Any, text: str) -> str:
    """The seed's stream with broken ``data:`` lines, junk lines, cut chunks, stray [DONE]s."""
    lines = text.split("\n")
    for _ in range(pick.integer(1, 5)):
        if not lines:  # every line deleted already
            break
        at = pick.integer(0, len(lines) - 1)
        action = pick.integer(0, 11)
        line = lines[at]
        if action == 0:
            lines[at] = line.replace("data:", pick.choice(["dat:", "data :", "DATA:", "data", " data:", "data:data:"]), 1)
        elif action == 1:
            lines[at] = line[: pick.integer(0, len(line))]
        elif action == 2:
            lines.insert(at, pick.choice([": comment", "event: x", "id: 5", "retry: soon", "junk", "data:", "data: ",
                                          "data: [DONE]", "data: [DONE] x", "data: null", "data: 5", "data: []",
                                          "data: {}", 'data: {"choices": 5}', 'data: {"choices": [5]}',
                                          'data: {"choices": [{"index": -1}]}', 'data: {"choices": [{"index": "0"}]}',
                                          'data: {"choices": [{"delta": {"content": 5}}]}',
                                          'data: {"choices": [{"delta": {"tool_calls": [{"index": 1180591620717411303424}]}}]}',
                                          'data: {"usage": [1]}', 'data: {"error": {"message": "boom"}}',
                                          "data: " + "[" * 300 + "]" * 300, "\x00", "\r", "data: \ud800"]))  # fmt: skip
        elif action == 3:
            del lines[at]
        elif action == 4:
            lines[at] = line.replace('"content":"', '"content":' + pick.choice(["5", "null", "[", "{}", '"\\u0000']), 1)
        elif action == 5:
            lines[at] = line.replace("\n", "")
        elif action == 6:
            lines = lines[:at]
        elif action == 7:
            lines[at] = line + pick.text(6)
        elif action == 8:
            lines[at] = line.replace('"index":0', '"index":' + str(pick.choice([-1, 2**31, 10**20, 1.5, '"x"'])), 1)
        elif action == 9:
            lines[at] = line.replace('"delta":{', '"delta":' + pick.choice(["5", "[", "null", '"x"']) + "{", 1)
        elif action == 10:
            lines.insert(at, "")
        else:
            lines[at] = line.replace("data: ", "data:", 1)
    joiner = pick.choice(["\n", "\r\n", "\r", "\n\n"])
    return joiner.join(lines)


def sse_forms(pick: Any, text: str) -> Any:
    """The stream as one text, a list of event strings, or a list of parsed chunks where possible."""
    form = pick.integer(0, 2)
    if form == 0:
        return text
    events = [e for e in text.replace("\r\n", "\n").split("\n\n")]
    if form == 1:
        return events
    chunks: list[Any] = []
    for event in events:
        data = event.strip()[len("data:"):].strip() if event.strip().startswith("data:") else event
        try:
            chunks.append(json.loads(data))
        except ValueError:
            chunks.append(data)
    return chunks


def check_chat(fz: Fuzzed, body: Any, problems: Problems, context: str) -> None:
    """400 (never 422) for a malformed call; a 200's trace reads back."""
    response = fz.api.post("/v1/chat/completions", content=json_body(body), headers={"Content-Type": JSON})
    if not problems.check(response, context, {200, 400, 403}):
        return
    if response.status_code != 200:
        return
    fz.accepted_roots += 1
    trace_id = response.json().get("trace_id")
    stored = fz.api.get(f"/api/traces/{trace_id}")
    if problems.check(stored, context + " (reading the logged call back)", {200}):
        spans = stored.json()["data"]["spans"]
        if len(spans) != 1 or spans[0]["span_type"] != "LLM":
            problems.add(f"the logged call reads back as {[s.get('span_type') for s in spans]}", context)


@FUZZ
@given(st.data())
def test_chat_log_bodies_with_wrong_types_answer_400_or_are_stored(fz, data):
    problems = Problems()
    pick = DataPicker(data)
    body = mutate_json(pick, valid_chat_body())
    if isinstance(body, dict):
        body["application"] = "fuzz" if pick.chance(90) else body.get("application")
    check_chat(fz, body, problems, f"chat body {json.dumps(body)[:300]}")
    problems.assert_none()


def check_sse_in_process(text_or_list: Any, problems: Problems, context: str) -> None:
    """``parse_stream``/``reassemble``/``normalize_chat`` raise ValueError or nothing."""
    request = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    for step in ("parse", "normalize"):
        try:
            if step == "parse":
                reassemble(parse_stream(text_or_list))
            else:
                normalize_chat(request, text_or_list)
        except ValueError:
            pass
        except Exception as exc:  # noqa: BLE001  (anything else is the finding)
            problems.add(f"{step} raised {type(exc).__name__}: {exc}", context)


@FUZZ
@given(st.data())
def test_broken_sse_streams_raise_value_error_or_are_stored(fz, data):
    problems = Problems()
    pick = DataPicker(data)
    stream = sse_forms(pick, mutate_sse(pick, SEED_STREAM))
    context = f"stream {json.dumps(stream)[:300]}"
    check_sse_in_process(stream, problems, context)
    body = valid_chat_body()
    body["response"] = stream
    check_chat(fz, body, problems, context)
    problems.assert_none()


# -- PATCH and other edit bodies -----------------------------------------------------------------


def gen_edit(pick: Any, fz: Fuzzed) -> tuple[str, str, Any]:
    """(method, path, body) of a trace PATCH, an assessment PATCH, an override or a bulk-tag call."""
    target = pick.integer(0, 9)
    if target <= 4:
        body: Any = {}
        for name in ("metadata", "tags", "add_tags", "remove_tags"):
            if pick.chance(45):
                body[name] = hostile_value(pick) if pick.chance(40) else (
                    [pick.choice(["a", "", "suite", "\x00", 5, None])] if name == "remove_tags" else
                    {pick.choice(["k", "", "trace.user", "user.id", "x" * 251, "\x00"]): hostile_value(pick)})  # fmt: skip
        if pick.chance(10):
            body = hostile_value(pick)
        trace_id = fz.patch_target if pick.chance(85) else pick.choice([NO_TRACE, "nothex", "0" * 32, "%00"])
        return "PATCH", f"/api/traces/{trace_id}", body
    if target <= 6:
        body = {name: hostile_value(pick) for name in ("value", "rationale", "metadata", "error", "source")
                if pick.chance(40)}  # fmt: skip
        return "PATCH", f"/api/assessments/{fz.assessment_id}", body
    if target == 7:
        return "POST", "/api/feedback", mutate_json(pick, {"trace_id": fz.patch_target, "name": "fz", "value": 1,
                                                            "source": {"source_type": "HUMAN"}, "metadata": {"m": 1}})  # fmt: skip
    return "POST", "/api/traces/tags", mutate_json(pick, {"trace_ids": [fz.patch_target], "filter": "client_request_id = 'patch-target'",
                                                          "add_tags": {"bulk": "1"}, "remove_tags": ["gone"]})  # fmt: skip


def check_edit(fz: Fuzzed, method: str, path: str, body: Any, problems: Problems) -> None:
    context = f"{method} {path} {json.dumps(body)[:300]}"
    response = fz.api.request(method, path, content=json_body(body), headers={"Content-Type": JSON})
    if not problems.check(response, context):
        return
    if response.status_code == 200:
        problems.check(fz.api.get(f"/api/traces/{fz.patch_target}"), context + " (reading the trace back)", {200})


@FUZZ
@given(st.data())
def test_patch_and_edit_bodies_with_wrong_types_answer_4xx_or_apply(fz, data):
    problems = Problems()
    method, path, body = gen_edit(DataPicker(data), fz)
    check_edit(fz, method, path, body, problems)
    problems.assert_none()


# -- the fixed corpus ----------------------------------------------------------------------------


def test_fixed_random_corpus_of_every_input_kind(fz):
    """The same cases on every run: ``random.Random(1234)``, CORPUS_CASES per kind."""
    rng = random.Random(CORPUS_SEED)
    pick = RngPicker(rng)
    problems = Problems()
    for i in range(CORPUS_CASES):
        check_filter(fz, gen_filter(pick), pick, problems)
        check_order_by(fz, gen_order_by(pick), problems)
        body = mutate_bytes(pick, valid_otlp_bytes())
        check_ingest(fz, body, PROTOBUF, problems, f"corpus case {i}: protobuf {base64.b64encode(body)[:100]!r}")
        document = json_body(mutate_json(pick, valid_otlp_json()))
        check_ingest(fz, document, JSON, problems, f"corpus case {i}: OTLP/JSON {document[:200]!r}")
        chat = mutate_json(pick, valid_chat_body())
        check_chat(fz, chat, problems, f"corpus case {i}: chat {json.dumps(chat)[:200]}")
        stream = sse_forms(pick, mutate_sse(pick, SEED_STREAM))
        check_sse_in_process(stream, problems, f"corpus case {i}: stream {json.dumps(stream)[:200]}")
        streamed = valid_chat_body()
        streamed["response"] = stream
        check_chat(fz, streamed, problems, f"corpus case {i}: stream {json.dumps(stream)[:200]}")
        check_edit(fz, *gen_edit(pick, fz), problems)
    problems.assert_none(f"in the fixed corpus (seed {CORPUS_SEED})")


# -- afterwards ----------------------------------------------------------------------------------


def test_collector_alive_and_store_intact_after_fuzzing(fz):
    """Run last: alive, the known trace and the other project unchanged, counts plausible; then
    the store file itself opens and every table reads in full."""
    assert_intact(fz)
    fz.stopped = True
    fz.server.stop()
    counts = table_counts(fz.store)
    for table in ("traces", "spans", "assessments", "llm_calls", "llm_responses", "api_keys", "projects",
                  "audit_log", "schema_version"):  # fmt: skip
        assert table in counts, f"table {table} is gone: {counts}"
        query_store(fz.store, f"SELECT * FROM {table}")  # every row reads
    assert counts["api_keys"] == 2
    assert query_store(fz.store, "SELECT count(*) FROM traces WHERE project = 'other'")[0][0] == 1
