"""The values a traceduck span gets as it ends, handed straight to traceduck's store processor.

``@trace`` learns a span's outputs, and a trace's root its trace fields, just before the span ends.
As span attributes they travel through any exporter, but the SDK checks and copies each attribute
it is given (a lock, a type check, a copy: ~3 µs each here) and the trace fields must be
serialised first. When the only processor that will see the span is traceduck's own store
processor, they skip the span instead: :func:`park` keeps them under the span's id, the store
processor's ``on_end`` (run inside ``span.end()``, on the same thread) takes them with
:func:`take` and puts them into the span's record where the attributes would have been. As soon
as anything else processes the provider's spans (an exporter the application added, remote
mode), they are span attributes again: see ``roots.only_traceduck_sees``.

Measured in process, the bench's (c) call (``bench/overhead.py``) with the values parked and as
attributes, alternating round by round: 4.7 µs less a call, of ~59 µs (median of 31 paired rounds).
"""

from __future__ import annotations

from typing import Any

#: span id -> (outputs JSON text or None, trace fields dict or None) of a span ending now.
_parked: dict[int, tuple[str | None, dict[str, Any] | None]] = {}


def park(span_id: int, outputs: str | None, fields: dict[str, Any] | None) -> None:
    _parked[span_id] = (outputs, fields)


def unpark(span_id: int) -> None:
    """Forget what was parked for a span, if its processor did not take it (the span was dropped
    on a full queue, or had already been ended)."""
    _parked.pop(span_id, None)


def take(span_id: int) -> tuple[str | None, dict[str, Any] | None] | None:
    """What was parked for the span with this id (once), or None."""
    return _parked.pop(span_id, None) if _parked else None
