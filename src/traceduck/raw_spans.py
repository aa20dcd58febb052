"""``RawSpans``: finished spans as plain rows, the one input format of the store.

Spans reach the store from the OTel SDK in this process (``ReadableSpan``) and from OTLP messages
received by the collector. Both are appended here as ids, times, traceduck's own attributes and
the remaining attributes as one JSON object. The writer thread shares the GIL with the
application, so this is all the Python work per span: the store builds trace rows in SQL.
Because both sources meet here, a trace reads back identically either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from . import attributes as attr
from .serialize import clean_text, dumps

_STATUS = {StatusCode.OK: "OK", StatusCode.ERROR: "ERROR", StatusCode.UNSET: "UNSET"}

RAW_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("parent_span_id", pa.string()),
        ("is_root", pa.bool_()),
        ("project", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("start_time_ns", pa.int64()),
        ("end_time_ns", pa.int64()),
        ("status", pa.string()),
        ("status_message", pa.string()),
        ("attributes", pa.string()),
        ("events", pa.string()),
        ("resource", pa.int32()),
        ("span_type", pa.string()),
        ("inputs", pa.string()),
        ("outputs", pa.string()),
        ("trace_fields", pa.string()),
        ("default_metadata", pa.string()),
    ]
)
RAW_COLUMNS = tuple(RAW_SCHEMA.names)
_TYPES = [field.type for field in RAW_SCHEMA]
_START = RAW_COLUMNS.index("start_time_ns")


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else dumps(value)


class RawSpans:
    """A batch of finished spans, one tuple per span in :data:`RAW_SCHEMA` order."""

    def __init__(self, default_project: str = "default") -> None:
        self.default_project = default_project
        self.rows: list[tuple[Any, ...]] = []
        #: JSON of each distinct OTel Resource; spans refer to them by index.
        self.resources: list[str] = []
        self._resource_index: dict[int, tuple[Any, int]] = {}
        #: (trace id, project) of the local roots in this batch, in arrival order. A trace is
        #: identified by both: a trace id sent with another project's key is another trace.
        self.root_ids: list[tuple[str, str]] = []
        #: (trace id, project) of non-root spans carrying trace fields (their root was not live).
        self.patch_ids: set[tuple[str, str]] = set()
        #: Some root had a parent in another process: its trace may already be stored.
        self.has_remote_roots = False

    def __len__(self) -> int:
        return len(self.rows)

    def extend(self, other: RawSpans) -> None:
        """Append another batch (resource indices renumbered); the collector groups requests."""
        offset = len(self.resources)
        self.resources.extend(other.resources)
        if offset:
            index = RAW_COLUMNS.index("resource")
            self.rows.extend(row[:index] + (row[index] + offset,) + row[index + 1 :] for row in other.rows)
        else:
            self.rows.extend(other.rows)
        self.root_ids.extend(other.root_ids)
        self.patch_ids.update(other.patch_ids)
        self.has_remote_roots = self.has_remote_roots or other.has_remote_roots

    def halves(self) -> tuple[RawSpans, RawSpans]:
        """Split the batch in two (to isolate a span the store refuses)."""
        middle = len(self.rows) // 2
        out = []
        for rows in (self.rows[:middle], self.rows[middle:]):
            part = RawSpans(self.default_project)
            part.resources = self.resources
            part.rows = rows
            for row in rows:
                key = (row[0], row[4])
                if row[3]:
                    part.root_ids.append(key)
                elif row[RAW_COLUMNS.index("trace_fields")] is not None:
                    part.patch_ids.add(key)
            part.has_remote_roots = self.has_remote_roots
            out.append(part)
        return out[0], out[1]

    def start_range(self) -> tuple[int, int]:
        starts = [row[_START] for row in self.rows]
        return min(starts), max(starts)

    def to_arrow(self) -> pa.Table:
        """The batch as an Arrow table, plus ``seq``: each span's position in arrival order."""
        columns = list(zip(*self.rows)) if self.rows else [[] for _ in RAW_COLUMNS]
        try:
            arrays = [pa.array(values, type_) for values, type_ in zip(columns, _TYPES)]
        except UnicodeEncodeError:  # a lone surrogate somewhere: replace it rather than lose the batch
            self.rows = [tuple(clean_text(v) if isinstance(v, str) else v for v in row) for row in self.rows]
            columns = list(zip(*self.rows))
            arrays = [pa.array(values, type_) for values, type_ in zip(columns, _TYPES)]
        arrays.append(pa.array(range(len(self.rows)), pa.int64()))
        return pa.table(arrays, names=[*RAW_COLUMNS, "seq"])

    def resources_arrow(self) -> pa.Table:
        return pa.table(
            {"idx": pa.array(range(len(self.resources)), pa.int32()),
             "resource": pa.array(self.resources, pa.string())}
        )  # fmt: skip

    def resource(self, attributes: Mapping[str, Any]) -> int:
        """Index of a Resource's attributes (cached by object identity)."""
        cached = self._resource_index.get(id(attributes))
        if cached is not None and cached[0] is attributes:
            return cached[1]
        index = len(self.resources)
        self.resources.append(dumps(dict(attributes)))
        self._resource_index[id(attributes)] = (attributes, index)
        return index

    def add(
        self,
        trace_id: str,
        span_id: str,
        parent_span_id: str | None,
        parent_is_remote: bool,
        name: str,
        kind: str,
        start_ns: int,
        end_ns: int | None,
        status: str,
        status_message: str | None,
        attributes: dict[str, Any],
        events: str | None,
        resource: int,
        project: str | None = None,
    ) -> None:
        """Append one span.

        ``attributes`` is a dict this call may change, ``events`` JSON text, ``resource`` an index
        from :meth:`resource`; ``project`` comes from the sender's credentials and overrides any
        project attribute.
        """
        pop = attributes.pop
        span_type = pop(attr.SPAN_TYPE, None)
        inputs = pop(attr.INPUTS, None)
        outputs = pop(attr.OUTPUTS, None)
        trace_fields = pop(attr.TRACE_FIELDS, None)
        defaults = pop(attr.TRACE_DEFAULT_METADATA, None)
        project_attr = pop(attr.TRACE_PROJECT, None)
        is_root = parent_span_id is None or parent_is_remote
        project = project or (project_attr if isinstance(project_attr, str) else None) or self.default_project
        self.rows.append((
            trace_id, span_id, parent_span_id, is_root, project,
            name, kind, start_ns, end_ns, status, status_message or None,
            dumps(attributes) if attributes else None, events, resource,
            _text(span_type), _text(inputs), _text(outputs), _text(trace_fields), _text(defaults),
        ))  # fmt: skip
        if is_root:
            self.root_ids.append((trace_id, project))
            if parent_is_remote:
                self.has_remote_roots = True
        elif trace_fields is not None:
            self.patch_ids.add((trace_id, project))

    def add_readable(self, span: ReadableSpan) -> None:
        """Append a finished span of the OTel SDK."""
        ctx = span.context
        parent = span.parent
        status = span.status
        attrs = span.attributes
        events = span.events
        self.add(
            "%032x" % ctx.trace_id,
            "%016x" % ctx.span_id,
            "%016x" % parent.span_id if parent is not None else None,
            parent is not None and parent.is_remote,
            span.name,
            span.kind.name,
            span.start_time or 0,
            span.end_time,
            _STATUS.get(status.status_code, "UNSET"),
            status.description,
            attrs.copy() if attrs else {},  # a plain dict copy of the span's attributes
            dumps([{"name": e.name, "timestamp_ns": e.timestamp, "attributes": dict(e.attributes or {})}
                   for e in events]) if events else None,
            self.resource(span.resource.attributes if span.resource is not None else {}),
        )
