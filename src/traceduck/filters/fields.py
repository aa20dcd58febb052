"""The vocabulary of the filter language: prefixes, attribute names, aliases and comparators.

Everything the parser, the printer and the SQL generators must agree on about *which* fields
exist and *what* may be compared with them lives here, in plain tables, so that adding an
attribute or a comparator is a one-line change seen by all three.
"""

from __future__ import annotations

from typing import Literal

from ..attributes import IDENTITY_ALIASES

FieldKind = Literal["attribute", "tag", "metadata", "feedback", "expectation", "span"]
FIELD_KINDS: tuple[str, ...] = ("attribute", "tag", "metadata", "feedback", "expectation", "span")

# Prefix as written (case-sensitive, as in MLflow) -> field kind.
PREFIXES: dict[str, str] = {
    "attributes": "attribute",
    "attribute": "attribute",
    "trace": "attribute",
    "tags": "tag",
    "tag": "tag",
    "metadata": "metadata",
    "request_metadata": "metadata",
    "feedback": "feedback",
    "expectation": "expectation",
    "span": "span",
}

# Trace attribute name as written (case-sensitive) -> canonical name.
ATTRIBUTE_ALIASES: dict[str, str] = {
    "timestamp_ms": "timestamp_ms",
    "timestamp": "timestamp_ms",
    "execution_time_ms": "execution_time_ms",
    "execution_time": "execution_time_ms",
    "end_time_ms": "end_time_ms",
    "end_time": "end_time_ms",
    "status": "status",
    "state": "status",
    "name": "name",
    "request_id": "trace_id",
    "trace_id": "trace_id",
    "client_request_id": "client_request_id",
    "request_preview": "request_preview",
    "response_preview": "response_preview",
}
NUMERIC_ATTRIBUTES = frozenset({"timestamp_ms", "execution_time_ms", "end_time_ms"})
STRING_ATTRIBUTES = frozenset(set(ATTRIBUTE_ALIASES.values()) - NUMERIC_ATTRIBUTES)

# Attribute names that MLflow accepts but that live elsewhere: name -> (kind, key).
# MLflow's SearchTraceUtils maps ``run_id`` to the metadata key ``mlflow.sourceRun``.
ATTRIBUTE_REDIRECTS: dict[str, tuple[str, str]] = {"run_id": ("metadata", "mlflow.sourceRun")}

SPAN_FIELDS = frozenset({"name", "type", "status"})
SPAN_ATTRIBUTE_WORDS = frozenset({"attributes", "attribute"})

# Identity aliases of tag and metadata keys; the AST only ever holds the canonical key.
KEY_ALIASES: dict[str, str] = IDENTITY_ALIASES

EQUALITY_OPS = ("=", "!=")
ORDER_OPS = ("<", "<=", ">", ">=")
PATTERN_OPS = ("LIKE", "ILIKE", "RLIKE")
LIST_OPS = ("IN", "NOT IN")
NULL_OPS = ("IS NULL", "IS NOT NULL")
ALL_OPS: tuple[str, ...] = EQUALITY_OPS + ORDER_OPS + PATTERN_OPS + LIST_OPS + NULL_OPS

_NUMERIC_FIELD_OPS = EQUALITY_OPS + ORDER_OPS
_STRING_FIELD_OPS = EQUALITY_OPS + PATTERN_OPS + LIST_OPS
_KEYED_STRING_OPS = _STRING_FIELD_OPS + NULL_OPS
_ASSESSMENT_OPS = EQUALITY_OPS + ORDER_OPS + PATTERN_OPS + LIST_OPS + NULL_OPS
_SPAN_ATTRIBUTE_OPS = EQUALITY_OPS + ORDER_OPS + PATTERN_OPS + LIST_OPS


def canonical_key(kind: str, key: str) -> str:
    """The key the AST stores: identity aliases resolved for tags and metadata only."""
    if kind in ("tag", "metadata"):
        return KEY_ALIASES.get(key, key)
    return key


def allowed_ops(kind: str, name: str | None) -> tuple[str, ...]:
    """The comparators a field accepts, in the order error messages list them."""
    if kind == "attribute":
        return _NUMERIC_FIELD_OPS if name in NUMERIC_ATTRIBUTES else _STRING_FIELD_OPS
    if kind in ("tag", "metadata"):
        return _KEYED_STRING_OPS
    if kind in ("feedback", "expectation"):
        return _ASSESSMENT_OPS
    if kind == "span":
        return _SPAN_ATTRIBUTE_OPS if name == "attributes" else _STRING_FIELD_OPS
    raise ValueError(f"unknown field kind {kind!r}")


def allowed_value_types(kind: str, name: str | None, op: str) -> frozenset[str]:
    """Which literal types (``"str"``, ``"num"``) a field accepts after comparator ``op``.

    Order comparators take numbers and pattern comparators strings everywhere; for equality
    and list comparators a numeric trace attribute takes numbers, assessments and span
    attributes take either, and every other field takes strings.
    """
    if op in NULL_OPS:
        return frozenset()
    if op in ORDER_OPS:
        return frozenset({"num"})
    if op in PATTERN_OPS:
        return frozenset({"str"})
    if kind == "attribute" and name in NUMERIC_ATTRIBUTES:
        return frozenset({"num"})
    if kind in ("feedback", "expectation") or (kind == "span" and name == "attributes"):
        return frozenset({"str", "num"})
    return frozenset({"str"})


def describe_field(kind: str, name: str | None, key: str | None) -> str:
    """How a field reads in an error message, e.g. ``tags.`env``` or ``trace.timestamp_ms``."""
    if kind == "attribute":
        return f"trace.{name}"
    if kind == "span":
        return f"span.attributes.{quote_key(key or '')}" if name == "attributes" else f"span.{name}"
    prefix = {"tag": "tags", "metadata": "metadata"}.get(kind, kind)
    return f"{prefix}.{quote_key(key or '')}"


def quote_key(key: str) -> str:
    """``key`` in backticks, a backtick inside doubled: the one quoting every key survives."""
    return "`" + key.replace("`", "``") + "`"
