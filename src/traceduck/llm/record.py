"""What a logged chat call adds around the normalised request and response.

``request_attributes`` and ``response_attributes`` (any extra facts about the call), ``tags``
and ``session_id`` reach a trace the same way from the SDK (``traceduck.openai``) and from the
HTTP logging API; this module is where that mapping lives, so both produce the same trace:

- request/response attributes become trace METADATA (search ``metadata.user_id = '123'``; scalar
  values as they are, other values as JSON text) and LLM-span attributes
  (``span.attributes.user_id``); the GenAI and ``traceduck.llm.*`` attributes win a name clash;
- ``tags`` become trace tags, ``session_id`` the trace's session (metadata ``trace.session``,
  and ``gen_ai.conversation.id`` on the span);
- the selected message becomes the trace's response preview when the LLM span is the root.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import attributes as attr
from ..metadata import MAX_VALUE_CHARS, check_metadata, check_tags
from ..serialize import dumps
from .normalize import ChatLog


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object, not {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{name}: keys must be non-empty strings, not {key!r}")
    return dict(value)


def _scalar(value: Any) -> Any:
    """A metadata value: None, bool, int, finite float or str (capped); anything else as JSON."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    text = value if isinstance(value, str) else dumps(value)
    return text[:MAX_VALUE_CHARS]


def _span_value(value: Any) -> Any:
    """An OTel attribute value: primitives and homogeneous primitive lists as they are, else JSON."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, bool, int, float)) for v in value):
        if len({type(v) for v in value}) == 1:
            return list(value)
    return dumps(value)


@dataclass
class CallContext:
    """The extras one logged call carries besides its request and response."""

    request_attributes: dict[str, Any]
    response_attributes: dict[str, Any]
    tags: dict[str, str | None]
    session_id: str | None

    @classmethod
    def of(cls, request_attributes: Any = None, response_attributes: Any = None, tags: Any = None,
           session_id: Any = None) -> CallContext:  # fmt: skip
        """Validated extras; ``ValueError``/``TypeError`` name the bad field."""
        if session_id is not None and (not isinstance(session_id, str) or len(session_id) > MAX_VALUE_CHARS):
            raise ValueError(f"session_id must be a string of at most {MAX_VALUE_CHARS} characters")
        return cls(
            _mapping("request_attributes", request_attributes),
            _mapping("response_attributes", response_attributes),
            check_tags(_mapping("tags", tags)),
            session_id,
        )

    def metadata(self) -> dict[str, Any]:
        """Trace metadata: the request, then the response attributes (a later key wins)."""
        merged = {k: _scalar(v) for k, v in {**self.request_attributes, **self.response_attributes}.items()}
        out = check_metadata(merged)
        if self.session_id is not None:
            out[attr.SESSION] = self.session_id
        return out

    def span_attributes(self, log: ChatLog) -> dict[str, Any]:
        """The LLM span's attributes: the extras first, then the normaliser's (which win)."""
        extras = {**self.request_attributes, **self.response_attributes}
        attrs = {k: _span_value(v) for k, v in extras.items() if v is not None}
        if self.session_id is not None:
            attrs["gen_ai.conversation.id"] = self.session_id
        attrs.update(log.span_attributes())
        return attrs

    def trace_fields(self, log: ChatLog, is_root: bool) -> dict[str, Any]:
        """The ``traceduck.trace`` JSON fields (see attributes.TRACE_FIELDS) of the call's trace."""
        fields: dict[str, Any] = {}
        metadata = self.metadata()
        if metadata:
            fields["metadata"] = metadata
        if self.tags:
            fields["tags"] = self.tags
        if is_root and log.response_preview is not None:
            fields["response_preview"] = log.response_preview
        return fields
