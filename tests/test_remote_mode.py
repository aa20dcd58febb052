"""Remote mode: ``configure("http://127.0.0.1:PORT", api_key=...)`` and the SDK's read and curation
functions working through a real collector, with the same errors as local mode."""

from __future__ import annotations

import math
import uuid

import pytest
from opentelemetry.sdk.trace import TracerProvider

import traceduck
from traceduck.remote import RemoteAuthError

from _collector import Collector, create_key
from _collector import marker as _marker

PROJECT = "remote-app"


@pytest.fixture(scope="module")
def collector_and_keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("remote")
    store = str(directory / "remote.duckdb")
    keys = {"rw": create_key(store, PROJECT, "read,write"), "read": create_key(store, PROJECT, "read")}
    server = Collector(store, str(directory / "collector.log"))
    yield server, keys
    server.stop()


@pytest.fixture(scope="module")
def url(collector_and_keys) -> str:
    return collector_and_keys[0].base_url


@pytest.fixture(scope="module")
def key(collector_and_keys) -> str:
    return collector_and_keys[1]["rw"].key


@pytest.fixture
def remote(url, key) -> str:
    """traceduck in remote mode on a fresh provider (the conftest fixture shuts it down after)."""
    settings = traceduck.configure(url, api_key=key, tracer_provider=TracerProvider(), flush_interval=0.05)
    assert settings.is_remote
    return url


@traceduck.trace(span_type="CHAIN")
def _handle(question: str, request_id: str, run: str, user: str = "alice") -> dict:
    traceduck.update_current_trace(client_request_id=request_id, user=user, tags={"run": run},
                                   metadata={"app_version": "2.0"})  # fmt: skip
    with traceduck.start_span("retrieve", span_type="RETRIEVER") as span:
        span.set_inputs({"q": question})
        span.set_outputs(["doc-1", "doc-2"])
    return {"answer": question.upper(), "trace_id": traceduck.get_current_trace_id()}


def _traced(run: str, count: int = 1) -> list[tuple[str, str]]:
    """``count`` traces tagged run=<run>, flushed to the collector: [(trace id, request id)]."""
    made = []
    for i in range(count):
        request_id = f"{run}-{i}"
        made.append((_handle(f"question {i}", request_id, run)["trace_id"], request_id))
    assert traceduck.flush(), "flush() did not finish"
    return made


# -- reads ---------------------------------------------------------------------------------------


def test_search_traces_returns_the_matching_traces_through_the_collector(remote):
    run = _marker()
    made = _traced(run, 3)
    found = traceduck.search_traces(f"tags.run = '{run}'", return_type="list")
    assert sorted(t.info.trace_id for t in found) == sorted(trace_id for trace_id, _ in made)
    assert all(sorted(s.name for s in t.data.spans) == ["_handle", "retrieve"] for t in found)
    assert all(t.info.project == PROJECT for t in found)


def test_search_traces_returns_a_dataframe_through_the_collector(remote):
    run = _marker()
    made = _traced(run, 2)
    frame = traceduck.search_traces(f"tags.run = '{run}'")
    assert sorted(frame["trace_id"]) == sorted(trace_id for trace_id, _ in made)
    assert set(frame["client_request_id"]) == {request_id for _, request_id in made}


def test_search_traces_page_walks_every_trace_once_through_the_collector(remote):
    run = _marker()
    made = _traced(run, 7)
    seen: list[str] = []
    page = traceduck.search_traces_page(f"tags.run = '{run}'", max_results=3)
    while True:
        assert len(page.traces) <= 3
        seen += [t.info.trace_id for t in page.traces]
        if page.next_page_token is None:
            break
        page = traceduck.search_traces_page(f"tags.run = '{run}'", max_results=3, page_token=page.next_page_token)
    assert sorted(seen) == sorted(trace_id for trace_id, _ in made)


def test_get_trace_by_id_through_the_collector(remote):
    [(trace_id, request_id)] = _traced(_marker())
    trace = traceduck.get_trace(trace_id)
    assert trace is not None
    assert trace.info.trace_id == trace_id and trace.info.client_request_id == request_id
    assert trace.info.tags["trace.user"] == "alice"
    assert trace.info.metadata["app_version"] == "2.0"
    retrieve = next(s for s in trace.data.spans if s.name == "retrieve")
    assert retrieve.span_type == "RETRIEVER" and retrieve.outputs == ["doc-1", "doc-2"]


def test_get_trace_by_client_request_id_through_the_collector(remote):
    [(trace_id, request_id)] = _traced(_marker())
    trace = traceduck.get_trace(client_request_id=request_id)
    assert trace is not None and trace.info.trace_id == trace_id


def test_get_trace_of_an_unknown_id_returns_none_through_the_collector(remote):
    assert traceduck.get_trace(uuid.uuid4().hex) is None
    assert traceduck.get_trace(client_request_id="nobody-" + _marker()) is None


def test_count_traces_through_the_collector(remote):
    run = _marker()
    _traced(run, 4)
    assert traceduck.count_traces(f"tags.run = '{run}'") == 4
    assert traceduck.count_traces(f"tags.run = '{run}' AND client_request_id = '{run}-2'") == 1


# -- assessments ---------------------------------------------------------------------------------


def test_log_feedback_on_an_arrived_trace_attaches_it(remote):
    [(trace_id, request_id)] = _traced(_marker())
    logged = traceduck.log_feedback(client_request_id=request_id, name="helpful", value=True,
                                    rationale="answered", source=traceduck.AssessmentSource("HUMAN", "u1"))  # fmt: skip
    assert logged.trace_id == trace_id
    [attached] = traceduck.get_trace(trace_id).info.assessments
    assert (attached.assessment_id, attached.value, attached.rationale) == (logged.assessment_id, True, "answered")
    assert attached.source == traceduck.AssessmentSource("HUMAN", "u1")


def test_log_feedback_before_the_trace_arrives_is_pending_then_joined(remote):
    run = _marker()
    early = traceduck.log_feedback(client_request_id=f"{run}-0", name="thumbs", value=1)
    assert early.trace_id is None
    assert early.assessment_id in {a.assessment_id for a in traceduck.list_pending_assessments()}
    [(trace_id, _)] = _traced(run)
    assert [a.assessment_id for a in traceduck.get_trace(trace_id).info.assessments] == [early.assessment_id]
    assert early.assessment_id not in {a.assessment_id for a in traceduck.list_pending_assessments()}
    assert traceduck.get_assessment(early.assessment_id).trace_id == trace_id


def test_log_expectation_through_the_collector(remote):
    [(trace_id, _)] = _traced(_marker())
    logged = traceduck.log_expectation(trace_id, name="expected", value={"answer": "QUESTION 0"})
    assert logged.kind == "expectation" and logged.source.source_type == "HUMAN"
    [attached] = traceduck.get_trace(trace_id).info.assessments
    assert attached.value == {"answer": "QUESTION 0"}


def test_override_feedback_marks_the_old_one_invalid_through_the_collector(remote):
    [(trace_id, _)] = _traced(_marker())
    old = traceduck.log_feedback(trace_id, name="correct", value=False)
    new = traceduck.override_feedback(old.assessment_id, True, rationale="re-checked")
    assert new.overrides == old.assessment_id and new.trace_id == trace_id
    states = {a.assessment_id: (a.valid, a.value) for a in traceduck.get_trace(trace_id).info.assessments}
    assert states == {old.assessment_id: (False, False), new.assessment_id: (True, True)}


def test_delete_assessment_of_an_override_restores_the_original_through_the_collector(remote):
    [(trace_id, _)] = _traced(_marker())
    old = traceduck.log_feedback(trace_id, name="correct", value=False)
    new = traceduck.override_feedback(old.assessment_id, True)
    traceduck.delete_assessment(new.assessment_id)
    [left] = traceduck.get_trace(trace_id).info.assessments
    assert (left.assessment_id, left.valid) == (old.assessment_id, True)
    with pytest.raises(traceduck.AssessmentNotFoundError):
        traceduck.get_assessment(new.assessment_id)


def test_update_assessment_through_the_collector(remote):
    [(trace_id, _)] = _traced(_marker())
    logged = traceduck.log_feedback(trace_id, name="score", value=3, metadata={"a": 1})
    updated = traceduck.update_assessment(logged.assessment_id, value=4, metadata={"b": 2})
    assert (updated.value, updated.metadata) == (4, {"a": 1, "b": 2})


def test_list_pending_assessments_through_the_collector(remote):
    waiting = traceduck.log_feedback(client_request_id="later-" + _marker(), name="x", value="y")
    pending = {a.assessment_id: a for a in traceduck.list_pending_assessments()}
    assert waiting.assessment_id in pending
    assert pending[waiting.assessment_id].trace_id is None


# -- curation ------------------------------------------------------------------------------------


def test_tag_traces_by_ids_through_the_collector(remote):
    made = _traced(_marker(), 3)
    ids = [trace_id for trace_id, _ in made]
    assert traceduck.tag_traces(ids[:2], add={"reviewed": "yes"}) == 2
    assert [traceduck.get_trace(t).info.tags.get("reviewed") for t in ids] == ["yes", "yes", None]


def test_tag_traces_by_filter_through_the_collector(remote):
    run = _marker()
    made = _traced(run, 3)
    changed = traceduck.tag_traces(filter_string=f"tags.run = '{run}' AND client_request_id != '{run}-1'",
                                   add={"batch": "b7"}, remove=["run"])  # fmt: skip
    assert changed == 2
    tags = [traceduck.get_trace(trace_id).info.tags for trace_id, _ in made]
    assert [t.get("batch") for t in tags] == ["b7", None, "b7"]
    assert ["run" in t for t in tags] == [False, True, False]


def test_set_add_and_remove_trace_tags_through_the_collector(remote):
    [(trace_id, _)] = _traced(_marker())
    traceduck.set_trace_tags(trace_id, {"a": "1", "b": None})
    traceduck.add_trace_tags(trace_id, {"c": "3"})
    traceduck.remove_trace_tags(trace_id, ["a"])
    assert traceduck.get_trace(trace_id).info.tags == {"b": None, "c": "3"}


def test_set_trace_metadata_replaces_metadata_and_keeps_tags_through_the_collector(remote):
    [(trace_id, _)] = _traced(_marker())
    tags_before = traceduck.get_trace(trace_id).info.tags
    traceduck.set_trace_metadata(trace_id, {"reviewer": "bob"})
    info = traceduck.get_trace(trace_id).info
    assert info.metadata == {"reviewer": "bob"}
    assert info.tags == tags_before


def test_editing_an_unknown_trace_raises_trace_not_found_through_the_collector(remote):
    unknown = uuid.uuid4().hex
    with pytest.raises(traceduck.TraceNotFoundError):
        traceduck.set_trace_metadata(unknown, {"a": "b"})
    with pytest.raises(traceduck.TraceNotFoundError):
        traceduck.add_trace_tags(unknown, {"a": "b"})


# -- the same errors as local mode ---------------------------------------------------------------


@pytest.fixture
def local_store(tmp_path) -> str:
    """A local store file with one trace, released again (traceduck unconfigured)."""
    path = str(tmp_path / "local.duckdb")
    traceduck.configure(path, tracer_provider=TracerProvider())
    _traced("local-" + _marker())
    traceduck.shutdown()
    return path


BAD_FILTERS = ["tags.x = ", "status = 'OK' AND", "foo.bar = 1", "timestamp_ms > 'abc'"]


@pytest.mark.parametrize("bad", BAD_FILTERS)
def test_invalid_filter_raises_the_same_error_and_position_as_local_mode(local_store, url, key, bad):
    calls = [
        lambda store: traceduck.search_traces(bad, return_type="list", store=store),
        lambda store: traceduck.count_traces(bad, store=store),
        lambda store: traceduck.tag_traces(filter_string=bad, add={"a": "b"}, store=store),
    ]
    traceduck.configure(url, api_key=key, tracer_provider=TracerProvider())
    for call in calls:
        with pytest.raises(traceduck.InvalidFilterError) as local:
            call(local_store)
        with pytest.raises(traceduck.InvalidFilterError) as remote:
            call(None)
        assert (remote.value.position, remote.value.message) == (local.value.position, local.value.message)


def test_invalid_page_token_raises_the_same_error_as_local_mode(local_store, url, key):
    with pytest.raises(traceduck.InvalidPageTokenError) as local:
        traceduck.search_traces_page(page_token="not-a-token", store=local_store)
    traceduck.configure(url, api_key=key, tracer_provider=TracerProvider())
    with pytest.raises(traceduck.InvalidPageTokenError) as remote:
        traceduck.search_traces_page(page_token="not-a-token")
    assert str(remote.value) == str(local.value)


MALFORMED_FEEDBACK = {
    "no_target": dict(name="x", value=1),
    "two_targets": dict(trace_id="a" * 32, client_request_id="r", name="x", value=1),
    "bad_trace_id": dict(trace_id="xyz", name="x", value=1),
    "no_value": dict(client_request_id="r", name="x"),
    "empty_name": dict(client_request_id="r", name=" ", value=1),
    "nan_value": dict(client_request_id="r", name="x", value=math.nan),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_FEEDBACK))
def test_malformed_log_feedback_raises_the_same_value_error_as_local_mode(local_store, url, key, case):
    kwargs = MALFORMED_FEEDBACK[case]
    with pytest.raises(ValueError) as local:
        traceduck.log_feedback(store=local_store, **kwargs)
    traceduck.configure(url, api_key=key, tracer_provider=TracerProvider())
    pending_before = {a.assessment_id for a in traceduck.list_pending_assessments()}
    with pytest.raises(ValueError) as remote:
        traceduck.log_feedback(**kwargs)
    assert str(remote.value) == str(local.value)
    assert {a.assessment_id for a in traceduck.list_pending_assessments()} == pending_before


def test_unknown_assessment_raises_assessment_not_found_like_local_mode(local_store, remote):
    with pytest.raises(traceduck.AssessmentNotFoundError):
        traceduck.get_assessment("a-" + uuid.uuid4().hex, store=local_store)
    with pytest.raises(traceduck.AssessmentNotFoundError):
        traceduck.get_assessment("a-" + uuid.uuid4().hex)
    with pytest.raises(traceduck.AssessmentNotFoundError):
        traceduck.delete_assessment("a-" + uuid.uuid4().hex)


# -- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["td_000000000000_" + "w" * 40, "garbage", None], ids=["unknown", "malformed", "none"])
def test_wrong_key_raises_remote_auth_error(url, wrong):
    traceduck.configure(url, api_key=wrong, tracer_provider=TracerProvider())
    with pytest.raises(RemoteAuthError) as raised:
        traceduck.search_traces(return_type="list")
    assert raised.value.status == 401
    with pytest.raises(RemoteAuthError):
        traceduck.get_trace(uuid.uuid4().hex)
    with pytest.raises(RemoteAuthError):
        traceduck.log_feedback(client_request_id="r", name="x", value=1)


def test_key_without_the_right_raises_remote_auth_error(url, collector_and_keys):
    traceduck.configure(url, api_key=collector_and_keys[1]["read"].key, tracer_provider=TracerProvider())
    assert isinstance(traceduck.count_traces(), int)
    with pytest.raises(RemoteAuthError) as raised:
        traceduck.log_feedback(client_request_id="r", name="x", value=1)
    assert raised.value.status == 403


# -- memory bound ----------------------------------------------------------------------------------


def test_remote_mode_bounds_memory_by_a_smaller_queue_and_one_export_request_in_hand(url, key, monkeypatch):
    """A span queued for a collector is a whole OTel span (~3 KB, bench/faults.py), not a compact
    row: the default bound is 20,000 spans there, and what is held while a down collector is
    retried is one export request (2,048 spans), not a whole local write batch."""
    from traceduck import config  # noqa: PLC0415

    monkeypatch.delenv("TRACEDUCK_MAX_QUEUE_SIZE", raising=False)
    settings = traceduck.configure(url, api_key=key, tracer_provider=TracerProvider())
    assert settings.max_queue_size == config.REMOTE_MAX_QUEUE_SIZE == 20_000
    processor = config._setup.span_processor
    assert processor.max_queue_size == 20_000 and processor.max_batch_size == processor.export_batch_size == 2048
    monkeypatch.setenv("TRACEDUCK_MAX_QUEUE_SIZE", "500")
    assert traceduck.configure(url, api_key=key, tracer_provider=TracerProvider()).max_queue_size == 500
    assert traceduck.configure(url, api_key=key, tracer_provider=TracerProvider(), max_queue_size=7).max_queue_size == 7
