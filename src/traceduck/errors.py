"""Exceptions raised by traceduck's public API."""

from __future__ import annotations


class TraceduckError(Exception):
    """Base class of every error traceduck raises on purpose."""


class InvalidFilterError(TraceduckError, ValueError):
    """A filter string or an ``order_by`` entry could not be understood.

    ``position`` is the 0-based character offset in ``text`` where the problem was found.
    """

    def __init__(self, message: str, position: int, text: str | None = None) -> None:
        self.message = message
        self.position = position
        self.text = text
        super().__init__(f"{message} (at position {position})")


class StoreLockedError(TraceduckError):
    """Another process already writes traces to this DuckDB file."""


class StoreBusyError(TraceduckError):
    """The DuckDB file stayed locked by another process for longer than the lock timeout."""


class TraceNotFoundError(TraceduckError, LookupError):
    """No stored trace matches the id that was given."""


class AssessmentNotFoundError(TraceduckError, LookupError):
    """No assessment has the id that was given."""


class BatchNotAttemptedError(TraceduckError):
    """A batch sent to the writer behind one that failed was not attempted (batches are stored in
    the order they were sent); it is sent again once the batch before it is dealt with."""
