"""Read stored traces back into ``Trace`` objects (one query per table, never one per trace)."""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb

from ..entities import (
    Assessment,
    AssessmentError,
    AssessmentSource,
    Span,
    SpanEvent,
    Trace,
    TraceData,
    TraceInfo,
)
from ..serialize import from_json, loads

HEX_ID = "replace(CAST({col} AS VARCHAR), '-', '')"

#: Columns of ``traces t`` that make a ``TraceInfo`` (in this order).
TRACE_INFO_SQL = (
    f"{HEX_ID.format(col='t.trace_id')} AS trace_id, t.project, t.name, t.state, t.request_time,"
    " t.execution_duration, t.client_request_id, t.request_preview, t.response_preview, t.tags,"
    " t.metadata_json"
)

#: Most spans of one trace a read returns (its roots first, then the earliest to start); the
#: trace's ``data.omitted_spans`` says how many more are stored. Bounds the memory of reading a
#: trace of a million spans.
MAX_SPANS_PER_TRACE = 10_000
#: The spans of the traces ``?`` (a list of trace ids) of project ``?`` that have at most
#: ``{limit}`` spans (in the window), in two phases: the matching rows are found on the narrow id
#: columns, then only those rows are read whole. Joining the wide columns directly made DuckDB
#: read them for every span in the window (2.5x slower for a page of traces spread over weeks at
#: 1M traces). The ids go in as one list parameter (registering them as an Arrow table cost more).
_SPAN_SQL = (
    f"SELECT {HEX_ID.format(col='trace_id')}, span_id, parent_span_id, name, span_type, kind,"
    " start_time_ns, end_time_ns, status, status_message, attributes, inputs, outputs, events"
    " FROM spans WHERE rowid IN (SELECT s.rowid FROM spans s"
    "  WHERE s.trace_id IN (SELECT CAST(unnest(?) AS UUID)) AND s.project = ?{window}"
    "  QUALIFY count(*) OVER (PARTITION BY s.trace_id) <= {limit})"
    " ORDER BY trace_id, start_time_ns, span_id"
)
_SPAN_COUNT_SQL = (
    "SELECT s.trace_id, count(*) FROM spans s"
    " WHERE s.trace_id IN (SELECT CAST(unnest(?) AS UUID)) AND s.project = ?{window}"
    " GROUP BY s.trace_id HAVING count(*) > {limit}"
)
#: The first spans of ONE trace over the limit: picked by a top-N on narrow columns (memory of
#: the limit, not of the trace), then fetched whole.
_FIRST_SPANS_SQL = (
    f"SELECT {HEX_ID.format(col='trace_id')}, span_id, parent_span_id, name, span_type, kind,"
    " start_time_ns, end_time_ns, status, status_message, attributes, inputs, outputs, events"
    " FROM spans WHERE rowid IN (SELECT s.rowid FROM spans s"
    " WHERE s.trace_id = ? AND s.project = ?{window}"
    " ORDER BY s.parent_span_id IS NOT NULL, s.start_time_ns, s.span_id LIMIT {limit})"
    " ORDER BY start_time_ns, span_id"
)

#: How far before its trace's root a span may start (clock skew between hosts) and how long
#: after the root ended (fire-and-forget work) and still be found by a search. Bounding the span
#: lookup by time lets DuckDB skip row groups; ``get_trace`` looks without bounds.
SPAN_WINDOW_BEFORE_MS = 60 * 60 * 1000
SPAN_WINDOW_AFTER_MS = 24 * 60 * 60 * 1000

_ASSESSMENT_COLUMNS = (
    "a.assessment_id, {hex} AS trace_id, a.kind, a.name, a.value_json, a.source_type, a.source_id,"
    " a.rationale, a.metadata_json, a.error_json, a.span_id, a.valid, a.overrides, a.create_time,"
    " a.last_update_time, a.target_kind, a.target, a.project"
).format(hex=HEX_ID.format(col="a.trace_id"))  # select FROM assessments a


def info_from_row(row: tuple) -> TraceInfo:
    (trace_id, project, name, state, request_time, duration, client_request_id,
     request_preview, response_preview, tags, metadata_json) = row[:11]  # fmt: skip
    return TraceInfo(
        trace_id=trace_id,
        client_request_id=client_request_id,
        name=name,
        state=state,
        request_time=request_time,
        execution_duration=duration,
        request_preview=request_preview,
        response_preview=response_preview,
        tags=dict(tags or {}),
        metadata=loads(metadata_json) if metadata_json else {},
        project=project,
    )


def span_from_row(row: tuple) -> Span:
    (trace_id, span_id, parent, name, span_type, kind, start, end, status, message,
     attributes, inputs, outputs, events) = row  # fmt: skip
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent,
        name=name,
        span_type=span_type or "UNKNOWN",
        kind=kind or "INTERNAL",
        start_time_ns=start,
        end_time_ns=end,
        status=status,
        status_message=message,
        attributes=loads(attributes) if attributes else {},
        inputs=from_json(inputs),
        outputs=from_json(outputs),
        events=[SpanEvent(**e) for e in loads(events)] if events else [],
    )


def assessment_from_row(row: tuple) -> Assessment:
    (assessment_id, trace_id, kind, name, value_json, source_type, source_id, rationale,
     metadata_json, error_json, span_id, valid, overrides, create_time, last_update_time,
     target_kind, target, project) = row  # fmt: skip
    error = loads(error_json) if error_json else None
    return Assessment(
        assessment_id=assessment_id,
        trace_id=trace_id,
        kind=kind,
        name=name,
        value=loads(value_json) if value_json is not None else None,
        source=AssessmentSource(source_type, source_id),
        rationale=rationale,
        metadata=loads(metadata_json) if metadata_json else {},
        error=AssessmentError(**error) if error else None,
        span_id=span_id,
        valid=valid,
        overrides=overrides,
        create_time_ms=create_time,
        last_update_time_ms=last_update_time,
        target_kind=target_kind,
        target=target,
        project=project,
    )


def _by_project(con: duckdb.DuckDBPyConnection, keys: list[tuple[str, str]], sql: str,
                params: list[Any] | None = None) -> list[tuple]:
    """Rows of ``sql`` run once per project of the (trace id, project) pairs, with that
    project's trace ids and the project as its first two parameters (a page is one project but
    for an unscoped read of a multi-project store)."""
    ids: dict[str, list[str]] = defaultdict(list)
    for trace_id, project in keys:
        ids[project].append(trace_id)
    rows: list[tuple] = []
    for project, trace_ids in ids.items():
        rows += con.execute(sql, [trace_ids, project, *(params or [])]).fetchall()
    return rows


def spans_for(con: duckdb.DuckDBPyConnection, keys: list[tuple[str, str]],
              window_ms: tuple[int, int] | None = None,
              omitted: dict[str, int] | None = None) -> dict[str, list[Span]]:
    """Spans of the given (trace id, project) traces; ``window_ms`` bounds their start times.

    At most :data:`MAX_SPANS_PER_TRACE` spans per trace; ``omitted`` receives, by trace id, how
    many more a trace has.
    """
    out: dict[str, list[Span]] = defaultdict(list)
    if not keys:
        return out
    window, params = "", []
    if window_ms is not None:
        window, params = " AND s.start_time_ns BETWEEN ? AND ?", [window_ms[0] * 1_000_000, window_ms[1] * 1_000_000]
    limit = MAX_SPANS_PER_TRACE
    rows = _by_project(con, keys, _SPAN_SQL.format(window=window, limit=limit), params)
    found = {row[0] for row in rows}
    unfound = [k for k in keys if k[0] not in found]  # no spans, or more than the limit (rare)
    for project, uuid, total in _large_traces(con, unfound, window, params):
        first = _FIRST_SPANS_SQL.format(window=window, limit=limit)  # one bounded query per such trace
        rows += con.execute(first, [uuid, project, *params]).fetchall()
        if omitted is not None:
            omitted[str(uuid).replace("-", "")] = total - limit
    for row in rows:
        out[row[0]].append(span_from_row(row))
    return out


def _large_traces(con: duckdb.DuckDBPyConnection, keys: list[tuple[str, str]], window: str,
                  params: list[Any]) -> list[tuple[str, Any, int]]:
    """(project, trace UUID, span count) of the traces among ``keys`` over the span limit."""
    sql = _SPAN_COUNT_SQL.format(window=window, limit=MAX_SPANS_PER_TRACE)
    return [(project, uuid, total) for project in {k[1] for k in keys}
            for uuid, total in _by_project(con, [k for k in keys if k[1] == project], sql, params)]


def assessments_for(con: duckdb.DuckDBPyConnection, keys: list[tuple[str, str]]) -> dict[str, list[Assessment]]:
    out: dict[str, list[Assessment]] = defaultdict(list)
    if keys:
        # Two phases, as for spans: the matching rows are found on the narrow id columns, then
        # read whole (a direct join read every column of every assessment: 3x slower at 200k).
        sql = (
            f"SELECT {_ASSESSMENT_COLUMNS} FROM assessments a WHERE a.rowid IN (SELECT s.rowid FROM assessments s"
            " WHERE s.trace_id IN (SELECT CAST(unnest(?) AS UUID)) AND s.project = ?)"
            " ORDER BY a.create_time, a.assessment_id"
        )
        for row in _by_project(con, keys, sql):
            out[row[1]].append(assessment_from_row(row))
    return out


#: Runs a page's assessment lookup while its span lookup runs (DuckDB releases the GIL): each
#: costs DuckDB several milliseconds whatever the page, so together they take one's time. One
#: per process: a forked child gets its own (the parent's threads did not survive the fork).
_lookups: tuple[int, ThreadPoolExecutor] | None = None
_lookups_lock = threading.Lock()


def _lookup_pool() -> ThreadPoolExecutor:
    global _lookups
    with _lookups_lock:
        if _lookups is None or _lookups[0] != os.getpid():
            _lookups = (os.getpid(), ThreadPoolExecutor(max_workers=2, thread_name_prefix="traceduck-read"))
        return _lookups[1]


def _own_cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of ``con`` on the same database (a connection serves one thread at a time)."""
    database = con.execute("SELECT current_database()").fetchall()[0][0]
    cursor = con.cursor()
    cursor.execute('USE "' + database.replace('"', '""') + '"')
    return cursor


def _assessments_on(cursor: duckdb.DuckDBPyConnection, ids: list[tuple[str, str]]) -> dict[str, list[Assessment]]:
    try:
        return assessments_for(cursor, ids)
    finally:
        cursor.close()


def traces_from_rows(con: duckdb.DuckDBPyConnection, rows: list[tuple], include_spans: bool = True,
                     bounded: bool = True) -> list[Trace]:
    """``Trace`` objects for ``traces`` rows selected with :data:`TRACE_INFO_SQL`, in row order."""
    infos = [info_from_row(r) for r in rows]
    ids = [(i.trace_id, i.project) for i in infos]
    spans: dict[str, list[Span]] = {}
    omitted: dict[str, int] = {}
    if include_spans and infos:
        window = None
        if bounded:
            window = (
                min(i.request_time for i in infos) - SPAN_WINDOW_BEFORE_MS,
                max(i.request_time + (i.execution_duration or 0) for i in infos) + SPAN_WINDOW_AFTER_MS,
            )
        beside = _lookup_pool().submit(_assessments_on, _own_cursor(con), ids)
        try:
            spans = spans_for(con, ids, window, omitted)
        finally:
            assessments = beside.result()
    else:
        assessments = assessments_for(con, ids)
    for info in infos:
        info.assessments = assessments.get(info.trace_id, [])
    return [Trace(info, TraceData(spans.get(info.trace_id, []), omitted.get(info.trace_id, 0))) for info in infos]


def get_trace(con: duckdb.DuckDBPyConnection, trace_id: str, project: str | None = None) -> Trace | None:
    sql = f"SELECT {TRACE_INFO_SQL} FROM traces t WHERE t.trace_id = TRY_CAST(? AS UUID)"
    params: list[Any] = [trace_id]
    if project is not None:
        sql += " AND t.project = ?"
        params.append(project)
    rows = con.execute(sql, params).fetchall()
    if not rows:
        return None
    return traces_from_rows(con, rows[:1], bounded=False)[0]
