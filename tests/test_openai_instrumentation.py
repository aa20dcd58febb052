"""``traceduck.openai``: the real ``openai`` client against a local OpenAI-compatible server.

The server (``openai_server.py``) runs in a thread on 127.0.0.1; spans go through the real OTel
SDK into a real DuckDB file per test. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import traceduck as td
import traceduck.openai as td_openai
from traceduck.llm import tokens

from _servers import ThreadedServer
from conftest import only_trace, query_file, stored_trace, stored_traces
from openai_server import ANSWERS, TOOL_CALLS, create_app

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Where was the 2020 World Series played?"}]  # fmt: skip


@pytest.fixture(scope="module")
def server():
    app = create_app()
    with ThreadedServer(app) as running:
        running.app = app
        yield running


@pytest.fixture
def make_client(server):
    """Clients of the test server; each is instrumented unless asked not to be."""
    made = []

    def make(kind=openai.OpenAI, traced: bool = True):
        client = kind(base_url=server.base_url + "/v1", api_key="test", max_retries=0)
        if traced:
            td_openai.instrument(client)
        made.append(client)
        return client

    yield make
    for client in made:
        td_openai.uninstrument(client)


@pytest.fixture
def client(configured, make_client):
    return make_client()


def _llm_span(trace):
    spans = [s for s in trace.data.spans if s.span_type == "LLM"]
    assert len(spans) == 1, [s.name for s in trace.data.spans]
    return spans[0]


# -- plain calls ---------------------------------------------------------------------------------


def test_call_returns_the_chat_completion_and_records_an_llm_span(client):
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert type(response) is ChatCompletion
    assert response.choices[0].message.content == ANSWERS[0]
    span = _llm_span(only_trace())
    assert span.name == "chat gpt-4o-mini"
    assert span.attributes["gen_ai.response.id"] == response.id
    assert span.outputs["choices"][0]["message"]["content"] == ANSWERS[0]


def test_span_inputs_hold_the_request_with_every_default(client):
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2)
    inputs = _llm_span(only_trace()).inputs
    assert inputs["messages"] == MESSAGES
    assert (inputs["temperature"], inputs["top_p"], inputs["n"], inputs["stream"]) == (0.2, 1, 1, False)


def test_span_carries_genai_usage_and_cost_attributes(client):
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attrs = _llm_span(only_trace()).attributes
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["gen_ai.usage.input_tokens"] == response.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == response.usage.completion_tokens
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["traceduck.llm.usage_estimated"] is False
    expected = (response.usage.prompt_tokens * 0.15 + response.usage.completion_tokens * 0.60) / 1e6
    assert attrs["traceduck.llm.cost_usd"] == pytest.approx(expected)


def test_call_outside_a_trace_is_a_root_whose_preview_is_the_answer(client):
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    trace = only_trace()
    assert _llm_span(trace).parent_id is None
    assert trace.info.response_preview == ANSWERS[0]


def test_call_inside_a_trace_is_a_child_and_leaves_the_trace_preview_alone(client):
    @td.trace
    def answer(question: str) -> str:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content.upper()

    answer("where?")
    trace = only_trace()
    root = [s for s in trace.data.spans if s.parent_id is None][0]
    assert _llm_span(trace).parent_id == root.span_id
    assert trace.info.response_preview == json.dumps(ANSWERS[0].upper())


def test_traceduck_keyword_arguments_reach_the_trace_not_openai(client, server):
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, traceduck_request_attributes={"user_id": 123},
        traceduck_response_attributes={"ab_test": "b"}, traceduck_tags={"env": "prod"},
        traceduck_session_id="session_123",
    )  # fmt: skip
    assert not any(k.startswith("traceduck") for k in server.app.state.requests[-1])
    trace = only_trace()
    assert (trace.info.metadata["user_id"], trace.info.metadata["ab_test"]) == (123, "b")
    assert trace.info.tags["env"] == "prod"
    assert trace.info.tags["trace.session"] == "session_123"
    assert _llm_span(trace).attributes["user_id"] == 123


def test_n3_call_keeps_every_choice_and_selects_the_first(client):
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    outputs = _llm_span(only_trace()).outputs
    assert [c["message"]["content"] for c in outputs["choices"]] == list(ANSWERS)
    assert (outputs["selected_choice_index"], outputs["selected_message"]["content"]) == (0, ANSWERS[0])


def test_select_choice_by_response_id_changes_outputs_and_preview(client):
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    result = td.select_choice(1, response_id=response.id)
    assert result["selected_message"]["content"] == ANSWERS[1]
    trace = stored_trace(result["trace_id"])
    assert _llm_span(trace).outputs["selected_message"]["content"] == ANSWERS[1]
    assert _llm_span(trace).attributes["traceduck.llm.selected_choice_index"] == 1
    assert trace.info.response_preview == ANSWERS[1]


def test_select_choice_by_trace_id_selects_in_that_trace(client):
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    trace_id = only_trace().info.trace_id
    td.select_choice(2, trace_id=trace_id)
    assert stored_trace(trace_id).info.response_preview == ANSWERS[2]


def test_select_choice_out_of_range_raises_value_error(client):
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    with pytest.raises(ValueError, match="selected_choice_index 3 is out of range"):
        td.select_choice(3, response_id=response.id)


def test_missing_provider_usage_is_estimated_and_marked(client):
    client.chat.completions.create(model="test-no-usage", messages=MESSAGES)
    attrs = _llm_span(only_trace()).attributes
    assert attrs["traceduck.llm.usage_estimated"] is True
    assert attrs["gen_ai.usage.input_tokens"] == tokens.estimate_input_tokens(MESSAGES)
    assert "traceduck.llm.cost_usd" not in attrs  # unknown model: no cost


def test_openai_error_propagates_unchanged_and_marks_the_span_error(client):
    with pytest.raises(openai.BadRequestError, match="test-fail is refused"):
        client.chat.completions.create(model="test-fail", messages=MESSAGES)
    span = _llm_span(only_trace())
    assert span.status == "ERROR"
    assert span.inputs["model"] == "test-fail"


def test_invalid_traceduck_arguments_never_break_the_call(client):
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, traceduck_tags={"k": object()})
    assert response.choices[0].message.content == ANSWERS[0]


def test_llm_calls_table_gets_model_tokens_and_cost(client, configured):
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    td.flush()
    rows = query_file(configured, "SELECT model, response_id, input_tokens, output_tokens, cost_usd > 0,"
                                  " usage_estimated, latency_ms > 0 FROM llm_calls")  # fmt: skip
    assert rows == [("gpt-4o-mini", response.id, response.usage.prompt_tokens, response.usage.completion_tokens,
                     True, False, True)]  # fmt: skip


def test_calls_are_searchable_by_model_and_token_counts(client):
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    client.chat.completions.create(model="test-no-usage", messages=MESSAGES)
    found = stored_traces(filter_string="span.attributes.`gen_ai.request.model` = 'gpt-4o-mini'"
                                        " AND span.attributes.`gen_ai.usage.output_tokens` > 10")  # fmt: skip
    assert [_llm_span(t).attributes["gen_ai.request.choice.count"] for t in found] == [3]


# -- streams -------------------------------------------------------------------------------------


def _stream_dumps(client, **kwargs):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **kwargs)
    chunks = list(stream)
    assert all(type(c) is ChatCompletionChunk for c in chunks)
    return [c.model_dump(exclude={"id", "created"}) for c in chunks]


def test_stream_yields_the_same_chunks_as_an_untraced_client(client, make_client):
    assert _stream_dumps(client, n=2) == _stream_dumps(make_client(traced=False), n=2)


def test_traced_stream_is_still_an_openai_stream(client):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert isinstance(stream, openai.Stream)
    stream.close()


def test_stream_chunks_arrive_before_the_server_finishes(client, server):
    server.app.state.gate.clear()
    stream = client.chat.completions.create(model="test-gated", messages=MESSAGES, stream=True)
    first = next(stream)  # the server holds the rest back until the gate opens
    server.app.state.gate.set()
    rest = list(stream)
    assert first.choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == ANSWERS[0]
    assert _llm_span(only_trace()).attributes["traceduck.llm.stream_complete"] is True


def test_consumed_stream_records_the_reassembled_answer_and_stream_facts(client):
    chunks = _stream_dumps(client, n=3)
    span = _llm_span(only_trace())
    assert [c["message"]["content"] for c in span.outputs["choices"]] == list(ANSWERS)
    assert span.attributes["traceduck.llm.chunk_count"] == len(chunks)
    assert span.attributes["traceduck.llm.stream"] is True
    assert span.attributes["traceduck.llm.time_to_first_token_ms"] >= 0


def test_stream_usage_from_include_usage_is_the_providers(client):
    _stream_dumps(client, stream_options={"include_usage": True})
    attrs = _llm_span(only_trace()).attributes
    assert attrs["traceduck.llm.usage_estimated"] is False
    assert attrs["gen_ai.usage.output_tokens"] == len(ANSWERS[0].split())


def test_stream_without_usage_is_estimated(client):
    _stream_dumps(client)
    attrs = _llm_span(only_trace()).attributes
    assert attrs["traceduck.llm.usage_estimated"] is True
    assert attrs["gen_ai.usage.output_tokens"] == tokens.estimate_output_tokens([{"content": ANSWERS[0]}])


def test_stream_tool_calls_split_across_chunks_are_reassembled(client):
    stream = client.chat.completions.create(model="test-tool", messages=MESSAGES, stream=True)
    for _ in stream:
        pass
    message = _llm_span(only_trace()).outputs["selected_message"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == list(TOOL_CALLS)


def test_stream_closed_early_ends_the_span_marked_incomplete(client):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    next(stream)
    next(stream)
    stream.close()
    span = _llm_span(only_trace())
    assert span.attributes["traceduck.llm.stream_complete"] is False
    assert span.attributes["traceduck.llm.chunk_count"] == 2


def test_stream_used_as_context_manager_ends_the_span(client):
    with client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True) as stream:
        next(stream)
    assert _llm_span(only_trace()).attributes["traceduck.llm.stream_complete"] is False


def test_truncated_stream_is_kept_and_marked_incomplete(client):
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model="test-truncated", messages=MESSAGES, stream=True))  # fmt: skip
    span = _llm_span(only_trace())
    assert span.outputs["selected_message"]["content"] == text == ANSWERS[0]
    assert span.outputs["stream"]["complete"] is False


def test_stream_traceduck_cannot_parse_still_reaches_the_caller(client):
    chunks = list(client.chat.completions.create(model="test-bad-chunk", messages=MESSAGES, stream=True))
    assert any(c.choices and c.choices[0].delta.content == 42 for c in chunks)
    assert _llm_span(only_trace()).name == "chat test-bad-chunk"  # the span still ended


# -- async ---------------------------------------------------------------------------------------


def test_async_call_is_traced(configured, make_client):
    client = make_client(openai.AsyncOpenAI)
    response = asyncio.run(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
    assert _llm_span(only_trace()).attributes["gen_ai.response.id"] == response.id


def test_async_stream_is_passed_through_and_traced(configured, make_client):
    client = make_client(openai.AsyncOpenAI)

    async def consume() -> list:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, n=2)
        assert isinstance(stream, openai.AsyncStream)
        return [chunk async for chunk in stream]

    chunks = asyncio.run(consume())
    assert all(type(c) is ChatCompletionChunk for c in chunks)
    outputs = _llm_span(only_trace()).outputs
    assert [c["message"]["content"] for c in outputs["choices"]] == list(ANSWERS[:2])


# -- instrument / uninstrument -------------------------------------------------------------------


def test_class_level_instrument_traces_new_clients_once_until_uninstrumented(configured, make_client):
    td_openai.instrument()
    td_openai.instrument()  # idempotent
    try:
        make_client(traced=False).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert len(stored_traces()) == 1
        assert len(only_trace().data.spans) == 1
    finally:
        td_openai.uninstrument()
    make_client(traced=False).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(stored_traces()) == 1


def test_instrumenting_a_client_twice_records_one_span(client):
    td_openai.instrument(client)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(only_trace().data.spans) == 1
