"""Change which choice of a stored LLM call is the selected one (``traceduck.select_choice``).

The call is found by its LLM response id (``llm_responses``) or by its trace id (the trace's one
LLM span with a normalised chat completion as outputs). The span's outputs get the new
``selected_choice_index`` and ``selected_message``, its ``traceduck.llm.selected_choice_index``
attribute follows, and when the span is its trace's root the trace's response preview becomes
the newly selected message, all in one transaction.
"""

from __future__ import annotations

from typing import Any

import duckdb
import orjson

from ..errors import TraceNotFoundError
from ..llm.normalize import preview_of, reselect
from ..serialize import dumps

SELECTED_ATTRIBUTE = "traceduck.llm.selected_choice_index"


def _scope(project: str | None) -> tuple[str, list[Any]]:
    return ("", []) if project is None else (" AND project = ?", [project])


def find_llm_span(con: duckdb.DuckDBPyConnection, trace_id: str | None, response_id: str | None,
                  project: str | None) -> tuple[str, str]:  # fmt: skip
    """(trace id as 32 hex digits, span id) of the LLM call named; raises if there is none."""
    if (trace_id is None) == (response_id is None):
        raise ValueError("name the LLM call with exactly one of trace_id or response_id")
    scope, params = _scope(project)
    if response_id is not None:
        rows = con.execute(
            "SELECT replace(CAST(trace_id AS VARCHAR), '-', ''), span_id FROM llm_responses"
            f" WHERE response_id = ?{scope} LIMIT 1",
            [response_id, *params],
        ).fetchall()
        if not rows:
            raise TraceNotFoundError(f"no LLM call with response id {response_id!r}")
        return rows[0][0], rows[0][1]
    assert trace_id is not None
    hex_id = trace_id.strip().lower().replace("-", "")
    rows = con.execute(
        "SELECT span_id FROM spans WHERE trace_id = TRY_CAST(? AS UUID) AND span_type = 'LLM'"
        f" AND json_extract(outputs, '$.selected_choice_index') IS NOT NULL{scope} ORDER BY start_time_ns",
        [hex_id, *params],
    ).fetchall()
    if not rows:
        raise TraceNotFoundError(f"no trace {trace_id!r} with a logged chat completion")
    if len(rows) > 1:
        raise ValueError(f"trace {trace_id!r} has {len(rows)} LLM calls; name the call by its response_id")
    return hex_id, rows[0][0]


def select_choice(con: duckdb.DuckDBPyConnection, index: int, trace_id: str | None, response_id: str | None,
                  project: str | None) -> dict[str, Any]:  # fmt: skip
    """Select choice ``index`` of a stored call; returns its trace id, span id and the message."""
    hex_id, span_id = find_llm_span(con, trace_id, response_id, project)
    scope, scope_params = _scope(project)
    rows = con.execute(
        f"SELECT outputs, attributes FROM spans WHERE trace_id = CAST(? AS UUID) AND span_id = ?{scope} LIMIT 1",
        [hex_id, span_id, *scope_params],
    ).fetchall()
    if not rows:
        raise TraceNotFoundError(f"the LLM span {span_id} of trace {hex_id} is not stored")
    try:
        outputs = orjson.loads(rows[0][0]) if rows[0][0] else None
    except orjson.JSONDecodeError:
        outputs = None
    updated = reselect(outputs, index)  # ValueError for an index out of range
    attributes = orjson.loads(rows[0][1]) if rows[0][1] else {}
    attributes[SELECTED_ATTRIBUTE] = index
    preview = preview_of(updated["selected_message"])
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"UPDATE spans SET outputs = ?, attributes = ? WHERE trace_id = CAST(? AS UUID) AND span_id = ?{scope}",
            [dumps(updated), dumps(attributes), hex_id, span_id, *scope_params],
        )
        con.execute(
            f"UPDATE traces SET response_preview = ? WHERE trace_id = CAST(? AS UUID) AND root_span_id = ?{scope}",
            [preview, hex_id, span_id, *scope_params],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return {"trace_id": hex_id, "span_id": span_id, "selected_choice_index": index,
            "selected_message": updated["selected_message"]}  # fmt: skip
