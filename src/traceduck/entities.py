"""What a stored trace reads back as: ``Trace`` = ``TraceInfo`` + ``TraceData`` (its spans)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SOURCE_TYPES = ("HUMAN", "LLM_JUDGE", "CODE")


@dataclass(frozen=True)
class AssessmentSource:
    """Who made an assessment: ``source_type`` is HUMAN, LLM_JUDGE or CODE (any case)."""

    source_type: str = "CODE"
    source_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source_type, str) or self.source_type.upper() not in SOURCE_TYPES:
            raise ValueError(
                f"source_type must be one of {', '.join(SOURCE_TYPES)}, not {self.source_type!r}"
            )
        object.__setattr__(self, "source_type", self.source_type.upper())
        if self.source_id is not None and not isinstance(self.source_id, str):
            raise TypeError(f"source_id must be a str, not {type(self.source_id).__name__}")


@dataclass(frozen=True)
class AssessmentError:
    """Why a judge failed to produce a value."""

    error_message: str
    error_code: str | None = None


@dataclass
class Assessment:
    """A feedback (a judgement of the output) or an expectation (the expected output)."""

    assessment_id: str
    trace_id: str | None
    kind: str  # "feedback" | "expectation"
    name: str
    value: Any
    source: AssessmentSource
    rationale: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: AssessmentError | None = None
    span_id: str | None = None
    valid: bool = True
    overrides: str | None = None
    create_time_ms: int = 0
    last_update_time_ms: int = 0
    target_kind: str = "trace_id"
    target: str = ""
    project: str = "default"

    def to_dict(self) -> dict[str, Any]:
        """The assessment as plain data (as ``dataclasses.asdict`` gives it, without its deep copy:
        the value and metadata are shared with this assessment)."""
        data = {name: getattr(self, name) for name in _ASSESSMENT_FIELDS}
        data["source"] = {"source_type": self.source.source_type, "source_id": self.source.source_id}
        if self.error is not None:
            data["error"] = {"error_message": self.error.error_message, "error_code": self.error.error_code}
        return data


_ASSESSMENT_FIELDS = tuple(f.name for f in fields(Assessment))


@dataclass
class SpanEvent:
    name: str
    timestamp_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Span:
    """One span of a stored trace. ``inputs``/``outputs`` are the parsed JSON values."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    span_type: str
    kind: str
    start_time_ns: int
    end_time_ns: int | None
    status: str
    status_message: str | None
    attributes: dict[str, Any]
    inputs: Any
    outputs: Any
    events: list[SpanEvent] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The span as plain data (as ``dataclasses.asdict`` gives it, without its deep copy: the
        attribute, input and output values are shared with this span, not copied)."""
        data = {name: getattr(self, name) for name in _SPAN_FIELDS}
        data["events"] = [{"name": e.name, "timestamp_ns": e.timestamp_ns, "attributes": e.attributes}
                          for e in self.events]  # fmt: skip
        return data


_SPAN_FIELDS = tuple(f.name for f in fields(Span))


@dataclass
class TraceInfo:
    """Trace-level fields. ``request_time`` is epoch ms of the root's start; durations are ms."""

    trace_id: str
    client_request_id: str | None
    name: str | None
    state: str
    request_time: int
    execution_duration: int | None
    request_preview: str | None
    response_preview: str | None
    tags: dict[str, str | None] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    assessments: list[Assessment] = field(default_factory=list)
    project: str = "default"

    @property
    def request_id(self) -> str:
        """MLflow's older name for the trace id."""
        return self.trace_id

    @property
    def timestamp_ms(self) -> int:
        return self.request_time

    @property
    def execution_time_ms(self) -> int | None:
        return self.execution_duration

    @property
    def status(self) -> str:
        return self.state

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TraceData:
    spans: list[Span] = field(default_factory=list)
    #: Spans stored but not read: a read returns at most 10,000 spans of a trace (its roots and
    #: the earliest to start; see ``store/reader.py``).
    omitted_spans: int = 0

    @property
    def root(self) -> Span | None:
        ids = {s.span_id for s in self.spans}
        for span in self.spans:
            if span.parent_id is None or span.parent_id not in ids:
                return span
        return None

    @property
    def request(self) -> Any:
        root = self.root
        return root.inputs if root else None

    @property
    def response(self) -> Any:
        root = self.root
        return root.outputs if root else None


@dataclass
class Trace:
    info: TraceInfo
    data: TraceData

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"spans": [s.to_dict() for s in self.data.spans]}
        if self.data.omitted_spans:
            data["omitted_spans"] = self.data.omitted_spans
        return {"info": self.info.to_dict(), "data": data}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Trace:
        """Rebuild a trace from :meth:`to_dict` output (as the collector's API returns it)."""
        info = dict(raw["info"])
        info["assessments"] = [assessment_from_dict(a) for a in info.get("assessments", [])]
        spans = []
        for s in raw.get("data", {}).get("spans", []):
            s = dict(s)
            s["events"] = [SpanEvent(**e) for e in s.get("events", [])]
            spans.append(Span(**s))
        return cls(TraceInfo(**info), TraceData(spans, int(raw.get("data", {}).get("omitted_spans") or 0)))


def assessment_from_dict(raw: dict[str, Any]) -> Assessment:
    raw = dict(raw)
    raw["source"] = AssessmentSource(**raw["source"])
    if raw.get("error"):
        raw["error"] = AssessmentError(**raw["error"])
    return Assessment(**raw)
