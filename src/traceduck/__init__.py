"""traceduck: trace LLM applications on OpenTelemetry into DuckDB, and find every request again.

This module is the table of contents of the public API.
"""

from .assessments import (
    delete_assessment,
    get_assessment,
    list_pending_assessments,
    log_expectation,
    log_feedback,
    override_feedback,
    update_assessment,
)
from .config import Settings, configure, flush, settings, shutdown, stats
from .current_trace import get_current_span_id, get_current_trace_id, update_current_trace
from .editing import add_trace_tags, remove_trace_tags, set_trace_metadata, set_trace_tags, tag_traces
from .entities import (
    Assessment,
    AssessmentError,
    AssessmentSource,
    Span,
    SpanEvent,
    Trace,
    TraceData,
    TraceInfo,
)
from .errors import (
    AssessmentNotFoundError,
    InvalidFilterError,
    StoreBusyError,
    StoreLockedError,
    TraceduckError,
    TraceNotFoundError,
)
from .llm import normalize_chat, register_price
from .llm.selection import select_choice
from .paging import InvalidPageTokenError
from .search import TracePage, count_traces, get_trace, search_traces, search_traces_page
from .tracing import LiveSpan, start_span, trace

__version__ = "0.1.0"

__all__ = [
    "add_trace_tags",
    "remove_trace_tags",
    "set_trace_metadata",
    "set_trace_tags",
    "tag_traces",
    "Assessment",
    "AssessmentError",
    "AssessmentNotFoundError",
    "AssessmentSource",
    "InvalidFilterError",
    "InvalidPageTokenError",
    "LiveSpan",
    "Settings",
    "Span",
    "SpanEvent",
    "StoreBusyError",
    "StoreLockedError",
    "Trace",
    "TraceData",
    "TraceInfo",
    "TraceNotFoundError",
    "TracePage",
    "TraceduckError",
    "configure",
    "count_traces",
    "delete_assessment",
    "flush",
    "get_assessment",
    "get_current_span_id",
    "get_current_trace_id",
    "get_trace",
    "list_pending_assessments",
    "log_expectation",
    "log_feedback",
    "normalize_chat",
    "override_feedback",
    "register_price",
    "search_traces",
    "search_traces_page",
    "select_choice",
    "settings",
    "shutdown",
    "start_span",
    "stats",
    "trace",
    "update_assessment",
    "update_current_trace",
]
