"""The collector's governance endpoints on a real server: opt-in capture, project settings, the
audit log, purge and SFT export; admin rights only, each key confined to its own project.
"""

from __future__ import annotations

import json
import uuid

import pytest

import traceduck as td
from traceduck.remote import RemoteStore

from _collector import Collector, create_key, otlp_request, post_otlp, simple_trace, wait_for
from test_sft_export import validate_example

GOOD = "feedback.is_correct = 'true'"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A collector with keys of projects A and B (opted in), C and D (not opted in)."""
    directory = tmp_path_factory.mktemp("governance")
    store = str(directory / "gov.duckdb")
    keys = {
        "a_admin": create_key(store, "proj-a", "admin"),
        "a": create_key(store, "proj-a", "read,write"),
        "b_admin": create_key(store, "proj-b", "admin,read,write"),
        "c": create_key(store, "proj-c", "read,write", opt_in=False),
        "c_admin": create_key(store, "proj-c", "admin", opt_in=False),
        "d_admin": create_key(store, "proj-d", "admin", opt_in=False),
    }
    server = Collector(store, str(directory / "collector.log"))
    yield server, keys
    server.stop()


@pytest.fixture(scope="module")
def server(keyed):
    return keyed[0]


@pytest.fixture(scope="module")
def clients(keyed):
    server, keys = keyed
    return {name: server.client(key.key) for name, key in keys.items()}


def _send(client, **fields) -> str:
    trace_id, spans = simple_trace(1, **fields)
    response = post_otlp(client, otlp_request(spans))
    assert response.status_code == 200, response.text
    return trace_id


def _stored(client, trace_id: str) -> dict | None:
    response = client.get(f"/api/traces/{trace_id}")
    return response.json() if response.status_code == 200 else None


def test_a_project_that_has_not_opted_in_stores_nothing_until_it_does(clients):
    c = clients["c"]
    before = c.get("/api/stats").json()["uncaptured_spans"]
    dropped = _send(c, metadata={"note": "not kept"})
    assert c.get("/api/stats").json()["uncaptured_spans"] == before + 2
    assert _stored(c, dropped) is None and c.get("/api/trace_count").json()["count"] == 0
    settings = clients["c_admin"].put("/api/projects/proj-c/settings", json={"capture": {"prompt": True}})
    assert settings.status_code == 200, settings.text
    assert settings.json()["configured"] is True and settings.json()["capture"]["prompt"] is True
    kept = _send(c, metadata={"note": "custom metadata is still off"})
    trace = wait_for(lambda: _stored(c, kept), what="the opted-in trace")
    assert trace["info"]["request_preview"] == '{"q": "hello"}' and "note" not in trace["info"]["metadata"]
    assert _stored(c, dropped) is None, "opting in brought back data sent before"


def test_a_project_never_configured_shows_that_it_captures_nothing(clients):
    shown = clients["d_admin"].get("/api/projects/proj-d/settings").json()
    assert shown["configured"] is False and not any(shown["capture"].values())
    b = clients["b_admin"].get("/api/projects/proj-b/settings").json()
    assert b["configured"] is True and all(b["capture"].values())


def test_settings_need_the_admin_right_and_stay_within_the_key_project(clients):
    assert clients["a"].get("/api/projects/proj-a/settings").status_code == 403
    assert clients["a"].put("/api/projects/proj-a/settings", json={"pii": "off"}).status_code == 403
    assert clients["a_admin"].get("/api/projects/proj-b/settings").status_code == 403
    assert clients["a_admin"].put("/api/projects/proj-b/settings", json={"pii": "off"}).status_code == 403
    assert clients["a_admin"].get("/api/projects/proj-a/settings").status_code == 200


def test_invalid_settings_are_refused(clients):
    admin = clients["a_admin"]
    assert admin.put("/api/projects/proj-a/settings", json={"capture": {"passwords": True}}).status_code == 400
    assert admin.put("/api/projects/proj-a/settings", json={"retention_days": 45}).status_code == 422
    assert admin.put("/api/projects/proj-a/settings", json={"pii": "maybe"}).status_code == 422


def test_a_settings_change_is_audited_and_applies_to_ingest(clients, keyed):
    admin, writer = clients["a_admin"], clients["a"]
    changed = admin.put("/api/projects/proj-a/settings", json={"pii": "redact", "retention_days": 90})
    assert changed.status_code == 200 and changed.json()["pii"] == "redact" and changed.json()["retention_days"] == 90
    trace_id = _send(writer, metadata={"contact": "jane.doe@example.com"})
    trace = wait_for(lambda: _stored(writer, trace_id), what="the redacted trace")
    assert trace["info"]["metadata"]["contact"] == "[REDACTED:EMAIL]"
    assert trace["info"]["tags"]["pii.detected"] == "EMAIL"
    events = admin.get("/api/audit", params={"action": "pii_mode.changed"}).json()["events"]
    assert events[-1]["actor"] == f"key:{keyed[1]['a_admin'].key_id}" and events[-1]["after"] == {"pii": "redact"}
    admin.put("/api/projects/proj-a/settings", json={"pii": "off", "retention_days": None})
    assert admin.get("/api/projects/proj-a/settings").json()["retention_days"] is None


def test_the_audit_log_is_admin_only_paged_and_scoped_to_the_project(clients):
    assert clients["a"].get("/api/audit").status_code == 403
    assert clients["a"].get("/api/audit/verify").status_code == 403
    a_events = clients["a_admin"].get("/api/audit", params={"limit": 1000}).json()["events"]
    assert a_events and {e["project"] for e in a_events} == {"proj-a"}
    first = clients["a_admin"].get("/api/audit", params={"limit": 1}).json()
    assert len(first["events"]) == 1 and first["next_after_seq"] == first["events"][0]["seq"]
    following = clients["a_admin"].get("/api/audit", params={"limit": 1, "after_seq": first["next_after_seq"]})
    assert following.json()["events"][0]["seq"] > first["events"][0]["seq"]
    assert all(e["project"] == "proj-b" for e in clients["b_admin"].get("/api/audit").json()["events"])
    verified = clients["a_admin"].get("/api/audit/verify").json()
    assert verified["ok"] is True and verified["problems"] == []


def test_trace_edits_and_assessment_deletes_through_the_api_are_audited(clients, keyed):
    writer, admin = clients["a"], clients["a_admin"]
    trace_id = _send(writer, tags={"stage": "draft"}, metadata={"v": "1"})
    wait_for(lambda: _stored(writer, trace_id), what="the trace")
    assert writer.patch(f"/api/traces/{trace_id}", json={"metadata": {"v": "2"}, "add_tags": {"stage": "final"}}
                        ).status_code == 200  # fmt: skip
    assert writer.post("/api/traces/tags", json={"trace_ids": [trace_id], "add_tags": {"bulk": "yes"}}).status_code == 200
    assessment = writer.post("/api/feedback", json={"trace_id": trace_id, "name": "ok", "value": True}).json()
    assert writer.delete(f"/api/assessments/{assessment['assessment_id']}").status_code == 200
    events = [e for e in admin.get("/api/audit", params={"limit": 1000}).json()["events"] if e["target"] in
              (trace_id, assessment["assessment_id"], "trace_ids")]  # fmt: skip
    actor = f"key:{keyed[1]['a'].key_id}"
    assert [(e["action"], e["actor"]) for e in events][-4:] == [
        ("trace.metadata_edited", actor), ("trace.tags_edited", actor), ("trace.tags_edited", actor),
        ("assessment.deleted", actor)]  # fmt: skip
    metadata, tags, bulk, deleted = events[-4:]
    assert (metadata["before"]["v"], metadata["after"]["v"]) == ("1", "2")
    assert (tags["before"]["stage"], tags["after"]["stage"]) == ("draft", "final")
    assert bulk["after"]["updated"] == 1 and deleted["before"]["assessment_id"] == assessment["assessment_id"]


def test_key_creation_and_revocation_through_the_api_are_audited(clients, keyed):
    admin = clients["a_admin"]
    made = admin.post("/api/keys", json={"project": "proj-a", "rights": ["read"]}).json()
    assert admin.delete(f"/api/keys/{made['key_id']}").status_code == 200
    events = [e for e in admin.get("/api/audit", params={"limit": 1000}).json()["events"] if e["target"] == made["key_id"]]
    assert [e["action"] for e in events] == ["api_key.created", "api_key.revoked"]
    assert events[0]["actor"] == f"key:{keyed[1]['a_admin'].key_id}" and made["key"] not in json.dumps(events)


def test_purge_is_admin_only_and_purges_only_the_key_project(clients):
    assert clients["a"].post("/api/purge", json={"dry_run": True}).status_code == 403
    clients["b_admin"].put("/api/projects/proj-b/settings", json={"retention_days": 30})
    report = clients["b_admin"].post("/api/purge", json={"dry_run": True}).json()
    assert report["dry_run"] is True and [p["project"] for p in report["projects"]] == ["proj-b"]
    done = clients["b_admin"].post("/api/purge").json()
    assert done["dry_run"] is False and done["traces"] == 0


def _log_chat(client, project: str, answer: str, good: bool) -> str:
    body = {"application": project,
            "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"question for {answer}"}]},
            "response": {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": 1,
                         "model": "gpt-4o", "choices": [{"index": 0, "finish_reason": "stop",
                                                         "message": {"role": "assistant", "content": answer}}]},
            "feedback": {"is_correct": good}}  # fmt: skip
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["trace_id"]


def test_export_answers_jsonl_with_the_manifest_for_the_key_project_only(clients):
    for answer, good in (("alpha", True), ("beta", True), ("gamma", False)):
        _log_chat(clients["a"], "proj-a", answer, good)
    _log_chat(clients["b_admin"], "proj-b", "other project", True)
    assert clients["a"].post("/api/export/sft", json={"filter": GOOD}).status_code == 403
    response = clients["a_admin"].post("/api/export/sft", json={"filter": GOOD})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    examples = [json.loads(line) for line in response.text.splitlines()]
    for example in examples:
        validate_example(example)
    assert sorted(e["messages"][-1]["content"] for e in examples) == ["alpha", "beta"]
    manifest = json.loads(response.headers["x-traceduck-manifest"])
    assert manifest["counts"]["exported"] == 2 and manifest["project"] == "proj-a"
    split = clients["a_admin"].post("/api/export/sft", json={"filter": GOOD, "split": 0.5, "format": "json"}).json()
    assert len(split["train"]) == len(split["validation"]) == 1
    events = clients["a_admin"].get("/api/audit", params={"action": "export.sft"}).json()["events"]
    assert len(events) == 2 and events[0]["after"]["counts"]["exported"] == 2


def test_the_sdk_functions_work_against_the_collector(server, keyed):
    remote = RemoteStore(server.base_url, api_key=keyed[1]["b_admin"].key)
    settings = td.set_project_settings("proj-b", capture="prompt,response", pii="detect", retention="120d",
                                       store=remote)  # fmt: skip
    assert settings.capture.facets == {"prompt", "response"} and settings.retention_days == 120
    assert td.get_project_settings("proj-b", store=remote) == settings
    assert {e.project for e in td.audit_events(store=remote)} == {"proj-b"}
    assert td.verify_audit(store=remote).ok
    assert td.purge(dry_run=True, store=remote).projects[0].retention_days == 120
    exported = td.export_sft(GOOD, store=remote)
    assert [e["messages"][-1]["content"] for e in exported.train] == ["other project"]
