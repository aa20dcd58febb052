"""Token counts when the provider did not report them: a documented estimate, never a lookup.

No tokenizer is downloaded and nothing goes over the network. The estimate follows OpenAI's own
rule of thumb, "one token is about four characters of English text", plus the per-message framing
of the chat format (OpenAI's cookbook counts 3 tokens per message and 3 to prime the reply):

- input: for every message ``3 + ceil(chars / 4)`` over its text (string content, the text parts
  of multi-part content, a name, tool-call names and arguments), plus 3;
- output: for every choice ``ceil(chars / 4)`` over its content, refusal and tool calls.

Counts produced here are always stored with ``usage_estimated = true``; expect an error of
±20-30 % on English text and more on code or other languages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3


def _text_of(value: Any) -> str:
    """The text a message field carries: a string, or the ``text`` of content parts (walked
    without recursion: a logged request may nest lists thousands of levels deep)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        return ""
    texts: list[str] = []
    stack = [iter(value)]
    while stack:
        for part in stack[-1]:
            if isinstance(part, dict):
                part = part.get("text")
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, list):
                stack.append(iter(part))
                break
        else:
            stack.pop()
    return "".join(texts)


def _tool_calls_text(message: dict[str, Any]) -> str:
    parts: list[str] = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.append(_text_of(function.get("name")) + _text_of(function.get("arguments")))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        parts.append(_text_of(legacy.get("name")) + _text_of(legacy.get("arguments")))
    return "".join(parts)


def _tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def message_chars(message: dict[str, Any]) -> str:
    """All the text of one chat message that the model reads or writes."""
    return (
        _text_of(message.get("content"))
        + _text_of(message.get("refusal"))
        + _text_of(message.get("name"))
        + _tool_calls_text(message)
    )


def estimate_input_tokens(messages: Iterable[Any]) -> int:
    """Estimated prompt tokens of a chat request's ``messages``."""
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if isinstance(message, dict):
            total += _tokens(message_chars(message))
    return total


def estimate_output_tokens(messages: Iterable[dict[str, Any] | None]) -> int:
    """Estimated completion tokens over every returned choice's message."""
    return sum(_tokens(message_chars(m)) for m in messages if isinstance(m, dict))
