"""OpenAI chat-completion streams: parse the server-sent events, reassemble the completion.

A streamed response reaches traceduck in one of the three forms the Gantry logging API accepts:

- one string holding the ``data: ...`` events, separated by blank lines, as sent on the wire;
- a list of strings, each one ``data: ...`` event (``'data: [DONE]'`` included);
- a list of dicts, each a parsed chunk (``chat.completion.chunk``); these cannot carry the
  ``[DONE]`` marker, which is not JSON.

:func:`parse_stream` turns any of them into chunk dicts, stopping at ``[DONE]``;
:func:`reassemble` folds the chunks into one ``chat.completion``-shaped dict, per choice: role,
content, refusal, tool calls (deltas merged by tool-call index, their ``arguments`` concatenated),
the legacy ``function_call``, logprobs and ``finish_reason``; and the provider's usage when a
chunk carries it (``stream_options.include_usage`` sends it on a final chunk with no choices).
Malformed input raises ``ValueError`` naming where and what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

DONE = "[DONE]"
#: Characters of offending input quoted in an error message.
QUOTE_CHARS = 80
_SSE_FIELDS = ("event", "id", "retry")


@dataclass
class ParsedStream:
    """The chunks of a stream, where each came from (for error messages), and whether it ended."""

    chunks: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    #: A ``[DONE]`` event was seen (chunks after it are ignored).
    done: bool = False
    #: Some chunk was given as event text (so ``[DONE]`` could have been sent).
    from_text: bool = False


def _quote(text: str) -> str:
    return repr(text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "...")


def _events(text: str, where: str) -> list[tuple[str, str]]:
    """The ``data`` of each event in SSE text, with a label; other SSE fields are ignored."""
    events: list[tuple[str, str]] = []
    data: list[str] = []
    first_line = 0
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate([*lines, ""], start=1):
        if not line.strip():
            if data:
                events.extend(_split_event(data, f"{where} (event at line {first_line})"))
                data = []
            continue
        if line.startswith(":"):
            continue  # an SSE comment
        name, sep, value = line.partition(":")
        if name == "data" and sep:
            if not data:
                first_line = number
            data.append(value[1:] if value.startswith(" ") else value)
        elif name.strip() in _SSE_FIELDS and sep:
            continue
        else:
            raise ValueError(f"{where}: line {number} is not a server-sent event ('data: ...'): {_quote(line)}")
    return events


def _split_event(data: list[str], label: str) -> list[tuple[str, str]]:
    """One event's data; data lines pasted without blank lines between them are split apart."""
    joined = "\n".join(data)
    if len(data) > 1 and not _is_json(joined) and all(_is_json(d) or d.strip() == DONE for d in data):
        return [(d, label) for d in data]
    return [(joined, label)]


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _add_data(parsed: ParsedStream, data: str, label: str) -> bool:
    """Add one event's data; False once ``[DONE]`` was seen."""
    if data.strip() == DONE:
        parsed.done = True
        return False
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError(f"{label}: the event data is not JSON: {_quote(data)}") from None
    if not isinstance(chunk, dict):
        raise ValueError(f"{label}: a chunk must be a JSON object, not {type(chunk).__name__}")
    parsed.chunks.append(chunk)
    parsed.labels.append(label)
    return True


def parse_stream(response: str | list[Any], where: str = "response") -> ParsedStream:
    """The chunks of a stream given as SSE text, a list of event strings or a list of chunk dicts."""
    parsed = ParsedStream()
    if isinstance(response, str):
        parsed.from_text = True
        for data, label in _events(response, where):
            if not _add_data(parsed, data, label):
                break
    elif isinstance(response, list):
        for i, item in enumerate(response):
            label = f"{where}[{i}]"
            if isinstance(item, dict):
                parsed.chunks.append(item)
                parsed.labels.append(label)
                continue
            if not isinstance(item, str):
                raise ValueError(f"{label}: a stream item must be an event string or a chunk object, "
                                 f"not {type(item).__name__}")  # fmt: skip
            parsed.from_text = True
            stripped = item.strip()
            if not stripped:
                continue
            if stripped.startswith("{") or stripped == DONE:
                events = [(stripped, label)]
            else:
                events = _events(item, label)
                if len(events) == 1:  # the usual case: one event per item, named by its position
                    events = [(events[0][0], label)]
            if not all(_add_data(parsed, data, lab) for data, lab in events):
                break
    else:
        raise ValueError(f"{where} must be a JSON object, an event string or a list, not {type(response).__name__}")
    if not parsed.chunks:
        raise ValueError(f"{where}: the stream has no chunks")
    return parsed


def _expect(value: Any, types: type | tuple[type, ...], label: str, what: str) -> Any:
    if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise ValueError(f"{label}: {what} must be {names}, not {type(value).__name__}")
    return value


class _Choice:
    """One choice being reassembled from its deltas."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.role: str | None = None
        self.content: list[str] | None = None
        self.refusal: list[str] | None = None
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] | None = None
        self.logprobs: dict[str, list[Any]] | None = None
        self.finish_reason: str | None = None

    def add(self, choice: dict[str, Any], label: str) -> None:
        delta = _expect(choice.get("delta"), dict, label, "delta") or {}
        role = _expect(delta.get("role"), str, label, "delta.role")
        if role:
            self.role = role
        for name in ("content", "refusal"):
            piece = _expect(delta.get(name), str, label, f"delta.{name}")
            if piece is not None:
                parts = getattr(self, name)
                if parts is None:
                    parts = []
                    setattr(self, name, parts)
                parts.append(piece)
        calls = _expect(delta.get("tool_calls"), list, label, "delta.tool_calls") or []
        for position, call in enumerate(calls):
            self._add_tool_call(call, position, f"{label}.delta.tool_calls[{position}]")
        legacy = _expect(delta.get("function_call"), dict, label, "delta.function_call")
        if legacy:
            self.function_call = self.function_call or {"name": "", "arguments": ""}
            for key in ("name", "arguments"):
                self.function_call[key] += _expect(legacy.get(key), str, label, f"function_call.{key}") or ""
        logprobs = _expect(choice.get("logprobs"), dict, label, "logprobs")
        if logprobs:
            self.logprobs = self.logprobs or {}
            for key, items in logprobs.items():
                if isinstance(items, list):
                    self.logprobs.setdefault(key, []).extend(items)
        finish = _expect(choice.get("finish_reason"), str, label, "finish_reason")
        if finish:
            self.finish_reason = finish

    def _add_tool_call(self, call: Any, position: int, label: str) -> None:
        if not isinstance(call, dict):
            raise ValueError(f"{label}: a tool call delta must be an object, not {type(call).__name__}")
        index = _expect(call.get("index"), int, label, "index")
        slot = self.tool_calls.setdefault(position if index is None else index,
                                          {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})  # fmt: skip
        if _expect(call.get("id"), str, label, "id"):
            slot["id"] = call["id"]
        if _expect(call.get("type"), str, label, "type"):
            slot["type"] = call["type"]
        function = _expect(call.get("function"), dict, label, "function") or {}
        for key in ("name", "arguments"):
            slot["function"][key] += _expect(function.get(key), str, label, f"function.{key}") or ""

    def result(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role or "assistant",
            "content": "".join(self.content) if self.content is not None else None,
        }
        if self.refusal is not None:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.function_call is not None:
            message["function_call"] = self.function_call
        out: dict[str, Any] = {"index": self.index, "message": message, "finish_reason": self.finish_reason}
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        return out


def reassemble(parsed: ParsedStream) -> dict[str, Any]:
    """The completion the chunks spell, shaped like a non-streamed ``chat.completion``.

    Adds ``error`` when a chunk carried one (a provider error sent mid-stream).
    """
    out: dict[str, Any] = {"id": None, "object": "chat.completion", "created": None, "model": None}
    choices: dict[int, _Choice] = {}
    usage: dict[str, Any] | None = None
    error: Any = None
    looks_like_chunks = False
    for chunk, label in zip(parsed.chunks, parsed.labels):
        looks_like_chunks = looks_like_chunks or "choices" in chunk or "error" in chunk
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if out.get(key) is None and chunk.get(key) is not None:
                out[key] = chunk[key]
        if chunk.get("error") is not None:
            error = chunk["error"]
        if chunk.get("usage") is not None:
            usage = _expect(chunk["usage"], dict, label, "usage")
        for position, choice in enumerate(_expect(chunk.get("choices"), list, label, "choices") or []):
            where = f"{label}.choices[{position}]"
            if not isinstance(choice, dict):
                raise ValueError(f"{where}: a choice must be an object, not {type(choice).__name__}")
            index = _expect(choice.get("index"), int, where, "index")
            index = position if index is None else index
            if index < 0:
                raise ValueError(f"{where}: index must not be negative, got {index}")
            choices.setdefault(index, _Choice(index)).add(choice, where)
    if not looks_like_chunks:
        where = parsed.labels[0].split("[")[0].split(" ")[0]
        raise ValueError(f"{where}: no chunk has 'choices'; expected chat.completion.chunk objects")
    out["choices"] = [choices[i].result() for i in sorted(choices)]
    if usage is not None:
        out["usage"] = usage
    if error is not None:
        out["error"] = error
    return out
