"""Streamed chat completions: the seed's three forms, reassembly, usage, truncation and garbage.

The seed's stream example (``tests/fixtures/gantry_stream.txt``) is used verbatim.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traceduck.llm import normalize_chat
from traceduck.llm.streaming import parse_stream

from openai_server import seed_event_strings, seed_json, seed_text

REQUEST = seed_json("gantry_openai_request.txt")
SEED_STREAM = seed_text("gantry_stream.txt")
SEED_ANSWER = "The 2020 World Series was played at Globe Life Field in Arlington, Texas."


def _chunk(choices: list, **extra) -> dict:
    return {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": choices,
            **extra}  # fmt: skip


def _delta(index: int, finish: str | None = None, **delta) -> dict:
    return {"index": index, "delta": delta, "finish_reason": finish}


def _events(chunks: list[dict], done: bool = True) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ("data: [DONE]\n\n" if done else "")


# -- the seed's three forms ----------------------------------------------------------------------


def test_seed_stream_as_one_string_reassembles_the_answer():
    response = normalize_chat(REQUEST, SEED_STREAM).response
    assert response["choices"] == [{"index": 0, "message": {"role": "assistant", "content": SEED_ANSWER},
                                    "finish_reason": "stop"}]  # fmt: skip
    assert (response["id"], response["model"]) == ("chatcmpl-70d5QwJAPWrAcr9WxnG0YJD4FReGj", "gpt-3.5-turbo-0301")
    assert response["stream"]["complete"] is True
    assert response["stream"]["chunks"] == 19


def test_seed_stream_as_a_list_of_event_strings_equals_the_string_form():
    assert normalize_chat(REQUEST, seed_event_strings()).response == normalize_chat(REQUEST, SEED_STREAM).response


def test_seed_stream_as_a_list_of_chunk_dicts_equals_the_string_form():
    chunks = [json.loads(e[len("data: "):]) for e in seed_event_strings() if e != "data: [DONE]"]
    assert normalize_chat(REQUEST, chunks).response == normalize_chat(REQUEST, SEED_STREAM).response


def test_seed_event_strings_example_is_read_verbatim():
    events = re.findall(r"'(data: .*?)'", seed_text("gantry_stream_events_list.txt"))
    response = normalize_chat(REQUEST, events).response
    assert response["selected_message"]["content"] == "The"
    assert response["stream"]["complete"] is True  # it ends with data: [DONE]


def test_stream_with_crlf_line_endings_parses_like_the_original():
    crlf = SEED_STREAM.replace("\n", "\r\n")
    assert normalize_chat(REQUEST, crlf).response == normalize_chat(REQUEST, SEED_STREAM).response


def test_data_lines_without_blank_lines_between_them_are_separate_events():
    squeezed = SEED_STREAM.replace("\n\n", "\n")
    assert normalize_chat(REQUEST, squeezed).response["selected_message"]["content"] == SEED_ANSWER


def test_stream_response_usage_is_estimated_when_no_chunk_carries_it():
    log = normalize_chat(REQUEST, SEED_STREAM)
    assert log.usage_estimated is True
    assert log.output_tokens == -(-len(SEED_ANSWER) // 4)


# -- completeness --------------------------------------------------------------------------------


def test_stream_without_done_is_kept_and_marked_incomplete():
    log = normalize_chat(REQUEST, SEED_STREAM.replace("data: [DONE]", ""))
    assert log.response["selected_message"]["content"] == SEED_ANSWER
    assert log.response["stream"]["complete"] is False
    assert log.span_attributes()["traceduck.llm.stream_complete"] is False


def test_truncated_chunk_list_without_finish_reason_is_incomplete():
    chunks = [_chunk([_delta(0, role="assistant")]), _chunk([_delta(0, content="Glo")])]
    response = normalize_chat(REQUEST, chunks).response
    assert (response["selected_message"]["content"], response["stream"]["complete"]) == ("Glo", False)


def test_chunks_after_done_are_ignored():
    extra = "data: " + json.dumps(_chunk([_delta(0, content=" EXTRA")])) + "\n\n"
    log = normalize_chat(REQUEST, SEED_STREAM + extra)
    assert log.response["selected_message"]["content"] == SEED_ANSWER


def test_error_sent_mid_stream_is_recorded_and_marks_the_stream_incomplete():
    text = _events([_chunk([_delta(0, role="assistant", content="Glo")]), {"error": {"message": "overloaded"}}])
    response = normalize_chat(REQUEST, text).response
    assert response["error"] == {"message": "overloaded"}
    assert response["stream"]["complete"] is False


# -- choices, tool calls, usage ------------------------------------------------------------------


def test_interleaved_n3_stream_is_reassembled_per_choice_with_selected_index_1():
    answers = ["It was played at Globe Life Field.", "The 2020 World Series was played at Globe Life Field.",
               "Globe Life Field."]  # fmt: skip
    chunks = [_chunk([_delta(i, role="assistant")]) for i in range(3)]
    for step in range(0, 60, 5):
        chunks += [_chunk([_delta(i, content=a[step:step + 5])]) for i, a in enumerate(answers) if a[step:step + 5]]
    chunks += [_chunk([_delta(i, "stop")]) for i in range(3)]
    log = normalize_chat({**REQUEST, "n": 3}, _events(chunks), selected_choice_index=1)
    assert [c["message"]["content"] for c in log.response["choices"]] == answers
    assert log.response_preview == answers[1]
    assert log.span_attributes()["gen_ai.response.finish_reasons"] == ["stop", "stop", "stop"]


def test_tool_calls_split_across_chunks_are_reassembled_with_their_arguments():
    calls = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_", "arguments": ""}},
             {"index": 1, "id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": '{"q'}}]  # fmt: skip
    chunks = [
        _chunk([_delta(0, role="assistant", content=None, tool_calls=calls)]),
        _chunk([_delta(0, tool_calls=[{"index": 0, "function": {"name": "weather", "arguments": '{"city": "Arl'}}])]),
        _chunk([_delta(0, tool_calls=[{"index": 1, "function": {"arguments": '": 1}'}}])]),
        _chunk([_delta(0, tool_calls=[{"index": 0, "function": {"arguments": 'ington"}'}}])]),
        _chunk([_delta(0, "tool_calls")]),
    ]
    message = normalize_chat(REQUEST, _events(chunks)).response["selected_message"]
    assert message["content"] is None
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == [
        ("call_1", "get_weather", {"city": "Arlington"}), ("call_2", "lookup", {"q": 1})]  # fmt: skip


def test_usage_chunk_of_include_usage_is_the_providers_usage():
    usage = {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53}
    chunks = [_chunk([_delta(0, role="assistant", content="Globe")], usage=None),
              _chunk([_delta(0, "stop")], usage=None), _chunk([], usage=usage)]  # fmt: skip
    log = normalize_chat(REQUEST, _events(chunks))
    assert (log.input_tokens, log.output_tokens, log.usage_estimated) == (50, 3, False)
    assert log.response["stream"]["complete"] is True


def test_time_to_first_token_and_chunk_count_become_span_attributes():
    attrs = normalize_chat(REQUEST, SEED_STREAM, latency_ms=900, ttft_ms=120).span_attributes()
    assert (attrs["traceduck.llm.time_to_first_token_ms"], attrs["traceduck.llm.chunk_count"]) == (120.0, 19)


# -- garbage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("response, message", [
    ("data: {not json\n\ndata: [DONE]\n\n", r"event at line 1\): the event data is not JSON: '\{not json'"),
    ("hello world\n\n", r"line 1 is not a server-sent event"),
    ("data: [1, 2]\n\n", r"a chunk must be a JSON object, not list"),
    (["data: {}", 5], r"response\[1\]: a stream item must be an event string or a chunk object, not int"),
    (["data: nope"], r"response\[0\]: the event data is not JSON"),
    ("", r"the stream has no chunks"),
    (["data: [DONE]"], r"the stream has no chunks"),
    ([], r"the stream has no chunks"),
    (['data: {"hello": "world"}'], r"no chunk has 'choices'"),
])  # fmt: skip
def test_garbage_stream_raises_a_value_error_saying_where(response, message):
    with pytest.raises(ValueError, match=message):
        normalize_chat(REQUEST, response)


def test_wrongly_typed_delta_field_names_its_path():
    with pytest.raises(ValueError, match=r"response\[0\].choices\[0\]: delta.content must be str, not int"):
        normalize_chat(REQUEST, [_chunk([_delta(0, content=5)])])


def test_sse_comments_and_other_fields_are_ignored():
    text = ": keep-alive\nevent: message\nid: 7\n" + SEED_STREAM
    assert normalize_chat(REQUEST, text).response["selected_message"]["content"] == SEED_ANSWER


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('data: {}[]"DONE,\n\r0x'))) | st.text())
def test_any_text_either_parses_or_raises_value_error(text):
    try:
        parse_stream(text)
    except ValueError:
        pass
