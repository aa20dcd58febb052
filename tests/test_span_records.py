"""Span records: what ``on_end`` keeps of a span, turned into rows in the writer process.

Every field of a span must read back the same whether its record became a row in the writer
process (the default) or on the writer thread (``writer_process=False``), including what orjson
cannot carry to the child as is (an integer past 64 bits, a lone surrogate), which falls back to
rows made in the application for that batch without losing the batch's other spans.
"""

from __future__ import annotations

import json

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

import traceduck
from traceduck import raw_spans
from traceduck.raw_spans import (RAW_COLUMNS, RawSpans, ResourceRegistry, record_row, span_record, span_record_fields,
                                 span_record_public)  # fmt: skip

REMOTE_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
REMOTE_PARENT = 0xB7AD6B7169203331

transports = pytest.mark.parametrize(
    "writer_process", [pytest.param(True, marks=pytest.mark.writer_process), False], ids=["child", "thread"]
)


def _record_everything(tracer: otel_trace.Tracer) -> None:
    """One trace with a remote parent, and spans using every field a record carries."""
    remote = NonRecordingSpan(SpanContext(REMOTE_TRACE, REMOTE_PARENT, is_remote=True,
                                          trace_flags=TraceFlags(TraceFlags.SAMPLED)))  # fmt: skip
    token = otel_context.attach(otel_trace.set_span_in_context(remote))
    try:
        with tracer.start_as_current_span("server", kind=SpanKind.SERVER,
                                          attributes={"http.route": "/chat", "n": 3, "ok": True, "f": 0.25,
                                                      "list": ["a", "b"]}) as server:  # fmt: skip
            traceduck.update_current_trace(user="jane", tags={"t": "v"}, client_request_id="req-9")
            with tracer.start_as_current_span("client", kind=SpanKind.CLIENT) as client:
                client.add_event("retry", {"attempt": 2, "why": "timeout"})
                client.set_status(Status(StatusCode.ERROR, "upstream failed"))
            server.set_attribute("big", 2**70)  # past 64 bits: orjson cannot encode the record
    finally:
        otel_context.detach(token)


@transports
def test_every_span_field_reads_back_from_its_record(store_path, writer_process):
    provider = TracerProvider(span_limits=SpanLimits(max_attributes=8, max_events=1))
    traceduck.configure(store_path, tracer_provider=provider, writer_process=writer_process)
    tracer = provider.get_tracer("records")
    _record_everything(tracer)
    with traceduck.start_span("other-trace") as span:  # same batch, encodable
        span.set_inputs({"q": "hi"})
        for i in range(10):  # two past the limit of 8: evicted and counted
            span.set_attribute(f"k{i}", i)
        span.add_event("e1")
        span.add_event("e2")  # past the limit of 1 event: the oldest is dropped and counted
    assert traceduck.flush()

    trace = traceduck.get_trace(f"{REMOTE_TRACE:032x}")
    assert trace is not None
    assert trace.info.client_request_id == "req-9" and trace.info.tags["t"] == "v"
    assert trace.info.metadata["trace.user"] == "jane"
    spans = {s.name: s for s in trace.data.spans}
    server, client = spans["server"], spans["client"]
    assert server.parent_id == f"{REMOTE_PARENT:016x}" and server.kind == "SERVER"
    assert server.attributes["http.route"] == "/chat" and server.attributes["n"] == 3
    assert server.attributes["ok"] is True and server.attributes["f"] == 0.25
    assert server.attributes["list"] == ["a", "b"] and server.attributes["big"] == 2**70
    assert server.start_time_ns <= client.start_time_ns <= client.end_time_ns <= server.end_time_ns
    assert client.parent_id == server.span_id and client.kind == "CLIENT"
    assert (client.status, client.status_message) == ("ERROR", "upstream failed")
    assert [(e.name, e.attributes) for e in client.events] == [("retry", {"attempt": 2, "why": "timeout"})]

    other = traceduck.search_traces("name = 'other-trace'", return_type="list")[0].data.spans[0]
    assert other.inputs == {"q": "hi"} and other.status == "UNSET"
    assert [e.name for e in other.events] == ["e2"]
    assert other.attributes["otel.dropped_events_count"] == 1
    assert other.attributes["otel.dropped_attributes_count"] >= 2
    assert other.attributes["k9"] == 9


@transports
def test_a_lone_surrogate_in_an_attribute_loses_nothing_else(store_path, writer_process):
    traceduck.configure(store_path, tracer_provider=TracerProvider(), writer_process=writer_process)
    with traceduck.start_span("bad") as span:
        span.set_attribute("note", "x\ud800y")
    with traceduck.start_span("good") as span:
        span.set_attribute("note", "fine")
    assert traceduck.flush()
    notes = {t.info.name: t.data.spans[0].attributes["note"] for t in traceduck.search_traces(return_type="list")}
    assert notes == {"bad": "x\ufffdy", "good": "fine"}


def test_a_record_is_the_row_the_store_reads(store_path):
    """record_row of a record equals a row built from the span's parts by RawSpans.add."""
    captured = []

    class Capture(traceduck.processor.SpanProcessor):  # type: ignore[name-defined]
        def on_end(self, span):  # noqa: ANN001
            captured.append(span)

    provider = TracerProvider()
    provider.add_span_processor(Capture())
    traceduck.configure(store_path, tracer_provider=provider)
    _record_everything(provider.get_tracer("records"))
    registry = ResourceRegistry()
    for span in captured:
        record = span_record(span, registry)
        raw = RawSpans("proj", registry.json)
        raw.add(
            format(span.context.trace_id, "032x"), format(span.context.span_id, "016x"),
            format(span.parent.span_id, "016x") if span.parent else None, bool(span.parent and span.parent.is_remote),
            span.name, span.kind.name, span.start_time, span.end_time, span.status.status_code.name,
            span.status.description, dict(span.attributes),
            traceduck.serialize.dumps([{"name": e.name, "timestamp_ns": e.timestamp, "attributes": dict(e.attributes)}
                                       for e in span.events]) if span.events else None,
            registry.index(span.resource.attributes),
        )  # fmt: skip
        expected = dict(zip(RAW_COLUMNS, raw.rows[0]))
        assert dict(zip(RAW_COLUMNS, record_row(record, "proj"))) == expected
        as_json = json.loads(json.dumps(span_record(span, registry)))  # what the child reads
        assert dict(zip(RAW_COLUMNS, record_row(as_json, "proj"))) == expected


def test_the_fast_reader_is_used_and_reads_what_the_public_properties_read(store_path):
    """``on_end`` reads the SDK's fields directly (the properties copy them): with the installed
    SDK the self-check picks that reader, and it agrees with the public properties on every span,
    including attributes and events beyond the SpanLimits (dropped and counted)."""
    assert raw_spans._fields_reader_agrees()
    assert span_record is span_record_fields
    captured = []

    class Capture(traceduck.processor.SpanProcessor):  # type: ignore[name-defined]
        def on_end(self, span):  # noqa: ANN001
            captured.append(span)

    provider = TracerProvider(span_limits=SpanLimits(max_attributes=4, max_events=1))
    provider.add_span_processor(Capture())
    traceduck.configure(store_path, tracer_provider=provider)
    _record_everything(provider.get_tracer("records"))
    with traceduck.start_span("limits") as live:
        for i in range(6):
            live.set_attribute(f"k{i}", i)
        live.add_event("e1", {"n": 1})
        live.add_event("e2")
    assert [s.name for s in captured] == ["client", "server", "limits"]
    assert captured[2].dropped_attributes > 0 and captured[2].dropped_events == 1
    for span in captured:
        public, fields = ResourceRegistry(), ResourceRegistry()
        assert span_record_fields(span, fields) == span_record_public(span, public)
        assert fields.json == public.json


def test_records_become_rows_in_arrival_order_with_rows_added_around_them():
    raw = RawSpans("p", ["{}"])
    raw.add("a" * 32, "1" * 16, None, False, "first", "INTERNAL", 1, 2, "OK", None, {}, None, 0)
    record = (0, 0xAB, 0xCD, None, False, "second", 0, 3, 4, 0, None, None, None, 0, 0, 0)
    raw.add_records([record])
    assert len(raw) == 2
    raw.add("b" * 32, "2" * 16, None, False, "third", "INTERNAL", 5, 6, "OK", None, {}, None, 0)
    assert [row[RAW_COLUMNS.index("name")] for row in raw.rows] == ["first", "second", "third"]
    assert raw.rows[1][0] == "0" * 30 + "ab" and raw.rows[1][1] == "00000000000000cd"
