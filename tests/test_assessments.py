"""Feedback and expectations: logging, validation, pending joins, updates, overrides and search.

Everything runs on the real OTel SDK and a real DuckDB file in ``tmp_path``.
"""

from __future__ import annotations

import json
import math
import time

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import traceduck
from traceduck import AssessmentError, AssessmentNotFoundError, AssessmentSource, processor
from traceduck.raw_spans import RawSpans
from traceduck.store.duckdb_store import DuckDBStore

from conftest import query_file, run_python, stored_trace

TARGET_OPTIONS = "trace_id, client_request_id or response_id"


# -- helpers -----------------------------------------------------------------------------------


def make_trace(client_request_id: str | None = None, response_id: str | None = None,
               name: str = "chat") -> str:
    """Record one trace (a root and an LLM child span); returns its trace id."""
    with traceduck.start_span(name, span_type="CHAIN") as root:
        if client_request_id is not None:
            traceduck.update_current_trace(client_request_id=client_request_id)
        with traceduck.start_span("llm", span_type="LLM") as llm:
            if response_id is not None:
                llm.set_attribute("gen_ai.response.id", response_id)
    return root.trace_id


def stored(trace_id: str) -> str:
    """Record-and-flush barrier: the trace is in the store."""
    stored_trace(trace_id)
    return trace_id


def assessment_ids(trace_id: str) -> list[str]:
    trace = traceduck.get_trace(trace_id)
    assert trace is not None
    return [a.assessment_id for a in trace.info.assessments]


def matching_ids(filter_string: str) -> set[str]:
    assert traceduck.flush()
    return {t.info.trace_id for t in traceduck.search_traces(filter_string, return_type="list")}


def count_assessment_rows(path: str) -> int:
    return query_file(path, "SELECT count(*) FROM assessments")[0][0]


@pytest.fixture
def queued(store_path) -> str:
    """traceduck configured so that finished spans stay queued until ``traceduck.flush()``."""
    traceduck.configure(store_path, tracer_provider=TracerProvider(), flush_interval=3600)
    return store_path


# -- logging: addressing, values, sources, errors --------------------------------------------


def test_feedback_by_trace_id_is_on_the_trace(configured):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="helpful", value=True)
    assert fb.trace_id == trace_id
    assert fb.kind == "feedback"
    assert fb.target_kind == "trace_id"
    assert assessment_ids(trace_id) == [fb.assessment_id]


def test_feedback_by_trace_id_accepts_uppercase_and_dashes(configured):
    trace_id = stored(make_trace())
    dashed = "-".join([trace_id[:8], trace_id[8:12], trace_id[12:16], trace_id[16:20], trace_id[20:]]).upper()
    fb = traceduck.log_feedback(dashed, name="helpful", value=True)
    assert fb.trace_id == trace_id
    assert assessment_ids(trace_id) == [fb.assessment_id]


def test_feedback_by_client_request_id_is_on_the_trace(configured):
    trace_id = stored(make_trace(client_request_id="req-42"))
    fb = traceduck.log_feedback(client_request_id="req-42", name="helpful", value=True)
    assert fb.trace_id == trace_id
    assert (fb.target_kind, fb.target) == ("client_request_id", "req-42")
    assert assessment_ids(trace_id) == [fb.assessment_id]


def test_feedback_by_response_id_is_on_the_trace(configured):
    trace_id = stored(make_trace(response_id="chatcmpl-123"))
    fb = traceduck.log_feedback(response_id="chatcmpl-123", name="helpful", value=True)
    assert fb.trace_id == trace_id
    assert (fb.target_kind, fb.target) == ("response_id", "chatcmpl-123")
    assert assessment_ids(trace_id) == [fb.assessment_id]
    assert traceduck.get_trace(response_id="chatcmpl-123").info.trace_id == trace_id


def test_expectation_by_client_request_id_is_on_the_trace(configured):
    trace_id = stored(make_trace(client_request_id="req-exp"))
    exp = traceduck.log_expectation(client_request_id="req-exp", name="expected", value="Paris")
    assert exp.kind == "expectation"
    assert exp.trace_id == trace_id
    (shown,) = traceduck.get_trace(trace_id).info.assessments
    assert (shown.kind, shown.name, shown.value) == ("expectation", "expected", "Paris")


def test_assessments_are_in_the_dataframe_assessments_column(configured):
    trace_id = stored(make_trace())
    traceduck.log_feedback(trace_id, name="score", value=0.75, rationale="mostly right")
    traceduck.log_expectation(trace_id, name="expected", value={"answer": 42})
    df = traceduck.search_traces()
    row = df[df["trace_id"] == trace_id]
    assert len(row) == 1
    column = {a["kind"]: a for a in row.iloc[0]["assessments"]}
    assert set(column) == {"feedback", "expectation"}
    assert (column["feedback"]["name"], column["feedback"]["value"]) == ("score", 0.75)
    assert column["feedback"]["rationale"] == "mostly right"
    assert column["feedback"]["source"] == {"source_type": "CODE", "source_id": None}
    assert (column["expectation"]["name"], column["expectation"]["value"]) == ("expected", {"answer": 42})
    assert column["expectation"]["source"] == {"source_type": "HUMAN", "source_id": None}


ROUND_TRIP_VALUES = {
    "true": True,
    "false": False,
    "zero": 0,
    "int": 42,
    "negative_int": -7,
    "big_int": 2**62 + 1,
    "float": 0.1,
    "tiny_float": 1e-300,
    "negative_float": -2.5,
    "empty_str": "",
    "unicode_str": "héllo ✓ \"quoted\"\nnew line",
    "list": [1, "two", 3.5, None, [True, False]],
    "empty_list": [],
    "dict": {"a": {"b": [1, 2.5, "x"]}, "c": None, "d": False},
    "empty_dict": {},
}


@pytest.mark.parametrize("value", list(ROUND_TRIP_VALUES.values()), ids=list(ROUND_TRIP_VALUES))
def test_feedback_value_round_trips_exactly(configured, value):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="v", value=value)
    for read in (traceduck.get_assessment(fb.assessment_id).value,
                 traceduck.get_trace(trace_id).info.assessments[0].value):  # fmt: skip
        assert read == value
        assert json.dumps(read) == json.dumps(value)  # same types all the way down (False is not 0)


@pytest.mark.parametrize("value", [True, 3, 2.5, "text", ["a", 1], {"k": [1, {"n": None}]}],
                         ids=["bool", "int", "float", "str", "list", "dict"])
def test_expectation_value_round_trips_exactly(configured, value):
    trace_id = stored(make_trace())
    exp = traceduck.log_expectation(trace_id, name="expected", value=value)
    read = traceduck.get_assessment(exp.assessment_id).value
    assert json.dumps(read) == json.dumps(value)


def test_tuple_value_is_stored_as_a_list(configured):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="v", value=(1, "a"))
    assert traceduck.get_assessment(fb.assessment_id).value == [1, "a"]


def test_feedback_source_defaults_to_code(configured):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="v", value=1)
    assert traceduck.get_assessment(fb.assessment_id).source == AssessmentSource("CODE", None)


def test_expectation_source_defaults_to_human(configured):
    trace_id = stored(make_trace())
    exp = traceduck.log_expectation(trace_id, name="expected", value="x")
    assert traceduck.get_assessment(exp.assessment_id).source == AssessmentSource("HUMAN", None)


@pytest.mark.parametrize("given,stored_as", [("human", "HUMAN"), ("Llm_Judge", "LLM_JUDGE"), ("code", "CODE")])
def test_source_type_is_case_insensitive(configured, given, stored_as):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="v", value=1, source=AssessmentSource(given, "judge-7"))
    read = traceduck.get_assessment(fb.assessment_id).source
    assert (read.source_type, read.source_id) == (stored_as, "judge-7")


def test_source_given_as_a_string_is_accepted(configured):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="v", value=1, source="llm_judge")
    assert traceduck.get_assessment(fb.assessment_id).source.source_type == "LLM_JUDGE"


def test_invalid_source_type_is_rejected():
    with pytest.raises(ValueError, match="HUMAN, LLM_JUDGE, CODE"):
        AssessmentSource("ROBOT")


@pytest.mark.parametrize(
    "error,message,code",
    [
        (AssessmentError("judge timed out", "TIMEOUT"), "judge timed out", "TIMEOUT"),
        (TimeoutError("model did not answer"), "model did not answer", "TimeoutError"),
        ("rate limited", "rate limited", None),
    ],
    ids=["AssessmentError", "exception", "str"],
)
def test_error_records_a_failed_judge_without_a_value(configured, error, message, code):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="judge", error=error, source=AssessmentSource("LLM_JUDGE", "gpt"))
    read = traceduck.get_assessment(fb.assessment_id)
    assert read.value is None
    assert read.error == AssessmentError(message, code)
    (shown,) = traceduck.get_trace(trace_id).info.assessments
    assert shown.error == AssessmentError(message, code)


def test_rationale_metadata_and_span_id_are_stored(configured):
    with traceduck.start_span("chat") as root:
        with traceduck.start_span("llm") as llm:
            pass
    trace_id = stored(root.trace_id)
    fb = traceduck.log_feedback(
        trace_id, name="helpful", value=False, rationale="wrong city",
        metadata={"reviewer_team": "qa", "attempt": 2, "tags": ["geo"]}, span_id=llm.span_id,
    )  # fmt: skip
    (read,) = traceduck.get_trace(trace_id).info.assessments
    assert read.assessment_id == fb.assessment_id
    assert read.rationale == "wrong city"
    assert read.metadata == {"reviewer_team": "qa", "attempt": 2, "tags": ["geo"]}
    assert read.span_id == llm.span_id
    assert read.valid is True and read.overrides is None


# -- malformed calls: a clear error and nothing stored -----------------------------------------

TID = "0af7651916cd43dd8448eb211c80319c"

MALFORMED = {
    "no_target": (lambda: traceduck.log_feedback(name="v", value=1), ValueError, TARGET_OPTIONS),
    "trace_and_client_request_id": (
        lambda: traceduck.log_feedback(TID, client_request_id="r", name="v", value=1), ValueError, TARGET_OPTIONS),
    "client_request_and_response_id": (
        lambda: traceduck.log_feedback(client_request_id="r", response_id="c", name="v", value=1),
        ValueError, TARGET_OPTIONS),
    "all_three_targets": (
        lambda: traceduck.log_feedback(TID, client_request_id="r", response_id="c", name="v", value=1),
        ValueError, TARGET_OPTIONS),
    "expectation_no_target": (lambda: traceduck.log_expectation(name="v", value=1), ValueError, TARGET_OPTIONS),
    "expectation_two_targets": (
        lambda: traceduck.log_expectation(TID, response_id="c", name="v", value=1), ValueError, TARGET_OPTIONS),
    "trace_id_not_hex": (lambda: traceduck.log_feedback("z" * 32, name="v", value=1), ValueError, "trace_id"),
    "trace_id_too_short": (lambda: traceduck.log_feedback("abc123", name="v", value=1), ValueError, "trace_id"),
    "trace_id_empty": (lambda: traceduck.log_feedback("", name="v", value=1), ValueError, "trace_id"),
    "client_request_id_empty": (
        lambda: traceduck.log_feedback(client_request_id="  ", name="v", value=1), ValueError, "client_request_id"),
    "empty_name": (lambda: traceduck.log_feedback(TID, name="", value=1), ValueError, "name"),
    "blank_name": (lambda: traceduck.log_feedback(TID, name="   ", value=1), ValueError, "name"),
    "expectation_empty_name": (lambda: traceduck.log_expectation(TID, name="", value=1), ValueError, "name"),
    "object_value": (lambda: traceduck.log_feedback(TID, name="v", value=object()), TypeError, "value"),
    "set_value": (lambda: traceduck.log_feedback(TID, name="v", value={1, 2}), TypeError, "value"),
    "set_inside_list": (lambda: traceduck.log_feedback(TID, name="v", value=[1, {2}]), TypeError, r"value\[1\]"),
    "non_str_dict_key": (lambda: traceduck.log_feedback(TID, name="v", value={1: "a"}), TypeError, "keys"),
    "expectation_set_value": (lambda: traceduck.log_expectation(TID, name="v", value={1}), TypeError, "value"),
    "nan_value": (lambda: traceduck.log_feedback(TID, name="v", value=math.nan), ValueError, "finite"),
    "inf_value": (lambda: traceduck.log_feedback(TID, name="v", value=math.inf), ValueError, "finite"),
    "nan_inside_dict": (lambda: traceduck.log_feedback(TID, name="v", value={"s": math.nan}), ValueError, "finite"),
    "neither_value_nor_error": (lambda: traceduck.log_feedback(TID, name="v"), ValueError, "value or an error"),
    "expectation_value_none": (lambda: traceduck.log_expectation(TID, name="v", value=None), ValueError, "value"),
    "invalid_source_type": (lambda: traceduck.log_feedback(TID, name="v", value=1, source="robot"), ValueError,
                            "source_type"),
    "non_str_rationale": (lambda: traceduck.log_feedback(TID, name="v", value=1, rationale=5), TypeError, "rationale"),
    "metadata_not_a_dict": (lambda: traceduck.log_feedback(TID, name="v", value=1, metadata=["a"]), TypeError,
                            "metadata"),
    "metadata_unsupported_value": (
        lambda: traceduck.log_feedback(TID, name="v", value=1, metadata={"k": object()}), TypeError, "metadata"),
    "error_of_unsupported_type": (lambda: traceduck.log_feedback(TID, name="v", error=42), TypeError, "error"),
}


@pytest.mark.parametrize("call,exc_type,message", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_call_raises_a_clear_error_and_stores_nothing(configured, call, exc_type, message):
    with pytest.raises(exc_type, match=message):
        call()
    assert count_assessment_rows(configured) == 0


def test_log_expectation_without_a_value_is_an_error_and_stores_nothing(configured):
    trace_id = stored(make_trace())
    with pytest.raises(TypeError, match="value"):
        traceduck.log_expectation(trace_id, name="expected")  # type: ignore[call-arg]
    assert count_assessment_rows(configured) == 0


# -- pending assessments: logged before the trace is stored ------------------------------------


@pytest.mark.parametrize("addressing", ["trace_id", "client_request_id", "response_id"])
def test_feedback_for_a_queued_trace_is_pending_then_joined_on_flush(queued, addressing):
    trace_id = make_trace(client_request_id="req-queued", response_id="chatcmpl-queued")
    target = {"trace_id": trace_id, "client_request_id": "req-queued", "response_id": "chatcmpl-queued"}[addressing]
    fb = traceduck.log_feedback(**{addressing: target}, name="helpful", value=True)
    assert traceduck.get_trace(trace_id) is None, "the trace was meant to be still queued"
    assert [a.assessment_id for a in traceduck.list_pending_assessments()] == [fb.assessment_id]

    assert traceduck.flush()
    assert traceduck.list_pending_assessments() == []
    assert traceduck.get_assessment(fb.assessment_id).trace_id == trace_id
    assert assessment_ids(trace_id) == [fb.assessment_id]


@pytest.mark.parametrize("addressing,target", [("client_request_id", "req-later"),
                                               ("response_id", "chatcmpl-later")])
def test_feedback_for_a_trace_not_yet_recorded_is_pending_then_joined(configured, addressing, target):
    fb = traceduck.log_feedback(**{addressing: target}, name="helpful", value=True)
    assert fb.trace_id is None
    assert [a.assessment_id for a in traceduck.list_pending_assessments()] == [fb.assessment_id]

    trace_id = stored(make_trace(client_request_id="req-later", response_id="chatcmpl-later"))
    assert traceduck.list_pending_assessments() == []
    assert traceduck.get_assessment(fb.assessment_id).trace_id == trace_id
    assert assessment_ids(trace_id) == [fb.assessment_id]


def test_expectation_for_a_trace_not_yet_recorded_is_joined(configured):
    exp = traceduck.log_expectation(client_request_id="req-exp-later", name="expected", value="x")
    trace_id = stored(make_trace(client_request_id="req-exp-later"))
    assert traceduck.get_assessment(exp.assessment_id).trace_id == trace_id
    assert traceduck.list_pending_assessments() == []


def test_pending_feedback_does_not_join_an_unrelated_trace(configured):
    fb = traceduck.log_feedback(client_request_id="req-wanted", name="helpful", value=True)
    other = stored(make_trace(client_request_id="req-other"))
    assert traceduck.get_trace(other).info.assessments == []
    assert [a.assessment_id for a in traceduck.list_pending_assessments()] == [fb.assessment_id]


def test_feedback_logged_after_flush_joins_immediately(configured):
    trace_id = stored(make_trace(client_request_id="req-now"))
    fb = traceduck.log_feedback(client_request_id="req-now", name="helpful", value=True)
    assert fb.trace_id == trace_id
    assert traceduck.list_pending_assessments() == []


def _raw_trace(trace_id: str, client_request_id: str, response_id: str) -> RawSpans:
    """A root (carrying the client request id) and an LLM child (carrying the response id)."""
    raw = RawSpans()
    resource = raw.resource({"service.name": "dup-test"})
    start = 1_700_000_000_000_000_000
    root_attrs = {"traceduck.trace": json.dumps({"client_request_id": client_request_id})}
    raw.add(trace_id, "1" * 16, None, False, "root", "INTERNAL", start, start + 2_000_000, "OK", None,
            root_attrs, None, resource)  # fmt: skip
    raw.add(trace_id, "2" * 16, "1" * 16, False, "llm", "CLIENT", start + 100, start + 1_000_000, "OK", None,
            {"gen_ai.response.id": response_id}, None, resource)  # fmt: skip
    return raw


def test_pending_feedback_is_joined_once_when_the_same_spans_are_written_twice(tmp_path):
    store = DuckDBStore(str(tmp_path / "dup.duckdb"))
    store.dedupe_spans = True
    try:
        trace_id = "ab" * 16
        by_request = traceduck.log_feedback(client_request_id="req-dup", name="helpful", value=True, store=store)
        by_response = traceduck.log_feedback(response_id="chatcmpl-dup", name="score", value=1, store=store)
        store.write(_raw_trace(trace_id, "req-dup", "chatcmpl-dup"))
        store.write(_raw_trace(trace_id, "req-dup", "chatcmpl-dup"))  # redelivered by an exporter

        traces = traceduck.search_traces(return_type="list", store=store)
        assert [t.info.trace_id for t in traces] == [trace_id]
        assert len(traces[0].data.spans) == 2
        assert sorted(a.assessment_id for a in traces[0].info.assessments) == sorted(
            [by_request.assessment_id, by_response.assessment_id]
        )
        assert traceduck.list_pending_assessments(store=store) == []
    finally:
        store.release_writer()


def test_pending_feedback_is_joined_once_when_a_trace_has_two_local_roots(queued, monkeypatch):
    # A batch the store refuses is retried for RETRY_BUDGET_SECONDS; keep a failure quick.
    monkeypatch.setattr(processor, "RETRY_BUDGET_SECONDS", 1.0)
    remote_parent = NonRecordingSpan(
        SpanContext(int("cd" * 16, 16), 0x1234, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    fb = traceduck.log_feedback(client_request_id="req-two-roots", name="helpful", value=True)

    def local_root(name: str) -> None:
        token = otel_context.attach(otel_trace.set_span_in_context(remote_parent))
        try:
            with traceduck.start_span(name):
                traceduck.update_current_trace(client_request_id="req-two-roots")
        finally:
            otel_context.detach(token)

    local_root("first-handler")
    assert traceduck.flush()
    local_root("second-handler")
    assert traceduck.flush()

    traces = traceduck.search_traces(return_type="list")
    assert [t.info.trace_id for t in traces] == ["cd" * 16]
    assert sorted(s.name for s in traces[0].data.spans) == ["first-handler", "second-handler"]
    assert [a.assessment_id for a in traces[0].info.assessments] == [fb.assessment_id]
    assert traceduck.list_pending_assessments() == []


def test_pending_feedback_joins_when_a_later_local_root_sets_the_client_request_id(queued, monkeypatch):
    monkeypatch.setattr(processor, "RETRY_BUDGET_SECONDS", 1.0)
    remote_parent = NonRecordingSpan(
        SpanContext(int("ef" * 16, 16), 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )

    def local_root(name: str, client_request_id: str | None) -> None:
        token = otel_context.attach(otel_trace.set_span_in_context(remote_parent))
        try:
            with traceduck.start_span(name):
                if client_request_id is not None:
                    traceduck.update_current_trace(client_request_id=client_request_id)
        finally:
            otel_context.detach(token)

    local_root("gateway", None)  # the trace row is stored without a client request id
    assert traceduck.flush()
    fb = traceduck.log_feedback(client_request_id="req-set-later", name="helpful", value=True)
    local_root("handler", "req-set-later")  # merged into the stored row, bringing the id
    assert traceduck.flush()

    trace = traceduck.get_trace(client_request_id="req-set-later")
    assert trace is not None and trace.info.trace_id == "ef" * 16
    assert [a.assessment_id for a in trace.info.assessments] == [fb.assessment_id]
    assert traceduck.list_pending_assessments() == []


def test_pending_feedback_survives_a_process_restart(store_path):
    logged = run_python(
        f"""
        import traceduck
        fb = traceduck.log_feedback(client_request_id="req-restart", name="response_is_correct",
                                    value=True, store={store_path!r})
        print(fb.assessment_id)
        """
    )
    assessment_id = logged.stdout.strip().splitlines()[-1]
    pending = traceduck.list_pending_assessments(store=store_path)
    assert [a.assessment_id for a in pending] == [assessment_id]

    run_python(
        f"""
        import traceduck
        traceduck.configure({store_path!r})
        with traceduck.start_span("chat"):
            traceduck.update_current_trace(client_request_id="req-restart")
        """
    )
    trace = traceduck.get_trace(client_request_id="req-restart", store=store_path)
    assert trace is not None
    assert [a.assessment_id for a in trace.info.assessments] == [assessment_id]
    assert traceduck.get_assessment(assessment_id, store=store_path).trace_id == trace.info.trace_id
    assert traceduck.list_pending_assessments(store=store_path) == []


# -- get / update / override / delete ----------------------------------------------------------


def test_get_assessment_returns_what_was_logged(configured):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="helpful", value=True, rationale="r")
    assert traceduck.get_assessment(fb.assessment_id) == fb


def test_get_assessment_of_an_unknown_id_raises_not_found(configured):
    with pytest.raises(AssessmentNotFoundError, match="a-missing"):
        traceduck.get_assessment("a-missing")


@pytest.mark.parametrize("operation", [
    lambda: traceduck.update_assessment("a-missing", value=1),
    lambda: traceduck.override_feedback("a-missing", value=1),
    lambda: traceduck.delete_assessment("a-missing"),
], ids=["update", "override", "delete"])  # fmt: skip
def test_changing_an_unknown_assessment_raises_not_found(configured, operation):
    with pytest.raises(AssessmentNotFoundError):
        operation()


def test_update_assessment_changes_it_in_place(configured):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="score", value=0.9, rationale="first look",
                                metadata={"reviewer": "ann", "round": 1})  # fmt: skip
    updated = traceduck.update_assessment(fb.assessment_id, value=0.4, rationale="second look",
                                          metadata={"round": 2, "note": "re-checked"})  # fmt: skip
    assert updated.assessment_id == fb.assessment_id
    assert updated.value == 0.4
    assert updated.rationale == "second look"
    assert updated.metadata == {"reviewer": "ann", "round": 2, "note": "re-checked"}
    assert updated.create_time_ms == fb.create_time_ms
    (shown,) = traceduck.get_trace(trace_id).info.assessments
    assert (shown.assessment_id, shown.value, shown.rationale) == (fb.assessment_id, 0.4, "second look")


def test_update_assessment_moves_last_update_time_forward(configured):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="score", value=0.9)
    time.sleep(0.005)  # so that a later clock reading is a different millisecond
    before_update = int(time.time() * 1000)
    updated = traceduck.update_assessment(fb.assessment_id, rationale="changed")
    assert updated.last_update_time_ms > fb.last_update_time_ms
    assert updated.last_update_time_ms >= before_update


def test_update_assessment_value_is_what_search_sees(configured):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="score", value=0.9)
    assert matching_ids("feedback.score > 0.5") == {trace_id}
    traceduck.update_assessment(fb.assessment_id, value=0.1)
    assert matching_ids("feedback.score > 0.5") == set()


def test_update_assessment_cannot_remove_both_value_and_error(configured):
    trace_id = stored(make_trace())
    fb = traceduck.log_feedback(trace_id, name="score", value=0.9)
    with pytest.raises(ValueError, match="value or an error"):
        traceduck.update_assessment(fb.assessment_id, value=None)
    assert traceduck.get_assessment(fb.assessment_id).value == 0.9


def test_override_feedback_adds_a_new_assessment_and_invalidates_the_old(configured):
    trace_id = stored(make_trace())
    old = traceduck.log_feedback(trace_id, name="response_is_correct", value=False,
                                 source=AssessmentSource("LLM_JUDGE", "gpt"))  # fmt: skip
    new = traceduck.override_feedback(old.assessment_id, value=True, rationale="a human checked",
                                      source=AssessmentSource("HUMAN", "jane"))  # fmt: skip
    assert new.assessment_id != old.assessment_id
    assert new.overrides == old.assessment_id
    assert (new.name, new.value, new.valid, new.trace_id) == ("response_is_correct", True, True, trace_id)
    assert new.source == AssessmentSource("HUMAN", "jane")
    assert traceduck.get_assessment(old.assessment_id).valid is False
    shown = {a.assessment_id: a for a in traceduck.get_trace(trace_id).info.assessments}
    assert set(shown) == {old.assessment_id, new.assessment_id}
    assert shown[old.assessment_id].valid is False
    assert shown[new.assessment_id].valid is True


def test_overriding_an_expectation_is_refused(configured):
    trace_id = stored(make_trace())
    exp = traceduck.log_expectation(trace_id, name="expected", value="Paris")
    with pytest.raises(ValueError, match="expectation"):
        traceduck.override_feedback(exp.assessment_id, value="Lyon")
    assert traceduck.get_assessment(exp.assessment_id).valid is True
    assert count_assessment_rows(configured) == 1


def test_deleting_an_override_makes_the_overridden_feedback_valid_again(configured):
    trace_id = stored(make_trace())
    old = traceduck.log_feedback(trace_id, name="score", value=0.2)
    new = traceduck.override_feedback(old.assessment_id, value=0.8)
    traceduck.delete_assessment(new.assessment_id)
    with pytest.raises(AssessmentNotFoundError):
        traceduck.get_assessment(new.assessment_id)
    assert traceduck.get_assessment(old.assessment_id).valid is True
    assert assessment_ids(trace_id) == [old.assessment_id]


def test_delete_assessment_removes_it_from_the_trace(configured):
    trace_id = stored(make_trace())
    keep = traceduck.log_feedback(trace_id, name="a", value=1)
    gone = traceduck.log_feedback(trace_id, name="b", value=2)
    traceduck.delete_assessment(gone.assessment_id)
    assert assessment_ids(trace_id) == [keep.assessment_id]


# -- search ------------------------------------------------------------------------------------


def test_search_by_boolean_feedback(configured):
    good, bad, none = make_trace(), make_trace(), make_trace()
    stored(none)
    traceduck.log_feedback(good, name="response_is_correct", value=True)
    traceduck.log_feedback(bad, name="response_is_correct", value=False)
    assert matching_ids("feedback.response_is_correct = 'true'") == {good}
    assert matching_ids("feedback.response_is_correct = 'false'") == {bad}


def test_search_by_numeric_feedback(configured):
    high, low = make_trace(), make_trace()
    stored(low)
    traceduck.log_feedback(high, name="score", value=0.9)
    traceduck.log_feedback(low, name="score", value=0.2)
    assert matching_ids("feedback.score > 0.5") == {high}
    assert matching_ids("feedback.score <= 0.5") == {low}


def test_search_by_expectation(configured):
    x, y = make_trace(), make_trace()
    stored(y)
    traceduck.log_expectation(x, name="expected", value="x")
    traceduck.log_expectation(y, name="expected", value="y")
    assert matching_ids("expectation.expected = 'x'") == {x}


def test_search_does_not_mix_feedback_and_expectations_of_one_name(configured):
    trace_id = stored(make_trace())
    traceduck.log_expectation(trace_id, name="answer", value="x")
    assert matching_ids("feedback.answer = 'x'") == set()
    assert matching_ids("expectation.answer = 'x'") == {trace_id}


def test_search_sees_the_latest_feedback_of_a_name(configured):
    trace_id = stored(make_trace())
    traceduck.log_feedback(trace_id, name="score", value=0.9)
    assert matching_ids("feedback.score > 0.5") == {trace_id}
    traceduck.log_feedback(trace_id, name="score", value=0.1)
    assert matching_ids("feedback.score > 0.5") == set()
    assert matching_ids("feedback.score < 0.5") == {trace_id}


def test_search_sees_an_override_as_the_latest_valid_feedback(configured):
    trace_id = stored(make_trace())
    traceduck.log_feedback(trace_id, name="score", value=0.9)
    low = traceduck.log_feedback(trace_id, name="score", value=0.1)
    assert matching_ids("feedback.score > 0.5") == set()
    traceduck.override_feedback(low.assessment_id, value=0.9)
    assert matching_ids("feedback.score > 0.5") == {trace_id}


def test_search_ignores_an_overridden_feedback(configured):
    trace_id = stored(make_trace())
    old = traceduck.log_feedback(trace_id, name="response_is_correct", value=True)
    traceduck.override_feedback(old.assessment_id, value=False)
    assert matching_ids("feedback.response_is_correct = 'true'") == set()
    assert matching_ids("feedback.response_is_correct = 'false'") == {trace_id}


def test_search_feedback_is_null_finds_traces_without_that_feedback(configured):
    rated, unrated, other_name = make_trace(), make_trace(), make_trace()
    stored(other_name)
    traceduck.log_feedback(rated, name="x", value=1)
    traceduck.log_feedback(other_name, name="y", value=1)
    assert matching_ids("feedback.x IS NULL") == {unrated, other_name}
    assert matching_ids("feedback.x IS NOT NULL") == {rated}
