"""traceduck: trace LLM applications on OpenTelemetry into DuckDB, and find every request again.

This module is the table of contents of the public API.
"""

from .analytics import get_session, llm_usage, pivot_traces, trace_fields, trace_timeseries
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
from .governance import (
    AuditEvent,
    AuditVerification,
    CapturePolicy,
    ProjectSettings,
    PurgeReport,
    SftExport,
    audit_events,
    export_sft,
    get_project_settings,
    purge,
    register_pii_detector,
    set_project_settings,
    verify_audit,
)
from .llm import normalize_chat, register_price
from .llm.selection import select_choice
from .paging import InvalidPageTokenError
from .search import TracePage, count_traces, get_trace, search_traces, search_traces_page
from .tracing import LiveSpan, start_span, trace

__version__ = "0.1.0"

__all__ = [
    "Assessment",
    "AssessmentError",
    "AssessmentNotFoundError",
    "AssessmentSource",
    "AuditEvent",
    "AuditVerification",
    "CapturePolicy",
    "InvalidFilterError",
    "InvalidPageTokenError",
    "LiveSpan",
    "ProjectSettings",
    "PurgeReport",
    "Settings",
    "SftExport",
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
    "add_trace_tags",
    "audit_events",
    "configure",
    "count_traces",
    "delete_assessment",
    "export_sft",
    "flush",
    "get_assessment",
    "get_current_span_id",
    "get_current_trace_id",
    "get_project_settings",
    "get_session",
    "get_trace",
    "list_pending_assessments",
    "llm_usage",
    "log_expectation",
    "log_feedback",
    "normalize_chat",
    "override_feedback",
    "pivot_traces",
    "purge",
    "register_pii_detector",
    "register_price",
    "remove_trace_tags",
    "search_traces",
    "search_traces_page",
    "select_choice",
    "set_project_settings",
    "set_trace_metadata",
    "set_trace_tags",
    "settings",
    "shutdown",
    "start_span",
    "stats",
    "tag_traces",
    "trace",
    "trace_fields",
    "trace_timeseries",
    "update_assessment",
    "update_current_trace",
    "verify_audit",
]
