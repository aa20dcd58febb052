"""The filter language of ``search_traces``: MLflow-compatible filter strings, plus OR, NOT and
parentheses, compiled to parameterised DuckDB SQL.

The pipeline is tokens (``tokens.py``) -> parser (``parser.py``) -> syntax tree (``ast.py``) ->
SQL (``sql.py``); ``order.py`` does the same for ``order_by`` and keyset paging::

    node = parse_filter("tags.env = 'prod' AND NOT span.type = 'LLM'")
    where, params = compile_filter(node)
    con.execute(f"SELECT trace_id FROM traces t WHERE {where}", params).fetchall()
"""

from __future__ import annotations

from .ast import And, Comparison, Field, Node, Not, Or, to_filter_string
from .order import OrderTerm, order_by_sql, order_key_sql, parse_order_by, seek_predicate
from .parser import MAX_DEPTH, parse_filter
from .sql import DuckDBGenerator, SqlGenerator, compile_filter

__all__ = [
    "MAX_DEPTH",
    "And",
    "Comparison",
    "DuckDBGenerator",
    "Field",
    "Node",
    "Not",
    "Or",
    "OrderTerm",
    "SqlGenerator",
    "compile_filter",
    "order_by_sql",
    "order_key_sql",
    "parse_filter",
    "parse_order_by",
    "seek_predicate",
    "to_filter_string",
]
