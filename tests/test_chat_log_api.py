"""The chat-completion logging API (``POST /v1/chat/completions`` and ``.../feedback``).

A real collector (``traceduck collector`` in a subprocess on 127.0.0.1) serves the module; the
seed's logging request, feedback and stream examples (``tests/fixtures``, verbatim) are the
bodies. Every test makes its own response ids and tags, so tests do not see each other's data.
"""

from __future__ import annotations

import copy
import json
import re
import uuid

import httpx
import openai
import pytest

import traceduck as td

from _collector import Collector, create_key, open_collector
from _servers import ThreadedServer
from openai_server import ANSWERS, create_app, seed_event_strings, seed_json, seed_n3_choices, seed_text

SEED_LOG = seed_json("gantry_log_request.txt")
SEED_ANSWER = "The 2020 World Series was played at Globe Life Field in Arlington, Texas."


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with open_collector(tmp_path_factory, "chat") as server:
        yield server


@pytest.fixture(scope="module")
def client(collector):
    return collector.client()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A collector with an API key of project CoolLLMApp, also accepted in X-Gantry-Api-Key."""
    directory = tmp_path_factory.mktemp("chat-keys")
    store = str(directory / "keys.duckdb")
    key = create_key(store, "CoolLLMApp")
    with Collector(store, str(directory / "collector.log"), "--api-key-header", "X-Gantry-Api-Key") as server:
        yield server, key.key


def _body(**changes) -> tuple[dict, str]:
    """The seed's logging request with a fresh response id and a tag of its own; (body, id)."""
    body = copy.deepcopy(SEED_LOG)
    response_id = f"chatcmpl-{uuid.uuid4().hex[:16]}"
    body["response"]["id"] = response_id
    body["tags"]["run"] = response_id
    body.update(changes)
    return body, response_id


def _log(client, body: dict) -> dict:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _trace(client, trace_id: str) -> dict:
    response = client.get(f"/api/traces/{trace_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _span(trace: dict) -> dict:
    (span,) = trace["data"]["spans"]
    return span


def _count(client, filter_string: str) -> int:
    response = client.get("/api/trace_count", params={"filter": filter_string})
    assert response.status_code == 200, response.text
    return response.json()["count"]


# -- logging a call ------------------------------------------------------------------------------


def test_seed_logging_request_is_stored_as_one_llm_span_trace(client):
    body, response_id = _body()
    answer = _log(client, body)
    trace = _trace(client, answer["trace_id"])
    assert answer["response_id"] == response_id
    assert (trace["info"]["project"], trace["info"]["response_preview"]) == ("CoolLLMApp", "It was played at Globe Life Field.")
    span = _span(trace)
    assert (span["span_type"], span["name"], span["parent_id"]) == ("LLM", "chat gpt-3.5-turbo", None)
    assert span["outputs"]["choices"] == body["response"]["choices"]


def test_logged_request_holds_every_optional_parameter_default(client):
    inputs = _span(_trace(client, _log(client, _body()[0])["trace_id"]))["inputs"]
    assert (inputs["temperature"], inputs["n"], inputs["top_p"], inputs["stream"], inputs["user"]) == (0.7, 1, 1, False, None)


def test_request_and_response_attributes_become_metadata_and_span_attributes(client):
    trace = _trace(client, _log(client, _body()[0])["trace_id"])
    assert (trace["info"]["metadata"]["user_id"], trace["info"]["metadata"]["latency_ms"]) == (123, 100)
    attrs = _span(trace)["attributes"]
    assert (attrs["user_id"], attrs["traceduck.llm.latency_ms"]) == (123, 100.0)


def test_provider_usage_and_genai_attributes_are_recorded(client):
    attrs = _span(_trace(client, _log(client, _body()[0])["trace_id"]))["attributes"]
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (9, 12)
    assert (attrs["gen_ai.request.model"], attrs["gen_ai.response.finish_reasons"]) == ("gpt-3.5-turbo", ["stop"])
    assert attrs["traceduck.llm.cost_usd"] == pytest.approx((9 * 0.50 + 12 * 1.50) / 1e6)


def test_logged_call_is_searchable_by_tags_metadata_model_and_tokens(client):
    body, run = _body()
    _log(client, body)
    assert _count(client, f"tags.run = '{run}' AND tags.env = 'prod' AND metadata.user_id = '123'"
                          " AND span.attributes.`gen_ai.request.model` = 'gpt-3.5-turbo'"
                          " AND span.attributes.`gen_ai.usage.output_tokens` > 10") == 1  # fmt: skip
    assert _count(client, f"tags.run = '{run}' AND span.attributes.`gen_ai.usage.output_tokens` > 12") == 0


def test_session_id_becomes_the_trace_session(client):
    body, run = _body(session_id="session_123")
    trace = _trace(client, _log(client, body)["trace_id"])
    assert trace["info"]["tags"]["trace.session"] == "session_123"
    assert _count(client, f"tags.run = '{run}' AND metadata.`session.id` = 'session_123'") == 1


def test_seed_n3_choices_with_selected_index_1_set_the_preview(client):
    body, _ = _body(selected_choice_index=1)
    body["response"]["choices"] = seed_n3_choices()
    trace = _trace(client, _log(client, body)["trace_id"])
    assert trace["info"]["response_preview"] == "The 2020 World Series was played at Globe Life Field."
    assert len(_span(trace)["outputs"]["choices"]) == 3


def test_select_choice_through_the_collector_changes_the_stored_selection(collector, client):
    body, response_id = _body()
    body["response"]["choices"] = seed_n3_choices()
    trace_id = _log(client, body)["trace_id"]
    td.select_choice(2, response_id=response_id, store=collector.base_url)
    trace = _trace(client, trace_id)
    assert trace["info"]["response_preview"] == "Globe Life Field."
    assert _span(trace)["outputs"]["selected_choice_index"] == 2


def test_select_choice_of_an_unknown_call_is_not_found(collector):
    with pytest.raises(td.TraceNotFoundError):
        td.select_choice(0, response_id="chatcmpl-never-logged", store=collector.base_url)


# -- streams -------------------------------------------------------------------------------------


def _seed_stream_forms() -> dict:
    events = seed_event_strings()
    return {"one string": seed_text("gantry_stream.txt"), "event strings": events,
            "chunk dicts": [json.loads(e[len("data: "):]) for e in events if e != "data: [DONE]"]}  # fmt: skip


@pytest.mark.parametrize("form", ["one string", "event strings", "chunk dicts"])
def test_seed_stream_in_each_accepted_form_is_reassembled(client, form):
    body, _ = _body(response=_seed_stream_forms()[form])
    trace = _trace(client, _log(client, body)["trace_id"])
    assert trace["info"]["response_preview"] == SEED_ANSWER
    assert _span(trace)["outputs"]["stream"]["complete"] is True


def test_seed_event_strings_example_is_accepted_verbatim(client):
    events = re.findall(r"'(data: .*?)'", seed_text("gantry_stream_events_list.txt"))
    trace = _trace(client, _log(client, _body(response=events)[0])["trace_id"])
    assert trace["info"]["response_preview"] == "The"


def test_stream_without_done_is_stored_and_marked_incomplete(client):
    body, _ = _body(response=seed_text("gantry_stream.txt").replace("data: [DONE]", ""))
    attrs = _span(_trace(client, _log(client, body)["trace_id"]))["attributes"]
    assert attrs["traceduck.llm.stream_complete"] is False


def test_stream_read_from_an_openai_compatible_server_is_logged_as_text(client):
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Where?"}], "n": 2,
               "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    with ThreadedServer(create_app()) as server:
        text = httpx.post(server.base_url + "/v1/chat/completions", json=request, timeout=30).text
    outputs = _span(_trace(client, _log(client, _body(request=request, response=text)[0])["trace_id"]))["outputs"]
    assert [c["message"]["content"] for c in outputs["choices"]] == list(ANSWERS[:2])
    assert outputs["usage_estimated"] is False


def test_chunks_collected_from_the_openai_client_are_logged_as_dicts(client):
    request = {"model": "test-tool", "messages": [{"role": "user", "content": "Weather?"}], "stream": True}
    with ThreadedServer(create_app()) as server:
        openai_client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="test", max_retries=0)
        chunks = [c.model_dump(mode="json") for c in openai_client.chat.completions.create(**request)]
    outputs = _span(_trace(client, _log(client, _body(request=request, response=chunks)[0])["trace_id"]))["outputs"]
    assert [c["function"]["name"] for c in outputs["selected_message"]["tool_calls"]] == ["get_weather", "get_time"]


# -- malformed bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["application", "request", "response"])
def test_missing_required_field_is_400_naming_it(client, field):
    body, _ = _body()
    del body[field]
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}: Field required")


@pytest.mark.parametrize("change, message", [
    ({"selected_choice_index": 1}, "selected_choice_index 1 is out of range"),
    ({"response": "data: {oops\n\n"}, "the event data is not JSON"),
    ({"response": ["data: [DONE]"]}, "the stream has no chunks"),
    ({"request": {"messages": []}}, "request.model is required"),
    ({"response": {"id": "x"}}, "response.choices is required"),
    ({"tags": {"env": ["a"]}}, "tag 'env'"),
    ({"feedback": {"user_feedback": None}}, "feedback['user_feedback']"),
    ({"selected_choice_index": -1}, "selected_choice_index"),
])  # fmt: skip
def test_malformed_body_is_400_naming_the_problem(client, change, message):
    response = client.post("/v1/chat/completions", json=_body(**change)[0])
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]


def test_body_that_is_not_json_is_400(client):
    response = client.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400


# -- feedback ------------------------------------------------------------------------------------


def test_feedback_logged_with_the_call_becomes_a_feedback_assessment(client):
    body, run = _body(feedback=seed_json("gantry_log_feedback.txt")["feedback"])
    trace = _trace(client, _log(client, body)["trace_id"])
    (assessment,) = trace["info"]["assessments"]
    assert (assessment["name"], assessment["value"], assessment["source"]["source_type"]) == (
        "user_feedback", "Helpful message!", "HUMAN")  # fmt: skip
    assert _count(client, f"tags.run = '{run}' AND feedback.user_feedback = 'Helpful message!'") == 1


def test_feedback_endpoint_joins_the_logged_call_by_chat_id(client):
    body, response_id = _body()
    trace_id = _log(client, body)["trace_id"]
    feedback = {**seed_json("gantry_feedback_request.txt"), "chat_id": response_id}
    answer = client.post("/v1/chat/completions/feedback", json=feedback)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["trace_id"], answer.json()["pending"]) == (trace_id, False)
    assert [a["value"] for a in _trace(client, trace_id)["info"]["assessments"]] == ["Helpful message!"]


def test_feedback_sent_before_the_call_is_joined_when_the_call_arrives(client):
    body, response_id = _body()
    feedback = {**seed_json("gantry_feedback_request.txt"), "chat_id": response_id,
                "feedback": {"user_feedback": "Helpful message!", "stars": 4}}  # fmt: skip
    early = client.post("/v1/chat/completions/feedback", json=feedback)
    assert early.status_code == 200, early.text
    assert early.json()["pending"] is True
    trace = _trace(client, _log(client, body)["trace_id"])
    assert {a["name"]: a["value"] for a in trace["info"]["assessments"]} == {"user_feedback": "Helpful message!", "stars": 4}


def test_feedback_without_any_key_is_400(client):
    response = client.post("/v1/chat/completions/feedback",
                           json={"application": "CoolLLMApp", "chat_id": "chatcmpl-1", "feedback": {}})  # fmt: skip
    assert response.status_code == 400
    assert "feedback" in response.json()["detail"]


# -- API keys ------------------------------------------------------------------------------------


def test_logging_without_an_api_key_is_401(keyed):
    server, _ = keyed
    assert server.client().post("/v1/chat/completions", json=_body()[0]).status_code == 401


def test_logging_to_an_application_other_than_the_keys_project_is_403(keyed):
    server, key = keyed
    response = server.client(key).post("/v1/chat/completions", json=_body(application="OtherApp")[0])
    assert response.status_code == 403


def test_seed_gantry_api_key_header_authenticates_the_call(keyed):
    server, key = keyed
    gantry = server.client(key, header="X-Gantry-Api-Key")
    trace_id = _log(gantry, _body()[0])["trace_id"]
    assert _trace(gantry, trace_id)["info"]["project"] == "CoolLLMApp"
