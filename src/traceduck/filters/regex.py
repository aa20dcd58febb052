"""Syntax check of RLIKE patterns against the regular-expression engine that will run them.

DuckDB evaluates ``regexp_matches`` with RE2, whose syntax differs from Python's ``re`` (no
look-around, no back-references, but ``\\Q...\\E`` and ``\\pL``). Asking RE2 itself, through a
private in-memory DuckDB connection, is the only check that never disagrees with the search,
so a pattern that would fail at query time fails at parse time instead, with a position.
"""

from __future__ import annotations

import functools
import threading

import duckdb

_lock = threading.Lock()
_connection: duckdb.DuckDBPyConnection | None = None


def _con() -> duckdb.DuckDBPyConnection:
    global _connection
    if _connection is None:
        _connection = duckdb.connect(":memory:")
    return _connection


@functools.lru_cache(maxsize=512)
def regex_error(pattern: str) -> str | None:
    """None when RE2 accepts ``pattern``, else RE2's complaint (e.g. ``missing ): (``)."""
    with _lock:
        try:
            _con().execute("SELECT regexp_matches('', ?)", [pattern]).fetchall()
        except duckdb.Error as exc:
            message = str(exc)
            prefix = "Invalid Input Error: "
            return message[len(prefix) :] if message.startswith(prefix) else message
    return None
