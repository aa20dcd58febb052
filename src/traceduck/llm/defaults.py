"""The optional parameters of OpenAI's chat-completion request and their documented defaults.

A logged request is stored as it was sent plus every optional parameter it did not set, filled
with the default the API applies (the Gantry workflow "always stores all optional parameters"),
so two calls can be compared parameter by parameter whether or not the caller spelled a default.

Sources, checked when this table was written:

- OpenAI's OpenAPI description of ``CreateChatCompletionRequest`` (the API reference), as
  generated in https://github.com/oapicf/openapi-openai ``docs/CreateChatCompletionRequest.md``:
  ``temperature`` 1, ``top_p`` 1, ``n`` 1, ``stream`` false, ``presence_penalty`` 0,
  ``frequency_penalty`` 0, ``logprobs`` false, and null for ``logit_bias``, ``top_logprobs``,
  ``max_tokens``, ``response_format``, ``seed``, ``stop``, ``tools``, ``user``, ``functions``.
- The parameter documentation of the official ``openai`` Python package (3.x,
  ``openai/resources/chat/completions/completions.py``, ``Completions.create``):
  ``tool_choice``/``function_call`` "``none`` is the default when no tools are present, ``auto``
  is the default if tools are present"; ``modalities`` "text, which is the default: ["text"]";
  ``service_tier`` "When not set, the default behavior is 'auto'"; ``verbosity`` "The default is
  ``medium``"; ``parallel_tool_calls`` defaults to true and ``store`` to false in the API reference.
- ``reasoning_effort`` and ``prompt_cache_retention`` have model- or organisation-dependent
  defaults; they are recorded as null ("not set, the provider decides") rather than guessed.
"""

from __future__ import annotations

import copy
from typing import Any

#: Optional parameter -> its default when the request does not set it (``None`` is JSON null).
#: ``tool_choice`` and ``function_call`` depend on the request; see :func:`with_defaults`.
CHAT_DEFAULTS: dict[str, Any] = {
    "audio": None,
    "frequency_penalty": 0,
    "function_call": None,  # "none", or "auto" when functions are given
    "functions": None,
    "logit_bias": None,
    "logprobs": False,
    "max_completion_tokens": None,
    "max_tokens": None,
    "metadata": None,
    "modalities": ["text"],
    "moderation": None,
    "n": 1,
    "parallel_tool_calls": True,
    "prediction": None,
    "presence_penalty": 0,
    "prompt_cache_key": None,
    "prompt_cache_options": None,
    "prompt_cache_retention": None,
    "reasoning_effort": None,
    "response_format": None,
    "safety_identifier": None,
    "seed": None,
    "service_tier": "auto",
    "stop": None,
    "store": False,
    "stream": False,
    "stream_options": None,
    "temperature": 1,
    "tool_choice": None,  # "none", or "auto" when tools are given
    "tools": None,
    "top_logprobs": None,
    "top_p": 1,
    "user": None,
    "verbosity": "medium",
    "web_search_options": None,
}

#: The two parameters every chat-completion request must carry.
REQUIRED = ("model", "messages")


def with_defaults(request: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``request`` with every unset optional parameter filled, and the names that were filled.

    Keys the request sets are kept exactly as sent (an explicit ``null`` included); keys this
    table does not know are kept too. The request itself is not changed.
    """
    out = dict(request)
    filled: list[str] = []
    for name, default in CHAT_DEFAULTS.items():
        if name in out:
            continue
        if name == "tool_choice":
            default = "auto" if request.get("tools") else "none"
        elif name == "function_call":
            default = "auto" if request.get("functions") else "none"
        out[name] = copy.deepcopy(default)
        filled.append(name)
    return out, filled
