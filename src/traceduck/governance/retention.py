"""Retention: delete what a project no longer keeps, and give the space back.

A project keeps traces for 30, 90 or 120 days, or without age-off, and may cap its size. A purge
deletes, per project: traces older than the retention (by start time) with their spans,
assessments, LLM calls and response ids; the oldest traces beyond the size cap; assessments
still pending (their trace never came) older than the retention; and orphans (spans, LLM calls
and response ids of traces whose root never arrived, older than the retention). Then DuckDB
checkpoints so the freed blocks are reused; :func:`compact` rewrites the file to shrink it.

The size of a project is the uncompressed size of what it stores (the text of its spans and
trace rows plus a fixed cost per row); DuckDB compresses, so its share of the file is smaller.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb

from ..stores import resolve_store
from . import audit
from .policy import DAY_MS, ProjectSettings
from .projects import load_all

logger = logging.getLogger("traceduck")

#: Bytes counted per span and per trace row besides their text (ids, times, status).
ROW_OVERHEAD = 100

_SPAN_BYTES = (
    f"{ROW_OVERHEAD} + coalesce(length(s.name), 0) + coalesce(length(s.attributes), 0)"
    " + coalesce(length(s.inputs), 0) + coalesce(length(s.outputs), 0) + coalesce(length(s.events), 0)"
)
_TRACE_BYTES = (
    f"{ROW_OVERHEAD} + coalesce(length(t.request_preview), 0) + coalesce(length(t.response_preview), 0)"
    " + coalesce(length(t.metadata_json), 0) * 2 + coalesce(length(t.name), 0)"
)
_IN_DOOMED = "trace_id IN (SELECT trace_id FROM _td_doomed)"
_NO_TRACE = "NOT EXISTS (SELECT 1 FROM traces t WHERE t.trace_id = {a}.trace_id AND t.project = {a}.project)"


@dataclass
class ProjectPurge:
    """What a purge deleted (or, in a dry run, would delete) in one project."""

    project: str
    retention_days: int | None
    max_size_bytes: int | None
    cutoff_ms: int | None
    traces: int = 0
    spans: int = 0
    assessments: int = 0
    pending_assessments: int = 0
    llm_calls: int = 0
    llm_responses: int = 0
    orphan_spans: int = 0
    size_before_bytes: int | None = None

    @property
    def total(self) -> int:
        return (self.traces + self.spans + self.assessments + self.pending_assessments + self.llm_calls
                + self.llm_responses + self.orphan_spans)  # fmt: skip


@dataclass
class PurgeReport:
    dry_run: bool
    time_ms: int
    projects: list[ProjectPurge] = field(default_factory=list)

    @property
    def traces(self) -> int:
        return sum(p.traces for p in self.projects)

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "time_ms": self.time_ms, "traces": self.traces,
                "projects": [asdict(p) for p in self.projects]}  # fmt: skip


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> int:
    return int(con.execute(f"SELECT count(*) FROM {sql}", params).fetchall()[0][0])


def project_size(con: duckdb.DuckDBPyConnection, project: str) -> int:
    """The project's size as counted for its cap (see the module docstring)."""
    spans = con.execute(f"SELECT coalesce(sum({_SPAN_BYTES}), 0) FROM spans s WHERE s.project = ?",
                        [project]).fetchall()[0][0]  # fmt: skip
    traces = con.execute(f"SELECT coalesce(sum({_TRACE_BYTES}), 0) FROM traces t WHERE t.project = ?",
                         [project]).fetchall()[0][0]  # fmt: skip
    return int(spans) + int(traces)


def _select_doomed(con: duckdb.DuckDBPyConnection, project: str, settings: ProjectSettings,
                   cutoff_ms: int | None) -> None:  # fmt: skip
    """Fill ``_td_doomed`` with the ids of the project's traces to delete."""
    con.execute("CREATE OR REPLACE TEMP TABLE _td_doomed (trace_id UUID)")
    if cutoff_ms is not None:
        con.execute("INSERT INTO _td_doomed SELECT trace_id FROM traces WHERE project = ? AND request_time < ?",
                    [project, cutoff_ms])  # fmt: skip
    if settings.max_size_bytes is not None:
        # Keep the newest traces while their running size fits the cap; the rest goes.
        con.execute(
            "INSERT INTO _td_doomed SELECT trace_id FROM ("
            "  SELECT trace_id, sum(bytes) OVER (ORDER BY request_time DESC, trace_id"
            "   ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running FROM ("
            f"   SELECT t.trace_id, t.request_time, {_TRACE_BYTES} + coalesce(s.bytes, 0) AS bytes"
            "    FROM traces t LEFT JOIN ("
            f"     SELECT s.trace_id, sum({_SPAN_BYTES}) AS bytes FROM spans s WHERE s.project = ? GROUP BY s.trace_id"
            "    ) s ON s.trace_id = t.trace_id"
            f"    WHERE t.project = ? AND NOT t.{_IN_DOOMED}))"
            " WHERE running > ?",
            [project, project, settings.max_size_bytes],
        )


def purge_project(con: duckdb.DuckDBPyConnection, project: str, settings: ProjectSettings, now_ms: int,
                  dry_run: bool) -> ProjectPurge:  # fmt: skip
    """Delete (or count) what ``project`` no longer keeps, in one transaction."""
    cutoff_ms = now_ms - settings.retention_days * DAY_MS if settings.retention_days else None
    out = ProjectPurge(project, settings.retention_days, settings.max_size_bytes, cutoff_ms)
    if settings.max_size_bytes is not None:
        out.size_before_bytes = project_size(con, project)
    con.execute("BEGIN TRANSACTION")
    try:
        _select_doomed(con, project, settings, cutoff_ms)
        p = [project]
        out.traces = _count(con, "_td_doomed", [])
        out.spans = _count(con, f"spans WHERE project = ? AND {_IN_DOOMED}", p)
        out.assessments = _count(con, f"assessments WHERE project = ? AND {_IN_DOOMED}", p)
        out.llm_calls = _count(con, f"llm_calls WHERE project = ? AND {_IN_DOOMED}", p)
        out.llm_responses = _count(con, f"llm_responses WHERE project = ? AND {_IN_DOOMED}", p)
        aged: list[tuple[str, str, list[Any]]] = []
        if cutoff_ms is not None:
            cutoff_ns = cutoff_ms * 1_000_000
            aged = [
                ("pending_assessments", "assessments a WHERE a.project = ? AND a.trace_id IS NULL AND a.create_time < ?",
                 [project, cutoff_ms]),
                ("orphan_spans", f"spans s WHERE s.project = ? AND s.start_time_ns < ? AND {_NO_TRACE.format(a='s')}",
                 [project, cutoff_ns]),
                ("llm_calls", f"llm_calls c WHERE c.project = ? AND c.start_time_ns < ? AND {_NO_TRACE.format(a='c')}"
                 f" AND NOT c.{_IN_DOOMED}", [project, cutoff_ns]),
            ]  # fmt: skip
            for name, sql, params in aged:
                setattr(out, name, getattr(out, name) + _count(con, sql, params))
        if not dry_run:
            for table in ("spans", "assessments", "llm_calls", "llm_responses", "traces"):
                con.execute(f"DELETE FROM {table} WHERE project = ? AND {_IN_DOOMED}", p)
            for _, sql, params in aged:
                con.execute(f"DELETE FROM {sql}", params)
            # Response ids whose span is gone (its trace deleted above, or never stored).
            orphans = ("llm_responses r WHERE r.project = ? AND NOT EXISTS (SELECT 1 FROM spans s"
                       " WHERE s.trace_id = r.trace_id AND s.span_id = r.span_id AND s.project = r.project)")  # fmt: skip
            out.llm_responses += _count(con, orphans, p)
            con.execute(f"DELETE FROM {orphans}", p)
        con.execute("DROP TABLE IF EXISTS _td_doomed")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return out


def purge_store(con: duckdb.DuckDBPyConnection, *, dry_run: bool, actor: str, project: str | None = None,
                now_ms: int | None = None, record_empty: bool = True) -> PurgeReport:  # fmt: skip
    """Purge every project with a retention or size cap (only ``project``, if given); each
    project's purge is an audit event with its counts (a dry run records nothing)."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    report = PurgeReport(dry_run, now_ms)
    for name, settings in sorted(load_all(con).items()):
        if project is not None and name != project:
            continue
        if settings.retention_days is None and settings.max_size_bytes is None:
            continue
        result = purge_project(con, name, settings, now_ms, dry_run)
        report.projects.append(result)
        if not dry_run and (record_empty or result.total):
            audit.append(con, actor, audit.PURGED, name, name, None, asdict(result))
    if not dry_run and any(p.total for p in report.projects):
        try:
            con.execute("CHECKPOINT")  # freed blocks become reusable
        except duckdb.Error as exc:  # another transaction is running: the next checkpoint will do
            logger.info("traceduck purge: checkpoint deferred (%s)", exc)
    return report


def compact(path: str) -> tuple[int, int]:
    """Rewrite the store file without its free blocks; (bytes before, bytes after).

    Needs the file to itself (no application or collector writing it).
    """
    from ..store.duckdb_store import DuckDBStore  # noqa: PLC0415

    store = DuckDBStore(path)
    store.acquire_writer()  # StoreLockedError while another process writes
    try:
        store.release()
        before = os.path.getsize(path)
        tmp = path + ".compact"
        if os.path.exists(tmp):
            os.remove(tmp)
        con = duckdb.connect(":memory:")
        try:
            quoted_src, quoted_tmp = path.replace("'", "''"), tmp.replace("'", "''")
            con.execute(f"ATTACH '{quoted_src}' AS src (READ_ONLY); ATTACH '{quoted_tmp}' AS dst;"
                        " COPY FROM DATABASE src TO dst; DETACH src; DETACH dst")  # fmt: skip
        finally:
            con.close()
        os.replace(tmp, path)
        return before, os.path.getsize(path)
    finally:
        store.release_writer()


def purge(dry_run: bool = False, project: str | None = None, store: Any = None,
          actor: str | None = None) -> PurgeReport:  # fmt: skip
    """Delete expired traces (with their spans, assessments, pending feedback and orphans) of
    every project with a retention or size cap; ``dry_run`` only counts. Each purge is an audit
    event with its counts."""
    return resolve_store(store).purge(dry_run=dry_run, project=project, actor=actor or "sdk")
