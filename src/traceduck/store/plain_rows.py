"""Trace rows of plain traces, built in Python: the common batch's trace rows in microseconds.

Building trace rows in SQL (see ``writer._trace_rows_sql``) costs DuckDB ~13 ms of planning per
batch before any row; a plain trace's row built here costs ~8 µs, so a collector transaction of
2,000 spans (~400 traces) spends ~18% less time writing. Large batches stay with SQL (see
``writer.PLAIN_ROWS_MAX_TRACES``). Only *plain* traces take this path, where the rules of
:mod:`traceduck.metadata` come down to dictionary updates: trace fields that are a JSON object
whose metadata values are strings, numbers or booleans, whose tag values and other fields are
strings, no JSON ``null`` anywhere, flat implicit metadata, and no OTel identity attributes on the
root. A batch with any other trace is left whole to the SQL statements, which handle every case
(``tests/test_trace_row_paths.py`` checks that both give the same rows).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pyarrow as pa

from ..metadata import string_form
from ..raw_spans import RAW_COLUMNS, RawSpans
from ..roots import PREVIEW_CHARS
from ..serialize import preview
from ..trace_rows import TRACE_COLUMNS

_TRACE, _SPAN, _IS_ROOT, _PROJECT, _NAME, _START, _END, _STATUS, _ATTRIBUTES, _RESOURCE = (
    RAW_COLUMNS.index(c) for c in ("trace_id", "span_id", "is_root", "project", "name", "start_time_ns",
                                   "end_time_ns", "status", "attributes", "resource")
)  # fmt: skip
_INPUTS, _OUTPUTS, _FIELDS, _DEFAULTS = (
    RAW_COLUMNS.index(c) for c in ("inputs", "outputs", "trace_fields", "default_metadata")
)
_TEXT_FIELDS = ("state", "client_request_id", "request_preview", "response_preview")
_KNOWN_FIELDS = frozenset((*_TEXT_FIELDS, "metadata", "tags"))
_MAP = pa.map_(pa.string(), pa.string())


class NotPlain(Exception):
    """Some trace of the batch needs the SQL statements."""


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float))  # bool is an int; JSON has no NaN


def _implicit(implicit_json: str | None) -> dict[str, Any]:
    if implicit_json is None:
        return {}
    value = orjson.loads(implicit_json)
    if not all(_scalar(v) for v in value.values()):
        raise NotPlain
    return value


def plain_trace_rows(raw: RawSpans, implicit: dict[tuple[int, str | None], str | None],
                     stored_at: int, identity: re.Pattern[str]) -> pa.Table | None:  # fmt: skip
    """The trace rows of a batch whose every trace-row source is a root (no patches), as an
    Arrow table of ``TRACE_COLUMNS`` (``trace_id`` as 32 hex digits); ``None`` when some trace
    is not plain.

    ``implicit``: the implicit metadata JSON of each (resource index, defaults) of the roots;
    ``identity``: the pattern of OTel identity attribute keys in a span's attributes JSON.
    """
    try:
        return _rows(raw, implicit, stored_at, identity)
    except (NotPlain, orjson.JSONDecodeError, AttributeError, TypeError):
        return None


def _rows(raw: RawSpans, implicit: dict[tuple[int, str | None], str | None], stored_at: int,
          identity: re.Pattern[str]) -> pa.Table:  # fmt: skip
    parsed = {key: _implicit(text) for key, text in implicit.items()}
    out: list[list[Any]] = [[] for _ in TRACE_COLUMNS]
    (trace_ids, projects, names, states, request_times, durations, end_times, client_ids, users,
     sessions, environments, request_previews, response_previews, tags_col, meta_col, meta_json_col,
     root_span_ids, stored) = out  # fmt: skip
    for row in raw.rows:
        fields_text = row[_FIELDS]
        if not row[_IS_ROOT]:
            if fields_text is not None:
                raise NotPlain  # a patch: merged with its trace, not this path
            continue
        attributes = row[_ATTRIBUTES]
        if attributes is not None and identity.search(attributes):
            raise NotPlain
        metadata = dict(parsed[(row[_RESOURCE], row[_DEFAULTS])])
        tags: dict[str, str | None] = {}
        text_fields: dict[str, str] = {}
        if fields_text is not None:
            if "null" in fields_text:
                raise NotPlain
            fields = orjson.loads(fields_text)
            if not fields.keys() <= _KNOWN_FIELDS:
                raise NotPlain
            own_metadata = fields.get("metadata")
            if own_metadata is not None:
                if not all(_scalar(v) for v in own_metadata.values()):
                    raise NotPlain
                metadata.update(own_metadata)
            own_tags = fields.get("tags")
            for name in _TEXT_FIELDS:
                value = fields.get(name)
                if value is not None:
                    if not isinstance(value, str):
                        raise NotPlain
                    text_fields[name] = value
            if own_tags is not None and not all(isinstance(v, str) for v in own_tags.values()):
                raise NotPlain
        else:
            own_tags = None
        meta_text = {key: string_form(value) for key, value in metadata.items()}
        tags = dict(meta_text)
        if own_tags:
            tags.update(own_tags)
        start, end = row[_START], row[_END]
        start_ms = start // 1_000_000
        end_ms = end // 1_000_000 if end is not None else None
        trace_ids.append(row[_TRACE])
        project = row[_PROJECT]
        projects.append(project if project is not None else raw.default_project)
        names.append(row[_NAME])
        state = text_fields.get("state")
        states.append(state if state is not None else ("ERROR" if row[_STATUS] == "ERROR" else "OK"))
        request_times.append(start_ms)
        durations.append(end_ms - start_ms if end_ms is not None else None)
        end_times.append(end_ms)
        client_ids.append(text_fields.get("client_request_id"))
        users.append(tags.get("trace.user"))
        sessions.append(tags.get("trace.session"))
        environments.append(tags.get("trace.environment"))
        text = text_fields.get("request_preview")
        request_previews.append(text if text is not None else preview(row[_INPUTS], PREVIEW_CHARS))
        text = text_fields.get("response_preview")
        response_previews.append(text if text is not None else preview(row[_OUTPUTS], PREVIEW_CHARS))
        tags_col.append(list(tags.items()))
        meta_col.append(list(meta_text.items()))
        meta_json_col.append(orjson.dumps(metadata).decode())
        root_span_ids.append(row[_SPAN])
        stored.append(stored_at)
    types = {"request_time": pa.int64(), "execution_duration": pa.int64(), "end_time": pa.int64(),
             "stored_at": pa.int64(), "tags": _MAP, "metadata": _MAP}  # fmt: skip
    return pa.table([pa.array(values, types.get(name, pa.string())) for name, values in zip(TRACE_COLUMNS, out)],
                    names=list(TRACE_COLUMNS))  # fmt: skip
