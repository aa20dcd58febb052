"""Names of the span attributes traceduck writes and reads.

Everything a trace carries travels as plain OpenTelemetry span attributes, so a span exported
over OTLP to the collector rebuilds into exactly the same trace as one written to a local file.
"""

from __future__ import annotations

PREFIX = "traceduck."

#: Span kind in the LLM sense (LLM, CHAIN, TOOL, RETRIEVER, ...), not the OTel SpanKind.
SPAN_TYPE = "traceduck.span_type"
#: JSON text of the function's bound arguments.
INPUTS = "traceduck.inputs"
#: JSON text of the function's return value (or the yielded items of a generator).
OUTPUTS = "traceduck.outputs"

# Trace-level fields travel as ONE attribute on the trace's local root span: a JSON object
# {"tags": {...}, "metadata": {...}, "client_request_id": ..., "request_preview": ...,
#  "response_preview": ..., "state": ...} with only the fields that were set.
TRACE_FIELDS = "traceduck.trace"
#: JSON object of metadata defaults from configure() (service name, environment).
TRACE_DEFAULT_METADATA = "traceduck.trace.default_metadata"
#: Project the trace belongs to (configure(project=...)); the collector's API key overrides it.
TRACE_PROJECT = "traceduck.trace.project"

#: How many attributes / events of a span were dropped before it was stored (the OTel SDK keeps
#: 128 of each by default, see SpanLimits); the names the OTel spec gives these counts.
DROPPED_ATTRIBUTES = "otel.dropped_attributes_count"
DROPPED_EVENTS = "otel.dropped_events_count"

# Reserved metadata keys (and the tags generated from them).
USER = "trace.user"
SESSION = "trace.session"
ENVIRONMENT = "trace.environment"
SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"

#: Keys accepted on write and on search for the reserved identity keys.
IDENTITY_ALIASES: dict[str, str] = {
    "mlflow.trace.user": USER,
    "user.id": USER,
    "enduser.id": USER,
    "mlflow.trace.session": SESSION,
    "session.id": SESSION,
    "gen_ai.conversation.id": SESSION,
}

#: OTel Resource attributes that fill trace metadata when it is not set explicitly.
RESOURCE_ENVIRONMENT_KEYS = ("deployment.environment.name", "deployment.environment")
