"""``select_choice``: change which choice of a logged chat completion is the selected one."""

from __future__ import annotations

from typing import Any

from ..stores import resolve_store


def select_choice(index: int, *, trace_id: str | None = None, response_id: str | None = None,
                  store: Any = None) -> dict[str, Any]:  # fmt: skip
    """Make choice ``index`` of a logged LLM call the selected one, after the fact.

    Name the call by its OpenAI ``response_id`` (``chatcmpl-...``) or by ``trace_id`` (a trace
    with exactly one LLM call). The call's stored outputs get the new ``selected_choice_index``
    and ``selected_message``; when the call is the trace's root, the trace's response preview
    becomes the newly selected message. ``store`` is a DuckDB path or collector URL (default: the
    configured store, flushed first so a call just made is found).

    Returns ``{"trace_id", "span_id", "selected_choice_index", "selected_message"}``. Raises
    :class:`~traceduck.TraceNotFoundError` when no such call is stored and ``ValueError`` when
    ``index`` is not one of its choices.
    """
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"index must be a non-negative integer, not {index!r}")
    if (trace_id is None) == (response_id is None):
        raise ValueError("name the LLM call with exactly one of trace_id or response_id")
    if store is None:
        from ..config import current_setup, flush  # noqa: PLC0415

        if current_setup() is not None:
            flush()
    return resolve_store(store).select_choice(index, trace_id=trace_id, response_id=response_id)
