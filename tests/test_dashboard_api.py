"""The dashboard's endpoints (``collector/dashboard_api.py``) on a real collector with seeded data.

Traces go in through OTLP ingest and ``/v1/chat/completions``, feedback through ``/api/feedback``;
every expected number is computed here from what was sent (``_dashboard_data.Seeded``), never
read back from the store.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import traceduck as td
from _collector import Collector, create_key, otlp_request, post_otlp, simple_trace, wait_for
from _dashboard_data import Seeded, SeededTrace, seed
from traceduck.remote import RemoteStore
from traceduck.store.aggregate import bucket_width, parse_group_by

STATIC = Path(__file__).resolve().parent.parent / "collector" / "static"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("dashboard-api")
    store = str(base / "store.duckdb")
    shop = create_key(store, "shop", "read,write,admin")
    other = create_key(store, "other", "read,write")
    collector = Collector(store, str(base / "collector.log"))
    try:
        seeded = seed(collector.client(shop.key), "shop")
        other_client = collector.client(other.key)
        _, spans = simple_trace(1, tags={"trace.user": "mallory"}, root_name="other-app")
        assert post_otlp(other_client, otlp_request(spans)).status_code == 200
        wait_for(lambda: other_client.get("/api/trace_count").json()["count"] == 1, what="the other project's trace")
        yield collector, collector.client(shop.key), other_client, seeded, shop
    finally:
        collector.stop()


@pytest.fixture(scope="module")
def client(env):
    return env[1]


@pytest.fixture(scope="module")
def seeded(env) -> Seeded:
    return env[3]


# -- independent computations ----------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, DuckDB's quantile_cont)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def expected_row(traces: list[SeededTrace]) -> dict:
    durations = [t.duration_ms for t in traces]
    with_calls = [t for t in traces if t.model is not None]
    return {
        "count": len(traces),
        "error_rate": sum(t.error for t in traces) / len(traces),
        "p50_ms": quantile(durations, 0.5),
        "p95_ms": quantile(durations, 0.95),
        "input_tokens": sum(t.input_tokens for t in with_calls) if with_calls else None,
        "output_tokens": sum(t.output_tokens for t in with_calls) if with_calls else None,
        "cost_usd": sum(t.cost_usd for t in with_calls) if with_calls else None,
    }


def check_rows(answer: dict, groups: dict, key_of=lambda v: v) -> None:
    rows = {r["value"]: r for r in answer["rows"]}
    assert set(rows) == {key_of(v) for v in groups}, answer["rows"]
    for value, traces in groups.items():
        row, want = rows[key_of(value)], expected_row(traces)
        for name, expected in want.items():
            assert row[name] == pytest.approx(expected), (value, name)
    counts = [r["count"] for r in answer["rows"]]
    assert counts == sorted(counts, reverse=True), "largest groups first"


def group(traces: list[SeededTrace], key) -> dict:
    out = defaultdict(list)
    for t in traces:
        out[key(t)].append(t)
    return out


# -- the page ----------------------------------------------------------------------------------


def test_page_is_served_at_root_without_a_key_and_with_a_content_security_policy(env):
    collector = env[0]
    page = collector.client().get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert collector.client().get("/static/app.js").headers["content-type"].split(";")[0] in (
        "text/javascript", "application/javascript")


def test_page_loads_nothing_from_other_origins():
    index = (STATIC / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([^"]*)"', index):
        assert ref.startswith(("/static/", "#")), ref
    for script in STATIC.rglob("*.js"):
        text = script.read_text()
        for spec in re.findall(r'\bfrom "([^"]+)"', text):
            assert spec.startswith(("./", "../")), (script.name, spec)
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", text), script.name


def test_every_dashboard_endpoint_needs_a_key(env):
    anonymous = env[0].client()
    for path in ("/api/me", "/api/pivot?group_by=user", "/api/timeseries", "/api/fields", "/api/sessions/x"):
        assert anonymous.get(path).status_code == 401, path
    assert anonymous.post("/api/llm_usage", json={"trace_ids": []}).status_code == 401


def test_me_names_the_key_project_and_rights(client, env):
    me = client.get("/api/me").json()
    assert me == {"project": "shop", "rights": ["admin", "read", "write"], "key_id": env[4].key_id, "open": False}


# -- pivot -------------------------------------------------------------------------------------


def test_pivot_by_user_matches_the_seeded_traces(client, seeded):
    answer = client.get("/api/pivot", params={"group_by": "user"}).json()
    check_rows(answer, group(seeded.traces, lambda t: t.user))
    assert answer["groups"] == 6  # alice, bob, carol, dan, erin and no user
    total = expected_row(seeded.traces)
    for name, expected in total.items():
        assert answer["total"][name] == pytest.approx(expected), name


@pytest.mark.parametrize("group_by, key", [
    ("session", lambda t: t.session),
    ("environment", lambda t: t.environment),
    ("model", lambda t: t.model),
    ("status", lambda t: "ERROR" if t.error else "OK"),
    ("name", lambda t: t.name),
    ("tags.task", lambda t: t.task),
    ("metadata.app_version", None),  # 1.4.<i % 3> of the i-th OTLP trace, see below
    ("pii", lambda t: t.pii),
    ("classification", lambda t: t.classification),
])  # fmt: skip
def test_pivot_by_each_field_matches_the_seeded_traces(client, seeded, group_by, key):
    if key is None:
        otlp = [t for t in seeded.traces if t.kind == "otlp"]
        versions = {t.trace_id: f"1.4.{i % 3}" for i, t in enumerate(otlp)}
        key = lambda t: versions.get(t.trace_id)  # noqa: E731
    answer = client.get("/api/pivot", params={"group_by": group_by}).json()
    check_rows(answer, group(seeded.traces, key))


def test_pivot_by_feedback_uses_the_latest_value_of_each_trace(client, seeded):
    values = {True: "true", False: "false"}
    answer = client.get("/api/pivot", params={"group_by": "feedback.is_correct"}).json()
    check_rows(answer, group(seeded.traces, lambda t: values.get(seeded.feedback.get(t.trace_id))))


def test_each_pivot_row_carries_the_filter_that_lists_its_traces(client):
    for group_by in ("user", "session", "model", "tags.tier", "feedback.is_correct", "classification", "status"):
        for row in client.get("/api/pivot", params={"group_by": group_by}).json()["rows"]:
            if row["filter"] is None:  # the language has no "no model" clause
                assert (group_by, row["value"]) == ("model", None)
                continue
            assert client.get("/api/trace_count", params={"filter": row["filter"]}).json()["count"] == row["count"], row


def test_pivot_applies_the_filter_and_the_time_range(client, seeded):
    answer = client.get("/api/pivot", params={"group_by": "user", "filter": "status = 'ERROR'"}).json()
    check_rows(answer, group([t for t in seeded.traces if t.error], lambda t: t.user))
    cut = sorted(t.start_ms for t in seeded.traces)[len(seeded.traces) // 2]
    answer = client.get("/api/pivot", params={"group_by": "environment", "from": cut}).json()
    check_rows(answer, group([t for t in seeded.traces if t.start_ms >= cut], lambda t: t.environment))
    answer = client.get("/api/pivot", params={"group_by": "environment", "to": cut}).json()
    check_rows(answer, group([t for t in seeded.traces if t.start_ms < cut], lambda t: t.environment))


def test_pivot_limit_keeps_the_largest_groups_and_counts_them_all(client, seeded):
    answer = client.get("/api/pivot", params={"group_by": "session", "limit": 2}).json()
    sizes = Counter(t.session for t in seeded.traces)
    assert answer["groups"] == len(sizes)
    assert [r["count"] for r in answer["rows"]] == sorted(sizes.values(), reverse=True)[:2]


def test_pivot_sees_only_the_key_project(env, client):
    other_client = env[2]
    users = {r["value"] for r in client.get("/api/pivot", params={"group_by": "user"}).json()["rows"]}
    assert "mallory" not in users
    other = other_client.get("/api/pivot", params={"group_by": "user"}).json()
    assert [(r["value"], r["count"]) for r in other["rows"]] == [("mallory", 1)]
    assert other["total"]["count"] == 1


def test_malformed_group_by_and_filter_are_400_with_the_position(client):
    bad = client.get("/api/pivot", params={"group_by": "tags.`open"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_filter" and bad.json()["position"] == 5
    assert client.get("/api/pivot", params={"group_by": "span.name"}).status_code == 400
    bad = client.get("/api/pivot", params={"group_by": "user", "filter": "tags.a = 'x' tags.b = 'y'"})
    assert bad.status_code == 400
    assert bad.json() == {"detail": "missing AND or OR between two conditions", "error": "invalid_filter", "position": 13}


def test_group_by_is_read_like_a_filter_field():
    assert parse_group_by("tags.`trace.user`").kind == "column"  # a mirrored tag uses its column
    assert parse_group_by("tags.`my key`").target == "my key"
    assert parse_group_by("metadata.app.version").target == "app.version"
    assert parse_group_by("feedback.`is correct`").kind == "feedback"
    assert parse_group_by(" user ").target == "trace_user"
    with pytest.raises(td.InvalidFilterError, match="cannot group by"):
        parse_group_by("timestamp_ms")


# -- time series -------------------------------------------------------------------------------


def test_timeseries_counts_every_trace_in_its_bucket(client, seeded):
    start = min(t.start_ms for t in seeded.traces)
    end = max(t.start_ms for t in seeded.traces) + 1
    answer = client.get("/api/timeseries", params={"from": start, "to": end, "buckets": 24}).json()
    width = answer["bucket_ms"]
    assert width == bucket_width(end - start, 24) == 3_600_000
    by_bucket = group(seeded.traces, lambda t: t.start_ms // width * width)
    assert [b["start_ms"] for b in answer["buckets"]] == list(range(start // width * width, end, width))
    for bucket in answer["buckets"]:
        traces = by_bucket.get(bucket["start_ms"], [])
        assert bucket["count"] == len(traces)
        assert bucket["errors"] == sum(t.error for t in traces)
        if traces:
            want = expected_row(traces)
            assert (bucket["p50_ms"], bucket["p95_ms"]) == (pytest.approx(want["p50_ms"]), pytest.approx(want["p95_ms"]))
            assert bucket["input_tokens"] == want["input_tokens"]


def test_timeseries_without_a_range_spans_the_matching_traces(client, seeded):
    errors = [t for t in seeded.traces if t.error]
    answer = client.get("/api/timeseries", params={"filter": "status = 'ERROR'", "buckets": 10}).json()
    assert answer["from_ms"] == min(t.start_ms for t in errors)
    assert sum(b["count"] for b in answer["buckets"]) == len(errors) == sum(b["errors"] for b in answer["buckets"])
    assert len(answer["buckets"]) <= 11  # aligned to the width: at most one more than asked
    empty = client.get("/api/timeseries", params={"filter": "tags.task = 'none-such'"}).json()
    assert empty["buckets"] == []


# -- per-trace usage, sessions, fields ---------------------------------------------------------


def test_llm_usage_gives_model_tokens_and_cost_of_each_trace(client, seeded):
    ids = [t.trace_id for t in seeded.traces]
    usage = client.post("/api/llm_usage", json={"trace_ids": ids}).json()["usage"]
    for t in seeded.traces:
        if t.model is None:
            assert t.trace_id not in usage
            continue
        got = usage[t.trace_id]
        assert got["models"] == [t.model] and got["calls"] == 1
        assert (got["input_tokens"], got["output_tokens"]) == (t.input_tokens, t.output_tokens)
        assert got["cost_usd"] == pytest.approx(t.cost_usd)


def test_llm_usage_of_another_project_s_trace_is_empty(env, seeded):
    other_client = env[2]
    assert other_client.post("/api/llm_usage", json={"trace_ids": [seeded.traces[0].trace_id]}).json() == {"usage": {}}


def test_session_lists_its_traces_in_order_with_totals(client, seeded):
    traces = sorted((t for t in seeded.traces if t.session == "sess-1"), key=lambda t: t.start_ms)
    answer = client.get("/api/sessions/sess-1").json()
    assert [t["trace_id"] for t in answer["traces"]] == [t.trace_id for t in traces]
    want = expected_row(traces)
    for name, expected in want.items():
        assert answer["total"][name] == pytest.approx(expected), name
    assert answer["total"]["first_ms"] == traces[0].start_ms and answer["total"]["last_ms"] == traces[-1].start_ms
    assert set(answer["llm"]) == {t.trace_id for t in traces}
    page = client.get("/api/sessions/sess-1", params={"max_results": 2}).json()
    assert len(page["traces"]) == 2 and page["next_page_token"] and page["total"]["count"] == len(traces)
    assert client.get("/api/sessions/none-such").json()["traces"] == []


def test_fields_lists_the_keys_in_use_and_feedback_names(client, seeded):
    fields = client.get("/api/fields").json()
    tags = {f["key"]: f["count"] for f in fields["tags"]}
    assert tags["task"] == sum(t.task is not None for t in seeded.traces)
    assert tags["pii.detected"] == sum(t.pii is not None for t in seeded.traces)
    assert "app_version" in {f["key"] for f in fields["metadata"]}
    assert fields["feedback"] == [{"key": "is_correct", "count": len(seeded.feedback)}]
    assert "classification" in fields["group_by"]


# -- the same numbers from Python ----------------------------------------------------------------


def test_notebook_functions_through_the_collector_give_the_dashboard_numbers(env, client):
    remote = RemoteStore(env[0].base_url, api_key=env[4].key)
    try:
        pivot = td.pivot_traces("tags.task", "status = 'OK'", store=remote)
        assert pivot.to_dict() == client.get("/api/pivot", params={"group_by": "tags.task", "filter": "status = 'OK'"}).json()
        series = td.trace_timeseries(buckets=12, store=remote)
        assert series.to_dict() == client.get("/api/timeseries", params={"buckets": 12}).json()
        assert td.get_session("sess-2", store=remote).to_dict() == client.get("/api/sessions/sess-2").json()
        ids = [r["info"]["trace_id"] for r in client.get("/api/traces", params={"max_results": 5}).json()["traces"]]
        assert td.llm_usage(ids, store=remote) == client.post("/api/llm_usage", json={"trace_ids": ids}).json()["usage"]
        assert td.trace_fields(store=remote).to_dict() == client.get("/api/fields").json()
    finally:
        remote.client.close()


def test_bucket_widths_are_the_smallest_nice_width_that_fits():
    assert bucket_width(60 * 60_000, 60) == 60_000
    assert bucket_width(24 * 3_600_000, 60) == 30 * 60_000
    assert bucket_width(7 * 86_400_000, 60) == 3 * 3_600_000
    assert bucket_width(5, 60) == 1000
    assert bucket_width(3 * 365 * 86_400_000, 10) == 120 * 86_400_000
