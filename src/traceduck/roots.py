"""Which live span carries each trace's trace-level fields.

``update_current_trace()`` can be called from any depth of a trace and must land on the trace,
not on the current child span. A tiny span processor remembers the local root span of every live
trace (a span with no parent, or a remote parent); updates are merged into a ``TraceCarrier`` and
written onto that root as span attributes, so they travel with it through any exporter.

When traceduck itself started the root (``@trace``/``start_span``) the carrier is *lazy*: updates
only merge dictionaries and the fields are given to the root once, just before it ends: as the
attribute, or straight to traceduck's store processor when that is the only processor that will
see the span (:func:`end_values`). A root started by other instrumentation (a FastAPI server
span, say) gets its attribute on every update.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, SynchronousMultiSpanProcessor

from . import attributes as attr
from .end_values import park
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

    def values(self, copy: bool = True) -> dict[str, Any]:
        """The trace fields merged so far (as the one span attribute that carries them,
        attr.TRACE_FIELDS, holds them serialised); ``copy``: metadata and tags as copies, for a
        value that outlives this call (later updates change the carrier's own)."""
        fields: dict[str, Any] = {**self.auto_fields, **self.fields}
        if self.metadata:
            fields["metadata"] = dict(self.metadata) if copy else self.metadata
        if self.tags:
            fields["tags"] = dict(self.tags) if copy else self.tags
        return fields

    def serialized(self) -> str:
        """The value of the one span attribute that carries the trace fields (attr.TRACE_FIELDS)."""
        return dumps(self.values(copy=False))  # serialised at once: no copies needed

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


def release_root(carrier: TraceCarrier, outputs: str | None = None) -> int | None:
    """Give the root ``carrier`` carries its fields (and ``outputs``, if given) just before it
    ends. The root is ``carrier.span``, as :func:`claim_root` returned it. Returns what
    :func:`end_values` returns (the caller unparks it after ``span.end()``)."""
    with carrier.lock:
        carrier.lazy = False  # updates from other threads after this point are written at once
        fields = None
        if carrier.dirty:
            carrier.dirty = False
            fields = carrier.values()
        if outputs is None and fields is None:
            return None
        # Under the lock: an update from another thread after this point sets the attribute,
        # which then holds every field (and wins over parked ones, see raw_spans.with_end_values).
        return end_values(carrier.span, outputs, fields)


def only_traceduck_sees(span: Span) -> bool:
    """Whether traceduck's store processor is all that will see ``span`` end: the span's provider
    runs its processors one after another on the ending thread (the SDK's default) and has no
    other processor than traceduck's tracker, whose processor takes parked values.

    Reads two fields the SDK keeps its processors in; where they are missing (another SDK
    version) the answer is no, and the values are span attributes as ever.
    """
    multi = getattr(span, "_span_processor", None)
    if type(multi) is not SynchronousMultiSpanProcessor:
        return False
    processors = getattr(multi, "_span_processors", None)
    if type(processors) is not tuple or len(processors) != 1:
        return False
    tracker = processors[0]
    return type(tracker) is RootSpanTracker and getattr(tracker.processor, "takes_end_values", False) is True


def end_values(span: Span, outputs: str | None, fields: dict[str, Any] | None) -> int | None:
    """Give ``span`` its outputs and/or trace fields as it ends (see :mod:`traceduck.end_values`):
    parked for traceduck's store processor when only it will see the span, returning the span id
    to unpark after ``span.end()``; else set as span attributes, returning None."""
    if only_traceduck_sees(span):
        span_id: int = span.context.span_id
        park(span_id, outputs, fields)
        return span_id
    if outputs is not None:
        span.set_attribute(attr.OUTPUTS, outputs)
    if fields is not None:
        span.set_attribute(attr.TRACE_FIELDS, dumps(fields))
    return None


class RootSpanTracker(SpanProcessor):
    """The one span processor traceduck adds to a provider.

    It remembers the live local root span of each trace, stamps the configured root attributes
    on it, and hands every finished span to ``processor`` (the writer of the current
    ``configure()``). ``configure()`` replaces both on the same tracker, so calling it again
    never stacks processors on a provider. When traceduck's store processor is the only one that
    sees the root, that processor puts the root attributes into the root's record instead (its
    ``root_attributes``, set by ``configure()`` to the same values): one SDK ``set_attributes``
    less a trace. An exporter added while a trace runs misses them on that trace's root.
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
            if self.root_attributes and not only_traceduck_sees(span):
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
