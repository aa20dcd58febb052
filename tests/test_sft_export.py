"""SFT dataset export: each output line validates against OpenAI's chat fine-tuning format.

LLM calls are stored the way the collector's logging API stores them (``build_trace`` on real
request/response bodies, normalised), feedback with ``log_feedback``; the export reads a real
DuckDB file.
"""

from __future__ import annotations

import json
import uuid

import pytest

import traceduck as td
from collector.chat_api import ChatLogIn, build_trace
from traceduck.store.duckdb_store import open_store

from _collector import traceduck_cli

GOOD = "feedback.is_correct = 'true'"
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a place",
                                                 "parameters": {"type": "object", "properties": {
                                                     "location": {"type": "string"}}, "required": ["location"]}}}  # fmt: skip


def validate_example(example: dict) -> None:
    """One line of OpenAI chat fine-tuning JSONL (messages, optional tools), strictly."""
    assert set(example) <= {"messages", "tools"}, example.keys()
    messages = example["messages"]
    assert isinstance(messages, list) and len(messages) >= 2
    for message in messages:
        assert message["role"] in ("system", "user", "assistant", "tool")
        assert set(message) <= {"role", "content", "name", "tool_calls", "tool_call_id", "weight"}, message
        if message["content"] is None:
            assert message["role"] == "assistant" and message.get("tool_calls"), message
        else:
            assert isinstance(message["content"], str)
        for call in message.get("tool_calls", []):
            assert message["role"] == "assistant"
            assert set(call) == {"id", "type", "function"} and call["type"] == "function"
            assert isinstance(call["id"], str) and isinstance(call["function"]["name"], str)
            json.loads(call["function"]["arguments"])  # arguments are a JSON string
        if message["role"] == "tool":
            assert isinstance(message["tool_call_id"], str)
    assert messages[-1]["role"] == "assistant"
    for tool in example.get("tools", []):
        assert tool["type"] == "function" and set(tool) == {"type", "function"}
        assert isinstance(tool["function"]["name"], str) and isinstance(tool["function"]["parameters"], dict)


def validate_file(path) -> list[dict]:
    examples = []
    with open(path) as fh:
        for line in fh:
            example = json.loads(line)
            validate_example(example)
            examples.append(example)
    return examples


@pytest.fixture
def store(configured):
    """The configured store (traceduck writes its spans there too)."""
    return open_store(configured)


def log_call(store, messages: list[dict], answers: list[dict] | list[str], *, selected: int = 0,
             tools: list | None = None, good: bool | None = True, project: str = "default") -> str:  # fmt: skip
    """A chat completion logged as the collector logs it; feedback is_correct = ``good``."""
    request = {"model": "gpt-4o", "messages": messages, **({"tools": tools} if tools else {})}
    choices = [{"index": i, "finish_reason": "stop",
                "message": a if isinstance(a, dict) else {"role": "assistant", "content": a}}
               for i, a in enumerate(answers)]  # fmt: skip
    response = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": 1700000000,
                "model": "gpt-4o", "choices": choices}  # fmt: skip
    raw, trace_id, _ = build_trace(ChatLogIn(application=project, request=request, response=response,
                                             selected_choice_index=selected), project)  # fmt: skip
    store.write(raw)
    if good is not None:
        td.log_feedback(trace_id=trace_id, name="is_correct", value=good, store=store.for_project(project))
    return trace_id


def ask(question: str) -> list[dict]:
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": question}]


def test_export_writes_valid_fine_tuning_jsonl_of_the_good_traces(store, tmp_path):
    for i in range(3):
        log_call(store, ask(f"question {i}"), [f"answer {i}"])
    log_call(store, ask("bad question"), ["wrong answer"], good=False)
    with td.start_span("no llm here"):
        td.update_current_trace(client_request_id="plain-0")
    assert td.flush()
    td.log_feedback(client_request_id="plain-0", name="is_correct", value=True, store=store)
    result = td.export_sft(GOOD, tmp_path / "data.jsonl", store=store)
    examples = validate_file(tmp_path / "data.jsonl")
    assert [e["messages"][-1]["content"] for e in examples] == ["answer 0", "answer 1", "answer 2"]
    assert examples[0]["messages"] == [*ask("question 0"), {"role": "assistant", "content": "answer 0"}]
    manifest = json.loads((tmp_path / "data.manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["filter"] == GOOD and manifest["counts"]["matched"] == 4 and manifest["counts"]["exported"] == 3
    assert manifest["skipped"] == {"no_llm_call": 1}
    assert manifest["format"] == "openai-chat-fine-tuning" and manifest["created_at"]


def test_the_selected_choice_is_the_assistant_turn(store, tmp_path):
    log_call(store, ask("pick one"), ["first", "second", "third"], selected=2)
    (example,) = td.export_sft(GOOD, store=store).train
    validate_example(example)
    assert example["messages"][-1] == {"role": "assistant", "content": "third"}


def test_tools_and_tool_calls_are_exported(store, tmp_path):
    history = [*ask("Weather in Arlington?"),
               {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                   "name": "get_weather", "arguments": '{"location": "Arlington, TX"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 75}'}]  # fmt: skip
    log_call(store, history, ["It is 75°F in Arlington."], tools=[WEATHER_TOOL])
    call_again = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Dallas"}'}}]}
    log_call(store, ask("And Dallas?"), [call_again], tools=[WEATHER_TOOL])
    validated = validate_file(td.export_sft(GOOD, tmp_path / "tools.jsonl", store=store).paths["train"])
    assert [len(e["messages"]) for e in validated] == [5, 3]
    assert validated[0]["tools"] == [WEATHER_TOOL] and validated[0]["messages"][3]["tool_call_id"] == "call_1"
    assert validated[1]["messages"][-1]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_identical_conversations_are_exported_once(store):
    for _ in range(3):
        log_call(store, ask("same question"), ["same answer"])
    log_call(store, ask("same question"), ["another answer"])
    result = td.export_sft(GOOD, store=store)
    assert len(result.train) == 2 and result.manifest["counts"]["duplicates"] == 2


def test_traces_without_a_usable_conversation_are_skipped_and_counted(store):
    log_call(store, ask("fine"), ["fine answer"])
    log_call(store, [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
             ["a picture"])
    td.set_project_settings("no-prompts", capture="response,custom_metadata", store=store)
    log_call(store, ask("secret question"), ["an answer"], project="no-prompts")
    with td.start_span("plain"):
        td.update_current_trace(client_request_id="plain-1")
    assert td.flush()
    td.log_feedback(client_request_id="plain-1", name="is_correct", value=True, store=store)
    result = td.export_sft(GOOD, store=store)
    assert len(result.train) == 1
    assert result.manifest["skipped"] == {"no_llm_call": 1, "prompt_not_captured": 1, "unsupported_content": 1}


def test_the_split_is_seeded_disjoint_and_complete(store, tmp_path):
    for i in range(20):
        log_call(store, ask(f"q{i}"), [f"a{i}"])
    first = td.export_sft(GOOD, tmp_path / "s.jsonl", split=0.25, seed=7, store=store)
    again = td.export_sft(GOOD, split=0.25, seed=7, store=store)
    other = td.export_sft(GOOD, split=0.25, seed=8, store=store)
    assert (len(first.train), len(first.validation)) == (15, 5)
    assert first.validation == again.validation and first.validation != other.validation
    answers = [e["messages"][-1]["content"] for e in first.train + first.validation]
    assert sorted(answers) == sorted(f"a{i}" for i in range(20))
    assert len(validate_file(tmp_path / "s.validation.jsonl")) == 5 and len(validate_file(tmp_path / "s.jsonl")) == 15
    assert first.manifest["counts"]["validation"] == 5 and first.manifest["seed"] == 7


def test_pii_is_redacted_in_the_export_unless_asked_not_to(store):
    log_call(store, ask("mail me at jane.doe@example.com"), ["Sure, I will call +1 415 555 2671."])
    (redacted,) = td.export_sft(GOOD, store=store).train
    assert redacted["messages"][1]["content"] == "mail me at [REDACTED:EMAIL]"
    assert redacted["messages"][2]["content"] == "Sure, I will call [REDACTED:PHONE]."
    (raw,) = td.export_sft(GOOD, store=store, redact=False).train
    assert "jane.doe@example.com" in raw["messages"][1]["content"]


def test_export_by_trace_ids(store):
    wanted = log_call(store, ask("this one"), ["yes"], good=None)
    log_call(store, ask("not this one"), ["no"], good=None)
    (example,) = td.export_sft(trace_ids=[wanted], store=store).train
    assert example["messages"][-1]["content"] == "yes"


def test_export_cli_writes_the_dataset_the_manifest_and_an_audit_event(store, store_path, tmp_path):
    for i in range(4):
        log_call(store, ask(f"q{i}"), [f"a{i}"])
    td.shutdown()  # the CLI opens the file itself
    out = tmp_path / "cli.jsonl"
    proc = traceduck_cli("export", "sft", "--store", store_path, "--filter", GOOD, "--out", str(out),
                         "--split", "0.5", "--seed", "3", "--progress")  # fmt: skip
    assert "exported 4 examples (train 2, validation 2)" in proc.stdout
    assert "4/4 traces" in proc.stderr  # the progress bar
    assert len(validate_file(out)) == 2 and len(validate_file(tmp_path / "cli.validation.jsonl")) == 2
    manifest = json.loads((tmp_path / "cli.manifest.json").read_text())
    assert manifest["files"] == {"train": "cli.jsonl", "validation": "cli.validation.jsonl",
                                 "manifest": "cli.manifest.json"}  # fmt: skip
    (event,) = td.audit_events(action="export.sft", store=store_path)
    assert event.actor.startswith("cli:") and event.target == GOOD and event.after["counts"]["exported"] == 4
