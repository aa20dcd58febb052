"""The syntax tree of a parsed filter, and the printer that turns one back into a filter string.

Nodes are frozen dataclasses that compare equal when they mean the same filter: positions are
kept for error messages but left out of equality, and keys are stored in canonical form (the
parser resolves aliases), so ``parse_filter(to_filter_string(node)) == node`` for every node
the parser can produce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field as dc_field

from .fields import (
    ALL_OPS,
    FIELD_KINDS,
    LIST_OPS,
    NULL_OPS,
    NUMERIC_ATTRIBUTES,
    SPAN_FIELDS,
    STRING_ATTRIBUTES,
    FieldKind,
    describe_field,
)

Scalar = str | int | float
Value = Scalar | tuple[Scalar, ...] | None


@dataclass(frozen=True)
class Field:
    """What a comparison looks at.

    ``kind`` is one of ``attribute``, ``tag``, ``metadata``, ``feedback``, ``expectation`` and
    ``span``. For ``attribute`` ``name`` is the canonical trace attribute (``timestamp_ms``,
    ``execution_time_ms``, ``end_time_ms``, ``status``, ``name``, ``trace_id``,
    ``client_request_id``, ``request_preview``, ``response_preview``) and ``key`` is None. For
    ``span`` ``name`` is ``name``, ``type``, ``status`` or ``attributes``, and ``key`` is the
    span attribute key for the last. For the other kinds ``name`` is None and ``key`` is the
    canonical tag or metadata key, or the assessment name.
    """

    kind: FieldKind
    name: str | None = None
    key: str | None = None
    pos: int = dc_field(default=-1, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")
        if self.kind == "attribute":
            ok = self.name in STRING_ATTRIBUTES | NUMERIC_ATTRIBUTES and self.key is None
        elif self.kind == "span":
            ok = (self.name in SPAN_FIELDS and self.key is None) or (
                self.name == "attributes" and isinstance(self.key, str) and self.key != ""
            )
        else:
            ok = self.name is None and isinstance(self.key, str) and self.key != ""
        if not ok:
            raise ValueError(
                f"inconsistent field: kind={self.kind!r} name={self.name!r} key={self.key!r}"
            )

    def __str__(self) -> str:
        return describe_field(self.kind, self.name, self.key)


@dataclass(frozen=True)
class Comparison:
    """``field op value``: the only leaf of a filter.

    ``value`` is a string or a number for the scalar comparators, a non-empty tuple of them for
    ``IN`` / ``NOT IN``, and None for ``IS NULL`` / ``IS NOT NULL``.
    """

    field: Field
    op: str
    value: Value = None
    pos: int = dc_field(default=-1, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in ALL_OPS:
            raise ValueError(f"unknown comparator {self.op!r}")
        if self.op in NULL_OPS:
            ok = self.value is None
        elif self.op in LIST_OPS:
            ok = (
                isinstance(self.value, tuple)
                and len(self.value) > 0
                and all(_is_scalar(v) for v in self.value)
            )
        else:
            ok = _is_scalar(self.value)
        if not ok:
            raise ValueError(f"value {self.value!r} does not fit comparator {self.op}")


@dataclass(frozen=True)
class And:
    """All of ``items`` hold (two or more)."""

    items: tuple[Node, ...]
    pos: int = dc_field(default=-1, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.items) < 2:
            raise ValueError("And needs at least two items")


@dataclass(frozen=True)
class Or:
    """At least one of ``items`` holds (two or more)."""

    items: tuple[Node, ...]
    pos: int = dc_field(default=-1, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.items) < 2:
            raise ValueError("Or needs at least two items")


@dataclass(frozen=True)
class Not:
    """``item`` does not hold: the exact complement, a missing key included."""

    item: Node
    pos: int = dc_field(default=-1, compare=False, repr=False)


Node = Comparison | And | Or | Not


def _is_scalar(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int))


def format_value(value: Scalar) -> str:
    """A literal as the tokenizer reads it back: strings single-quoted, numbers in Python form."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _comparison_string(node: Comparison) -> str:
    lhs = str(node.field)
    if node.op in NULL_OPS:
        return f"{lhs} {node.op}"
    if node.op in LIST_OPS:
        assert isinstance(node.value, tuple)
        return f"{lhs} {node.op} (" + ", ".join(format_value(v) for v in node.value) + ")"
    assert node.value is not None and not isinstance(node.value, tuple)
    return f"{lhs} {node.op} {format_value(node.value)}"


def to_filter_string(node: Node) -> str:
    """Print ``node`` as a canonical filter string that parses back to an equal node.

    Every key is backtick-quoted and every string single-quoted; a nested ``And`` or ``Or`` is
    always parenthesised, so the tree shape survives the round trip exactly.
    """
    if isinstance(node, Comparison):
        return _comparison_string(node)
    if isinstance(node, Not):
        inner = to_filter_string(node.item)
        if isinstance(node.item, (And, Or)):
            inner = f"({inner})"
        return f"NOT {inner}"
    if isinstance(node, (And, Or)):
        joiner = " AND " if isinstance(node, And) else " OR "
        parts = []
        for item in node.items:
            text = to_filter_string(item)
            parts.append(f"({text})" if isinstance(item, (And, Or)) else text)
        return joiner.join(parts)
    raise TypeError(f"not a filter node: {node!r}")
