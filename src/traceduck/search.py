"""Find stored traces: ``search_traces`` (filter language, ordering, paging) and ``get_trace``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .entities import Trace
from .filters import parse_filter, parse_order_by
from .store.query import SearchQuery
from .stores import resolve_store

if TYPE_CHECKING:
    import pandas as pd

#: Page size of ``search_traces_page`` when ``max_results`` is not given.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 50_000


@dataclass
class TracePage:
    """One page of a search; ``next_page_token`` is ``None`` on the last page."""

    traces: list[Trace]
    next_page_token: str | None


def prepare_search(filter_string: str | None, order_by: Sequence[str] | None, page_size: int | None,
                   page_token: str | None, include_spans: bool) -> SearchQuery:
    """Validate a search (the filter and order are parsed here, so errors are the same locally
    and through the collector) and package it for a store."""
    if filter_string is not None and not isinstance(filter_string, str):
        raise TypeError(f"filter_string must be a str, not {type(filter_string).__name__}")
    if isinstance(order_by, str):
        order_by = [order_by]
    if page_size is not None:
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"max_results must be a positive whole number, not {page_size!r}")
    if page_token is not None and not isinstance(page_token, str):
        raise TypeError(f"page_token must be a str, not {type(page_token).__name__}")
    node = parse_filter(filter_string)
    terms = parse_order_by(order_by)
    order_list = list(order_by) if order_by else None
    return SearchQuery(filter_string, node, order_list, terms, page_size, page_token, include_spans)


def search_traces_page(
    filter_string: str | None = None,
    order_by: Sequence[str] | None = None,
    max_results: int = DEFAULT_PAGE_SIZE,
    page_token: str | None = None,
    include_spans: bool = True,
    store: Any = None,
) -> TracePage:
    """One page of traces matching ``filter_string``, and the token of the next page.

    Walk every match with ``page = search_traces_page(f); page = search_traces_page(f,
    page_token=page.next_page_token)`` until the token is ``None``. Pages are stable under
    concurrent writes: a trace stored meanwhile never shifts a page or appears twice.
    """
    max_results = min(max_results, MAX_PAGE_SIZE) if isinstance(max_results, int) else max_results
    query = prepare_search(filter_string, order_by, max_results, page_token, include_spans)
    rows = resolve_store(store).search(query)
    return TracePage(rows.traces, rows.next_page_token)


def search_traces(
    filter_string: str | None = None,
    order_by: Sequence[str] | None = None,
    max_results: int | None = None,
    page_token: str | None = None,
    return_type: Literal["pandas", "list"] = "pandas",
    include_spans: bool = True,
    store: Any = None,
) -> pd.DataFrame | list[Trace]:
    """Traces matching an MLflow-style filter, as a pandas DataFrame or a list of ``Trace``.

    ``filter_string`` takes the filter language (``docs/search.md``), e.g.
    ``tags.`trace.user` = 'jane' AND timestamp_ms > 1700000000000``; a malformed filter raises
    :class:`~traceduck.InvalidFilterError` naming the problem and its position. ``order_by`` is a
    list of ``"<field> [ASC|DESC]"`` (default newest first). ``max_results=None`` returns every
    match; use :func:`search_traces_page` to walk results page by page.
    """
    if return_type not in ("pandas", "list"):
        raise ValueError(f"return_type must be 'pandas' or 'list', not {return_type!r}")
    if return_type == "pandas":
        from .dataframe import require_pandas  # noqa: PLC0415

        require_pandas()
    query = prepare_search(filter_string, order_by, max_results, page_token, include_spans)
    traces = resolve_store(store).search(query).traces
    if return_type == "list":
        return traces
    from .dataframe import traces_to_dataframe  # noqa: PLC0415

    return traces_to_dataframe(traces, include_spans=include_spans)


def count_traces(filter_string: str | None = None, store: Any = None) -> int:
    """How many stored traces match ``filter_string``."""
    target = resolve_store(store)
    return target.count(parse_filter(filter_string), filter_string)


def get_trace(
    trace_id: str | None = None,
    *,
    client_request_id: str | None = None,
    response_id: str | None = None,
    store: Any = None,
) -> Trace | None:
    """The stored trace named by its id (32 hex digits), its client request id (the newest, if
    several traces share one) or an LLM response id recorded in it; ``None`` if none is stored."""
    given = [v for v in (trace_id, client_request_id, response_id) if v is not None]
    if len(given) != 1:
        raise ValueError("name the trace with exactly one of trace_id, client_request_id or response_id")
    if not isinstance(given[0], str):
        raise TypeError(f"the trace id must be a str, not {type(given[0]).__name__}")
    target = resolve_store(store)
    if trace_id is not None:
        return target.get_trace(trace_id.strip().lower().replace("-", ""))
    kind = "client_request_id" if client_request_id is not None else "response_id"
    found = target.find_trace_id(kind, given[0])
    return target.get_trace(found) if found else None
