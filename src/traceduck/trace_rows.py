"""``TraceRow``: a trace row as Python values, for the rare traces that must be merged.

Most traces arrive whole and their rows are built in SQL by the store. A trace whose row must be
combined with another — a second local root of a distributed trace, a span delivered twice, trace
fields carried by a span whose root had already ended — is merged here, with one rule: the
outermost root (earliest start) names the trace and the later write of a field wins.
"""

from __future__ import annotations

import json
from typing import Any

from . import attributes as attr
from .metadata import string_form

#: Columns of the ``traces`` table in the order ``TraceRow.values()`` returns them.
TRACE_COLUMNS = (
    "trace_id", "project", "name", "state", "request_time", "execution_duration", "end_time",
    "client_request_id", "trace_user", "session_id", "environment", "request_preview",
    "response_preview", "tags", "metadata", "metadata_json", "root_span_id", "stored_at",
)  # fmt: skip


class TraceRow:
    """One trace row (or a patch: trace fields without a root span)."""

    __slots__ = ("trace_id", "project", "name", "state", "start_ms", "end_ms", "client_request_id",
                 "request_preview", "response_preview", "tags", "metadata", "root_span_id",
                 "stored_at")  # fmt: skip

    def __init__(self, trace_id: str, project: str) -> None:
        self.trace_id = trace_id
        self.project = project
        self.name: str | None = None
        self.state: str | None = None
        self.start_ms: int | None = None
        self.end_ms: int | None = None
        self.client_request_id: str | None = None
        self.request_preview: str | None = None
        self.response_preview: str | None = None
        self.tags: dict[str, str | None] = {}
        self.metadata: dict[str, Any] = {}
        self.root_span_id: str | None = None
        self.stored_at: int | None = None

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> TraceRow:
        """From a ``traces`` row selected by column name (``metadata_json`` for metadata)."""
        row = cls(values["trace_id"], values["project"])
        for name in ("name", "state", "client_request_id", "request_preview", "response_preview",
                     "root_span_id", "stored_at"):  # fmt: skip
            setattr(row, name, values.get(name))
        row.start_ms = values.get("request_time")
        row.end_ms = values.get("end_time")
        row.tags = dict(values.get("tags") or {})
        meta = values.get("metadata_json")
        row.metadata = json.loads(meta) if meta else {}
        return row

    @property
    def is_complete(self) -> bool:
        """Built from a root span (a patch only carries trace-level fields)."""
        return self.root_span_id is not None

    def merge(self, later: TraceRow) -> None:
        """Fold in another row or patch of the same trace, written after this one."""
        if later.is_complete:
            if not self.is_complete or (later.start_ms or 0) < (self.start_ms or 0):
                self.name, self.start_ms, self.root_span_id = later.name, later.start_ms, later.root_span_id
            if self.end_ms is None or (later.end_ms or 0) > self.end_ms:
                self.end_ms = later.end_ms
            if self.state != "ERROR" and later.state is not None:
                self.state = later.state
        elif later.state is not None:
            self.state = later.state  # an explicit state set through update_current_trace()
        self.metadata.update(later.metadata)
        self.tags.update(later.tags)
        for name in ("client_request_id", "request_preview", "response_preview"):
            value = getattr(later, name)
            if value is not None:
                setattr(self, name, value)

    def values(self, stored_at_ms: int) -> tuple[Any, ...]:
        duration = self.end_ms - self.start_ms if self.end_ms is not None and self.start_ms is not None else None
        return (
            self.trace_id,
            self.project,
            self.name,
            self.state or "OK",
            self.start_ms or 0,
            duration,
            self.end_ms,
            self.client_request_id,
            self.tags.get(attr.USER),
            self.tags.get(attr.SESSION),
            self.tags.get(attr.ENVIRONMENT),
            self.request_preview,
            self.response_preview,
            list(self.tags.items()),
            [(k, string_form(v)) for k, v in self.metadata.items()],
            json.dumps(self.metadata),
            self.root_span_id,
            stored_at_ms,  # (re)written now: pending assessments join rows of this batch
        )
