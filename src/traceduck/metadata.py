"""Rules for trace tags and metadata: validation, typed values, identity aliases, auto-tags.

Tags are a map key -> optional string. Metadata values are ``str``, ``int``, ``float``, ``bool``,
``None`` or a typed value (``{"type": "url", "url": ..., "text": ...}`` or
``{"type": "string", "value": ...}``). Every top-level metadata key also becomes a tag whose value
is the metadata value's string form (:func:`string_form`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .attributes import IDENTITY_ALIASES

MAX_KEY_CHARS = 250
MAX_VALUE_CHARS = 8192

#: Required fields of each typed metadata value, besides ``type``.
TYPED_VALUE_FIELDS: dict[str, tuple[str, ...]] = {"url": ("url", "text"), "string": ("value",)}

MetadataValue = str | int | float | bool | None | dict[str, str]


def check_text(name: str, value: Any) -> str:
    """A str of at most MAX_VALUE_CHARS, else TypeError/ValueError naming ``name``."""
    if type(value) is str and len(value) <= MAX_VALUE_CHARS:
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    raise ValueError(f"{name} is {len(value)} characters long; the limit is {MAX_VALUE_CHARS}")


def canonical_key(key: str) -> str:
    """The reserved key an identity alias stands for, else the key itself."""
    return IDENTITY_ALIASES.get(key, key)


def check_key(key: Any, what: str) -> str:
    """Validate a tag or metadata key and return its canonical form."""
    if not isinstance(key, str):
        raise TypeError(f"{what} key {key!r} must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError(f"{what} key must not be empty")
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(
            f"{what} key {key[:40]!r}... is {len(key)} characters long; the limit is {MAX_KEY_CHARS}"
        )
    return canonical_key(key)


def _check_string(key: str, what: str, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} {key!r}: {field} must be a str, not {type(value).__name__}")
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(
            f"{what} {key!r}: {field} is {len(value)} characters long; the limit is {MAX_VALUE_CHARS}"
        )
    return value


def check_typed_value(key: str, value: Mapping[str, Any]) -> dict[str, str]:
    """Validate a typed metadata value such as ``{"type": "url", "url": ..., "text": ...}``."""
    kind = value.get("type")
    if kind not in TYPED_VALUE_FIELDS:
        known = ", ".join(sorted(TYPED_VALUE_FIELDS))
        raise ValueError(
            f"metadata {key!r}: a dict value must be a typed value with 'type' one of {known}; "
            f"got type {kind!r}"
        )
    required = TYPED_VALUE_FIELDS[kind]
    missing = [f for f in required if f not in value]
    if missing:
        raise ValueError(f"metadata {key!r}: typed value of type {kind!r} is missing {', '.join(missing)}")
    extra = sorted(str(f) for f in value if f != "type" and f not in required)
    if extra:
        raise ValueError(
            f"metadata {key!r}: typed value of type {kind!r} has unexpected field(s) {', '.join(extra)}"
        )
    out = {"type": kind}
    for field in required:
        out[field] = _check_string(key, "metadata", field, value[field])
    return out


def check_metadata_value(key: str, value: Any) -> MetadataValue:
    """Validate one metadata value; scalars pass through, typed values are normalised."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"metadata {key!r}: value {value!r} is not a finite number")
        return value
    if isinstance(value, str):
        return _check_string(key, "metadata", "value", value)
    if isinstance(value, Mapping):
        return check_typed_value(key, value)
    raise TypeError(
        f"metadata {key!r}: value must be str, int, float, bool, None or a typed value, "
        f"not {type(value).__name__}"
    )


def check_tag_value(key: str, value: Any) -> str | None:
    """Validate one tag value; scalars become their string form, ``None`` a bare tag."""
    if value is None or isinstance(value, (bool, int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"tag {key!r}: value {value!r} is not a finite number")
        return string_form(value)
    if isinstance(value, str):
        return _check_string(key, "tag", "value", value)
    raise TypeError(f"tag {key!r}: value must be str, int, float, bool or None, not {type(value).__name__}")


def _plain(key: Any, value: Any) -> bool:
    """The common case, checked fast: a short str key that is no alias, a short str value."""
    return (
        type(key) is str
        and type(value) is str
        and 0 < len(key) <= MAX_KEY_CHARS
        and len(value) <= MAX_VALUE_CHARS
        and key not in IDENTITY_ALIASES
    )


def check_metadata(metadata: Any) -> dict[str, MetadataValue]:
    """Validate a metadata mapping; returns it with canonical keys."""
    if type(metadata) is not dict and not isinstance(metadata, Mapping):  # the ABC check only for others
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    out: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if _plain(key, value):
            out[key] = value
        else:
            canonical = check_key(key, "metadata")
            out[canonical] = check_metadata_value(canonical, value)
    return out


def check_tags(tags: Any) -> dict[str, str | None]:
    """Validate a tags mapping; returns it with canonical keys and string values."""
    if type(tags) is not dict and not isinstance(tags, Mapping):  # the ABC check only for others
        raise TypeError(f"tags must be a dict, not {type(tags).__name__}")
    out: dict[str, str | None] = {}
    for key, value in tags.items():
        if _plain(key, value):
            out[key] = value
        else:
            canonical = check_key(key, "tag")
            out[canonical] = check_tag_value(canonical, value)
    return out


def string_form(value: MetadataValue) -> str | None:
    """The string a metadata value shows as a tag and compares as in searches.

    ``None`` stays ``None`` (a bare tag); booleans are ``true``/``false`` as in JSON; a typed value
    is its primary value (the url of a url, the value of a string).
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind == "url":
            return value.get("url")
        if kind == "string":
            return value.get("value")
    return str(value)


def auto_tags(metadata: Mapping[str, MetadataValue]) -> dict[str, str | None]:
    """The tags generated from top-level metadata keys."""
    return {key: string_form(value) for key, value in metadata.items()}
