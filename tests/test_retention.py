"""Retention: traces aged by writing their timestamps; a purge removes exactly the expired ones with
everything attached to them, counts what it would remove in a dry run, is an audit event, and the
collector runs it in the background.
"""

from __future__ import annotations

import json
import os
import secrets
import time

import pytest

import traceduck as td
from traceduck.raw_spans import RawSpans
from traceduck.store.duckdb_store import open_store

from _collector import Collector, otlp_request, post_otlp, simple_trace, traceduck_cli, wait_for
from conftest import query_file

DAY_NS = 24 * 3600 * 10**9
DAY_MS = 24 * 3600 * 1000


@pytest.fixture
def store(store_path):
    target = open_store(store_path)
    target.acquire_writer()
    yield target
    target.release_writer()


def write_traces(store, project: str, ages_days: list[float], *, root: bool = True,
                 payload: str | None = "q") -> list[str]:  # fmt: skip
    """Traces (a root and an LLM child each) that started ``ages_days`` ago, in one batch; their ids.
    ``payload`` is the root's input (None: 2,000 random characters each)."""
    raw = RawSpans(project)
    resource = raw.resource({"service.name": "retention-test"})
    ids = []
    for age in ages_days:
        trace_id, root_id = secrets.token_hex(16), secrets.token_hex(8)
        start = time.time_ns() - int(age * DAY_NS)
        raw.add(trace_id, secrets.token_hex(8), root_id, False, "llm", "CLIENT", start + 1_000, start + 2_000, "OK",
                None, {"traceduck.span_type": "LLM", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 3,
                       "gen_ai.response.id": f"chatcmpl-{trace_id}"}, None, resource, project=project)  # fmt: skip
        if root:
            raw.add(trace_id, root_id, None, False, "chat", "SERVER", start, start + 5_000, "OK", None,
                    {"traceduck.span_type": "CHAIN",
                     "traceduck.inputs": json.dumps(payload if payload is not None else secrets.token_hex(1000)),
                     "traceduck.trace": json.dumps({"client_request_id": f"req-{trace_id}"})}, None, resource,
                    project=project)  # fmt: skip
        ids.append(trace_id)
    store.write(raw)
    return ids


def write_trace(store, project: str, age_days: float, *, root: bool = True, payload: str = "q") -> str:
    return write_traces(store, project, [age_days], root=root, payload=payload)[0]


def counts(store, project: str) -> dict[str, int]:
    with store.connect() as con:
        return {table: con.execute(f"SELECT count(*) FROM {table} WHERE project = ?", [project]).fetchall()[0][0]
                for table in ("traces", "spans", "assessments", "llm_calls", "llm_responses")}  # fmt: skip


def trace_ids(store, project: str) -> set[str]:
    with store.connect() as con:
        rows = con.execute("SELECT replace(CAST(trace_id AS VARCHAR), '-', '') FROM traces WHERE project = ?",
                           [project]).fetchall()  # fmt: skip
    return {r[0] for r in rows}


def test_purge_removes_exactly_the_expired_traces_with_what_is_attached(store):
    td.set_project_settings("p", retention="30d", store=store)
    ages = {age: write_trace(store, "p", age) for age in (1, 29, 31, 100)}
    for trace_id in ages.values():
        td.log_feedback(trace_id=trace_id, name="is_correct", value=True, store=store.for_project("p"))
    report = td.purge(store=store)
    assert trace_ids(store, "p") == {ages[1], ages[29]}
    assert counts(store, "p") == {"traces": 2, "spans": 4, "assessments": 2, "llm_calls": 2, "llm_responses": 2}
    (purged,) = report.projects
    assert (purged.traces, purged.spans, purged.assessments, purged.llm_calls, purged.llm_responses) == (2, 4, 2, 2, 2)


def test_pending_feedback_and_orphan_spans_older_than_the_retention_go(store):
    td.set_project_settings("p", retention="90d", store=store)
    kept_orphan = write_trace(store, "p", 10, root=False)
    write_trace(store, "p", 120, root=False)  # a trace whose root never arrived, long ago
    old = td.log_feedback(client_request_id="never-came-old", name="x", value=1, store=store.for_project("p"))
    young = td.log_feedback(client_request_id="never-came-young", name="x", value=1, store=store.for_project("p"))
    with store.connect(write=True) as con:  # age the first by writing its timestamp
        con.execute("UPDATE assessments SET create_time = create_time - ? WHERE assessment_id = ?",
                    [100 * DAY_MS, old.assessment_id])  # fmt: skip
    (purged,) = td.purge(store=store).projects
    assert (purged.pending_assessments, purged.orphan_spans, purged.llm_calls) == (1, 1, 1)
    assert [a.assessment_id for a in td.list_pending_assessments(store=store)] == [young.assessment_id]
    with store.connect() as con:
        left = con.execute("SELECT replace(CAST(trace_id AS VARCHAR), '-', '') FROM spans").fetchall()
        responses = con.execute("SELECT count(*) FROM llm_responses").fetchall()[0][0]
    assert left == [(kept_orphan,)] and responses == 1


def test_a_dry_run_counts_what_would_go_and_deletes_nothing(store):
    td.set_project_settings("p", retention="30d", store=store)
    for age in (5, 45, 60):
        write_trace(store, "p", age)
    before = counts(store, "p")
    dry = td.purge(dry_run=True, store=store)
    assert counts(store, "p") == before
    real = td.purge(store=store)
    assert dry.dry_run and dry.traces == real.traces == 2
    assert dry.projects[0].spans == real.projects[0].spans == 4
    assert [e.action for e in td.audit_events(store=store)].count("purge") == 1  # the dry run is not one


def test_projects_without_retention_keep_everything(store):
    td.set_project_settings("short", retention="30d", store=store)
    td.set_project_settings("forever", retention=None, store=store)
    write_trace(store, "short", 400)
    keep = {write_trace(store, "forever", 400), write_trace(store, "unconfigured", 400)}
    td.purge(store=store)
    assert trace_ids(store, "short") == set()
    assert trace_ids(store, "forever") | trace_ids(store, "unconfigured") == keep


def test_a_size_cap_keeps_the_newest_traces_that_fit(store):
    newest = [write_trace(store, "capped", age, payload="x" * 10_000) for age in (4, 3, 2, 1)][-2:]
    td.set_project_settings("capped", max_size="25kB", store=store)
    report = td.purge(store=store)
    assert trace_ids(store, "capped") == set(newest)
    assert report.projects[0].size_before_bytes > 40_000 and report.projects[0].traces == 2


def test_each_purge_is_an_audit_event_with_its_counts(store):
    td.set_project_settings("p", retention="120d", store=store)
    write_trace(store, "p", 200)
    td.purge(store=store, actor="cli:ops")
    (event,) = td.audit_events(action="purge", store=store)
    assert (event.actor, event.project) == ("cli:ops", "p")
    assert event.after["traces"] == 1 and event.after["spans"] == 2 and event.after["retention_days"] == 120
    assert td.verify_audit(store=store).ok


def test_purge_cli_dry_run_then_compact_gives_the_space_back(store_path):
    store = open_store(store_path)
    store.acquire_writer()
    td.set_project_settings("p", retention="30d", store=store)
    write_traces(store, "p", [50] * 300, payload=None)
    store.release_writer()
    td.shutdown()
    dry = traceduck_cli("purge", "--store", store_path, "--dry-run").stdout
    assert "would delete 300 traces, 600 spans" in dry
    size_before = os.path.getsize(store_path)
    out = traceduck_cli("purge", "--store", store_path, "--compact").stdout
    assert "deleted 300 traces" in out and "compacted" in out
    assert os.path.getsize(store_path) < size_before / 2
    assert query_file(store_path, "SELECT count(*) FROM spans") == [(0,)]


def test_the_collector_purges_expired_traces_in_the_background(tmp_path):
    path = str(tmp_path / "job.duckdb")
    traceduck_cli("project", "set", "default", "--store", path, "--retention", "30d")
    with Collector(path, str(tmp_path / "collector.log"), "--purge-interval", "0.3") as server:
        client = server.client()
        old_id, old = simple_trace(1, start_ns=time.time_ns() - 40 * DAY_NS)
        new_id, new = simple_trace(1)
        assert post_otlp(client, otlp_request(old + new)).status_code == 200
        wait_for(lambda: client.get(f"/api/traces/{old_id}").status_code == 404, what="the background purge")
        assert client.get(f"/api/traces/{new_id}").status_code == 200
        events = client.get("/api/audit", params={"action": "purge"}).json()["events"]
        assert events and events[-1]["actor"] == "collector:retention" and events[-1]["after"]["traces"] == 1
