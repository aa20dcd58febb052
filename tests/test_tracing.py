"""@trace and start_span(): what a traced call records, on the real OTel SDK and a real store."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import socket

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import traceduck
from traceduck import tracing
from traceduck.serialize import DEFAULT_MAX_CHARS

from conftest import only_trace, query_file, run_python, span_named, stored_trace, stored_traces

pytestmark = pytest.mark.usefixtures("configured")


# -- traced functions used below (decorated at import time, before any configure()) -------------


@traceduck.trace
def greet(name, punctuation="!"):
    return f"hello {name}{punctuation}"


@traceduck.trace(name="llm-call", span_type="LLM", attributes={"model": "tiny", "temperature": 0.5})
def ask_model(prompt):
    return prompt.upper()


def _plain_add(a, b):
    """Add two numbers."""
    return a + b


traced_add = traceduck.trace(_plain_add)


@traceduck.trace
async def fetch(key):
    await asyncio.sleep(0)
    return {"key": key}


@traceduck.trace
def count_up(n):
    for i in range(n):
        yield i


@traceduck.trace
async def acount_up(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


class Greeter:
    def __init__(self, greeting):
        self.greeting = greeting

    @traceduck.trace
    def greet(self, name):
        return f"{self.greeting} {name}"

    @traceduck.trace
    @classmethod
    def create(cls, greeting):
        return cls(greeting)

    @classmethod
    @traceduck.trace
    def create_inner(cls, greeting):
        return cls(greeting)

    @traceduck.trace
    @staticmethod
    def shout(text):
        return text.upper()

    @staticmethod
    @traceduck.trace
    def whisper(text):
        return text.lower()


class Boom(Exception):
    pass


# -- decorator forms -------------------------------------------------------------------------


def test_bare_trace_records_a_span_named_after_the_function():
    greet("ann")
    span = only_trace().data.spans[0]
    assert (span.name, span.span_type) == ("greet", "UNKNOWN")


def test_trace_with_arguments_sets_name_span_type_and_attributes():
    ask_model("hi")
    span = only_trace().data.spans[0]
    assert span.name == "llm-call"
    assert span.span_type == "LLM"
    assert span.attributes["model"] == "tiny"
    assert span.attributes["temperature"] == 0.5


def test_trace_called_on_a_function_wraps_it():
    assert traced_add(2, 3) == 5
    span = only_trace().data.spans[0]
    assert (span.name, span.inputs, span.outputs) == ("_plain_add", {"a": 2, "b": 3}, 5)


def test_async_function_is_traced_with_its_awaited_result():
    assert asyncio.run(fetch("k1")) == {"key": "k1"}
    span = only_trace().data.spans[0]
    assert (span.name, span.inputs, span.outputs) == ("fetch", {"key": "k1"}, {"key": "k1"})


# -- generators ------------------------------------------------------------------------------


def test_generator_output_is_the_yielded_items():
    assert list(count_up(3)) == [0, 1, 2]
    span = only_trace().data.spans[0]
    assert (span.inputs, span.outputs) == ({"n": 3}, [0, 1, 2])


def test_generator_span_stays_open_until_the_generator_is_exhausted():
    gen = count_up(3)
    next(gen)
    next(gen)
    assert traceduck.flush()
    assert traceduck.count_traces() == 0
    list(gen)
    assert only_trace().data.spans[0].outputs == [0, 1, 2]


def test_generator_closed_early_ends_its_span_with_the_items_yielded_so_far():
    gen = count_up(10)
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()
    span = only_trace().data.spans[0]
    assert span.outputs == [0, 1]
    assert span.status != "ERROR"


def test_generator_closed_early_runs_its_finally_block():
    cleaned = []

    @traceduck.trace
    def resource():
        try:
            yield 1
            yield 2
        finally:
            cleaned.append(True)

    gen = resource()
    next(gen)
    gen.close()
    assert cleaned == [True]


def test_generator_send_values_reach_the_generator():
    @traceduck.trace
    def echo():
        received = yield "ready"
        while received is not None:
            received = yield f"got {received}"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("a") == "got a"
    gen.close()
    assert only_trace().data.spans[0].outputs == ["ready", "got a"]


def test_generator_return_value_reaches_yield_from():
    @traceduck.trace
    def inner():
        yield 1
        return "done"

    def outer():
        result = yield from inner()
        yield result

    assert list(outer()) == [1, "done"]


def test_generator_over_max_yielded_items_records_a_truncated_marker():
    n = tracing.MAX_YIELDED_ITEMS + 5
    assert sum(1 for _ in count_up(n)) == n
    outputs = only_trace().data.spans[0].outputs
    assert outputs["_truncated"] is True
    assert outputs["items_total"] == n
    assert outputs["items"] == list(range(tracing.MAX_YIELDED_ITEMS))


def test_async_generator_output_is_the_yielded_items():
    async def consume():
        return [i async for i in acount_up(3)]

    assert asyncio.run(consume()) == [0, 1, 2]
    span = only_trace().data.spans[0]
    assert (span.name, span.inputs, span.outputs) == ("acount_up", {"n": 3}, [0, 1, 2])


def test_async_generator_span_stays_open_until_exhausted():
    async def scenario():
        agen = acount_up(3)
        await agen.__anext__()
        assert traceduck.flush()
        before = traceduck.count_traces()
        rest = [i async for i in agen]
        return before, rest

    before, rest = asyncio.run(scenario())
    assert (before, rest) == (0, [1, 2])
    assert only_trace().data.spans[0].outputs == [0, 1, 2]


def test_async_generator_closed_early_ends_its_span_with_the_items_yielded_so_far():
    async def scenario():
        agen = acount_up(10)
        items = [await agen.__anext__(), await agen.__anext__()]
        await agen.aclose()
        return items

    assert asyncio.run(scenario()) == [0, 1]
    span = only_trace().data.spans[0]
    assert span.outputs == [0, 1]
    assert span.status != "ERROR"


def test_async_generator_over_max_yielded_items_records_a_truncated_marker():
    n = tracing.MAX_YIELDED_ITEMS + 1

    async def consume():
        return [i async for i in acount_up(n)]

    assert len(asyncio.run(consume())) == n
    outputs = only_trace().data.spans[0].outputs
    assert outputs["_truncated"] is True
    assert outputs["items_total"] == n
    assert len(outputs["items"]) == tracing.MAX_YIELDED_ITEMS


# -- methods ---------------------------------------------------------------------------------


def test_method_inputs_exclude_self():
    assert Greeter("hi").greet("bob") == "hi bob"
    span = only_trace().data.spans[0]
    assert (span.name, span.inputs, span.outputs) == ("Greeter.greet", {"name": "bob"}, "hi bob")


@pytest.mark.parametrize("method", ["create", "create_inner"])
def test_classmethod_inputs_exclude_cls(method):
    made = getattr(Greeter, method)("yo")
    assert isinstance(made, Greeter) and made.greeting == "yo"
    span = only_trace().data.spans[0]
    assert span.name == f"Greeter.{method}"
    assert span.inputs == {"greeting": "yo"}


@pytest.mark.parametrize(("method", "expected"), [("shout", "ABC"), ("whisper", "abc")])
def test_staticmethod_is_traced_from_class_and_instance(method, expected):
    assert getattr(Greeter, method)("aBc") == expected
    assert getattr(Greeter("x"), method)("aBc") == expected
    traces = stored_traces()
    assert len(traces) == 2
    assert all(t.data.spans[0].inputs == {"text": "aBc"} for t in traces)
    assert all(t.data.spans[0].outputs == expected for t in traces)


# -- inputs and outputs ----------------------------------------------------------------------


def test_inputs_are_the_bound_arguments_including_keywords():
    greet("ann", punctuation="?")
    assert only_trace().data.spans[0].inputs == {"name": "ann", "punctuation": "?"}


def test_inputs_of_a_star_args_function_keep_args_and_kwargs():
    @traceduck.trace
    def anything(*args, **kwargs):
        return len(args) + len(kwargs)

    assert anything(1, 2, k=3) == 3
    assert only_trace().data.spans[0].inputs == {"args": [1, 2], "kwargs": {"k": 3}}


def test_inputs_of_a_mixed_signature_bind_each_parameter():
    @traceduck.trace
    def mixed(a, *rest, flag=False, **opts):
        return a

    mixed(1, 2, 3, flag=True, extra="x")
    assert only_trace().data.spans[0].inputs == {"a": 1, "rest": [2, 3], "flag": True, "opts": {"extra": "x"}}


def test_output_is_the_return_value():
    assert greet("ann") == "hello ann!"
    assert only_trace().data.spans[0].outputs == "hello ann!"


class _BrokenRepr:
    def __repr__(self):
        raise RuntimeError("no repr for you")


def _circular():
    d = {"name": "loop"}
    d["self"] = d
    return d


UNSERIALISABLE = {
    "broken_repr": _BrokenRepr,
    "socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM),
    "set": lambda: {1, 2, 3},
    "bytes": lambda: b"raw\xffbytes",
    "circular_dict": _circular,
    "huge_string": lambda: "x" * (DEFAULT_MAX_CHARS + 10),
    "tuple_keyed_dict": lambda: {(1, 2): "pair"},
    "int_beyond_64_bits": lambda: 2**70,
    "nan": lambda: float("nan"),
    "lone_surrogate": lambda: "bad\ud800text",
    "generator": lambda: (i for i in range(3)),
    "class": lambda: _BrokenRepr,
}


def test_unserialisable_inputs_and_outputs_never_raise():
    values = {kind: make() for kind, make in UNSERIALISABLE.items()}

    @traceduck.trace
    def passthrough(**kwargs):
        return kwargs

    try:
        assert passthrough(**values) is not None
        for kind, value in values.items():
            assert traceduck.trace(lambda v: v)(value) is value, kind
    finally:
        values["socket"].close()
    traces = stored_traces()
    assert len(traces) == 1 + len(values)
    assert all(t.data.spans[0].inputs is not None for t in traces)  # something was recorded for each


def test_broken_repr_is_recorded_as_a_placeholder():
    @traceduck.trace
    def make():
        return _BrokenRepr()

    make()
    assert "_BrokenRepr" in only_trace().data.spans[0].outputs


def test_set_is_recorded_as_a_list():
    @traceduck.trace
    def make():
        return {3, 1, 2}

    make()
    assert sorted(only_trace().data.spans[0].outputs) == [1, 2, 3]


def test_bytes_are_recorded_as_text():
    @traceduck.trace
    def make():
        return b"abc"

    make()
    assert only_trace().data.spans[0].outputs == "abc"


def test_value_over_64_kib_is_replaced_by_a_truncated_marker():
    big = "y" * (DEFAULT_MAX_CHARS + 100)

    @traceduck.trace
    def make():
        return big

    assert make() is big
    outputs = only_trace().data.spans[0].outputs
    assert outputs["_truncated"] is True
    assert outputs["original_chars"] > DEFAULT_MAX_CHARS
    assert outputs["preview"].startswith('"yyyy')


def test_stored_inputs_are_capped_at_64_kib(store_path):
    greet("z" * (DEFAULT_MAX_CHARS * 2))
    (length,) = query_file(store_path, "SELECT length(inputs) FROM spans")[0]
    assert length <= DEFAULT_MAX_CHARS + 1000


# -- exceptions ------------------------------------------------------------------------------


def _raise(exc):
    @traceduck.trace
    def failing():
        raise exc

    return failing


def test_exception_is_reraised_unchanged():
    error = Boom("bad input")
    with pytest.raises(Boom) as info:
        _raise(error)()
    assert info.value is error


def test_exception_marks_span_and_trace_error_with_an_exception_event():
    with pytest.raises(Boom):
        _raise(Boom("bad input"))()
    trace = only_trace()
    span = trace.data.spans[0]
    assert span.status == "ERROR"
    assert "bad input" in span.status_message
    assert [e.name for e in span.events] == ["exception"]
    assert span.events[0].attributes["exception.type"].endswith("Boom")
    assert span.events[0].attributes["exception.message"] == "bad input"
    assert trace.info.state == "ERROR"


def test_successful_trace_state_is_ok():
    greet("ann")
    assert only_trace().info.state == "OK"


def test_async_exception_is_reraised_unchanged_and_marks_error():
    error = Boom("async")

    @traceduck.trace
    async def failing():
        await asyncio.sleep(0)
        raise error

    with pytest.raises(Boom) as info:
        asyncio.run(failing())
    assert info.value is error
    assert only_trace().data.spans[0].status == "ERROR"


def test_exception_raised_by_a_generator_marks_its_span_error():
    error = Boom("mid-stream")

    @traceduck.trace
    def stream():
        yield 1
        raise error

    gen = stream()
    assert next(gen) == 1
    with pytest.raises(Boom) as info:
        next(gen)
    assert info.value is error
    trace = only_trace()
    assert trace.data.spans[0].status == "ERROR"
    assert trace.info.state == "ERROR"


def test_exception_thrown_into_a_generator_marks_its_span_error():
    error = Boom("consumer gave up")
    gen = count_up(5)
    next(gen)
    with pytest.raises(Boom) as info:
        gen.throw(error)
    assert info.value is error
    span = only_trace().data.spans[0]
    assert span.status == "ERROR"
    assert [e.name for e in span.events] == ["exception"]


def test_exception_thrown_into_a_generator_that_handles_it_is_not_an_error():
    @traceduck.trace
    def resilient():
        try:
            yield 1
        except Boom:
            yield "recovered"

    gen = resilient()
    next(gen)
    assert gen.throw(Boom("retry")) == "recovered"
    gen.close()
    span = only_trace().data.spans[0]
    assert span.status != "ERROR"
    assert span.outputs == [1, "recovered"]


def test_exception_raised_by_an_async_generator_marks_its_span_error():
    error = Boom("async stream")

    @traceduck.trace
    async def stream():
        yield 1
        raise error

    async def consume():
        return [i async for i in stream()]

    with pytest.raises(Boom) as info:
        asyncio.run(consume())
    assert info.value is error
    assert only_trace().data.spans[0].status == "ERROR"


def test_exception_thrown_into_an_async_generator_marks_its_span_error():
    error = Boom("thrown")

    async def scenario():
        agen = acount_up(5)
        await agen.__anext__()
        await agen.athrow(error)

    with pytest.raises(Boom) as info:
        asyncio.run(scenario())
    assert info.value is error
    assert only_trace().data.spans[0].status == "ERROR"


# -- nesting and wrapping --------------------------------------------------------------------


@traceduck.trace
def child_step(i):
    return i * 2


@traceduck.trace
def parent_step():
    return [child_step(1), child_step(2)]


def test_nested_calls_are_child_spans_of_the_caller():
    assert parent_step() == [2, 4]
    trace = only_trace()
    parent = span_named(trace, "parent_step")
    children = [s for s in trace.data.spans if s.name == "child_step"]
    assert parent.parent_id is None
    assert len(children) == 2
    assert all(c.parent_id == parent.span_id for c in children)
    assert {s.trace_id for s in trace.data.spans} == {trace.info.trace_id}


def test_trace_is_named_after_its_root_span():
    parent_step()
    assert only_trace().info.name == "parent_step"


def test_nested_async_calls_are_child_spans():
    @traceduck.trace
    async def outer():
        return [await fetch("a"), await fetch("b")]

    asyncio.run(outer())
    trace = only_trace()
    root = span_named(trace, outer.__qualname__)
    assert sorted(s.parent_id == root.span_id for s in trace.data.spans) == [False, True, True]


def test_spans_inside_a_generator_are_its_children():
    @traceduck.trace
    def producer():
        for i in range(2):
            yield child_step(i)

    list(producer())
    trace = only_trace()
    root = span_named(trace, producer.__qualname__)
    children = [s for s in trace.data.spans if s.name == "child_step"]
    assert [c.parent_id for c in children] == [root.span_id, root.span_id]


def test_consumer_of_a_generator_is_not_inside_its_span():
    @traceduck.trace
    def producer():
        yield 1
        yield 2

    for _ in producer():
        child_step(0)  # called by the consumer between items: its own trace, not a child
    traces = stored_traces()
    assert sorted(len(t.data.spans) for t in traces) == [1, 1, 1]


def test_wrapper_preserves_name_wrapped_doc_and_signature():
    assert traced_add.__name__ == "_plain_add"
    assert traced_add.__wrapped__ is _plain_add
    assert traced_add.__doc__ == "Add two numbers."
    assert inspect.signature(traced_add) == inspect.signature(_plain_add)


def test_wrapper_keeps_the_function_kind():
    assert inspect.iscoroutinefunction(fetch)
    assert inspect.isgeneratorfunction(count_up)
    assert inspect.isasyncgenfunction(acount_up)


# -- start_span ------------------------------------------------------------------------------


def test_start_span_records_inputs_outputs_and_attributes():
    with traceduck.start_span("block", span_type="RETRIEVER", attributes={"index": "docs"}) as span:
        span.set_inputs({"query": "q"})
        span.set_attribute("k", "v")
        span.set_attributes({"n": 3, "flag": True})
        span.set_outputs(["doc1", "doc2"])
    stored = only_trace().data.spans[0]
    assert stored.name == "block"
    assert stored.span_type == "RETRIEVER"
    assert stored.inputs == {"query": "q"}
    assert stored.outputs == ["doc1", "doc2"]
    assert {k: stored.attributes[k] for k in ("index", "k", "n", "flag")} == {
        "index": "docs", "k": "v", "n": 3, "flag": True,
    }  # fmt: skip


def test_start_span_yields_a_live_span_with_its_ids():
    with traceduck.start_span("block") as span:
        ids = (span.trace_id, span.span_id)
        assert ids == (traceduck.get_current_trace_id(), traceduck.get_current_span_id())
    stored = only_trace()
    assert (stored.info.trace_id, stored.data.spans[0].span_id) == ids


def test_exception_in_start_span_block_marks_it_error_and_propagates():
    error = Boom("in block")
    with pytest.raises(Boom) as info:
        with traceduck.start_span("block"):
            raise error
    assert info.value is error
    stored = only_trace()
    assert stored.data.spans[0].status == "ERROR"
    assert stored.info.state == "ERROR"


def test_start_span_inside_trace_is_a_child_span():
    @traceduck.trace
    def outer():
        with traceduck.start_span("inner"):
            pass

    outer()
    trace = only_trace()
    assert span_named(trace, "inner").parent_id == span_named(trace, outer.__qualname__).span_id


# -- spans of other instrumentation ----------------------------------------------------------


def test_raw_otel_span_inside_trace_is_stored_as_a_child(provider):
    tracer = provider.get_tracer("other-instrumentation")

    @traceduck.trace
    def outer():
        with tracer.start_as_current_span("raw-child"):
            child_step(1)

    outer()
    trace = only_trace()
    raw = span_named(trace, "raw-child")
    assert raw.parent_id == span_named(trace, outer.__qualname__).span_id
    assert span_named(trace, "child_step").parent_id == raw.span_id


def test_raw_otel_root_span_is_stored_as_its_own_trace(provider):
    tracer = provider.get_tracer("other-instrumentation")
    with tracer.start_as_current_span("raw-root", kind=otel_trace.SpanKind.SERVER) as span:
        span.set_attribute("http.route", "/chat")
        child_step(1)
    trace = only_trace()
    assert trace.info.name == "raw-root"
    root = span_named(trace, "raw-root")
    assert root.parent_id is None
    assert root.kind == "SERVER"
    assert root.attributes["http.route"] == "/chat"
    assert span_named(trace, "child_step").parent_id == root.span_id


REMOTE_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
REMOTE_SPAN_ID = 0x00F067AA0BA902B7


def _remote_context():
    parent = SpanContext(
        trace_id=REMOTE_TRACE_ID, span_id=REMOTE_SPAN_ID, is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )  # fmt: skip
    return otel_trace.set_span_in_context(NonRecordingSpan(parent))


def test_local_root_with_a_remote_parent_becomes_the_trace_root():
    token = otel_context.attach(_remote_context())
    try:
        parent_step()
    finally:
        otel_context.detach(token)
    trace = stored_trace(format(REMOTE_TRACE_ID, "032x"))
    assert trace.info.name == "parent_step"
    root = span_named(trace, "parent_step")
    assert root.parent_id == format(REMOTE_SPAN_ID, "016x")
    assert trace.data.root.span_id == root.span_id


def test_two_local_roots_under_one_remote_parent_make_one_trace():
    token = otel_context.attach(_remote_context())
    try:
        child_step(1)
        parent_step()
    finally:
        otel_context.detach(token)
    traces = stored_traces()
    assert len(traces) == 1
    assert sorted(s.name for s in traces[0].data.spans) == ["child_step", "child_step", "child_step", "parent_step"]
    assert traces[0].info.name == "child_step"  # the earliest root names the trace


def test_raw_otel_span_with_a_remote_parent_becomes_the_trace_root(provider):
    tracer = provider.get_tracer("other-instrumentation")
    with tracer.start_as_current_span("server-request", context=_remote_context()):
        child_step(3)
    trace = stored_trace(format(REMOTE_TRACE_ID, "032x"))
    assert trace.info.name == "server-request"
    assert span_named(trace, "child_step").parent_id == span_named(trace, "server-request").span_id


# -- configure() -----------------------------------------------------------------------------


def test_application_processors_still_see_spans_after_configure(tmp_path):
    exporter = InMemorySpanExporter()
    app_provider = TracerProvider()
    app_provider.add_span_processor(SimpleSpanProcessor(exporter))
    traceduck.configure(str(tmp_path / "app.duckdb"), tracer_provider=app_provider)
    greet("ann")
    assert [s.name for s in exporter.get_finished_spans()] == ["greet"]
    assert only_trace().data.spans[0].name == "greet"


def test_configure_twice_does_not_duplicate_spans(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider)
    parent_step()
    rows = query_file(store_path, "SELECT name FROM spans ORDER BY name")
    assert rows == [("child_step",), ("child_step",), ("parent_step",)]


def test_configure_again_sends_spans_to_the_new_store_only(tmp_path, store_path, provider):
    second = str(tmp_path / "second.duckdb")
    greet("first")
    traceduck.configure(second, tracer_provider=provider)
    greet("second")
    traceduck.shutdown()
    first_rows = query_file(store_path, "SELECT inputs FROM spans")
    second_rows = query_file(second, "SELECT inputs FROM spans")
    assert [json.loads(r[0])["name"] for r in first_rows] == ["first"]
    assert [json.loads(r[0])["name"] for r in second_rows] == ["second"]


def test_tracing_without_configure_uses_the_store_from_the_environment(tmp_path):
    path = tmp_path / "from-env.duckdb"
    run_python(
        """
        import traceduck

        @traceduck.trace
        def work(x):
            return x + 1

        work(41)
        """,
        env={"TRACEDUCK_STORE": str(path)},
        cwd=str(tmp_path),
    )
    assert not (tmp_path / "traceduck.duckdb").exists()
    assert query_file(str(path), "SELECT name, outputs FROM spans") == [("work", "42")]


def test_configure_installs_a_provider_when_the_application_has_none(tmp_path):
    path = tmp_path / "installed.duckdb"
    proc = run_python(
        f"""
        from opentelemetry import trace as otel_trace
        from opentelemetry.sdk.trace import TracerProvider
        import traceduck

        traceduck.configure({str(path)!r})
        with otel_trace.get_tracer("app").start_as_current_span("app-span"):
            pass
        print(type(otel_trace.get_tracer_provider()).__name__)
        """
    )
    assert proc.stdout.strip() == "TracerProvider"
    assert query_file(str(path), "SELECT name FROM traces") == [("app-span",)]


def test_configure_adds_to_the_global_provider_the_application_set(tmp_path):
    # No flush(): interpreter exit writes the trace (the global provider shuts down first).
    path = tmp_path / "global.duckdb"
    proc = run_python(
        f"""
        from opentelemetry import trace as otel_trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        import traceduck

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        otel_trace.set_tracer_provider(provider)
        traceduck.configure({str(path)!r})

        @traceduck.trace
        def handler():
            return "ok"

        handler()
        print(",".join(s.name for s in exporter.get_finished_spans()))
        """
    )
    assert proc.stdout.strip() == "handler"
    assert query_file(str(path), "SELECT name FROM traces") == [("handler",)]


# -- sampling: the application's sampler decides which traces are recorded -------------------


@traceduck.trace
def sampled_handler(i):
    span = otel_trace.get_current_span()
    traceduck.update_current_trace(user=f"user-{i}", tags={"n": str(i)}, client_request_id=f"req-{i}")
    child_step(i)
    return format(span.get_span_context().trace_id, "032x"), span.is_recording()


def test_a_trace_the_sampler_drops_runs_unchanged_records_nothing_and_logs_nothing(store_path, caplog):
    traceduck.configure(store_path, tracer_provider=TracerProvider(sampler=ALWAYS_OFF))
    with caplog.at_level(logging.DEBUG, logger="traceduck"):
        assert sampled_handler(1)[1] is False
        with traceduck.start_span("block", attributes={"k": 1}) as span:
            span.set_inputs({"q": 1})
            span.set_outputs("a")
            span.set_attribute("more", 2)
            traceduck.update_current_trace(tags={"t": "v"})
        assert list(count_up(3)) == [0, 1, 2]
        assert asyncio.run(fetch("k")) == {"key": "k"}
        with pytest.raises(Boom):
            _raise(Boom("still raised"))()
    assert stored_traces() == []
    assert traceduck.stats()["failed_spans"] == 0
    assert [r.getMessage() for r in caplog.records] == []  # no "could not start", no "outside a trace"


def test_a_ratio_sampler_stores_exactly_the_traces_it_keeps_and_each_whole(store_path):
    traceduck.configure(store_path, tracer_provider=TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5))))
    calls = [sampled_handler(i) for i in range(200)]
    kept = {trace_id for trace_id, recording in calls if recording}
    assert 0 < len(kept) < 200
    traces = stored_traces()
    assert {t.info.trace_id for t in traces} == kept
    for t in traces:
        i = t.info.tags["n"]
        assert sorted(s.name for s in t.data.spans) == ["child_step", "sampled_handler"]
        assert (t.info.client_request_id, t.info.metadata["trace.user"]) == (f"req-{i}", f"user-{i}")


def test_each_provider_gets_its_own_tracker_and_a_freed_one_leaves_none_behind(store_path):
    """configure() adds its root tracker once per provider. The record of which provider has one
    holds no provider alive and outlives none: keyed by id(), a provider created after another
    was freed could take its id and never get a tracker (its traces then lost their configured
    root attributes)."""
    import gc
    import weakref

    from traceduck import config
    from traceduck.roots import RootSpanTracker

    def trackers(provider: TracerProvider) -> int:
        return sum(isinstance(p, RootSpanTracker) for p in provider._active_span_processor._span_processors)

    others = len(config._trackers)  # providers of other tests still alive
    first = TracerProvider(shutdown_on_exit=False)
    traceduck.configure(store_path, tracer_provider=first, environment="prod")
    traceduck.configure(store_path, tracer_provider=first, environment="prod")  # again: still one tracker
    assert trackers(first) == 1 and first in config._trackers
    traceduck.shutdown()
    freed = weakref.ref(first)
    del first
    gc.collect()
    assert freed() is None and len(config._trackers) == others
    second = TracerProvider(shutdown_on_exit=False)
    second.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))  # not alone: attributes ride on roots
    traceduck.configure(store_path, tracer_provider=second, environment="prod")
    assert trackers(second) == 1 and len(config._trackers) == others + 1
    with second.get_tracer("t").start_as_current_span("root") as span:
        assert json.loads(span.attributes["traceduck.trace.default_metadata"]) == {"trace.environment": "prod"}
