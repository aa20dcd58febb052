"""Outputs and trace fields given as a span ends: straight to traceduck's processor when it is the
only one that sees the span, span attributes for every exporter otherwise (traceduck/end_values.py)."""

from __future__ import annotations

import json
import threading

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import traceduck
from traceduck import attributes as attr
from traceduck import end_values
from traceduck.raw_spans import RAW_COLUMNS, ResourceRegistry, record_row, span_record, with_end_values
from traceduck.roots import only_traceduck_sees
from traceduck.serialize import dumps

from conftest import only_trace, query_file, span_named, stored_traces

live_spans: list = []


@traceduck.trace
def lookup(key: str) -> dict:
    live_spans.append(otel_trace.get_current_span())
    return {"key": key, "found": True}


@traceduck.trace(span_type="CHAIN")
def handle(question: str) -> str:
    live_spans.append(otel_trace.get_current_span())
    traceduck.update_current_trace(user="ann", session_id="s-1", client_request_id="req-1",
                                   tags={"tier": "pro"}, metadata={"region": "eu"})  # fmt: skip
    lookup(question)
    return f"answer to {question}"


@pytest.fixture(autouse=True)
def _fresh():
    live_spans.clear()
    yield
    assert not end_values._parked, "a parked value outlived its span"


def _assert_stored_in_full() -> None:
    trace = only_trace()
    assert trace.info.client_request_id == "req-1"
    assert trace.info.metadata == {"trace.user": "ann", "trace.session": "s-1", "region": "eu"}
    assert trace.info.tags == {"trace.user": "ann", "trace.session": "s-1", "region": "eu", "tier": "pro"}
    assert trace.info.response_preview == json.dumps("answer to q")
    assert span_named(trace, "handle").outputs == "answer to q"
    assert span_named(trace, "lookup").outputs == {"key": "q", "found": True}


def test_alone_the_values_skip_the_span_and_are_stored(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider)
    handle("q")
    root, child = live_spans
    assert only_traceduck_sees(root)  # the SDK fields it reads are where it expects them
    # The ended SDK spans never got the attributes: the values went straight to the processor.
    for span in (root, child):
        assert attr.OUTPUTS not in span.attributes
    assert attr.TRACE_FIELDS not in root.attributes
    assert attr.INPUTS in root.attributes  # inputs ride on the span from its start, as ever
    _assert_stored_in_full()


@pytest.mark.writer_process
def test_parked_values_reach_the_store_through_the_writer_process(store_path, provider):
    """The default local path: the record, parked fields and all, crosses to the writer process
    as JSON; a typed metadata value and a bare tag come out as they went in."""
    traceduck.configure(store_path, tracer_provider=provider)

    @traceduck.trace(name="handle")
    def typed(question: str) -> str:
        traceduck.update_current_trace(metadata={"doc": {"type": "url", "url": "https://d/1", "text": "doc 1"}},
                                       tags={"beta": None})  # fmt: skip
        return handle.__wrapped__(question)

    typed("q")
    trace = only_trace()
    assert trace.info.metadata["doc"] == {"type": "url", "url": "https://d/1", "text": "doc 1"}
    assert trace.info.tags["doc"] == "https://d/1" and trace.info.tags["beta"] is None
    assert trace.info.client_request_id == "req-1" and trace.info.metadata["trace.user"] == "ann"
    assert span_named(trace, "handle").outputs == "answer to q"


def test_with_an_exporter_on_the_provider_the_values_are_span_attributes(store_path, provider):
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traceduck.configure(store_path, tracer_provider=provider)
    handle("q")
    assert not only_traceduck_sees(live_spans[0])
    exported = {span.name: span for span in exporter.get_finished_spans()}
    assert json.loads(exported["handle"].attributes[attr.OUTPUTS]) == "answer to q"
    assert json.loads(exported["lookup"].attributes[attr.OUTPUTS]) == {"key": "q", "found": True}
    fields = json.loads(exported["handle"].attributes[attr.TRACE_FIELDS])
    assert fields["client_request_id"] == "req-1"
    assert fields["metadata"] == {"region": "eu", "trace.user": "ann", "trace.session": "s-1"}
    assert fields["tags"] == {"tier": "pro"}
    _assert_stored_in_full()


def test_an_exporter_added_while_a_trace_runs_still_gets_the_values(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider)
    exporter = InMemorySpanExporter()

    @traceduck.trace(name="handle")
    def handle_and_add_exporter(question: str) -> str:
        result = handle.__wrapped__(question)  # same body, one span
        provider.add_span_processor(SimpleSpanProcessor(exporter))  # decided at the end, not the start
        return result

    handle_and_add_exporter("q")
    exported = {span.name: span for span in exporter.get_finished_spans()}
    assert list(exported) == ["handle"]  # the child ended before the exporter came
    assert json.loads(exported["handle"].attributes[attr.OUTPUTS]) == "answer to q"
    assert json.loads(exported["handle"].attributes[attr.TRACE_FIELDS])["client_request_id"] == "req-1"
    _assert_stored_in_full()


def test_processors_run_on_other_threads_get_attributes(store_path):
    """A provider whose processors run on a thread pool: the value could not be taken inside
    ``span.end()`` on the ending thread, so it rides on the span."""
    provider = TracerProvider(active_span_processor=ConcurrentMultiSpanProcessor(num_threads=2),
                              shutdown_on_exit=False)  # fmt: skip
    traceduck.configure(store_path, tracer_provider=provider)
    try:
        handle("q")
        assert not only_traceduck_sees(live_spans[0])
        assert attr.OUTPUTS in live_spans[0].attributes and attr.TRACE_FIELDS in live_spans[0].attributes
        _assert_stored_in_full()
    finally:
        traceduck.shutdown()
        provider.shutdown()


def test_configured_root_attributes_go_into_the_record_when_alone(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider, service_name="chat-api", environment="prod",
                        project="chatbot")  # fmt: skip
    handle("q")
    provider.get_tracer("other-instrumentation").start_span("raw-root").end()  # a root of another library
    assert attr.TRACE_DEFAULT_METADATA not in live_spans[0].attributes  # never set on the span...
    assert attr.TRACE_PROJECT not in live_spans[0].attributes
    traces = {trace.info.name: trace for trace in stored_traces()}  # ...yet stored with every root
    assert set(traces) == {"handle", "raw-root"}
    for trace in traces.values():
        assert trace.info.metadata["service.name"] == "chat-api"
        assert trace.info.metadata["trace.environment"] == "prod"
    assert query_file(store_path, "SELECT DISTINCT project FROM traces") == [("chatbot",)]


def test_with_an_exporter_the_configured_root_attributes_ride_on_the_root(store_path, provider):
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traceduck.configure(store_path, tracer_provider=provider, environment="prod", project="chatbot")
    handle("q")
    exported = {span.name: span for span in exporter.get_finished_spans()}
    assert json.loads(exported["handle"].attributes[attr.TRACE_DEFAULT_METADATA]) == {"trace.environment": "prod"}
    assert exported["handle"].attributes[attr.TRACE_PROJECT] == "chatbot"
    assert attr.TRACE_PROJECT not in exported["lookup"].attributes  # roots only
    assert only_trace().info.metadata["trace.environment"] == "prod"


def test_a_span_dropped_on_a_full_queue_leaves_nothing_parked(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider, max_queue_size=1, flush_interval=60)
    for i in range(5):
        handle(f"q{i}")
    assert traceduck.stats()["dropped_spans"] > 0
    # the fixture asserts nothing stayed parked


def test_a_span_the_application_ended_early_leaves_nothing_parked(configured):
    with traceduck.start_span("early") as span:
        traceduck.update_current_trace(client_request_id="req-early")
        span.span.end()
    assert only_trace().info.name == "early"


def test_spans_ending_on_many_threads_each_get_their_own_values(configured):
    @traceduck.trace
    def work(n: int) -> int:
        traceduck.update_current_trace(client_request_id=f"req-{n}", tags={"n": str(n)})
        return n * n

    threads = [threading.Thread(target=lambda k=k: [work(k * 100 + i) for i in range(50)]) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    traces = stored_traces()
    assert len(traces) == 200
    for trace in traces:
        n = int(trace.info.client_request_id.removeprefix("req-"))
        assert trace.info.tags == {"n": str(n)}
        assert trace.data.spans[0].outputs == n * n


def _record_of(attributes: dict) -> tuple:
    finished = []

    class Keep(SpanProcessor):
        def on_end(self, span) -> None:
            finished.append(span)

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(Keep())
    provider.get_tracer("t").start_span("root", attributes=attributes).end()
    return span_record(finished[0], ResourceRegistry())


def _row_values(record: tuple) -> dict:
    row = dict(zip(RAW_COLUMNS, record_row(record, "default")))
    return {"outputs": row["outputs"], "trace_fields": row["trace_fields"], "attributes": row["attributes"]}


def test_an_attribute_set_after_the_release_wins_over_the_parked_fields():
    """An update from another thread after the root was released sets the attribute, which then
    holds every field; the parked outputs are always the span's own."""
    later = json.dumps({"client_request_id": "later", "tags": {"a": "1"}})
    record = with_end_values(_record_of({"k": 1, attr.TRACE_FIELDS: later}), '"out"',
                             {"client_request_id": "parked"})  # fmt: skip
    assert _row_values(record) == {"outputs": '"out"', "trace_fields": later, "attributes": '{"k":1}'}


def test_parked_fields_become_the_same_stored_text_as_the_attribute():
    fields = {"client_request_id": "r", "metadata": {"n": 1, "u": {"type": "url", "url": "https://x", "text": "x"}},
              "tags": {"t": None}}  # fmt: skip
    parked = with_end_values(_record_of({}), None, fields)
    as_attribute = _record_of({attr.TRACE_FIELDS: dumps(fields)})
    row = _row_values(parked)  # (a record is made a row once: its attributes are taken out)
    assert row == _row_values(as_attribute)
    assert json.loads(row["trace_fields"]) == fields
