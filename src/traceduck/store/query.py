"""Search a DuckDB trace store: one parameterised statement per page, then spans in one more."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb

from ..entities import Trace
from ..filters import Node, OrderTerm, compile_filter, order_by_sql, order_key_sql, seek_predicate
from ..filters.ast import Comparison, Field, Not
from ..filters.order import TRACE_ID
from ..filters.sql import DuckDBGenerator
from ..paging import decode_token, encode_token, query_fingerprint
from .reader import TRACE_INFO_SQL, traces_from_rows


@dataclass
class SearchQuery:
    """A parsed search, ready for a store."""

    filter_string: str | None
    node: Node | None
    order_by: list[str] | None
    terms: list[OrderTerm]
    page_size: int | None  # None = every match
    page_token: str | None
    include_spans: bool


@dataclass
class PageRows:
    traces: list[Trace]
    next_page_token: str | None


def search(con: duckdb.DuckDBPyConnection, query: SearchQuery, project: str | None) -> PageRows:
    """One page of ``query`` within ``project`` (None: every project)."""
    fingerprint = query_fingerprint(query.filter_string, query.order_by, project)
    seek_values = None
    if query.page_token is not None:
        seek_values = decode_token(query.page_token, fingerprint, len(query.terms))
    key_exprs, key_params = order_key_sql(query.terms)
    order_sql, order_params = order_by_sql(query.terms)
    limit_params: list[Any] = []
    limit = ""
    if query.page_size is not None:
        limit = " LIMIT ?"
        limit_params.append(query.page_size + 1)  # one more row tells whether another page follows
    # Find the page's rows first (row ids and sort keys only), then fetch their columns: DuckDB's
    # top-N would otherwise carry every column (tags MAPs above all) of every candidate row.
    # The trace id sorts as the UUID and is turned into the token's hex digits only for the page's
    # rows (in the page CTE it would be converted for every candidate row before the top-N).
    uuid_hex = DuckDBGenerator().uuid_hex
    page_keys = ["t.trace_id" if term.field == TRACE_ID else e for term, e in zip(query.terms, key_exprs)]
    out_keys = [uuid_hex(f"page._k{i}") if term.field == TRACE_ID else f"page._k{i}" for i, term in enumerate(query.terms)]

    def statement(since_ms: int | None) -> tuple[str, list[Any]]:
        """The page's statement, looking only at traces started at or after ``since_ms`` if given."""
        where_sql, where_params = compile_filter(query.node, DuckDBGenerator(since_ms))
        conditions = [f"({where_sql})"]
        params: list[Any] = [*key_params, *where_params]
        if project is not None:
            conditions.append("t.project = ?")
            params.append(project)
        if seek_values is not None:
            seek_sql, seek_params = seek_predicate(query.terms, seek_values)
            conditions.append(seek_sql)
            params.extend(seek_params)
        if since_ms is not None:
            conditions.append("t.request_time >= ?")
            params.append(since_ms)
        sql = (
            f"WITH page AS (SELECT t.rowid AS _rid, {', '.join(f'{e} AS _k{i}' for i, e in enumerate(page_keys))}"
            f" FROM traces t WHERE {' AND '.join(conditions)} ORDER BY {order_sql}{limit})"
            f" SELECT {TRACE_INFO_SQL}, {', '.join(out_keys)}"
            f" FROM page JOIN traces t ON t.rowid = page._rid"
            f" ORDER BY {', '.join(f'page._k{i} {_direction(term)} NULLS LAST' for i, term in enumerate(query.terms))}"
        )
        return sql, [*params, *order_params, *limit_params]

    rows = _page_rows(con, query, project, seek_values, statement)
    more = query.page_size is not None and len(rows) > query.page_size
    if more:
        rows = rows[: query.page_size]
    width = len(key_exprs)
    traces = traces_from_rows(con, [r[:-width] for r in rows], include_spans=query.include_spans)
    token = encode_token(list(rows[-1][-width:]), fingerprint) if more and rows else None
    return PageRows(traces, token)


#: Newest-first pages look at the most recent fraction of the stored time span first (these
#: fractions in turn, then everything): a page of a common filter is found in a few row groups
#: instead of evaluating the filter on every trace. A probe that fills the page is exact: every
#: trace outside its window is older than every trace in it.
PROBE_FRACTIONS = (1 / 128, 1 / 16)
_TIMESTAMP = Field("attribute", "timestamp_ms")


def _leaves(node: Node) -> list[Comparison]:
    if isinstance(node, Comparison):
        return [node]
    if isinstance(node, Not):
        return _leaves(node.item)
    return [leaf for item in node.items for leaf in _leaves(item)]


def _worth_probing(node: Node | None) -> bool:
    """Probing pays when the filter reads a tags or metadata MAP for every trace, or assessments
    (a probe reads only the assessments of its window's traces): the costly parts of a scan. It
    cannot when the filter has its own time bounds (the recent windows may hold none of its
    traces) or a span clause (which each probe would evaluate again over every span)."""
    if node is None:
        return False
    leaves = _leaves(node)
    if any(leaf.field.kind == "span" for leaf in leaves):
        return False
    if any(leaf.field.kind == "attribute" and leaf.field.name in ("timestamp_ms", "end_time_ms") for leaf in leaves):
        return False
    mirrored = DuckDBGenerator.MIRRORED_TAG_COLUMNS
    return any(leaf.field.kind in ("metadata", "feedback", "expectation")
               or (leaf.field.kind == "tag" and leaf.field.key not in mirrored) for leaf in leaves)  # fmt: skip


def _page_rows(con: duckdb.DuckDBPyConnection, query: SearchQuery, project: str | None,
               seek_values: list[Any] | None, statement: Callable[[int | None], tuple[str, list[Any]]]) -> list[tuple]:
    """The page's rows: with probes of recent windows first when the order is newest first."""
    newest_first = query.terms[0].field == _TIMESTAMP and not query.terms[0].ascending
    if query.page_size is not None and newest_first and _worth_probing(query.node):
        bounds = con.execute(
            "SELECT min(request_time), max(request_time) FROM traces" + (" WHERE project = ?" if project is not None else ""),
            [project] if project is not None else [],
        ).fetchall()[0]
        if bounds[0] is not None:
            high = bounds[1] if seek_values is None or seek_values[0] is None else min(bounds[1], seek_values[0])
            span = high - bounds[0]
            for fraction in PROBE_FRACTIONS:
                rows = con.execute(*statement(high - int(span * fraction))).fetchall()
                if len(rows) > query.page_size:
                    return rows
    return con.execute(*statement(None)).fetchall()


def count(con: duckdb.DuckDBPyConnection, node: Node | None, project: str | None) -> int:
    where_sql, params = compile_filter(node)
    sql = f"SELECT count(*) FROM traces t WHERE ({where_sql})"
    if project is not None:
        sql += " AND t.project = ?"
        params = [*params, project]
    return int(con.execute(sql, params).fetchall()[0][0])


def _direction(term: OrderTerm) -> str:
    return "ASC" if term.ascending else "DESC"
