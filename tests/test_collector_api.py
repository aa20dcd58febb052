"""The collector's JSON API (``/api/...``), ``/healthz``, ``/metrics`` and ``/openapi.json``.

One open (keyless) collector serves the module; every test seeds its own traces over OTLP/HTTP
with a marker of its own, so the tests do not see each other's data.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

import traceduck
from traceduck.filters import parse_filter, parse_order_by

from _collector import Collector, otlp_request, otlp_span, post_otlp, simple_trace
from _collector import marker as _marker
from _collector import open_collector


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with open_collector(tmp_path_factory, "api") as server:
        yield server


@pytest.fixture(scope="module")
def client(collector):
    return collector.client()


def _ingest(client, spans) -> None:
    response = post_otlp(client, otlp_request(spans))
    assert response.status_code == 200, response.text


def _seed(client, marker: str, count: int, **kwargs) -> list[str]:
    """``count`` traces tagged suite=marker and i=<n>, trace n starting n ms after the first."""
    base = time.time_ns() - 10_000_000_000
    ids = []
    for i in range(count):
        trace_id, spans = simple_trace(1, client_request_id=f"{marker}-{i}", tags={"suite": marker, "i": str(i)},
                                       start_ns=base + i * 1_000_000, **kwargs)  # fmt: skip
        _ingest(client, spans)
        ids.append(trace_id)
    return ids


def _trace(client, trace_id: str) -> dict:
    response = client.get(f"/api/traces/{trace_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _search(client, **params) -> dict:
    response = client.get("/api/traces", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _pending_ids(client) -> set[str]:
    response = client.get("/api/assessments/pending")
    assert response.status_code == 200, response.text
    return {a["assessment_id"] for a in response.json()}


# -- search --------------------------------------------------------------------------------------


def test_search_returns_only_traces_matching_the_filter(client):
    marker = _marker()
    ids = _seed(client, marker, 4)
    page = _search(client, filter=f"tags.suite = '{marker}' AND tags.i IN ('1', '3')")
    assert sorted(t["info"]["trace_id"] for t in page["traces"]) == sorted([ids[1], ids[3]])


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_search_orders_by_the_order_by_field(client, direction):
    marker = _marker()
    ids = _seed(client, marker, 5)
    page = _search(client, filter=f"tags.suite = '{marker}'", order_by=f"timestamp_ms {direction}")
    got = [t["info"]["trace_id"] for t in page["traces"]]
    assert got == (ids if direction == "ASC" else ids[::-1])


def test_search_max_results_bounds_a_page_and_page_tokens_walk_every_trace_once(client):
    marker = _marker()
    ids = _seed(client, marker, 23)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"filter": f"tags.suite = '{marker}'", "max_results": 5, "order_by": "timestamp_ms DESC"}
        if token:
            params["page_token"] = token
        page = _search(client, **params)
        assert len(page["traces"]) <= 5
        seen += [t["info"]["trace_id"] for t in page["traces"]]
        pages += 1
        token = page["next_page_token"]
        if token is None:
            break
        assert pages < 10, "paging does not end"
    assert len(seen) == len(set(seen)) == 23
    assert seen == ids[::-1]


def test_search_without_spans_returns_trace_infos_only(client):
    marker = _marker()
    _seed(client, marker, 2)
    page = _search(client, filter=f"tags.suite = '{marker}'", include_spans="false")
    assert len(page["traces"]) == 2
    assert all(t["data"]["spans"] == [] for t in page["traces"])


def test_trace_count_counts_the_traces_matching_the_filter(client):
    marker = _marker()
    _seed(client, marker, 6)
    response = client.get("/api/trace_count", params={"filter": f"tags.suite = '{marker}' AND tags.i != '0'"})
    assert response.status_code == 200
    assert response.json() == {"count": 5}


INVALID_FILTERS = ["tags.x = ", "status = 'OK' AND", "foo.bar = 1", "timestamp_ms > 'abc'", "tags.a = 'x' OR ("]


@pytest.mark.parametrize("bad", INVALID_FILTERS)
def test_invalid_filter_answers_400_invalid_filter_with_the_same_position_as_the_sdk(client, bad):
    with pytest.raises(traceduck.InvalidFilterError) as local:
        parse_filter(bad)
    for path in ("/api/traces", "/api/trace_count"):
        response = client.get(path, params={"filter": bad})
        assert response.status_code == 400, f"{path}: {response.status_code} {response.text}"
        body = response.json()
        assert body["error"] == "invalid_filter"
        assert body["position"] == local.value.position
        assert body["detail"]


def test_invalid_order_by_answers_400_invalid_filter_with_its_position(client):
    with pytest.raises(traceduck.InvalidFilterError) as local:
        parse_order_by(["timestamp_ms SIDEWAYS"])
    response = client.get("/api/traces", params={"order_by": "timestamp_ms SIDEWAYS"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_filter"
    assert response.json()["position"] == local.value.position


def test_invalid_page_token_answers_400(client):
    response = client.get("/api/traces", params={"page_token": "not-a-token"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_page_token"


# -- one trace -----------------------------------------------------------------------------------


def test_get_trace_returns_the_trace_with_its_spans(client):
    request_id = "get-" + _marker()
    trace_id, spans = simple_trace(2, client_request_id=request_id, tags={"k": "v"})
    _ingest(client, spans)
    got = _trace(client, trace_id)
    assert got["info"]["trace_id"] == trace_id
    assert got["info"]["client_request_id"] == request_id
    assert got["info"]["tags"]["k"] == "v"
    assert got["info"]["request_preview"] == '{"q": "hello"}'
    assert sorted(s["name"] for s in got["data"]["spans"]) == ["child-0", "child-1", "root"]
    assert traceduck.Trace.from_dict(got).info.trace_id == trace_id


def test_get_unknown_trace_answers_404(client):
    response = client.get(f"/api/traces/{uuid.uuid4().hex}")
    assert response.status_code == 404
    assert response.json()["detail"]


def test_trace_lookup_by_client_request_id_finds_the_trace(client):
    request_id = "lookup-" + _marker()
    trace_id, spans = simple_trace(1, client_request_id=request_id)
    _ingest(client, spans)
    response = client.get("/api/trace_lookup", params={"client_request_id": request_id})
    assert response.status_code == 200
    assert response.json()["info"]["trace_id"] == trace_id
    assert client.get("/api/trace_lookup", params={"client_request_id": "nope-" + _marker()}).status_code == 404


# -- feedback and expectations -------------------------------------------------------------------


def _trace_with_response_id(client) -> tuple[str, str, str]:
    """A stored trace whose LLM child span recorded a response id: (trace id, request id, response id)."""
    request_id, response_id = "fb-" + _marker(), "chatcmpl-" + _marker()
    trace_id, spans = simple_trace(0, client_request_id=request_id)
    root = spans[-1]
    spans.append(otlp_span(root.trace_id, "llm", parent=root.span_id, start_ns=root.start_time_unix_nano + 10,
                           duration_ns=10, attributes={"gen_ai.response.id": response_id}))  # fmt: skip
    _ingest(client, spans)
    return trace_id, request_id, response_id


@pytest.mark.parametrize("route", ["feedback", "expectations"])
@pytest.mark.parametrize("target_kind", ["trace_id", "client_request_id", "response_id"])
def test_assessment_naming_a_stored_trace_attaches_to_it(client, route, target_kind):
    trace_id, request_id, response_id = _trace_with_response_id(client)
    target = {"trace_id": trace_id, "client_request_id": request_id, "response_id": response_id}[target_kind]
    name = f"{route}-{target_kind}"
    response = client.post(f"/api/{route}", json={target_kind: target, "name": name, "value": {"score": 0.5},
                                                  "source": {"source_type": "HUMAN", "source_id": "rater-1"}})  # fmt: skip
    assert response.status_code == 200, response.text
    logged = response.json()
    assert logged["trace_id"] == trace_id
    assert logged["kind"] == ("feedback" if route == "feedback" else "expectation")
    assert logged["target_kind"] == target_kind and logged["target"] == target
    attached = _trace(client, trace_id)["info"]["assessments"]
    assert [(a["assessment_id"], a["name"], a["value"]) for a in attached] == [
        (logged["assessment_id"], name, {"score": 0.5})
    ]
    assert attached[0]["source"] == {"source_type": "HUMAN", "source_id": "rater-1"}


@pytest.mark.parametrize("target_kind", ["trace_id", "client_request_id", "response_id"])
def test_feedback_logged_before_the_trace_arrives_is_pending_then_joined(client, target_kind):
    request_id, response_id = "early-" + _marker(), "chatcmpl-" + _marker()
    trace_id, spans = simple_trace(0, client_request_id=request_id)
    root = spans[-1]
    spans.append(otlp_span(root.trace_id, "llm", parent=root.span_id, start_ns=root.start_time_unix_nano + 10,
                           duration_ns=10, attributes={"gen_ai.response.id": response_id}))  # fmt: skip
    target = {"trace_id": trace_id, "client_request_id": request_id, "response_id": response_id}[target_kind]

    response = client.post("/api/feedback", json={target_kind: target, "name": "thumbs", "value": True,
                                                  "rationale": "user clicked"})  # fmt: skip
    assert response.status_code == 200, response.text
    early = response.json()
    assert early["trace_id"] is None
    assert early["assessment_id"] in _pending_ids(client)

    _ingest(client, spans)

    attached = _trace(client, trace_id)["info"]["assessments"]
    assert [(a["assessment_id"], a["value"], a["rationale"]) for a in attached] == [
        (early["assessment_id"], True, "user clicked")
    ]
    assert early["assessment_id"] not in _pending_ids(client)
    assert client.get(f"/api/assessments/{early['assessment_id']}").json()["trace_id"] == trace_id


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "value": 1},  # names no trace
        {"trace_id": "0" * 31 + "1", "client_request_id": "r", "name": "x", "value": 1},  # names two
        {"trace_id": "not-hex", "name": "x", "value": 1},
        {"client_request_id": "r", "name": "x"},  # neither value nor error
        {"client_request_id": "r", "name": "", "value": 1},
        {"client_request_id": "r", "name": "x", "value": 1, "source": {"source_type": "ROBOT"}},
    ],
    ids=["no_target", "two_targets", "bad_trace_id", "no_value", "empty_name", "bad_source"],
)
def test_malformed_feedback_answers_400_and_stores_nothing(client, body):
    pending_before = _pending_ids(client)
    response = client.post("/api/feedback", json=body)
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]
    assert _pending_ids(client) == pending_before


def test_feedback_without_a_name_answers_422(client):
    response = client.post("/api/feedback", json={"client_request_id": "r", "value": 1})
    assert response.status_code == 422


# -- curation ------------------------------------------------------------------------------------


def _curatable(client) -> str:
    trace_id, spans = simple_trace(1, client_request_id="cur-" + _marker(), tags={"keep": "yes"},
                                   metadata={"model": "gpt-x", "tier": "free"})  # fmt: skip
    _ingest(client, spans)
    return trace_id


def test_patch_metadata_replaces_the_stored_metadata(client):
    trace_id = _curatable(client)
    new = {"reviewed": True, "doc": {"type": "url", "url": "https://example.com/r", "text": "Review"}}
    response = client.patch(f"/api/traces/{trace_id}", json={"metadata": new})
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == new
    assert _trace(client, trace_id)["info"]["metadata"] == new


def test_patch_metadata_does_not_regenerate_the_tags(client):
    trace_id = _curatable(client)
    tags_before = _trace(client, trace_id)["info"]["tags"]
    assert tags_before["model"] == "gpt-x"
    response = client.patch(f"/api/traces/{trace_id}", json={"metadata": {"model": "gpt-y", "extra": "1"}})
    assert response.status_code == 200, response.text
    assert _trace(client, trace_id)["info"]["tags"] == tags_before


def test_patched_metadata_is_what_search_sees(client):
    trace_id = _curatable(client)
    marker = _marker()
    assert client.patch(f"/api/traces/{trace_id}", json={"metadata": {"batch": marker}}).status_code == 200
    found = _search(client, filter=f"metadata.batch = '{marker}'")["traces"]
    assert [t["info"]["trace_id"] for t in found] == [trace_id]
    gone = _search(client, filter=f"metadata.model = 'gpt-x' AND metadata.batch = '{marker}'")["traces"]
    assert gone == []


def test_patch_tags_replaces_all_tags(client):
    trace_id = _curatable(client)
    response = client.patch(f"/api/traces/{trace_id}", json={"tags": {"only": "this", "bare": None}})
    assert response.status_code == 200, response.text
    assert _trace(client, trace_id)["info"]["tags"] == {"only": "this", "bare": None}


def test_patch_add_tags_adds_a_tag_and_keeps_the_others(client):
    trace_id = _curatable(client)
    before = _trace(client, trace_id)["info"]["tags"]
    assert client.patch(f"/api/traces/{trace_id}", json={"add_tags": {"label": "good"}}).status_code == 200
    assert _trace(client, trace_id)["info"]["tags"] == {**before, "label": "good"}


def test_patch_remove_tags_removes_a_tag_and_keeps_the_others(client):
    trace_id = _curatable(client)
    before = _trace(client, trace_id)["info"]["tags"]
    assert client.patch(f"/api/traces/{trace_id}", json={"remove_tags": ["keep"]}).status_code == 200
    after = dict(before)
    del after["keep"]
    assert _trace(client, trace_id)["info"]["tags"] == after


def test_patch_of_an_unknown_trace_answers_404(client):
    response = client.patch(f"/api/traces/{uuid.uuid4().hex}", json={"add_tags": {"a": "b"}})
    assert response.status_code == 404


def test_bulk_tagging_by_ids_changes_exactly_those_traces(client):
    marker = _marker()
    ids = _seed(client, marker, 4)
    response = client.post("/api/traces/tags", json={"trace_ids": ids[:2], "add_tags": {"batch": "b1"}})
    assert response.status_code == 200, response.text
    assert response.json() == {"updated": 2}
    assert [_trace(client, t)["info"]["tags"].get("batch") for t in ids] == ["b1", "b1", None, None]


def test_bulk_tagging_by_filter_changes_exactly_the_matching_traces(client):
    marker = _marker()
    ids = _seed(client, marker, 5)
    response = client.post("/api/traces/tags", json={"filter": f"tags.suite = '{marker}' AND tags.i IN ('0', '4')",
                                                     "add_tags": {"picked": "yes"}, "remove_tags": ["i"]})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json() == {"updated": 2}
    tags = [_trace(client, t)["info"]["tags"] for t in ids]
    assert [t.get("picked") for t in tags] == ["yes", None, None, None, "yes"]
    assert ["i" in t for t in tags] == [False, True, True, True, False]


def test_bulk_tagging_by_ids_and_filter_changes_only_traces_matching_both(client):
    marker = _marker()
    ids = _seed(client, marker, 4)
    response = client.post("/api/traces/tags", json={"trace_ids": ids[:3], "filter": f"tags.i IN ('2', '3')",
                                                     "add_tags": {"both": "yes"}})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json() == {"updated": 1}
    assert [_trace(client, t)["info"]["tags"].get("both") for t in ids] == [None, None, "yes", None]


def test_bulk_tagging_with_an_invalid_filter_answers_400(client):
    response = client.post("/api/traces/tags", json={"filter": "tags.x = ", "add_tags": {"a": "b"}})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_filter"


# -- health, counters, schema --------------------------------------------------------------------


def test_healthz_reports_ok_and_the_store(client, collector):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert "store" not in body  # no file paths on an unauthenticated endpoint


def _stats(client) -> dict:
    response = client.get("/api/stats")
    assert response.status_code == 200
    return response.json()


def test_stats_count_received_stored_and_rejected_spans(client):
    before = _stats(client)
    trace_id, spans = simple_trace(2)
    bad = otlp_span(bytes(16), "zero-trace-id")
    response = post_otlp(client, otlp_request([*spans, bad]))
    assert response.status_code == 200
    after = _stats(client)
    assert after["received_spans"] - before["received_spans"] == 3
    assert after["stored_spans"] - before["stored_spans"] == 3
    assert after["rejected_spans"] - before["rejected_spans"] == 1
    assert after["requests"] - before["requests"] == 1


def _metrics(client) -> dict[str, float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    types: dict[str, str] = {}
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            name, value = line.split()
            assert name in types, f"sample {name} has no # TYPE line"
            values[name] = float(value)
    return values


def test_metrics_expose_the_ingest_counters_in_prometheus_text(client):
    _ingest(client, simple_trace(1)[1])
    metrics = _metrics(client)
    stats = _stats(client)
    for name in ("received_spans", "stored_spans", "rejected_spans", "refused_spans", "requests"):
        assert f"traceduck_{name}_total" in metrics, f"traceduck_{name}_total missing from /metrics"
    assert "traceduck_queued_spans" in metrics  # a gauge keeps its name
    assert metrics["traceduck_stored_spans_total"] == stats["stored_spans"] > 0
    assert stats["write_seconds"] > 0  # the writer's load: time in write transactions
    assert metrics["traceduck_write_seconds_total"] == pytest.approx(stats["write_seconds"])


def test_stats_and_metrics_count_refused_requests_and_spans(tmp_path):
    with Collector(str(tmp_path / "busy.duckdb"), str(tmp_path / "collector.log"), "--max-queued-spans", "1") as server:
        client = server.client()

        def send(_: int) -> int:
            return post_otlp(client, otlp_request(simple_trace(9)[1])).status_code

        statuses: list[int] = []
        with ThreadPoolExecutor(max_workers=16) as pool:
            for _ in range(10):
                statuses += pool.map(send, range(48))
                if 429 in statuses:
                    break
        refused = statuses.count(429)
        assert refused, "no request was refused although the queue holds 1 span"
        stats, metrics = _stats(client), _metrics(client)
        assert stats["refused_requests"] == refused == metrics["traceduck_refused_requests_total"]
        # a request refused once decoded counts its 10 spans; one refused before is not decoded
        assert stats["refused_spans"] % 10 == 0 and stats["refused_spans"] <= 10 * refused
        assert metrics["traceduck_refused_spans_total"] == stats["refused_spans"]


def test_openapi_schema_documents_the_routes(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/v1/traces": {"post"},
        "/api/traces": {"get"},
        "/api/traces/{trace_id}": {"get", "patch"},
        "/api/trace_count": {"get"},
        "/api/trace_lookup": {"get"},
        "/api/traces/tags": {"post"},
        "/api/feedback": {"post"},
        "/api/expectations": {"post"},
        "/api/assessments/pending": {"get"},
        "/api/stats": {"get"},
        "/healthz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, f"{path} is not documented"
        assert methods <= set(paths[path]), f"{path}: documented {sorted(paths[path])}, expected {sorted(methods)}"
    params = {p["name"] for p in paths["/api/traces"]["get"]["parameters"]}
    assert {"filter", "order_by", "max_results", "page_token"} <= params
    schemas = response.json()["components"]["schemas"]
    assert "REPLACES" in schemas["TracePatch"]["properties"]["metadata"]["description"]
