"""Search a DuckDB trace store: one parameterised statement per page, then spans in one more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from ..entities import Trace
from ..filters import Node, OrderTerm, compile_filter, order_by_sql, order_key_sql, seek_predicate
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
    where_sql, where_params = compile_filter(query.node)
    key_exprs, key_params = order_key_sql(query.terms)
    order_sql, order_params = order_by_sql(query.terms)
    conditions = [f"({where_sql})"]
    params: list[Any] = [*key_params, *where_params]
    if project is not None:
        conditions.append("t.project = ?")
        params.append(project)
    if seek_values is not None:
        seek_sql, seek_params = seek_predicate(query.terms, seek_values)
        conditions.append(seek_sql)
        params.extend(seek_params)
    params.extend(order_params)
    limit = ""
    if query.page_size is not None:
        limit = " LIMIT ?"
        params.append(query.page_size + 1)  # one more row tells whether another page follows
    # Find the page's rows first (row ids and sort keys only), then fetch their columns: DuckDB's
    # top-N would otherwise carry every column (tags MAPs above all) of every candidate row.
    sql = (
        f"WITH page AS (SELECT t.rowid AS _rid, {', '.join(f'{e} AS _k{i}' for i, e in enumerate(key_exprs))}"
        f" FROM traces t WHERE {' AND '.join(conditions)} ORDER BY {order_sql}{limit})"
        f" SELECT {TRACE_INFO_SQL}, {', '.join(f'page._k{i}' for i in range(len(key_exprs)))}"
        f" FROM page JOIN traces t ON t.rowid = page._rid"
        f" ORDER BY {', '.join(f'page._k{i} {_direction(term)} NULLS LAST' for i, term in enumerate(query.terms))}"
    )
    rows = con.execute(sql, params).fetchall()
    more = query.page_size is not None and len(rows) > query.page_size
    if more:
        rows = rows[: query.page_size]
    width = len(key_exprs)
    traces = traces_from_rows(con, [r[:-width] for r in rows], include_spans=query.include_spans)
    token = encode_token(list(rows[-1][-width:]), fingerprint) if more and rows else None
    return PageRows(traces, token)


def count(con: duckdb.DuckDBPyConnection, node: Node | None, project: str | None) -> int:
    where_sql, params = compile_filter(node)
    sql = f"SELECT count(*) FROM traces t WHERE ({where_sql})"
    if project is not None:
        sql += " AND t.project = ?"
        params = [*params, project]
    return int(con.execute(sql, params).fetchall()[0][0])


def _direction(term: OrderTerm) -> str:
    return "ASC" if term.ascending else "DESC"
