"""Apply each project's capture policy and PII mode to a batch of raw spans before it is written.

:func:`apply_policy` is the one place where data is dropped or redacted. It runs in the writer
path (the writer process, the in-process writer thread or the collector's ingest writer), never
in the application's request thread, and works on the :class:`~traceduck.raw_spans.RawSpans`
rows, so everything the store derives from them (trace rows, previews, tags, identity columns,
``llm_calls``) is built from what is left. What a facet covers is listed in
``docs/governance.md``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..raw_spans import RAW_COLUMNS, RawSpans
from . import pii
from .policy import CapturePolicy, ProjectSettings, facet_of

_C = {name: i for i, name in enumerate(RAW_COLUMNS)}
TRACE, IS_ROOT, PROJECT, NAME = _C["trace_id"], _C["is_root"], _C["project"], _C["name"]
START, END, STATUS_MESSAGE = _C["start_time_ns"], _C["end_time_ns"], _C["status_message"]
ATTRIBUTES, EVENTS, INPUTS, OUTPUTS = _C["attributes"], _C["events"], _C["inputs"], _C["outputs"]
FIELDS, DEFAULTS = _C["trace_fields"], _C["default_metadata"]

#: Every text of a span that PII may hide in (the JSON ones are scanned string by string).
_TEXT_COLUMNS = (NAME, STATUS_MESSAGE, ATTRIBUTES, EVENTS, INPUTS, OUTPUTS, FIELDS, DEFAULTS)

HOUR_NS = 3600 * 1_000_000_000
#: Tag naming the kinds of PII found in a trace (comma list, e.g. ``CARD,EMAIL``).
PII_TAG = "pii.detected"
#: GenAI content events (older semantic conventions) and the facet each carries.
_EVENT_FACETS = {
    "gen_ai.content.prompt": "prompt", "gen_ai.system.message": "prompt", "gen_ai.user.message": "prompt",
    "gen_ai.tool.message": "prompt", "gen_ai.content.completion": "response", "gen_ai.choice": "response",
    "gen_ai.assistant.message": "response",
}  # fmt: skip
#: Traces whose PII kinds are remembered across batches (a root may come in a later batch).
MEMORY_TRACES = 10_000


@dataclass
class Applied:
    raw: RawSpans
    #: Spans dropped whole: their project captures nothing.
    uncaptured: int = 0


class PiiMemory:
    """Kinds of PII found per trace, across batches: a trace's tag names all of them."""

    def __init__(self, limit: int = MEMORY_TRACES) -> None:
        self.limit = limit
        self._items: OrderedDict[tuple[str, str], tuple[set[str], bool]] = OrderedDict()

    def merge(self, key: tuple[str, str], kinds: set[str], root_here: bool) -> tuple[set[str], bool]:
        """All kinds known for the trace, and whether its root was written in an earlier batch."""
        known, root_written = self._items.pop(key, (set(), False))
        known = known | kinds
        self._items[key] = (known, root_written or root_here)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
        return known, root_written


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _keep_keys(mapping: dict[str, Any], capture: CapturePolicy) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if capture.allows(facet_of(k))}


def _filter_json_map(text: str | None, capture: CapturePolicy) -> str | None:
    value = _loads(text)
    if not isinstance(value, dict):
        return text
    kept = _keep_keys(value, capture)
    if len(kept) == len(value):
        return text
    return _dumps(kept) if kept else None


def _filter_trace_fields(text: str | None, capture: CapturePolicy) -> str | None:
    fields = _loads(text)
    if not isinstance(fields, dict):
        return text
    for name in ("metadata", "tags"):
        if isinstance(fields.get(name), dict):
            fields[name] = _keep_keys(fields[name], capture)
    if not capture.allows("prompt"):
        fields.pop("request_preview", None)
    if not capture.allows("response"):
        fields.pop("response_preview", None)
    return _dumps(fields)


def _filter_events(text: str | None, capture: CapturePolicy) -> str | None:
    events = _loads(text)
    if not isinstance(events, list):
        return text
    kept = []
    for event in events:
        if not isinstance(event, dict) or not capture.allows(_EVENT_FACETS.get(event.get("name"))):
            continue
        if isinstance(event.get("attributes"), dict):
            event["attributes"] = _keep_keys(event["attributes"], capture)
        if not capture.allows("latency") and isinstance(event.get("timestamp_ns"), int):
            event["timestamp_ns"] -= event["timestamp_ns"] % HOUR_NS
        kept.append(event)
    return _dumps(kept) if kept else None


def _filter_outputs(text: str | None, capture: CapturePolicy) -> str | None:
    """An LLM response keeps its usage only with token_usage, its stream timing only with latency."""
    if not text or ('"usage' not in text and "time_to_first_token" not in text):
        return text
    value = _loads(text)
    if not isinstance(value, dict):
        return text
    if not capture.allows("token_usage"):
        value.pop("usage", None)
        value.pop("usage_estimated", None)
    stream = value.get("stream")
    if not capture.allows("latency") and isinstance(stream, dict):
        stream.pop("time_to_first_token_ms", None)
    return _dumps(value)


def _capture_row(row: list[Any], capture: CapturePolicy) -> None:
    """Drop what the policy does not capture, in place."""
    if not capture.allows("prompt"):
        row[INPUTS] = None
    row[OUTPUTS] = _filter_outputs(row[OUTPUTS], capture) if capture.allows("response") else None
    row[ATTRIBUTES] = _filter_json_map(row[ATTRIBUTES], capture)
    row[EVENTS] = _filter_events(row[EVENTS], capture)
    row[FIELDS] = _filter_trace_fields(row[FIELDS], capture) if row[FIELDS] is not None else None
    row[DEFAULTS] = _filter_json_map(row[DEFAULTS], capture)
    if not capture.allows("latency"):
        # Start times are kept to the hour (traces stay ordered and age off); no end, no duration.
        start = row[START] or 0
        row[START] = start - start % HOUR_NS
        row[END] = None


def _pii_row(row: list[Any], replace: bool) -> set[str]:
    """Scan (and with ``replace`` redact) every text of a row; the kinds found."""
    kinds: set[str] = set()
    columns = [c for c in _TEXT_COLUMNS if row[c]]
    for index in pii.flagged([row[c] for c in columns]):
        column = columns[index]
        scan = pii.scan_text if column in (NAME, STATUS_MESSAGE) else pii.scan_json_text
        row[column] = scan(row[column], replace, kinds)
    return kinds


def _with_tag(fields_text: str | None, kinds: set[str]) -> str:
    fields = _loads(fields_text) if fields_text else None
    if not isinstance(fields, dict):
        fields = {}
    tags = fields.get("tags") if isinstance(fields.get("tags"), dict) else {}
    fields["tags"] = {**tags, PII_TAG: ",".join(sorted(kinds))}
    return _dumps(fields)


def apply_policy(raw: RawSpans, settings_for: Callable[[str], ProjectSettings],
                 memory: PiiMemory | None = None) -> Applied:  # fmt: skip
    """``raw`` as each row's project captures it: uncaptured facets dropped, PII redacted or
    detected (the trace tagged ``pii.detected``), spans of projects that capture nothing left out.

    ``settings_for(project)`` gives a project's settings. Returns ``raw`` itself when every
    project in it stores everything as it came.
    """
    projects = raw.index.projects
    settings = {p: settings_for(p) for p in projects}
    if all(s.is_passthrough for s in settings.values()):
        return Applied(raw)
    memory = memory if memory is not None else PiiMemory()
    rows: list[list[Any]] = []
    uncaptured = 0
    found: dict[tuple[str, str], set[str]] = {}
    for original in raw.rows:
        s = settings[original[PROJECT]]
        if s.captures_nothing:
            uncaptured += 1
            continue
        row = list(original)
        if not s.capture.captures_all:
            _capture_row(row, s.capture)
        if s.pii != "off":
            kinds = _pii_row(row, replace=s.pii == "redact")
            key = (row[TRACE], row[PROJECT])
            if kinds or key in found:
                found.setdefault(key, set()).update(kinds)
            else:
                found[key] = set()
        rows.append(row)
    _tag_traces(rows, found, memory)
    out = RawSpans(raw.default_project, raw.resources)
    out.add_rows([tuple(r) for r in rows])
    return Applied(out, uncaptured)


def _tag_traces(rows: list[list[Any]], found: dict[tuple[str, str], set[str]], memory: PiiMemory) -> None:
    """Tag each trace with PII: on its root when the root is in this batch, else (its root
    already written) through trace fields on one of its spans; remembered for later batches."""
    roots = {(r[TRACE], r[PROJECT]): r for r in rows if r[IS_ROOT]}
    first: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        first.setdefault((r[TRACE], r[PROJECT]), r)
    for key, kinds in found.items():
        root = roots.get(key)
        known, root_written = memory.merge(key, kinds, root is not None)
        if not known:
            continue
        if root is not None:
            root[FIELDS] = _with_tag(root[FIELDS], known)
        elif root_written and kinds:
            carrier = first[key]
            carrier[FIELDS] = _with_tag(carrier[FIELDS], known)
