"""The one normaliser of chat-completion logs, shared by the SDK instrumentation and the HTTP API.

:func:`normalize_chat` takes an OpenAI-style chat request and its response (a ``chat.completion``
object or a stream in any of the three accepted forms) and returns a :class:`ChatLog`: the
request with every unset optional parameter filled with its documented default, the response
with all choices, the selected one, token usage (the provider's, else estimated and marked so),
cost, stream facts, and the span attributes (OpenTelemetry GenAI names) an LLM span carries.
Both the ``traceduck.openai`` instrumentation and ``POST /v1/chat/completions`` store exactly this.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..serialize import dumps
from . import pricing, tokens
from .defaults import REQUIRED, with_defaults
from .streaming import parse_stream, reassemble

#: Characters of the selected message kept as the trace's response preview.
PREVIEW_CHARS = 1000
#: GenAI request attributes and the request parameter each one reports.
_REQUEST_ATTRIBUTES = (
    ("gen_ai.request.temperature", "temperature"),
    ("gen_ai.request.top_p", "top_p"),
    ("gen_ai.request.choice.count", "n"),
    ("gen_ai.request.seed", "seed"),
    ("gen_ai.request.frequency_penalty", "frequency_penalty"),
    ("gen_ai.request.presence_penalty", "presence_penalty"),
)


def _plain_json(value: Any) -> Any:
    """A deep copy made of JSON types only (pydantic models, tuples ... converted)."""
    return orjson.loads(dumps(value))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_request(request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise ValueError(f"request must be a JSON object, not {type(request).__name__}")
    for name in REQUIRED:
        if request.get(name) is None:
            raise ValueError(f"request.{name} is required")
    if not isinstance(request["model"], str):
        raise ValueError(f"request.model must be a string, not {type(request['model']).__name__}")
    if not isinstance(request["messages"], list):
        raise ValueError(f"request.messages must be a list, not {type(request['messages']).__name__}")
    for i, message in enumerate(request["messages"]):
        if not isinstance(message, dict):
            raise ValueError(f"request.messages[{i}] must be an object, not {type(message).__name__}")
    return request


def _check_choices(response: dict[str, Any]) -> list[dict[str, Any]]:
    choices = response.get("choices")
    if not isinstance(choices, list):
        raise ValueError("response.choices is required and must be a list"
                         if choices is None else f"response.choices must be a list, not {type(choices).__name__}")  # fmt: skip
    seen: set[int] = set()
    for position, choice in enumerate(choices):
        where = f"response.choices[{position}]"
        if not isinstance(choice, dict):
            raise ValueError(f"{where} must be an object, not {type(choice).__name__}")
        if "message" not in choice and "delta" in choice:
            raise ValueError(f"{where} has a delta, not a message: pass a streamed response as its list of chunks")
        if not isinstance(choice.get("message"), dict):
            raise ValueError(f"{where}.message is required and must be an object")
        index = choice.setdefault("index", position)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(f"{where}.index must be a non-negative integer, not {index!r}")
        if index in seen:
            raise ValueError(f"{where}.index {index} appears twice")
        seen.add(index)
    return sorted(choices, key=lambda c: c["index"])


def _provider_usage(usage: Any) -> tuple[int, int, int | None] | None:
    """(input, output, cached input) tokens the provider reported, or None."""
    if not isinstance(usage, dict):
        return None
    input_tokens = usage.get("prompt_tokens", usage.get("input_tokens"))
    output_tokens = usage.get("completion_tokens", usage.get("output_tokens"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (input_tokens, output_tokens)):
        return None
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return input_tokens, output_tokens, cached if isinstance(cached, int) and not isinstance(cached, bool) else None


def select(response: dict[str, Any], index: Any) -> dict[str, Any]:
    """Set ``selected_choice_index`` and ``selected_message`` on a normalised response (in place).

    Raises ``ValueError`` naming ``selected_choice_index`` when it is not one of the choices.
    """
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"selected_choice_index must be a non-negative integer, not {index!r}")
    choices = response.get("choices") or []
    chosen = [c for c in choices if c.get("index") == index]
    if not chosen and (choices or index != 0):
        raise ValueError(f"selected_choice_index {index} is out of range: the response has {len(choices)} choice(s)")
    response["selected_choice_index"] = index
    response["selected_message"] = chosen[0]["message"] if chosen else None
    return response


def preview_of(message: Any) -> str | None:
    """The response preview of a selected message: its text, else its JSON (tool calls)."""
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    text = content if isinstance(content, str) and content else dumps(message)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


@dataclass
class ChatLog:
    """One chat-completion call in its stored form."""

    #: The request as sent plus every unset optional parameter with its default.
    request: dict[str, Any]
    #: id, object, created, model, choices, usage, usage_estimated, selected_choice_index,
    #: selected_message, stream ({complete, chunks, time_to_first_token_ms, ...} or None).
    response: dict[str, Any]
    #: Names of the optional parameters filled with their default.
    defaulted: list[str] = field(default_factory=list)
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None

    @property
    def model(self) -> str:
        return self.request["model"]

    @property
    def response_id(self) -> str | None:
        value = self.response.get("id")
        return value if isinstance(value, str) and value else None

    @property
    def usage_estimated(self) -> bool:
        return bool(self.response.get("usage_estimated"))

    @property
    def cost_usd(self) -> float | None:
        """USD per the price table (of the response's model if priced, else the request's)."""
        for model in (self.response.get("model"), self.model):
            if isinstance(model, str) and pricing.price_for(model) is not None:
                return pricing.cost_usd(model, self.input_tokens, self.output_tokens, self.cached_input_tokens)
        return None

    @property
    def response_preview(self) -> str | None:
        return preview_of(self.response.get("selected_message"))

    def span_attributes(self) -> dict[str, Any]:
        """The LLM span's attributes: GenAI semantic-convention names plus ``traceduck.llm.*``."""
        req, resp = self.request, self.response
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.system": "openai",
            "gen_ai.request.model": self.model,
        }
        for name, param in _REQUEST_ATTRIBUTES:
            if _number(req.get(param)):
                attrs[name] = req[param]
        max_tokens = req.get("max_completion_tokens", None) or req.get("max_tokens")
        if _number(max_tokens):
            attrs["gen_ai.request.max_tokens"] = max_tokens
        stop = req.get("stop")
        if isinstance(stop, str):
            attrs["gen_ai.request.stop_sequences"] = [stop]
        elif isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
            attrs["gen_ai.request.stop_sequences"] = stop
        if self.response_id:
            attrs["gen_ai.response.id"] = self.response_id
        if isinstance(resp.get("model"), str):
            attrs["gen_ai.response.model"] = resp["model"]
        reasons = [c.get("finish_reason") for c in resp.get("choices") or []]
        if any(isinstance(r, str) for r in reasons):
            attrs["gen_ai.response.finish_reasons"] = [r if isinstance(r, str) else "" for r in reasons]
        if self.input_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = self.input_tokens
        if self.output_tokens is not None:
            attrs["gen_ai.usage.output_tokens"] = self.output_tokens
        if self.cached_input_tokens is not None:
            attrs["traceduck.llm.cached_input_tokens"] = self.cached_input_tokens
        attrs["traceduck.llm.usage_estimated"] = self.usage_estimated
        cost = self.cost_usd
        if cost is not None:
            attrs["traceduck.llm.cost_usd"] = cost
        if self.latency_ms is not None:
            attrs["traceduck.llm.latency_ms"] = float(self.latency_ms)
        attrs["traceduck.llm.selected_choice_index"] = resp.get("selected_choice_index", 0)
        stream = resp.get("stream")
        attrs["traceduck.llm.stream"] = stream is not None
        if stream is not None:
            attrs["traceduck.llm.stream_complete"] = bool(stream.get("complete"))
            attrs["traceduck.llm.chunk_count"] = int(stream.get("chunks") or 0)
            if stream.get("time_to_first_token_ms") is not None:
                attrs["traceduck.llm.time_to_first_token_ms"] = float(stream["time_to_first_token_ms"])
        if self.defaulted:
            attrs["traceduck.llm.defaulted_parameters"] = list(self.defaulted)
        return attrs


def normalize_chat(
    request: dict[str, Any],
    response: dict[str, Any] | str | list[Any],
    *,
    selected_choice_index: int = 0,
    latency_ms: float | None = None,
    ttft_ms: float | None = None,
    stream_complete: bool | None = None,
) -> ChatLog:
    """Normalise one chat-completion call; ``ValueError`` names the malformed field.

    ``response`` is a ``chat.completion`` object, or a stream: one string of ``data:`` events, a
    list of event strings, or a list of parsed chunk dicts. A stream without ``[DONE]`` is kept
    and marked incomplete (``stream.complete = false``); parsed chunks cannot carry ``[DONE]``,
    so there every choice must have a ``finish_reason``. ``stream_complete`` overrides this when
    the caller knows (the SDK saw the stream end). ``ttft_ms`` is the time to the first chunk.
    """
    req = _plain_json(_check_request(request))
    full_request, defaulted = with_defaults(req)
    stream: dict[str, Any] | None = None
    if isinstance(response, dict):
        resp = _plain_json(response)
        resp["choices"] = _check_choices(resp)
    elif isinstance(response, (str, list)):
        parsed = parse_stream(response)
        resp = reassemble(parsed)
        if stream_complete is None:
            if parsed.from_text:
                stream_complete = parsed.done
            else:
                stream_complete = bool(resp["choices"]) and all(c["finish_reason"] for c in resp["choices"])
        stream = {"complete": bool(stream_complete) and "error" not in resp, "chunks": len(parsed.chunks),
                  "time_to_first_token_ms": ttft_ms}  # fmt: skip
    else:
        raise ValueError(f"response must be a JSON object, an event string or a list, not {type(response).__name__}")
    select(resp, selected_choice_index)
    reported = _provider_usage(resp.get("usage"))
    if reported is not None:
        input_tokens, output_tokens, cached = reported
        resp["usage_estimated"] = False
    else:
        input_tokens = tokens.estimate_input_tokens(req["messages"])
        output_tokens = tokens.estimate_output_tokens(c.get("message") for c in resp["choices"])
        cached = None
        resp["usage"] = {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                         "total_tokens": input_tokens + output_tokens}  # fmt: skip
        resp["usage_estimated"] = True
    resp["stream"] = stream
    return ChatLog(full_request, resp, defaulted, latency_ms, input_tokens, output_tokens, cached)


def reselect(outputs: Any, index: Any) -> dict[str, Any]:
    """A copy of a stored LLM span's outputs with another choice selected."""
    if not isinstance(outputs, dict) or not isinstance(outputs.get("choices"), list):
        raise ValueError("the span's outputs are not a normalised chat completion")
    return select(copy.deepcopy(outputs), index)
