"""Turn arbitrary Python values into capped JSON text without ever raising.

Inputs and outputs of traced functions can be anything: models, sockets, numpy arrays, objects
with a broken ``__repr__``. Tracing must record something useful for all of them and must never
break the traced call, so every path here ends in a string.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import re
import uuid
from typing import Any

import orjson

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

#: Default cap, in characters, for one serialised value (inputs, outputs, an attribute).
DEFAULT_MAX_CHARS = 64 * 1024

#: Key of the marker object that stands in for a value larger than the cap.
TRUNCATED_KEY = "_truncated"


def _fallback(obj: Any) -> Any:
    """JSON ``default`` hook: the closest JSON-native form of ``obj``; never raises."""
    try:
        return _native(obj)
    except Exception:
        return safe_repr(obj)


def _native(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", errors="replace")
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, (uuid.UUID, complex)):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    model_dump = getattr(obj, "model_dump", None)  # pydantic v2 models
    if callable(model_dump):
        return model_dump()
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    return safe_repr(obj)


def safe_repr(obj: Any, limit: int = 1000) -> str:
    """``repr(obj)``, shortened, or a placeholder when ``__repr__`` itself fails."""
    try:
        text = repr(obj)
    except Exception:  # a broken __repr__ must not break tracing
        return f"<unrepresentable {type(obj).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes smuggled into a str) replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def _clean(value: Any, depth: int = 0) -> Any:
    """A copy of a JSON-like value with every string made valid Unicode."""
    if isinstance(value, str):
        return clean_text(value)
    if depth > 100:
        return None
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value]
    return value


def dumps(value: Any) -> str:
    """Compact JSON text for any value; never raises.

    orjson first (it is ~10x faster than the standard library on the hot path), then the
    standard library for what orjson refuses (integers beyond 64 bits, lone surrogates, cycles),
    and a ``repr`` when nothing else works.
    """
    try:
        return orjson.dumps(value, default=_fallback, option=_ORJSON_OPTIONS).decode()
    except (TypeError, ValueError, RecursionError) as exc:
        if "surrogates" in str(exc):  # keep the value, with the undecodable characters replaced
            try:
                return orjson.dumps(_clean(value), default=_fallback, option=_ORJSON_OPTIONS).decode()
            except (TypeError, ValueError, RecursionError):
                pass
    try:
        return json.dumps(value, default=_fallback, ensure_ascii=True, allow_nan=True)
    except (ValueError, TypeError, RecursionError):  # circular or too deep structures
        return json.dumps(safe_repr(value), ensure_ascii=True)


def to_json(value: Any, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """JSON text for ``value``, at most about ``max_chars`` long; never raises.

    A value whose JSON is longer than ``max_chars`` is replaced by the marker object
    ``{"_truncated": true, "original_chars": N, "preview": "<first max_chars characters>"}``.
    """
    text = dumps(value)
    if len(text) <= max_chars:
        return text
    return dumps({TRUNCATED_KEY: True, "original_chars": len(text), "preview": text[:max_chars]})


def from_json(text: str | None) -> Any:
    """Parse stored JSON text back; ``None`` and unparsable text come back as they are."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def preview(value: Any, max_chars: int) -> str | None:
    """A short human-readable text for a request or response preview."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    else:
        text = to_json(value, max_chars=max_chars * 4)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."
