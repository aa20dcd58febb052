"""``order_by`` for trace searches: parsing, ORDER BY generation and keyset ("seek") paging.

An ``order_by`` entry is ``"<field> [ASC|DESC]"``, the field written as in filters (a trace
attribute, ``tags.<key>`` or ``metadata.<key>``). The trace id always ends the ordering as a
tie-breaker, which makes it total: that is what lets a page resume "strictly after the last
row seen" without skipping or repeating a trace, whatever the duplicates and NULLs.

Every sort key sorts NULLS LAST in both directions. The caller selects ``order_key_sql`` with
each row and hands the last row's values to ``seek_predicate`` to get the next page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidFilterError
from .ast import Field
from .identifiers import FieldReader
from .sql import DuckDBGenerator, ParamList, SqlGenerator
from .tokens import TokenKind

ORDERABLE_ATTRIBUTES = frozenset(
    {
        "timestamp_ms",
        "execution_time_ms",
        "end_time_ms",
        "status",
        "name",
        "trace_id",
        "client_request_id",
    }
)
# Attributes whose column is NOT NULL: their seek step needs no "or NULL" branch.
_NOT_NULL_ATTRIBUTES = frozenset({"timestamp_ms", "status", "trace_id"})

TRACE_ID = Field("attribute", "trace_id")


@dataclass(frozen=True)
class OrderTerm:
    """One sort key: a trace attribute, tag or metadata field and its direction."""

    field: Field
    ascending: bool = True


DEFAULT_ORDER: tuple[OrderTerm, ...] = (
    OrderTerm(Field("attribute", "timestamp_ms"), ascending=False),
)


def _parse_entry(index: int, entry: str) -> OrderTerm:
    if not isinstance(entry, str):
        raise TypeError(f"order_by[{index}] must be a string, not {type(entry).__name__}")
    parser = FieldReader(entry)
    if parser.peek().kind is TokenKind.EOF:
        parser.error("blank entry: expected a field such as timestamp_ms DESC", len(entry))
    fld = parser.field()
    if fld.kind == "attribute":
        if fld.name not in ORDERABLE_ATTRIBUTES:
            allowed = ", ".join(sorted(ORDERABLE_ATTRIBUTES))
            parser.error(
                f"cannot order by {fld}: expected one of {allowed}, tags.<key> or metadata.<key>",
                fld.pos,
            )
    elif fld.kind not in ("tag", "metadata"):
        parser.error(
            f"cannot order by {fld}: only trace attributes, tags and metadata sort traces", fld.pos
        )
    ascending = True
    direction = parser.peek()
    if direction.kind is not TokenKind.EOF:
        if not direction.is_keyword("ASC", "DESC"):
            parser.error(
                f"expected ASC or DESC after the field, got {direction.describe()}", direction.pos
            )
        ascending = direction.is_keyword("ASC")
        parser.advance()
    extra = parser.peek()
    if extra.kind is not TokenKind.EOF:
        parser.error(f"unexpected {extra.describe()} after the direction", extra.pos)
    return OrderTerm(fld, ascending)


def parse_order_by(order_by: Sequence[str] | None) -> list[OrderTerm]:
    """Parse ``order_by`` entries; ``None`` or ``[]`` mean ``timestamp_ms DESC``.

    The direction defaults to ASC, as in MLflow. The trace id is appended as the last key
    (DESC when the first key is DESC, else ASC) unless an entry already names it. A bad entry
    raises ``InvalidFilterError`` whose message starts ``order_by[i]:`` and whose position is
    within that entry.
    """
    terms: list[OrderTerm] = []
    for index, entry in enumerate(order_by or ()):
        try:
            terms.append(_parse_entry(index, entry))
        except InvalidFilterError as exc:
            raise InvalidFilterError(
                f"order_by[{index}]: {exc.message}", exc.position, entry
            ) from None
    if not terms:
        terms = list(DEFAULT_ORDER)
    if not any(term.field == TRACE_ID for term in terms):
        terms.append(OrderTerm(TRACE_ID, ascending=terms[0].ascending))
    return terms


def order_by_sql(
    terms: Sequence[OrderTerm], generator: SqlGenerator | None = None
) -> tuple[str, ParamList]:
    """The ORDER BY list (without the keywords), e.g. ``t.request_time DESC NULLS LAST, ...``."""
    gen = generator or DuckDBGenerator()
    params: ParamList = []
    parts = [
        f"{gen.value_expr(term.field, params)} {'ASC' if term.ascending else 'DESC'} NULLS LAST"
        for term in terms
    ]
    return ", ".join(parts), params


def order_key_sql(
    terms: Sequence[OrderTerm], generator: SqlGenerator | None = None
) -> tuple[list[str], ParamList]:
    """One SELECT expression per term giving a row's sort-key value, and their parameters.

    The trace id comes out as its 32 hex digits, the form ``seek_predicate`` takes back.
    """
    gen = generator or DuckDBGenerator()
    params: ParamList = []
    exprs = []
    for term in terms:
        expr = gen.value_expr(term.field, params)
        exprs.append(gen.uuid_hex(expr) if term.field == TRACE_ID else expr)
    return exprs, params


def seek_predicate(
    terms: Sequence[OrderTerm], last_values: Sequence[object], generator: SqlGenerator | None = None
) -> tuple[str, ParamList]:
    """The condition "this row sorts strictly after the row whose sort keys are ``last_values``".

    It is the disjunction, over each term ``i`` whose last value is not NULL, of "terms before
    ``i`` equal (or both NULL), term ``i`` strictly after". Strictly after means greater (ASC)
    or smaller (DESC) or NULL, since NULLs sort last; nothing sorts after a NULL.
    """
    if len(last_values) != len(terms):
        raise ValueError(f"expected {len(terms)} sort-key values, got {len(last_values)}")
    gen = generator or DuckDBGenerator()
    params: ParamList = []
    disjuncts: list[str] = []
    for i, term in enumerate(terms):
        if last_values[i] is None:
            continue
        parts: list[str] = []
        for j in range(i):
            expr = gen.value_expr(terms[j].field, params)
            if last_values[j] is None:
                parts.append(f"{expr} IS NULL")
            else:
                parts.append(f"{expr} = {_placeholder(gen, terms[j], last_values[j], params)}")
        expr = gen.value_expr(term.field, params)
        after = ">" if term.ascending else "<"
        step = f"{expr} {after} {_placeholder(gen, term, last_values[i], params)}"
        if not (term.field.kind == "attribute" and term.field.name in _NOT_NULL_ATTRIBUTES):
            step = f"({step} OR {gen.value_expr(term.field, params)} IS NULL)"
        parts.append(step)
        disjuncts.append("(" + " AND ".join(parts) + ")")
    if not disjuncts:
        return "FALSE", []
    return "(" + " OR ".join(disjuncts) + ")", params


def _placeholder(gen: SqlGenerator, term: OrderTerm, value: object, params: ParamList) -> str:
    params.append(value)
    return gen.uuid_param() if term.field == TRACE_ID else "?"
