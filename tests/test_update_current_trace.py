"""update_current_trace(): trace-level fields from any depth, merged, validated, never mixed up."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from types import MappingProxyType

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context

import traceduck
from traceduck import current_trace
from traceduck.metadata import MAX_KEY_CHARS, MAX_VALUE_CHARS

from conftest import only_trace, query_file, stored_traces


@pytest.fixture(autouse=True)
def _configured_unless_no_store(request, store_path, provider):
    if "no_store" not in request.keywords:
        traceduck.configure(store_path, tracer_provider=provider)


@pytest.fixture
def raw_span():
    """An active span of a plain OTel SDK provider (no store): enough for input validation."""
    with TracerProvider().get_tracer("plain").start_as_current_span("root") as span:
        yield span


update = traceduck.update_current_trace


def in_trace(*updates: dict) -> traceduck.Trace:
    """Run each update from a child span of a fresh trace; return the stored trace."""
    with traceduck.start_span("root"):
        with traceduck.start_span("child"):
            for kwargs in updates:
                update(**kwargs)
    return only_trace()


def explicit_tags(trace: traceduck.Trace) -> dict:
    """The trace's tags without those coming from the OTel Resource."""
    return {k: v for k, v in trace.info.tags.items() if k not in ("service.name", "service.version")}


# -- where updates land ----------------------------------------------------------------------


def test_update_from_nested_depth_lands_on_the_trace():
    @traceduck.trace
    def leaf():
        update(tags={"task": "chat"}, client_request_id="req-1")

    @traceduck.trace
    def middle():
        leaf()

    @traceduck.trace
    def top():
        middle()

    top()
    trace = only_trace()
    assert trace.info.tags["task"] == "chat"
    assert trace.info.client_request_id == "req-1"


def test_update_from_a_child_is_carried_by_the_root_span_not_the_child(store_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traceduck.configure(store_path, tracer_provider=provider)
    in_trace({"tags": {"task": "chat"}})
    carriers = {s.name: "traceduck.trace" in (s.attributes or {}) for s in exporter.get_finished_spans()}
    assert carriers == {"root": True, "child": False}


def test_update_inside_a_raw_otel_root_lands_on_that_trace(provider):
    with provider.get_tracer("web-framework").start_as_current_span("GET /chat"):
        with traceduck.start_span("handler"):
            update(user="alice", tags={"task": "chat"})
    trace = only_trace()
    assert trace.info.name == "GET /chat"
    assert trace.info.tags["task"] == "chat"
    assert trace.info.metadata["trace.user"] == "alice"


def test_update_inside_a_traced_generator_lands_on_its_trace():
    @traceduck.trace
    def stream():
        update(tags={"streamed": "yes"})
        yield 1
        update(metadata={"chunks": 2})
        yield 2

    assert list(stream()) == [1, 2]
    trace = only_trace()
    assert trace.info.tags["streamed"] == "yes"
    assert trace.info.metadata["chunks"] == 2


def test_update_inside_a_traced_async_generator_lands_on_its_trace():
    @traceduck.trace
    async def stream():
        update(tags={"streamed": "yes"})
        yield 1
        await asyncio.sleep(0)
        update(user="alice")
        yield 2

    async def consume():
        return [i async for i in stream()]

    assert asyncio.run(consume()) == [1, 2]
    trace = only_trace()
    assert trace.info.tags["streamed"] == "yes"
    assert trace.info.metadata["trace.user"] == "alice"


def test_update_after_an_earlier_trace_does_not_leak_into_the_next_one():
    in_trace({"tags": {"first": "yes"}})
    with traceduck.start_span("second"):
        pass
    second = [t for t in stored_traces() if t.info.name == "second"][0]
    assert "first" not in second.info.tags


# -- merging ---------------------------------------------------------------------------------


def test_tags_merge_across_calls_latest_write_wins():
    trace = in_trace({"tags": {"a": "1", "b": "1"}}, {"tags": {"b": "2", "c": "3"}})
    assert explicit_tags(trace) == {"a": "1", "b": "2", "c": "3"}


def test_metadata_merges_across_calls_latest_write_wins():
    trace = in_trace({"metadata": {"a": "1", "b": "1"}}, {"metadata": {"b": "2", "c": 3}})
    assert {k: trace.info.metadata[k] for k in "abc"} == {"a": "1", "b": "2", "c": 3}


def test_client_request_id_latest_write_wins():
    trace = in_trace({"client_request_id": "first"}, {"client_request_id": "second"})
    assert trace.info.client_request_id == "second"


def test_tag_written_after_metadata_of_the_same_key_wins():
    trace = in_trace({"metadata": {"k": "from-metadata"}}, {"tags": {"k": "from-tag"}})
    assert trace.info.tags["k"] == "from-tag"


def test_metadata_written_after_a_tag_of_the_same_key_wins():
    trace = in_trace({"tags": {"k": "from-tag"}}, {"metadata": {"k": "from-metadata"}})
    assert trace.info.tags["k"] == "from-metadata"


# -- identity shorthands and aliases ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "key"),
    [("user", "trace.user"), ("session_id", "trace.session"), ("environment", "trace.environment")],
)
def test_identity_shorthand_sets_reserved_metadata_and_tag(argument, key):
    trace = in_trace({argument: "value-1"})
    assert trace.info.metadata[key] == "value-1"
    assert trace.info.tags[key] == "value-1"


def test_identity_shorthands_fill_the_identity_columns(store_path):
    in_trace({"user": "alice", "session_id": "s-1", "environment": "staging"})
    rows = query_file(store_path, "SELECT trace_user, session_id, environment FROM traces")
    assert rows == [("alice", "s-1", "staging")]


def test_identity_shorthands_are_searchable():
    in_trace({"user": "alice", "session_id": "s-1"})
    with traceduck.start_span("someone-else"):
        update(user="bob")
    found = traceduck.search_traces("tags.`trace.user` = 'alice'", return_type="list")
    assert [t.info.name for t in found] == ["root"]


ALIASES = [
    ("mlflow.trace.user", "trace.user"),
    ("user.id", "trace.user"),
    ("enduser.id", "trace.user"),
    ("mlflow.trace.session", "trace.session"),
    ("session.id", "trace.session"),
    ("gen_ai.conversation.id", "trace.session"),
]


@pytest.mark.parametrize(("alias", "canonical"), ALIASES)
def test_identity_alias_in_metadata_is_stored_under_the_reserved_key(alias, canonical):
    trace = in_trace({"metadata": {alias: "who-1"}})
    assert trace.info.metadata.get(canonical) == "who-1"
    assert alias not in trace.info.metadata
    assert trace.info.tags.get(canonical) == "who-1"


@pytest.mark.parametrize(("alias", "canonical"), ALIASES)
def test_identity_alias_in_tags_is_stored_under_the_reserved_key(alias, canonical):
    trace = in_trace({"tags": {alias: "who-2"}})
    assert trace.info.tags.get(canonical) == "who-2"
    assert alias not in trace.info.tags


@pytest.mark.parametrize(("alias", "column"), [("enduser.id", "trace_user"), ("session.id", "session_id")])
def test_identity_alias_fills_the_identity_column(store_path, alias, column):
    in_trace({"tags": {alias: "who-3"}})
    assert query_file(store_path, f"SELECT {column} FROM traces") == [("who-3",)]


def test_otel_identity_attribute_on_a_raw_root_becomes_trace_user(provider):
    with provider.get_tracer("web-framework").start_as_current_span("GET /") as span:
        span.set_attribute("enduser.id", "carol")
    assert only_trace().info.metadata["trace.user"] == "carol"


# -- auto-tags and typed values --------------------------------------------------------------


def test_every_metadata_key_becomes_a_tag_with_its_string_form():
    metadata = {"text": "text", "yes": True, "no": False, "five": 5, "minus": -2, "quarter": 0.25, "none": None}
    trace = in_trace({"metadata": metadata})
    assert explicit_tags(trace) == {
        "text": "text", "yes": "true", "no": "false", "five": "5", "minus": "-2", "quarter": "0.25", "none": None,
    }  # fmt: skip


def test_every_metadata_key_becomes_a_tag_alongside_typed_values():
    metadata = {"yes": True, "five": 5, "none": None, "label": {"type": "string", "value": "v"}}
    assert explicit_tags(in_trace({"metadata": metadata})) == {"yes": "true", "five": "5", "none": None, "label": "v"}


def test_none_metadata_value_is_a_bare_tag(store_path):
    in_trace({"metadata": {"flagged": None}})
    rows = query_file(store_path, "SELECT map_contains(tags, 'flagged'), tags['flagged'] FROM traces")
    assert rows == [(True, None)]


def test_typed_url_metadata_is_kept_typed_and_tagged_with_its_url():
    link = {"type": "url", "url": "https://example.com/run/1", "text": "run 1"}
    trace = in_trace({"metadata": {"run": link}})
    assert trace.info.metadata["run"] == link
    assert trace.info.tags["run"] == "https://example.com/run/1"


def test_typed_string_metadata_is_kept_typed_and_tagged_with_its_value():
    value = {"type": "string", "value": "v-1"}
    trace = in_trace({"metadata": {"label": value}})
    assert trace.info.metadata["label"] == value
    assert trace.info.tags["label"] == "v-1"


def test_metadata_map_column_holds_string_forms(store_path):
    in_trace({"metadata": {"n": 5, "ok": True, "run": {"type": "url", "url": "https://x", "text": "X"}}})
    (metadata,) = query_file(store_path, "SELECT metadata FROM traces")[0]
    assert {k: metadata[k] for k in ("n", "ok", "run")} == {"n": "5", "ok": "true", "run": "https://x"}


@pytest.mark.parametrize("number", [1e20, 1.5e-7, 1e16])
def test_number_string_form_does_not_depend_on_typed_values_beside_it(number):
    plain = in_trace({"metadata": {"x": number}}).info.tags["x"]
    with traceduck.start_span("with-typed"):
        update(metadata={"x": number, "label": {"type": "string", "value": "v"}})
    with_typed = [t for t in stored_traces() if t.info.name == "with-typed"][0].info.tags["x"]
    assert with_typed == plain
    assert json.loads(with_typed) == number


def test_special_characters_in_tags_and_metadata_are_stored_as_they_are():
    text = 'say "hi"\nback\\slash ünïcode 🦆'
    trace = in_trace({"tags": {"t": text}, "metadata": {"m": text}})
    assert trace.info.tags["t"] == text
    assert trace.info.tags["m"] == text
    assert trace.info.metadata["m"] == text


def test_unencodable_metadata_value_does_not_lose_the_other_trace_fields():
    with traceduck.start_span("root"):
        try:
            update(metadata={"bad": "lone \ud800 surrogate"})
        except ValueError as exc:  # rejecting it is fine too, if the error names the key
            assert "bad" in str(exc)
        update(tags={"good": "yes"}, client_request_id="req-1", user="alice")
    info = only_trace().info
    assert (info.tags.get("good"), info.client_request_id) == ("yes", "req-1")
    assert info.metadata.get("trace.user") == "alice"


# -- validation ------------------------------------------------------------------------------


INVALID = [
    ("url_missing_text", {"metadata": {"bad_link": {"type": "url", "url": "https://x"}}}, ValueError, "bad_link"),
    ("unknown_type", {"metadata": {"bad_kind": {"type": "image", "value": "x"}}}, ValueError, "bad_kind"),
    ("extra_field", {"metadata": {"bad_extra": {"type": "string", "value": "v", "x": "y"}}}, ValueError,
     "bad_extra"),
    ("typed_field_not_str", {"metadata": {"bad_field": {"type": "string", "value": 3}}}, TypeError, "bad_field"),
    ("metadata_key_not_str", {"metadata": {42: "v"}}, TypeError, "42"),
    ("tag_key_not_str", {"tags": {("a", "b"): "v"}}, TypeError, "('a', 'b')"),
    ("metadata_list_value", {"metadata": {"bad_list": [1, 2]}}, TypeError, "bad_list"),
    ("tag_dict_value", {"tags": {"bad_tag": {"a": 1}}}, TypeError, "bad_tag"),
    ("metadata_nan", {"metadata": {"bad_nan": float("nan")}}, ValueError, "bad_nan"),
    ("key_too_long", {"metadata": {"k" * (MAX_KEY_CHARS + 1): "v"}}, ValueError, "kkkkkkkkkk"),
    ("metadata_value_too_long", {"metadata": {"long_value": "v" * (MAX_VALUE_CHARS + 1)}}, ValueError,
     "long_value"),
    ("tag_value_too_long", {"tags": {"long_tag": "v" * (MAX_VALUE_CHARS + 1)}}, ValueError, "long_tag"),
    ("user_not_str", {"user": 42}, TypeError, "user"),
    ("client_request_id_too_long", {"client_request_id": "r" * (MAX_VALUE_CHARS + 1)}, ValueError,
     "client_request_id"),
    ("unknown_state", {"state": "DONE"}, ValueError, "state"),
]  # fmt: skip


@pytest.mark.no_store
@pytest.mark.parametrize(("kwargs", "error", "named"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_input_raises_an_error_naming_the_key(raw_span, kwargs, error, named):
    with pytest.raises(error) as info:
        update(**kwargs)
    assert named in str(info.value)


def test_invalid_update_records_nothing_of_that_call():
    with traceduck.start_span("root"):
        with pytest.raises(ValueError):
            update(tags={"good": "yes"}, metadata={"bad": {"type": "nope"}})
    assert "good" not in only_trace().info.tags


@pytest.mark.no_store
@pytest.mark.parametrize("kwargs", [{"tags": ["a", "b"]}, {"metadata": "not a mapping"}])
def test_tags_and_metadata_must_be_mappings(raw_span, kwargs):
    with pytest.raises(TypeError):
        update(**kwargs)


def test_tags_and_metadata_may_be_any_mapping():
    with traceduck.start_span("root"):
        update(tags=MappingProxyType({"tier": "pro"}), metadata=OrderedDict([("plan", "team"), ("seats", 3)]))
    trace = only_trace()
    assert explicit_tags(trace)["tier"] == "pro"
    assert trace.info.metadata["plan"] == "team" and trace.info.metadata["seats"] == 3


# -- outside a trace -------------------------------------------------------------------------


@pytest.mark.no_store
def test_update_outside_a_trace_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(current_trace, "_warned_outside_trace", False)
    with caplog.at_level(logging.WARNING, logger="traceduck"):
        update(tags={"lost": "1"})
        update(tags={"lost": "2"})
    warnings = [r for r in caplog.records if "outside" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


def test_update_outside_a_trace_does_not_raise_or_record(monkeypatch):
    monkeypatch.setattr(current_trace, "_warned_outside_trace", False)
    update(tags={"lost": "1"}, user="ghost")
    with traceduck.start_span("later"):
        pass
    trace = only_trace()
    assert "lost" not in trace.info.tags
    assert "trace.user" not in trace.info.metadata


def test_a_value_in_the_context_that_is_no_span_counts_as_outside_a_trace(caplog, monkeypatch):
    # the context's span key holding something else (another library's bug) must not break the app
    monkeypatch.setattr(current_trace, "_warned_outside_trace", False)
    token = otel_context.attach(set_span_in_context("not a span"))  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.WARNING, logger="traceduck"):
            update(tags={"lost": "1"})
    finally:
        otel_context.detach(token)
    assert any("outside" in r.getMessage() for r in caplog.records)
    with traceduck.start_span("later"):
        update(tags={"kept": "1"})
    assert "lost" not in only_trace().info.tags and only_trace().info.tags["kept"] == "1"


@pytest.mark.no_store
def test_update_outside_a_trace_still_validates():
    with pytest.raises(TypeError):
        update(metadata={"bad": object()})


# -- client request id, previews, state ------------------------------------------------------


def test_client_request_id_is_stored_and_searchable():
    in_trace({"client_request_id": "req-42"})
    found = traceduck.search_traces("client_request_id = 'req-42'", return_type="list")
    assert [t.info.client_request_id for t in found] == ["req-42"]


@traceduck.trace
def echo(message):
    return {"reply": message}


def test_default_previews_are_the_root_inputs_and_outputs():
    echo("hi")
    trace = only_trace()
    root = trace.data.spans[0]
    assert json.loads(trace.info.request_preview) == root.inputs == {"message": "hi"}
    assert json.loads(trace.info.response_preview) == root.outputs == {"reply": "hi"}


def test_default_previews_are_truncated_to_1000_characters():
    echo("m" * 5000)
    info = only_trace().info
    assert len(info.request_preview) == 1000
    assert len(info.response_preview) == 1000
    assert info.request_preview.startswith("{") and '"message"' in info.request_preview
    assert info.request_preview.endswith("mmm...")
    assert info.response_preview.endswith("mmm...")


def test_explicit_previews_win_over_the_defaults():
    @traceduck.trace
    def handler(message):
        update(request_preview="user asked", response_preview="bot answered")
        return message * 2

    handler("x")
    info = only_trace().info
    assert (info.request_preview, info.response_preview) == ("user asked", "bot answered")


def test_state_error_marks_a_successful_trace_error():
    trace = in_trace({"state": "ERROR"})
    assert trace.info.state == "ERROR"
    assert all(s.status != "ERROR" for s in trace.data.spans)


def test_state_is_case_insensitive():
    assert in_trace({"state": "error"}).info.state == "ERROR"


# -- OTel Resource and configure() defaults --------------------------------------------------


def _configure_with_resource(store_path, attributes, **kwargs):
    provider = TracerProvider(resource=Resource.create(attributes))
    traceduck.configure(store_path, tracer_provider=provider, **kwargs)


def test_resource_deployment_environment_becomes_trace_environment(store_path):
    _configure_with_resource(store_path, {"deployment.environment.name": "prod"})
    trace = in_trace()
    assert trace.info.metadata["trace.environment"] == "prod"
    assert trace.info.tags["trace.environment"] == "prod"


def test_resource_environment_fills_the_environment_column(store_path):
    _configure_with_resource(store_path, {"deployment.environment.name": "prod"})
    in_trace()
    assert query_file(store_path, "SELECT environment FROM traces") == [("prod",)]


def test_resource_service_name_and_version_become_metadata(store_path):
    _configure_with_resource(store_path, {"service.name": "chat-api", "service.version": "1.4.2"})
    metadata = in_trace().info.metadata
    assert (metadata["service.name"], metadata["service.version"]) == ("chat-api", "1.4.2")


def test_default_unknown_service_name_is_not_metadata(store_path):
    _configure_with_resource(store_path, {})
    assert "service.name" not in in_trace().info.metadata


def test_explicit_values_win_over_the_resource(store_path):
    _configure_with_resource(store_path, {"deployment.environment.name": "prod", "service.name": "chat-api"})
    trace = in_trace({"environment": "dev", "metadata": {"service.name": "override"}})
    assert trace.info.metadata["trace.environment"] == "dev"
    assert trace.info.metadata["service.name"] == "override"
    assert trace.info.tags["trace.environment"] == "dev"


def test_configure_service_name_and_environment_fill_metadata_with_an_existing_provider(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider, service_name="chat-api", environment="prod")
    trace = in_trace()
    assert trace.info.metadata["service.name"] == "chat-api"
    assert trace.info.metadata["trace.environment"] == "prod"
    assert trace.info.tags["trace.environment"] == "prod"


def test_explicit_environment_wins_over_configure_environment(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider, environment="prod")
    assert in_trace({"environment": "dev"}).info.metadata["trace.environment"] == "dev"


# -- concurrency -----------------------------------------------------------------------------


@traceduck.trace
def _request_leaf(worker, i):
    update(client_request_id=f"req-{worker}-{i}", metadata={"worker": str(worker), "i": i})
    update(user=f"user-{worker}", session_id=f"session-{worker}-{i}", tags={"slot": f"{worker}:{i}"})
    return traceduck.get_current_trace_id()


@traceduck.trace
def _request(worker, i):
    return _request_leaf(worker, i)


def _assert_each_trace_has_its_own_fields(expected: dict[str, tuple[int, int]]):
    traces = stored_traces()
    assert len(traces) == len(expected)
    for trace in traces:
        worker, i = expected[trace.info.trace_id]
        info = trace.info
        assert info.client_request_id == f"req-{worker}-{i}"
        assert info.metadata["trace.user"] == f"user-{worker}"
        assert info.metadata["trace.session"] == f"session-{worker}-{i}"
        assert info.metadata["worker"] == str(worker)
        assert info.metadata["i"] == i
        assert info.tags["slot"] == f"{worker}:{i}"
        assert len(trace.data.spans) == 2


def test_parallel_threads_never_mix_trace_fields():
    expected: dict[str, tuple[int, int]] = {}
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(w):
        start.wait()
        for i in range(50):
            trace_id = _request(w, i)
            with lock:
                expected[trace_id] = (w, i)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(expected) == 400
    _assert_each_trace_has_its_own_fields(expected)


def test_concurrent_asyncio_tasks_never_mix_trace_fields():
    @traceduck.trace
    async def leaf(task, i):
        update(client_request_id=f"req-{task}-{i}")
        await asyncio.sleep(0)
        update(metadata={"worker": str(task), "i": i})
        await asyncio.sleep(0)
        update(user=f"user-{task}", session_id=f"session-{task}-{i}")
        await asyncio.sleep(0)
        update(tags={"slot": f"{task}:{i}"})
        return traceduck.get_current_trace_id()

    @traceduck.trace
    async def handle(task, i):
        await asyncio.sleep(0)
        return await leaf(task, i)

    async def main():
        ids = await asyncio.gather(*(handle(t, 0) for t in range(50)))
        return {trace_id: (t, 0) for t, trace_id in enumerate(ids)}

    expected = asyncio.run(main())
    assert len(expected) == 50
    _assert_each_trace_has_its_own_fields(expected)
