"""``traceduck.llm.normalize_chat``: request defaults, choices and selection, usage, cost, attributes.

The seed's own OpenAI request and response (``tests/fixtures/gantry_*.txt``, verbatim) are the
main fixtures.
"""

from __future__ import annotations

import pytest

from traceduck.llm import normalize_chat, pricing, register_price
from traceduck.llm.defaults import CHAT_DEFAULTS
from traceduck.llm.normalize import reselect
from traceduck.llm.tokens import estimate_input_tokens, estimate_output_tokens

from openai_server import seed_json, seed_n3_choices

SEED_REQUEST = seed_json("gantry_openai_request.txt")
SEED_RESPONSE = seed_json("gantry_openai_response.txt")


def _n3_response() -> dict:
    return {**SEED_RESPONSE, "choices": seed_n3_choices()}


@pytest.fixture
def price_table():
    """The price table, restored after the test (tests may register prices)."""
    saved = dict(pricing.PRICES)
    yield pricing.PRICES
    pricing.PRICES.clear()
    pricing.PRICES.update(saved)


# -- the request ---------------------------------------------------------------------------------


def test_seed_request_keeps_what_was_sent():
    request = normalize_chat(SEED_REQUEST, SEED_RESPONSE).request
    assert request["model"] == "gpt-3.5-turbo"
    assert request["messages"] == SEED_REQUEST["messages"]
    assert (request["temperature"], request["n"]) == (0.7, 1)


def test_every_unset_optional_parameter_gets_its_documented_default():
    log = normalize_chat(SEED_REQUEST, SEED_RESPONSE)
    assert set(CHAT_DEFAULTS) <= set(log.request)
    assert (log.request["top_p"], log.request["presence_penalty"], log.request["frequency_penalty"]) == (1, 0, 0)
    assert (log.request["stream"], log.request["logprobs"], log.request["max_tokens"]) == (False, False, None)
    assert set(log.defaulted) == set(CHAT_DEFAULTS) - {"temperature", "n"}  # the two the seed sets


def test_explicitly_sent_null_is_kept_and_not_reported_as_defaulted():
    log = normalize_chat({**SEED_REQUEST, "temperature": None}, SEED_RESPONSE)
    assert log.request["temperature"] is None
    assert "temperature" not in log.defaulted


def test_tool_choice_defaults_to_none_without_tools_and_auto_with_them():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert normalize_chat(SEED_REQUEST, SEED_RESPONSE).request["tool_choice"] == "none"
    assert normalize_chat({**SEED_REQUEST, "tools": tools}, SEED_RESPONSE).request["tool_choice"] == "auto"


@pytest.mark.parametrize("field, request_", [
    ("request.model", {"messages": []}),
    ("request.messages", {"model": "gpt-4o"}),
    ("request.messages", {"model": "gpt-4o", "messages": "hello"}),
    ("request.messages\\[0\\]", {"model": "gpt-4o", "messages": ["hello"]}),
])  # fmt: skip
def test_malformed_request_names_the_field(field, request_):
    with pytest.raises(ValueError, match=field):
        normalize_chat(request_, SEED_RESPONSE)


# -- the response --------------------------------------------------------------------------------


def test_seed_response_uses_the_providers_usage():
    log = normalize_chat(SEED_REQUEST, SEED_RESPONSE)
    assert (log.input_tokens, log.output_tokens, log.usage_estimated) == (9, 12, False)
    assert log.response["usage"] == SEED_RESPONSE["usage"]


def test_single_choice_is_selected_and_becomes_the_preview():
    log = normalize_chat(SEED_REQUEST, SEED_RESPONSE)
    assert log.response["selected_choice_index"] == 0
    assert log.response["selected_message"] == {"role": "assistant", "content": "It was played at Globe Life Field."}
    assert log.response_preview == "It was played at Globe Life Field."


def test_seed_n3_response_with_selected_index_1_keeps_every_choice():
    log = normalize_chat({**SEED_REQUEST, "n": 3}, _n3_response(), selected_choice_index=1)
    assert [c["index"] for c in log.response["choices"]] == [0, 1, 2]
    assert log.response["selected_message"]["content"] == "The 2020 World Series was played at Globe Life Field."
    assert log.response_preview == "The 2020 World Series was played at Globe Life Field."


def test_choices_are_ordered_by_their_index():
    shuffled = {**SEED_RESPONSE, "choices": list(reversed(seed_n3_choices()))}
    log = normalize_chat(SEED_REQUEST, shuffled, selected_choice_index=2)
    assert [c["index"] for c in log.response["choices"]] == [0, 1, 2]
    assert log.response["selected_message"]["content"] == "Globe Life Field."


def test_selected_choice_index_out_of_range_names_the_field():
    with pytest.raises(ValueError, match="selected_choice_index 3 is out of range: the response has 3 choice"):
        normalize_chat(SEED_REQUEST, _n3_response(), selected_choice_index=3)


def test_reselect_changes_the_selected_message_of_stored_outputs():
    outputs = normalize_chat(SEED_REQUEST, _n3_response()).response
    changed = reselect(outputs, 2)
    assert (changed["selected_choice_index"], changed["selected_message"]["content"]) == (2, "Globe Life Field.")
    assert outputs["selected_choice_index"] == 0  # a copy


@pytest.mark.parametrize("response, field", [
    ({"id": "x"}, "response.choices is required"),
    ({"choices": {"0": {}}}, "response.choices must be a list"),
    ({"choices": [{"index": 0}]}, "response.choices\\[0\\].message is required"),
    ({"choices": [{"index": 0, "delta": {"content": "a"}}]}, "pass a streamed response as its list of chunks"),
    ({"choices": [{"index": 0, "message": {}}, {"index": 0, "message": {}}]}, "index 0 appears twice"),
    (42, "response must be"),
])  # fmt: skip
def test_malformed_response_names_the_field(response, field):
    with pytest.raises(ValueError, match=field):
        normalize_chat(SEED_REQUEST, response)


def test_response_without_usage_is_estimated_and_marked():
    response = {k: v for k, v in SEED_RESPONSE.items() if k != "usage"}
    log = normalize_chat(SEED_REQUEST, response)
    assert log.usage_estimated is True
    assert log.input_tokens == estimate_input_tokens(SEED_REQUEST["messages"])
    assert log.output_tokens == estimate_output_tokens([SEED_RESPONSE["choices"][0]["message"]])
    assert log.response["usage"]["total_tokens"] == log.input_tokens + log.output_tokens


def test_token_estimate_follows_the_documented_heuristic():
    # 3 to prime the reply + per message 3 + ceil(chars / 4)
    assert estimate_input_tokens([{"role": "user", "content": "abcdefghi"}]) == 3 + 3 + 3
    assert estimate_output_tokens([{"content": "abcd"}, {"content": "abcde"}]) == 1 + 2


# -- cost ----------------------------------------------------------------------------------------


def test_cost_comes_from_the_price_table():
    log = normalize_chat({**SEED_REQUEST, "model": "gpt-4o"}, SEED_RESPONSE)
    assert log.cost_usd == pytest.approx((9 * 2.50 + 12 * 10.00) / 1e6)


def test_dated_snapshot_is_priced_as_its_model():
    assert pricing.price_for("gpt-4o-2024-08-06") == pricing.PRICES["gpt-4o"]
    assert pricing.price_for("gpt-4o-mini-2024-07-18") == pricing.PRICES["gpt-4o-mini"]
    assert pricing.price_for("gpt-3.5-turbo-0301") == pricing.PRICES["gpt-3.5-turbo"]


def test_unknown_model_gets_no_cost_rather_than_a_guess():
    log = normalize_chat({**SEED_REQUEST, "model": "gpt-4o-audio-preview"}, SEED_RESPONSE)
    assert log.cost_usd is None
    assert "traceduck.llm.cost_usd" not in log.span_attributes()


def test_registered_price_prices_a_new_model(price_table):
    register_price("my-finetune", input=1.0, output=2.0)
    log = normalize_chat({**SEED_REQUEST, "model": "my-finetune"}, SEED_RESPONSE)
    assert log.cost_usd == pytest.approx((9 * 1.0 + 12 * 2.0) / 1e6)


def test_register_price_rejects_a_negative_price(price_table):
    with pytest.raises(ValueError, match="output"):
        register_price("m", input=1.0, output=-1.0)


def test_cached_input_tokens_are_billed_at_the_cached_rate():
    usage = {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 600}}
    log = normalize_chat({**SEED_REQUEST, "model": "gpt-4o"}, {**SEED_RESPONSE, "usage": usage})
    assert log.cost_usd == pytest.approx((400 * 2.50 + 600 * 1.25 + 10 * 10.00) / 1e6)


# -- span attributes -----------------------------------------------------------------------------


def test_span_attributes_use_the_genai_semantic_convention_names():
    attrs = normalize_chat({**SEED_REQUEST, "stop": "\n", "seed": 7}, SEED_RESPONSE, latency_ms=100).span_attributes()
    assert {k: attrs[k] for k in (
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.request.temperature",
        "gen_ai.request.choice.count", "gen_ai.request.seed", "gen_ai.request.stop_sequences",
        "gen_ai.response.id", "gen_ai.response.finish_reasons", "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens", "traceduck.llm.latency_ms", "traceduck.llm.stream")} == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-3.5-turbo",
        "gen_ai.request.temperature": 0.7, "gen_ai.request.choice.count": 1, "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ["\n"], "gen_ai.response.id": "chatcmpl-123",
        "gen_ai.response.finish_reasons": ["stop"], "gen_ai.usage.input_tokens": 9,
        "gen_ai.usage.output_tokens": 12, "traceduck.llm.latency_ms": 100.0, "traceduck.llm.stream": False,
    }  # fmt: skip


def test_tool_call_message_preview_is_its_json():
    message = {"role": "assistant", "content": None,
               "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}  # fmt: skip
    log = normalize_chat(SEED_REQUEST, {**SEED_RESPONSE, "choices": [{"index": 0, "message": message}]})
    assert '"name":"f"' in log.response_preview
