"""Pivot tables, time series, sessions and LLM usage of stored traces: the dashboard's numbers.

``pivot_traces("user", "status = 'ERROR'")`` gives per user the trace count, error rate, p50/p95
duration, tokens and cost; ``trace_timeseries()`` the same per time bucket; ``get_session(id)``
a session's traces in order with their totals; ``llm_usage(trace_ids)`` the model, tokens and cost
of each trace. The collector's dashboard calls these through its JSON API, so a notebook gets
exactly the numbers the dashboard shows. ``store`` is a DuckDB path, a collector URL or a store,
as for ``search_traces``; times are epoch ms, a range is [time_from, time_to).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from urllib.parse import quote
from typing import TYPE_CHECKING, Any

from .entities import Trace, TraceInfo
from .filters import Comparison, Field, parse_filter, to_filter_string
from .search import search_traces_page
from .store import aggregate
from .store.aggregate import GROUP_BY_NAMES, Aggregate, TimeBucket, parse_group_by
from .stores import resolve_store

if TYPE_CHECKING:
    import pandas as pd

MAX_GROUPS = 1_000
MAX_BUCKETS = 1_000
MAX_USAGE_IDS = 5_000
SESSION_PAGE = 500


class _Table:
    """A result whose ``rows`` read as a table: ``to_dict()`` for JSON, ``to_pandas()``."""

    _rows = "rows"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def to_pandas(self) -> pd.DataFrame:
        from .dataframe import require_pandas  # noqa: PLC0415

        return require_pandas().DataFrame([asdict(r) for r in getattr(self, self._rows)])


@dataclass
class PivotRow(Aggregate):
    """One group; ``filter`` is the filter clause selecting its traces (None where there is none)."""

    value: str | None = None
    filter: str | None = None


@dataclass
class Pivot(_Table):
    """Groups by trace count (largest first); ``groups`` counts all of them, ``rows`` holds at
    most ``limit``; ``total`` covers every matching trace."""

    group_by: str
    rows: list[PivotRow]
    total: Aggregate
    groups: int


@dataclass
class TimeSeries(_Table):
    """Buckets of ``bucket_ms`` from ``from_ms`` (aligned to the width) up to ``to_ms``, empty
    ones included; no buckets when no time range was given and nothing matches."""

    _rows = "buckets"

    from_ms: int | None
    to_ms: int | None
    bucket_ms: int
    buckets: list[TimeBucket]


@dataclass
class Session:
    """A session's traces, oldest first (``TraceInfo`` with assessments), their LLM usage by
    trace id, and totals over the whole session."""

    session_id: str
    traces: list[TraceInfo]
    llm: dict[str, dict[str, Any]]
    total: Aggregate
    next_page_token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "traces": [t.to_dict() for t in self.traces], "llm": self.llm,
                "total": asdict(self.total), "next_page_token": self.next_page_token}  # fmt: skip


@dataclass
class Fields:
    """Tag keys, metadata keys (seen in the newest traces) and feedback names, with counts."""

    tags: list[tuple[str, int]] = field(default_factory=list)
    metadata: list[tuple[str, int]] = field(default_factory=list)
    feedback: list[tuple[str, int]] = field(default_factory=list)
    group_by: tuple[str, ...] = GROUP_BY_NAMES

    def to_dict(self) -> dict[str, Any]:
        return {"group_by": list(self.group_by),
                **{k: [{"key": key, "count": n} for key, n in getattr(self, k)] for k in ("tags", "metadata", "feedback")}}  # fmt: skip


# -- argument checks -------------------------------------------------------------------------------


def _ms(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be epoch milliseconds (a number), not {type(value).__name__}")
    return int(value)


def _range(time_from: Any, time_to: Any) -> tuple[int | None, int | None]:
    start, end = _ms("time_from", time_from), _ms("time_to", time_to)
    if start is not None and end is not None and start >= end:
        raise ValueError(f"time_from ({start}) must be before time_to ({end})")
    return start, end


def _count(name: str, value: Any, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{name} must be a whole number from 1 to {most}, not {value!r}")
    return value


def _remote(target: Any) -> bool:
    from .remote import RemoteStore  # noqa: PLC0415

    return isinstance(target, RemoteStore)


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- the public functions --------------------------------------------------------------------------


def pivot_traces(group_by: str, filter_string: str | None = None, time_from: int | None = None,
                 time_to: int | None = None, limit: int = 100, store: Any = None) -> Pivot:  # fmt: skip
    """Traces matching ``filter_string`` grouped by ``group_by``: count, error rate, p50/p95
    duration, token and cost sums per group, the largest ``limit`` groups first.

    ``group_by``: ``user``, ``session``, ``environment``, ``project``, ``model``, ``status``,
    ``name``, ``pii`` (tag ``pii.detected``), ``classification`` (metadata
    ``context.data_classification``), ``tags.<key>``, ``metadata.<key>`` or ``feedback.<name>``.
    A malformed ``group_by`` or filter raises :class:`~traceduck.InvalidFilterError`.
    """
    dimension = parse_group_by(group_by)
    node = parse_filter(filter_string)
    start, end = _range(time_from, time_to)
    limit = _count("limit", limit, MAX_GROUPS)
    target = resolve_store(store)
    if _remote(target):
        raw = target._call("GET", "/api/pivot", params=_params(group_by=group_by, filter=filter_string,
                                                                 **{"from": start, "to": end}, limit=limit))  # fmt: skip
        return Pivot(raw["group_by"], [PivotRow(**r) for r in raw["rows"]], Aggregate(**raw["total"]), raw["groups"])
    with target.connect() as con:
        total, groups, n = aggregate.pivot(con, dimension, node, target.project, start, end, limit)
    rows = [PivotRow(**asdict(a), value=value, filter=aggregate.drill_filter(dimension, value)) for value, a in groups]
    return Pivot(dimension.name, rows, total, n)


def trace_timeseries(filter_string: str | None = None, time_from: int | None = None, time_to: int | None = None,
                     buckets: int = 60, store: Any = None) -> TimeSeries:  # fmt: skip
    """Traces matching ``filter_string`` per time bucket: count, errors, p50/p95 duration, tokens,
    cost. The bucket width is the smallest of 1 s, 2 s, 5 s, ... 1 h, ... 1 day, ... that fits the
    range in at most ``buckets`` buckets; without a range, the matching traces' own span is used.
    """
    node = parse_filter(filter_string)
    start, end = _range(time_from, time_to)
    buckets = _count("buckets", buckets, MAX_BUCKETS)
    target = resolve_store(store)
    if _remote(target):
        raw = target._call("GET", "/api/timeseries", params=_params(filter=filter_string, buckets=buckets,
                                                                      **{"from": start, "to": end}))  # fmt: skip
        return TimeSeries(raw["from_ms"], raw["to_ms"], raw["bucket_ms"], [TimeBucket(**b) for b in raw["buckets"]])
    with target.connect() as con:
        if start is None or end is None:
            bounds = aggregate.time_bounds(con, node, target.project)
            if bounds is None:
                return TimeSeries(start, end, 0, [])
            start = bounds[0] if start is None else start
            end = max(bounds[1], start + 1) if end is None else end
        width = aggregate.bucket_width(end - start, buckets)
        out = aggregate.timeseries(con, node, target.project, start, end, width)
    return TimeSeries(start, end, width, out)


def llm_usage(trace_ids: list[str], store: Any = None) -> dict[str, dict[str, Any]]:
    """Per trace id: ``models`` called, ``calls``, ``input_tokens``, ``output_tokens``,
    ``cost_usd`` and ``usage_estimated``; traces without LLM calls are left out."""
    if isinstance(trace_ids, str) or not all(isinstance(t, str) for t in trace_ids):
        raise TypeError("trace_ids must be a list of trace id strings")
    ids = [t.strip().lower().replace("-", "") for t in trace_ids]
    if len(ids) > MAX_USAGE_IDS:
        raise ValueError(f"at most {MAX_USAGE_IDS} trace ids at once, not {len(ids)}")
    target = resolve_store(store)
    if _remote(target):
        return target._call("POST", "/api/llm_usage", json={"trace_ids": ids})["usage"]
    with target.connect() as con:
        return aggregate.llm_usage(con, ids, target.project)


def get_session(session_id: str, max_results: int = SESSION_PAGE, page_token: str | None = None,
                store: Any = None) -> Session:  # fmt: skip
    """The traces of a session, oldest first (a page of ``max_results``), with the LLM usage of
    each and totals (count, errors, durations, tokens, cost) over the whole session."""
    if not isinstance(session_id, str) or not session_id:
        raise ValueError("session_id must be a non-empty string")
    target = resolve_store(store)
    if _remote(target):
        raw = target._call("GET", f"/api/sessions/{quote(session_id, safe='')}",
                           params=_params(max_results=max_results, page_token=page_token))  # fmt: skip
        return Session(raw["session_id"], [Trace.from_dict({"info": t}).info for t in raw["traces"]], raw["llm"],
                       Aggregate(**raw["total"]), raw["next_page_token"])  # fmt: skip
    flt = to_filter_string(Comparison(Field("tag", key="trace.session"), "=", session_id))
    page = search_traces_page(flt, order_by=["timestamp_ms ASC"], max_results=max_results, page_token=page_token,
                              include_spans=False, store=target)  # fmt: skip
    infos = [t.info for t in page.traces]
    with target.connect() as con:
        total, _, _ = aggregate.pivot(con, None, parse_filter(flt), target.project)
        usage = aggregate.llm_usage(con, [i.trace_id for i in infos], target.project)
    return Session(session_id, infos, usage, total, page.next_page_token)


def trace_fields(time_from: int | None = None, time_to: int | None = None, store: Any = None) -> Fields:
    """The tag and metadata keys in use (in the newest 10,000 traces of the range) and the
    feedback names, most common first: what there is to filter and pivot on."""
    start, end = _range(time_from, time_to)
    target = resolve_store(store)
    if _remote(target):
        raw = target._call("GET", "/api/fields", params=_params(**{"from": start, "to": end}))
        return Fields(*([(f["key"], f["count"]) for f in raw[k]] for k in ("tags", "metadata", "feedback")))
    with target.connect() as con:
        found = aggregate.known_fields(con, target.project, start, end)
    return Fields(found["tags"], found["metadata"], found["feedback"])
