"""``DuckDBStore``: the embedded trace store, one per DuckDB file per process."""

from __future__ import annotations

import copy
import os
import threading
from typing import Any

import duckdb

from ..entities import Assessment, Trace
from ..governance.projects import StoreGovernance
from ..governance.store import GovernanceMethods
from ..raw_spans import RawSpans
from . import assessments as assessment_sql
from . import editing as editing_sql
from . import query as query_sql
from .connection import DuckDBFile, is_durable_commit
from .reader import get_trace
from .recent import RecentSpans
from .writer import EXISTING_ROOTS_BEFORE_MS, PendingPatches, WriteStats, write_batch

_stores: dict[str, DuckDBStore] = {}
_stores_lock = threading.Lock()


def open_store(path: str | os.PathLike[str], lock_timeout: float = 10.0) -> DuckDBStore:
    """The process-wide store object for the DuckDB file at ``path``."""
    key = os.path.realpath(os.fspath(path))
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = DuckDBStore(key, lock_timeout=lock_timeout)
        else:
            store.file.lock_timeout = lock_timeout
        return store


class DuckDBStore(GovernanceMethods):
    """Trace storage in one DuckDB file (see ``docs/schema.md`` for the tables)."""

    def __init__(self, path: str, lock_timeout: float = 10.0, hold_open: bool = False) -> None:
        self.file = DuckDBFile(path, lock_timeout=lock_timeout, hold_open=hold_open)
        self.pending = PendingPatches()
        #: Skip spans already stored (needed where exporters may deliver a span twice).
        self.dedupe_spans = False
        #: What this process stored lately: most duplicate checks answered in memory.
        self.recent = RecentSpans(skew_ns=EXISTING_ROOTS_BEFORE_MS * 1_000_000)
        #: Searches through this object see only this project's traces (None: all of them).
        self.project: str | None = None
        #: Project settings as the writer applies them (capture policy, PII mode).
        self.governance = StoreGovernance()

    def for_project(self, project: str) -> DuckDBStore:
        """A view of this store that sees and writes only ``project`` (the collector's keys)."""
        view = copy.copy(self)
        view.project = project
        return view

    @property
    def path(self) -> str:
        return self.file.path

    def acquire_writer(self) -> None:
        self.file.acquire_writer()

    def release_writer(self) -> None:
        self.file.release_writer()

    def connect(self, write: bool = False) -> Any:
        return self.file.connect(write=write)

    def write(self, raw: RawSpans, linger: bool = False) -> WriteStats:
        """Store finished spans (and the traces whose roots are among them) in one transaction.

        ``linger``: more batches are waiting, keep the file attached (see DuckDBFile.connect).
        """
        if not self.file.is_writer:
            self.file.acquire_writer()  # raises StoreLockedError when another process writes
        with self.file.connect(write=True, linger=linger) as con:
            applied = self.governance.prepare(con, raw)  # capture policy and PII, before anything is stored
            stats = WriteStats()
            if len(applied.raw):
                try:
                    stats = write_batch(con, applied.raw, self.pending, dedupe_spans=self.dedupe_spans,
                                        recent=self.recent)  # consulted only when deduplicating
                    if self.dedupe_spans:
                        self.recent.stored(applied.raw, stats.spans)
                except duckdb.Error as exc:
                    if not is_durable_commit(exc):
                        raise
                    # Stored for good (in the WAL); only the checkpoint after it failed, e.g. on a
                    # full disk. The file is attached afresh before the next unit of work.
                    self.file.invalidated()
                    stats = WriteStats(spans=len(applied.raw), traces=len(applied.raw.root_ids))
            stats.uncaptured_spans = applied.uncaptured
            return stats

    def release(self) -> None:
        """Let other processes open the file (the writer has nothing more to write for now)."""
        self.file.release()

    def get_trace(self, trace_id: str) -> Trace | None:
        with self.file.connect() as con:
            return get_trace(con, trace_id, self.project)

    def find_trace_id(self, target_kind: str, target: str) -> str | None:
        """The id of the stored trace a client request id or LLM response id names."""
        with self.file.connect() as con:
            return assessment_sql.resolve_trace_id(con, target_kind, target, self.project)

    def search(self, query: query_sql.SearchQuery) -> query_sql.PageRows:
        with self.file.connect() as con:
            return query_sql.search(con, query, self.project)

    def count(self, node: Any, filter_string: str | None = None) -> int:
        with self.file.connect() as con:
            return query_sql.count(con, node, self.project)

    # -- assessments -----------------------------------------------------------------------
    def log_assessment(self, row: dict[str, Any]) -> Assessment:
        with self.file.connect(write=True) as con:
            assessment_sql.insert(con, row)
            found = assessment_sql.get(con, row["assessment_id"], None)
        assert found is not None
        return found

    def get_assessment(self, assessment_id: str) -> Assessment | None:
        with self.file.connect() as con:
            return assessment_sql.get(con, assessment_id, self.project)

    def update_assessment(self, assessment_id: str, changes: dict[str, Any]) -> None:
        with self.file.connect(write=True) as con:
            assessment_sql.update(con, assessment_id, changes)

    def override_assessment(self, old: Assessment, row: dict[str, Any]) -> Assessment:
        with self.file.connect(write=True) as con:
            assessment_sql.override(con, old, row)
            found = assessment_sql.get(con, row["assessment_id"], None)
        assert found is not None
        return found

    def delete_assessment(self, assessment: Assessment) -> None:
        with self.file.connect(write=True) as con:
            assessment_sql.delete(con, assessment)

    def pending_assessments(self) -> list[Assessment]:
        with self.file.connect() as con:
            return assessment_sql.pending(con, self.project)

    # -- curation --------------------------------------------------------------------------
    def edit_tags(self, **changes: Any) -> int:
        with self.file.connect(write=True) as con:
            return editing_sql.edit_tags(con, project=self.project, **changes)

    def replace_metadata(self, trace_id: str, metadata: dict[str, Any]) -> int:
        with self.file.connect(write=True) as con:
            return editing_sql.replace_metadata(con, trace_id, metadata, self.project)

    # -- LLM calls -------------------------------------------------------------------------
    def select_choice(self, index: int, trace_id: str | None = None, response_id: str | None = None) -> dict[str, Any]:
        """Make choice ``index`` the selected one of a stored LLM call (see ``store/llm.py``)."""
        from . import llm as llm_sql  # noqa: PLC0415

        with self.file.connect(write=True) as con:
            return llm_sql.select_choice(con, index, trace_id, response_id, self.project)
