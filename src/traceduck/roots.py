"""Which live span carries each trace's trace-level fields.

``update_current_trace()`` can be called from any depth of a trace and must land on the trace,
not on the current child span. A tiny span processor remembers the local root span of every live
trace (a span with no parent, or a remote parent); updates are merged into a ``TraceCarrier`` and
written onto that root as span attributes, so they travel with it through any exporter.

When traceduck itself started the root (``@trace``/``start_span``) the carrier is *lazy*: updates
only merge dictionaries and the attributes are serialised once, just before the root ends. A root
started by other instrumentation (a FastAPI server span, say) gets its attributes on every update.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from . import attributes as attr
from .serialize import dumps

logger = logging.getLogger("traceduck")

#: Characters of inputs/outputs kept as a trace preview.
PREVIEW_CHARS = 1000


class TraceCarrier:
    """A live span that carries trace-level fields, with the fields merged so far."""

    __slots__ = ("span", "tags", "metadata", "fields", "auto_fields", "preview_span", "lock",
                 "lazy", "dirty")  # fmt: skip

    def __init__(self, span: Span) -> None:
        self.span = span
        self.tags: dict[str, str | None] = {}
        self.metadata: dict[str, Any] = {}
        self.fields: dict[str, str] = {}
        #: Previews taken from the first traceduck span under a root of other instrumentation.
        self.auto_fields: dict[str, str] = {}
        self.preview_span: Span | None = None
        self.lock = threading.Lock()
        self.lazy = False
        self.dirty = False

    def serialized(self) -> str:
        """The value of the one span attribute that carries the trace fields (attr.TRACE_FIELDS)."""
        fields: dict[str, Any] = {**self.auto_fields, **self.fields}
        if self.metadata:
            fields["metadata"] = self.metadata
        if self.tags:
            fields["tags"] = self.tags
        return dumps(fields)

    def update(self, tags: dict[str, str | None], metadata: dict[str, Any], fields: dict[str, str],
               auto: bool = False) -> None:
        """Merge one update (latest write wins per key) and record it on the span.

        ``auto`` fields are defaults taken from spans; any explicit value of a field wins.
        """
        with self.lock:
            if auto:
                self.auto_fields.update(fields)
                fields = {}
            if metadata:
                self.metadata.update(metadata)
                if self.tags:
                    for key in metadata:  # this metadata write is later than a tag of that key
                        self.tags.pop(key, None)
            if tags:
                self.tags.update(tags)
            if fields:
                self.fields.update(fields)
            if self.lazy:
                self.dirty = True
            else:
                self.span.set_attribute(attr.TRACE_FIELDS, self.serialized())


#: trace id (int) -> carrier of that trace's fields in this process.
_carriers: dict[int, TraceCarrier] = {}


def carrier_for(span: Span, trace_id: int | None = None) -> TraceCarrier | None:
    """The carrier of ``span``'s trace: its live local root, else ``span`` itself if it is live."""
    if trace_id is None:
        trace_id = span.get_span_context().trace_id
    carrier = _carriers.get(trace_id)
    if carrier is not None and carrier.span.is_recording():
        return carrier
    if not span.is_recording():
        return None
    # The root is gone or was never seen (started before traceduck was set up): the current span
    # carries the fields and the store merges them into the trace.
    carrier = TraceCarrier(span)
    _carriers[trace_id] = carrier
    return carrier


def claim_root(span: Span) -> TraceCarrier | None:
    """Called by traceduck's own wrappers after starting a span: if ``span`` is a local root,
    make its carrier lazy and return it (the caller then passes it to :func:`release_root`).

    A span a sampler dropped (a non-recording span) carries nothing.
    """
    if not span.is_recording():
        return None
    parent = span.parent  # type: ignore[attr-defined]
    if parent is not None and not parent.is_remote:
        return None
    carrier = _carriers.get(span.context.trace_id)  # type: ignore[attr-defined]
    if carrier is not None and carrier.span is span:
        carrier.lazy = True
        return carrier
    return None


def claim_preview(span: Span, inputs: str | None) -> TraceCarrier | None:
    """Under a root of other instrumentation (a FastAPI server span, say), the first traceduck
    span lends its inputs (and later its outputs) to the trace's previews."""
    carrier = _carriers.get(span.get_span_context().trace_id)
    if carrier is None or carrier.lazy or carrier.preview_span is not None or carrier.span is span:
        return None
    carrier.preview_span = span
    if inputs is not None:
        carrier.update({}, {}, {"request_preview": inputs[:PREVIEW_CHARS]}, auto=True)
    return carrier


def release_preview(carrier: TraceCarrier, outputs: str | None) -> None:
    if outputs is not None and carrier.span.is_recording():
        carrier.update({}, {}, {"response_preview": outputs[:PREVIEW_CHARS]}, auto=True)


def release_root(carrier: TraceCarrier, outputs: str | None = None) -> None:
    """Write the carrier's fields (and ``outputs``, if given) onto the root it carries, just
    before the root ends. The root is ``carrier.span``, as :func:`claim_root` returned it."""
    span = carrier.span
    with carrier.lock:
        carrier.lazy = False  # updates from other threads after this point are written at once
        # One attribute at a time: the SDK checks a dict of attributes as a whole first (a
        # Mapping and a Sequence ABC check), which costs more than the second call.
        if outputs is not None:
            span.set_attribute(attr.OUTPUTS, outputs)
        if carrier.dirty:
            carrier.dirty = False
            span.set_attribute(attr.TRACE_FIELDS, carrier.serialized())


class RootSpanTracker(SpanProcessor):
    """The one span processor traceduck adds to a provider.

    It remembers the live local root span of each trace, stamps the configured root attributes
    on it, and hands every finished span to ``processor`` (the writer of the current
    ``configure()``). ``configure()`` replaces both on the same tracker, so calling it again
    never stacks processors on a provider.
    """

    def __init__(self, root_attributes: dict[str, str] | None = None,
                 processor: SpanProcessor | None = None) -> None:  # fmt: skip
        self.root_attributes = root_attributes or None
        self.processor = processor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        parent = span.parent
        if parent is None or parent.is_remote:
            trace_id = span.context.trace_id
            # The outermost local root wins if a trace has several in this process.
            if trace_id not in _carriers:
                _carriers[trace_id] = TraceCarrier(span)
            if self.root_attributes:
                span.set_attributes(self.root_attributes)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        carrier = _carriers.get(context.trace_id)
        if carrier is not None and carrier.span.context.span_id == context.span_id:
            _carriers.pop(context.trace_id, None)
        processor = self.processor
        if processor is not None:
            processor.on_end(span)

    def shutdown(self) -> None:
        processor, self.processor = self.processor, None
        if processor is not None:
            try:
                processor.shutdown()
            except Exception:
                logger.exception("traceduck: error while shutting down %r", processor)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        processor = self.processor
        return processor.force_flush(timeout_millis) if processor is not None else True
