"""Assessments (feedback, expectations) in a DuckDB store, and joining pending ones to traces.

An assessment names its trace by trace id, client request id or LLM response id. When the id
does not resolve yet (the trace is still being recorded, still queued, or arrives later through
the collector) the assessment is stored anyway with ``trace_id`` NULL and joined by the writer in
the transaction that stores the matching trace. Nothing is ever held only in memory.
"""

from __future__ import annotations

import json
import time
from typing import Any

import duckdb

from ..entities import Assessment
from .reader import _ASSESSMENT_COLUMNS, assessment_from_row

TARGET_KINDS = ("trace_id", "client_request_id", "response_id")
_INSERT_COLUMNS = (
    "assessment_id", "trace_id", "project", "target_kind", "target", "span_id", "kind", "name",
    "value_json", "value_str", "value_num", "source_type", "source_id", "rationale",
    "metadata_json", "error_json", "valid", "overrides", "create_time", "last_update_time",
)  # fmt: skip


def now_ms() -> int:
    return int(time.time() * 1000)


def resolve_trace_id(con: duckdb.DuckDBPyConnection, target_kind: str, target: str,
                     project: str | None) -> str | None:
    """The stored trace an id names (the newest, if a client request id was reused)."""
    scope, params = ("", [target]) if project is None else (" AND project = ?", [target, project])
    if target_kind == "trace_id":
        sql = f"SELECT replace(CAST(trace_id AS VARCHAR), '-', '') FROM traces WHERE trace_id = TRY_CAST(? AS UUID){scope}"
    elif target_kind == "client_request_id":
        sql = (
            "SELECT replace(CAST(trace_id AS VARCHAR), '-', '') FROM traces WHERE client_request_id = ?"
            f"{scope} ORDER BY request_time DESC LIMIT 1"
        )
    else:
        sql = f"SELECT replace(CAST(trace_id AS VARCHAR), '-', '') FROM llm_responses WHERE response_id = ?{scope} LIMIT 1"
    rows = con.execute(sql, params).fetchall()
    return rows[0][0] if rows else None


def insert(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    """Store one assessment; its trace is resolved now, within its project, else it is pending.

    An id that names a trace of ANOTHER project stays pending forever: a key of one project can
    never attach anything to another project's traces.
    """
    if row["trace_id"] is None:
        row["trace_id"] = resolve_trace_id(con, row["target_kind"], row["target"], row["project"])
    placeholders = ", ".join("TRY_CAST(? AS UUID)" if c == "trace_id" else "?" for c in _INSERT_COLUMNS)
    con.execute(
        f"INSERT INTO assessments ({', '.join(_INSERT_COLUMNS)}) VALUES ({placeholders})",
        [row[c] for c in _INSERT_COLUMNS],
    )


def get(con: duckdb.DuckDBPyConnection, assessment_id: str, project: str | None) -> Assessment | None:
    sql = f"SELECT {_ASSESSMENT_COLUMNS} FROM assessments a WHERE a.assessment_id = ?"
    params: list[Any] = [assessment_id]
    if project is not None:
        sql += " AND project = ?"
        params.append(project)
    rows = con.execute(sql, params).fetchall()
    return assessment_from_row(rows[0]) if rows else None


def update(con: duckdb.DuckDBPyConnection, assessment_id: str, changes: dict[str, Any]) -> None:
    """Set the given columns (names from a fixed list, values as parameters)."""
    allowed = {"value_json", "value_str", "value_num", "rationale", "metadata_json", "error_json",
               "valid", "source_type", "source_id"}  # fmt: skip
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
    sets = ", ".join(f"{name} = ?" for name in changes)
    con.execute(
        f"UPDATE assessments SET {sets}, last_update_time = ? WHERE assessment_id = ?",
        [*changes.values(), now_ms(), assessment_id],
    )


def delete(con: duckdb.DuckDBPyConnection, assessment: Assessment) -> None:
    """Delete an assessment; the one it had overridden becomes valid again."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM assessments WHERE assessment_id = ?", [assessment.assessment_id])
        if assessment.overrides:
            con.execute(
                "UPDATE assessments SET valid = true, last_update_time = ? WHERE assessment_id = ?",
                [now_ms(), assessment.overrides],
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def override(con: duckdb.DuckDBPyConnection, old: Assessment, row: dict[str, Any]) -> None:
    """Store ``row`` as the new assessment and mark ``old`` invalid, in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        insert(con, row)
        con.execute(
            "UPDATE assessments SET valid = false, last_update_time = ? WHERE assessment_id = ?",
            [now_ms(), old.assessment_id],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def pending(con: duckdb.DuckDBPyConnection, project: str | None) -> list[Assessment]:
    """Assessments whose trace is not stored yet."""
    sql = (
        f"SELECT {_ASSESSMENT_COLUMNS} FROM assessments a"
        " WHERE (a.trace_id IS NULL OR NOT EXISTS (SELECT 1 FROM traces t WHERE t.trace_id = a.trace_id"
        " AND t.project = a.project))"
    )
    params: list[Any] = []
    if project is not None:
        sql += " AND a.project = ?"
        params.append(project)
    return [assessment_from_row(r) for r in con.execute(sql + " ORDER BY create_time", params).fetchall()]


#: Give pending assessments the trace their id now names, among the traces just written (their
#: ``stored_at`` is the batch's), within their project: by client request id (the newest trace),
#: trace id or LLM response id. Run by the writer inside the transaction that stores the traces,
#: with ``$stored_at`` bound; one statement, cheap when nothing is pending.
JOIN_PENDING_SQL = (
    "UPDATE assessments SET trace_id = m.trace_id, last_update_time = $stored_at FROM ("
    " SELECT a.assessment_id, arg_max(t.trace_id, t.request_time) AS trace_id FROM assessments a"
    " JOIN traces t ON t.client_request_id = a.target AND t.project = a.project"
    " WHERE a.trace_id IS NULL AND a.target_kind = 'client_request_id' AND t.stored_at = $stored_at"
    " GROUP BY a.assessment_id"
    " UNION ALL SELECT a.assessment_id, any_value(t.trace_id) FROM assessments a"
    " JOIN traces t ON t.trace_id = TRY_CAST(a.target AS UUID) AND t.project = a.project"
    " WHERE a.trace_id IS NULL AND a.target_kind = 'trace_id' AND t.stored_at = $stored_at"
    " GROUP BY a.assessment_id"
    " UNION ALL SELECT a.assessment_id, any_value(r.trace_id) FROM assessments a"
    " JOIN llm_responses r ON r.response_id = a.target AND r.project = a.project"
    " WHERE a.trace_id IS NULL AND a.target_kind = 'response_id'"
    " GROUP BY a.assessment_id"
    ") m WHERE assessments.assessment_id = m.assessment_id"
)


def metadata_json(metadata: dict[str, Any] | None) -> str | None:
    return json.dumps(metadata) if metadata else None
