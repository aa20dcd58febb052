"""``RawSpans``: finished spans as plain rows, the one input format of the store.

Spans reach the store from the OTel SDK in this process (``ReadableSpan``) and from OTLP messages
received by the collector. Both are appended here as ids, times, traceduck's own attributes and
the remaining attributes as one JSON object; the store builds the stored rows from these. Because
both sources meet here, a trace reads back identically either way.

A span finished in this process is first kept as a *record* (:func:`span_record`): the span's
values as they are (integer ids, the attributes as a dict), taken in about a microsecond on the
application's thread. Records become rows only where the batch is written: in the writer process
(the default for a local store, off the application's GIL) or on the writer thread.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from . import attributes as attr
from .serialize import DEFAULT_MAX_CHARS, TRUNCATED_KEY, clean_text, dumps

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
_IS_ROOT = RAW_COLUMNS.index("is_root")
_PROJECT = RAW_COLUMNS.index("project")
_RESOURCE = RAW_COLUMNS.index("resource")
_FIELDS = RAW_COLUMNS.index("trace_fields")
_PARENT = RAW_COLUMNS.index("parent_span_id")
_ATTRIBUTES = RAW_COLUMNS.index("attributes")
_DEFAULTS = RAW_COLUMNS.index("default_metadata")
_NO_RESOURCE: Mapping[str, Any] = {}


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else dumps(value)


#: A ``\\u`` escape of a surrogate in JSON text (lone ones make DuckDB's JSON reader refuse it).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _fields_text(value: Any) -> str | None:
    """Stored text of the trace-fields attribute. JSON that escapes a lone surrogate (any OTLP
    sender may write ``"\\ud800"``) is not read by the store's SQL, and the trace would silently
    lose every field; it is re-encoded with the surrogate replaced by U+FFFD, as ``dumps`` does."""
    text = _text(value)
    if text is not None and _SURROGATE_ESCAPE.search(text):
        try:
            return dumps(json.loads(text))
        except (ValueError, RecursionError):
            pass
    return text


#: How a value ``to_json`` already capped begins; such a value may exceed the cap a little
#: (its preview is escaped), never by more than :data:`_MARKER_MAX_CHARS`.
_MARKER_PREFIX = '{"' + TRUNCATED_KEY + '":true,'
_MARKER_MAX_CHARS = 7 * DEFAULT_MAX_CHARS


def _oversized(text: str) -> dict[str, Any]:
    return {TRUNCATED_KEY: True, "original_chars": len(text), "preview": text[:DEFAULT_MAX_CHARS]}


def _capped_text(value: Any) -> str | None:
    """Stored text of inputs/outputs: longer than the cap (sent as-is over OTLP, or set with the
    OTel API) it becomes the same marker ``to_json`` makes, so a 10 MB prompt is stored capped."""
    text = _text(value)
    if text is None or len(text) <= DEFAULT_MAX_CHARS:
        return text
    if text.startswith(_MARKER_PREFIX) and len(text) <= _MARKER_MAX_CHARS:
        return text
    return dumps(_oversized(text))


def _attributes_text(attributes: dict[str, Any]) -> str:
    """JSON of the other attributes; a string value longer than the cap becomes the truncation
    marker (looked for only when the whole is longer than the cap: one ``len`` on the hot path)."""
    text = dumps(attributes)
    if len(text) > DEFAULT_MAX_CHARS:
        long = [k for k, v in attributes.items() if isinstance(v, str) and len(v) > DEFAULT_MAX_CHARS]
        if long:
            for key in long:
                attributes[key] = _oversized(attributes[key])
            text = dumps(attributes)
    return text


class ResourceRegistry:
    """JSON of each OTel Resource, by object identity: SDK resources live as long as providers."""

    def __init__(self) -> None:
        self.json: list[str] = []
        self._index: dict[int, tuple[Any, int]] = {}
        self._lock = threading.Lock()

    def index(self, attributes: Mapping[str, Any]) -> int:
        cached = self._index.get(id(attributes))
        if cached is not None and cached[0] is attributes:
            return cached[1]
        with self._lock:
            index = len(self.json)
            self.json.append(dumps(dict(attributes)))
            self._index[id(attributes)] = (attributes, index)
        return index


@dataclass
class BatchIndex:
    """What the store asks of a batch before it writes it, found once from its rows.

    The writer process gets it with the batch's Arrow table (see ``store/converter_process.py``),
    so the process that runs DuckDB never makes a Python object per span.
    """

    #: (trace id, project) of the local roots, in arrival order.
    root_ids: list[tuple[str, str]]
    #: (trace id, project) of non-root spans carrying trace fields (their root was not live).
    patch_ids: set[tuple[str, str]]
    #: Some root had a parent in another process.
    has_remote_roots: bool
    #: Earliest and latest span start (None: an empty batch).
    start_range: tuple[int, int] | None
    #: Earliest start of a root (None: no root).
    first_root_start: int | None
    #: (resource index, configured default metadata) of the roots: their implicit metadata.
    root_sources: set[tuple[int, str | None]]
    #: Some span's attributes mention ``gen_ai.`` (only then are the LLM tables written).
    has_llm_calls: bool
    #: The projects of the batch's spans.
    projects: set[str]

    @classmethod
    def of_rows(cls, rows: list[tuple[Any, ...]]) -> BatchIndex:
        roots = [r for r in rows if r[_IS_ROOT]]
        starts = [r[_START] for r in rows]
        return cls(
            root_ids=[(r[0], r[_PROJECT]) for r in roots],
            patch_ids={(r[0], r[_PROJECT]) for r in rows if not r[_IS_ROOT] and r[_FIELDS] is not None},
            has_remote_roots=any(r[_PARENT] is not None for r in roots),
            start_range=(min(starts), max(starts)) if starts else None,
            first_root_start=min(r[_START] for r in roots) if roots else None,
            root_sources={(r[_RESOURCE], r[_DEFAULTS]) for r in roots},
            has_llm_calls=any("gen_ai." in r[_ATTRIBUTES] for r in rows if r[_ATTRIBUTES]),
            projects={r[_PROJECT] for r in rows},
        )

    def to_json(self) -> dict[str, Any]:
        """As JSON values (sets and tuples as lists)."""
        return {"root_ids": self.root_ids, "patch_ids": list(self.patch_ids),
                "has_remote_roots": self.has_remote_roots, "start_range": self.start_range,
                "first_root_start": self.first_root_start, "root_sources": list(self.root_sources),
                "has_llm_calls": self.has_llm_calls, "projects": list(self.projects)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchIndex:
        start_range = data["start_range"]
        return cls(
            root_ids=[(t, p) for t, p in data["root_ids"]],
            patch_ids={(t, p) for t, p in data["patch_ids"]},
            has_remote_roots=bool(data["has_remote_roots"]),
            start_range=(start_range[0], start_range[1]) if start_range is not None else None,
            first_root_start=data["first_root_start"],
            root_sources={(r, d) for r, d in data["root_sources"]},
            has_llm_calls=bool(data["has_llm_calls"]),
            projects=set(data["projects"]),
        )


class RawSpans:
    """A batch of finished spans, one tuple per span in :data:`RAW_SCHEMA` order."""

    def __init__(self, default_project: str = "default", resources: list[str] | None = None) -> None:
        self.default_project = default_project
        self._rows: list[tuple[Any, ...]] = []
        #: Span records (see :func:`span_record`) not yet turned into rows.
        self.records: list[tuple[Any, ...]] = []
        #: JSON of each distinct OTel Resource; spans refer to them by index.
        self.resources: list[str] = resources if resources is not None else []
        self._resource_index: dict[int, tuple[Any, int]] = {}
        self._index: BatchIndex | None = None
        self._arrow: pa.Table | None = None
        #: An Arrow table whose rows are not made yet (see :meth:`from_arrow`).
        self._source: pa.Table | None = None

    @classmethod
    def from_arrow(cls, table: pa.Table, index: BatchIndex, default_project: str = "default",
                   resources: list[str] | None = None) -> RawSpans:  # fmt: skip
        """A batch already converted (``table`` as :meth:`to_arrow` built it, and its index):
        writing it makes no Python object per span; ``rows`` are made from the table only if
        something asks for them (a project's capture policy, a small batch's trace rows)."""
        raw = cls(default_project, resources)
        raw._arrow, raw._index, raw._source = table, index, table
        return raw

    def _changed(self) -> None:
        self._index = None
        self._arrow = None

    def __len__(self) -> int:
        source = self._source
        return len(self._rows) + len(self.records) + (source.num_rows if source is not None else 0)

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """One tuple per span in :data:`RAW_SCHEMA` order (pending records are converted first)."""
        if self._source is not None:
            source, self._source = self._source, None
            self._rows = list(zip(*(source.column(name).to_pylist() for name in RAW_COLUMNS)))
        if self.records:
            records, self.records = self.records, []
            default_project = self.default_project
            self._rows.extend([record_row(record, default_project) for record in records])
        return self._rows

    @rows.setter
    def rows(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows
        self.records = []
        self._source = None
        self._changed()

    @property
    def index(self) -> BatchIndex:
        """What the store asks of this batch (found once, again only after the batch changes)."""
        if self._index is None:
            self._index = BatchIndex.of_rows(self.rows)
        return self._index

    @property
    def root_ids(self) -> list[tuple[str, str]]:
        """(trace id, project) of the local roots in this batch, in arrival order. A trace is
        identified by both: a trace id sent with another project's key is another trace."""
        return self.index.root_ids

    @property
    def patch_ids(self) -> set[tuple[str, str]]:
        """(trace id, project) of non-root spans carrying trace fields (their root was not live)."""
        return self.index.patch_ids

    @property
    def has_remote_roots(self) -> bool:
        """Some root had a parent in another process: its trace may already be stored."""
        return self.index.has_remote_roots

    def extend(self, other: RawSpans) -> None:
        """Append another batch (resource indices renumbered); the collector groups requests."""
        offset = len(self.resources)
        self.resources.extend(other.resources)
        if offset:
            self.rows.extend(row[:_RESOURCE] + (row[_RESOURCE] + offset,) + row[_RESOURCE + 1 :] for row in other.rows)
        else:
            self.rows.extend(other.rows)
        self._changed()

    def halves(self) -> tuple[RawSpans, RawSpans]:
        """Split the batch in two (to isolate a span the store refuses)."""
        middle = len(self.rows) // 2
        parts = []
        for rows in (self.rows[:middle], self.rows[middle:]):
            part = RawSpans(self.default_project, self.resources)
            part.rows = rows
            parts.append(part)
        return parts[0], parts[1]

    def start_range(self) -> tuple[int, int]:
        """Earliest and latest span start (``ValueError`` for an empty batch)."""
        found = self.index.start_range
        if found is None:
            raise ValueError("an empty batch has no start range")
        return found

    def to_arrow(self) -> pa.Table:
        """The batch as an Arrow table, plus ``seq``: each span's position in arrival order.

        Built once (the writer process builds it while the batch before is being written) and
        rebuilt only after the batch changes."""
        if self._arrow is None:
            self._arrow = self._build_arrow()
        return self._arrow

    def _build_arrow(self) -> pa.Table:
        columns = list(zip(*self.rows)) if self.rows else [[] for _ in RAW_COLUMNS]
        try:
            arrays = [pa.array(values, type_) for values, type_ in zip(columns, _TYPES)]
        except UnicodeEncodeError:  # a lone surrogate somewhere: replace it rather than lose the batch
            self.rows = [tuple(clean_text(v) if isinstance(v, str) else v for v in row) for row in self.rows]
            columns = list(zip(*self.rows))
            arrays = [pa.array(values, type_) for values, type_ in zip(columns, _TYPES)]
        import pyarrow.compute as pc  # noqa: PLC0415  (only where batches are written: 60 ms to import)

        # 0, 1, 2, ...: a running sum of ones is built in C (``pa.array(range(n))`` iterates in Python)
        arrays.append(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), len(self.rows)), start=-1))
        return pa.table(arrays, names=[*RAW_COLUMNS, "seq"])

    def resource(self, attributes: Mapping[str, Any]) -> int:
        """Index of a Resource's attributes in this batch (cached by object identity)."""
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
        self.rows.append(span_row(trace_id, span_id, parent_span_id, parent_is_remote, name, kind, start_ns,
                                  end_ns, status, status_message, attributes, events, resource, project,
                                  self.default_project))  # fmt: skip
        self._changed()

    def add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Append rows in :data:`RAW_SCHEMA` order (resource indices into this batch's resources)."""
        self.rows.extend(rows)
        self._changed()

    def unconverted(self) -> tuple[list[tuple[Any, ...]], list[Any]]:
        """The rows so far and the records not yet converted, as they are."""
        return self._rows, self.records

    def add_records(self, records: list[Any]) -> None:
        """Append span records made by :func:`span_record` (resource indices into this batch's
        resources); they are turned into rows when the rows are first read."""
        self.records.extend(records)
        self._changed()


def span_row(trace_id: str, span_id: str, parent_span_id: str | None, parent_is_remote: bool, name: str,
             kind: str, start_ns: int, end_ns: int | None, status: str, status_message: str | None,
             attributes: dict[str, Any], events: str | None, resource: int, project: str | None,
             default_project: str) -> tuple[Any, ...]:
    """One row; traceduck's own attributes are taken out of ``attributes`` (which is changed)."""
    pop = attributes.pop
    span_type = pop(attr.SPAN_TYPE, None)
    inputs = pop(attr.INPUTS, None)
    outputs = pop(attr.OUTPUTS, None)
    trace_fields = pop(attr.TRACE_FIELDS, None)
    defaults = pop(attr.TRACE_DEFAULT_METADATA, None)
    project_attr = pop(attr.TRACE_PROJECT, None)
    if not project:
        project = project_attr if isinstance(project_attr, str) and project_attr else default_project
    return (
        trace_id, span_id, parent_span_id, parent_span_id is None or parent_is_remote, project,
        name, kind, start_ns, end_ns, status, status_message or None,
        _attributes_text(attributes) if attributes else None, events, resource,
        _text(span_type), _capped_text(inputs), _capped_text(outputs), _fields_text(trace_fields), _text(defaults),
    )  # fmt: skip


_KIND_NAMES = {kind.value: kind.name for kind in SpanKind}
_STATUS_NAMES = {code.value: name for code, name in _STATUS.items()}
_U64 = (1 << 64) - 1

#: Positions in a span record (see :func:`span_record`).
(_R_TRACE_HI, _R_TRACE_LO, _R_SPAN, _R_PARENT, _R_REMOTE, _R_NAME, _R_KIND, _R_START, _R_END, _R_STATUS,
 _R_MESSAGE, _R_ATTRIBUTES, _R_EVENTS, _R_RESOURCE, _R_DROPPED_ATTRIBUTES, _R_DROPPED_EVENTS) = range(16)  # fmt: skip
#: Where a span record holds the span id (an int) and the span's attributes (a dict or None).
RECORD_SPAN_ID, RECORD_ATTRIBUTES = _R_SPAN, _R_ATTRIBUTES


def span_record_fields(span: ReadableSpan, resources: ResourceRegistry) -> tuple[Any, ...]:
    """A finished OTel SDK span as a record: its values as they are, nothing formatted.

    This is all ``SpanProcessor.on_end`` does on the application's thread (the span object is
    freed at once). Every item is a JSON value orjson encodes as is (the 128-bit trace id in two
    64-bit halves), so a batch of records goes to the writer process in one C call, which turns
    them into rows (:func:`record_row`) off the application's GIL.

    It reads the fields the SDK's ``ReadableSpan`` keeps its values in, not its properties, which
    copy them (``events`` takes a lock and builds a tuple even when there are none; ``attributes``
    wraps them in a proxy): about 3x faster. Used only where :func:`_fields_reader_agrees` finds
    the installed SDK keeps them as 1.x always has; else :func:`span_record_public`.
    """
    ctx = span._context
    trace_id = ctx.trace_id
    parent = span._parent
    status = span._status
    attributes = span._attributes
    events = span._events
    resource = span._resource
    return (
        trace_id >> 64, trace_id & _U64, ctx.span_id,
        parent.span_id if parent is not None else None, parent is not None and parent.is_remote,
        # ``_value_`` is the enum member's value (``.value`` is a descriptor call, ten times slower)
        span._name, span._kind._value_, span._start_time or 0, span._end_time,
        status.status_code._value_, status.description,
        (attributes.copy() or None) if attributes is not None else None,  # a plain dict copy
        [{"name": e.name, "timestamp_ns": e.timestamp, "attributes": dict(e.attributes or {})}
         for e in events] if events else None,
        resources.index(resource.attributes if resource is not None else _NO_RESOURCE),
        getattr(attributes, "dropped", 0), getattr(events, "dropped", 0),
    )  # fmt: skip


class _Counted(dict):  # type: ignore[type-arg]
    """Attributes with the number the SDK dropped, as its ``BoundedAttributes`` carry it."""

    __slots__ = ("dropped",)


class _CountedList(list):  # type: ignore[type-arg]
    """Events with the number the SDK dropped, as its ``BoundedList`` carries it."""

    __slots__ = ("dropped",)


class _PublicFields:
    """A span's public properties under the names of the fields :func:`span_record_fields` reads."""

    def __init__(self, span: ReadableSpan) -> None:
        self._context, self._parent, self._status = span.context, span.parent, span.status
        self._name, self._kind, self._resource = span.name, span.kind, span.resource
        self._start_time, self._end_time = span.start_time, span.end_time
        self._attributes = _Counted(span.attributes or {})
        self._attributes.dropped = span.dropped_attributes
        self._events = _CountedList(span.events)
        self._events.dropped = span.dropped_events


def span_record_public(span: ReadableSpan, resources: ResourceRegistry) -> tuple[Any, ...]:
    """:func:`span_record_fields` through the span's public properties (slower; the fallback)."""
    return span_record_fields(_PublicFields(span), resources)  # type: ignore[arg-type]


def _fields_reader_agrees() -> bool:
    """Both readers give the same record for spans of the installed SDK with every part set:
    events beyond the limit, a remote parent, a status, a kind (attributes beyond the limit
    would log a warning at import; ``tests/test_span_records.py`` compares those)."""
    from opentelemetry.sdk.trace import SpanLimits, SynchronousMultiSpanProcessor, TracerProvider  # noqa: PLC0415
    from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, TraceFlags, set_span_in_context  # noqa: PLC0415

    finished: list[ReadableSpan] = []

    class Keep(SynchronousMultiSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            finished.append(span)

    try:
        provider = TracerProvider(span_limits=SpanLimits(max_events=1), shutdown_on_exit=False)
        provider.add_span_processor(Keep())
        tracer = provider.get_tracer("traceduck.self-check")
        parent = SpanContext(1 << 100, 7, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        remote = set_span_in_context(NonRecordingSpan(parent))
        span = tracer.start_span("check", context=remote, kind=SpanKind.SERVER, attributes={"a": 1, "b": "x"})
        span.set_attributes({"c": 2.5, "d": [1, 2]})
        span.add_event("first", {"k": "v"})
        span.add_event("second")
        span.set_status(Status(StatusCode.ERROR, "broken"))
        span.end()
        with tracer.start_as_current_span("plain"):
            pass
        for done in finished:
            public, fields = ResourceRegistry(), ResourceRegistry()
            if span_record_fields(done, fields) != span_record_public(done, public) or fields.json != public.json:
                return False
        return len(finished) == 2
    except Exception:
        return False


#: The reader ``on_end`` uses: the fast one wherever the installed SDK agrees with itself.
span_record = span_record_fields if _fields_reader_agrees() else span_record_public


def _own_attributes(record: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``record`` and its attributes dict (the record's own copy), made if the span had none."""
    attributes = record[_R_ATTRIBUTES]
    if attributes is None:
        attributes = {}
        record = (*record[:_R_ATTRIBUTES], attributes, *record[_R_ATTRIBUTES + 1 :])
    return record, attributes


def with_end_values(record: tuple[Any, ...], outputs: str | None,
                    fields: dict[str, Any] | None) -> tuple[Any, ...]:
    """``record`` with the outputs and trace fields its span was given as it ended (see
    :mod:`traceduck.end_values`), where the span attributes would have put them. A trace-fields
    attribute already there wins: an update from another thread set it after the root was
    released, with every field."""
    record, attributes = _own_attributes(record)
    if outputs is not None:
        attributes[attr.OUTPUTS] = outputs
    if fields is not None and attr.TRACE_FIELDS not in attributes:
        attributes[attr.TRACE_FIELDS] = fields
    return record


def is_root_record(record: tuple[Any, ...]) -> bool:
    """Whether the record's span is a local root (no parent, or a remote one)."""
    return record[_R_PARENT] is None or record[_R_REMOTE]


def with_root_attributes(record: tuple[Any, ...], root_attributes: dict[str, str]) -> tuple[Any, ...]:
    """``record`` with the configured root attributes, each where the span has none of its own
    (as when they are stamped on the span as it starts and the application sets one later)."""
    record, attributes = _own_attributes(record)
    for key, value in root_attributes.items():
        attributes.setdefault(key, value)
    return record


def record_row(record: Any, default_project: str) -> tuple[Any, ...]:
    """The row of a span record (a tuple, or the list it reads back as from JSON)."""
    attributes = record[_R_ATTRIBUTES] or {}  # the record's own dict: a record is converted once
    if record[_R_DROPPED_ATTRIBUTES]:  # beyond the SDK's SpanLimits (128 attributes by default)
        attributes[attr.DROPPED_ATTRIBUTES] = record[_R_DROPPED_ATTRIBUTES]
    if record[_R_DROPPED_EVENTS]:
        attributes[attr.DROPPED_EVENTS] = record[_R_DROPPED_EVENTS]
    parent = record[_R_PARENT]
    events = record[_R_EVENTS]
    return span_row(
        "%016x%016x" % (record[_R_TRACE_HI], record[_R_TRACE_LO]),
        "%016x" % record[_R_SPAN],
        "%016x" % parent if parent is not None else None,
        record[_R_REMOTE],
        record[_R_NAME],
        _KIND_NAMES.get(record[_R_KIND], "INTERNAL"),
        record[_R_START],
        record[_R_END],
        _STATUS_NAMES.get(record[_R_STATUS], "UNSET"),
        record[_R_MESSAGE],
        attributes,
        dumps(events) if events else None,
        record[_R_RESOURCE],
        None,
        default_project,
    )  # fmt: skip
