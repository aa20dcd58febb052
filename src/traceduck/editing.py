"""Curate stored traces: edit one trace's tags or metadata, or tag many traces at once.

As in the Datawizz design: replacing a trace's metadata does not regenerate its tags (tags made
from metadata are made once, when the trace is recorded); tags are edited on their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import TraceNotFoundError
from .filters import parse_filter
from .metadata import check_key, check_metadata, check_tags
from .stores import resolve_store


def _trace_id(trace_id: Any) -> str:
    if not isinstance(trace_id, str):
        raise TypeError(f"trace_id must be a str, not {type(trace_id).__name__}")
    value = trace_id.strip().lower().replace("-", "")
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"trace_id must be 32 hexadecimal digits, not {trace_id!r}")
    return value


def _keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, str):
        raise TypeError("remove takes a list of tag keys, not a single str")
    return [check_key(k, "tag") for k in keys]


def _edit_one(trace_id: str, store: Any, **changes: Any) -> int:
    count = resolve_store(store).edit_tags(trace_ids=[_trace_id(trace_id)], **changes)
    if not count:
        raise TraceNotFoundError(f"no trace {trace_id!r}")
    return count


def set_trace_tags(trace_id: str, tags: Mapping[str, Any], store: Any = None) -> None:
    """Replace all tags of a trace (a ``None`` value is a bare tag)."""
    _edit_one(trace_id, store, replace=check_tags(tags))


def add_trace_tags(trace_id: str, tags: Mapping[str, Any], store: Any = None) -> None:
    """Add (or overwrite) some tags of a trace, keeping the others."""
    _edit_one(trace_id, store, add=check_tags(tags))


def remove_trace_tags(trace_id: str, keys: Iterable[str], store: Any = None) -> None:
    """Remove tags of a trace by key (absent keys are ignored)."""
    _edit_one(trace_id, store, remove=_keys(keys))


def set_trace_metadata(trace_id: str, metadata: Mapping[str, Any], store: Any = None) -> None:
    """Replace a trace's metadata; its tags stay as they are."""
    if not resolve_store(store).replace_metadata(_trace_id(trace_id), check_metadata(metadata)):
        raise TraceNotFoundError(f"no trace {trace_id!r}")


def tag_traces(
    trace_ids: Iterable[str] | None = None,
    *,
    filter_string: str | None = None,
    add: Mapping[str, Any] | None = None,
    remove: Iterable[str] | None = None,
    store: Any = None,
) -> int:
    """Add and/or remove tags on many traces at once, named by ids or by a filter string.

    Returns how many traces were changed. With both ``trace_ids`` and ``filter_string`` only
    traces matching both are changed.
    """
    if trace_ids is None and filter_string is None:
        raise ValueError("name the traces with trace_ids, filter_string or both")
    if not add and not remove:
        raise ValueError("give tags to add and/or keys to remove")
    ids = None if trace_ids is None else [_trace_id(t) for t in trace_ids]
    node = parse_filter(filter_string) if filter_string is not None else None
    return resolve_store(store).edit_tags(
        trace_ids=ids,
        node=node,
        use_filter=filter_string is not None,
        filter_string=filter_string,
        add=check_tags(add) if add else None,
        remove=_keys(remove) if remove else None,
    )
