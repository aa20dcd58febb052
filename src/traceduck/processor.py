"""``StoreSpanProcessor``: hand finished spans to a background writer, never block the app.

``on_end`` runs on the application's thread, so it only takes the span's values into a small tuple
(about a microsecond; the span object is freed at once) and appends it to a bounded queue. One
writer thread drains the queue in batches and writes each batch to the store in one transaction;
the heavy work of a batch runs in DuckDB with the GIL released, so the writer keeps up even while
several application threads hold the GIL in turn. A full queue drops the span and counts it (with a
rate-limited warning) rather than blocking or raising. ``force_flush`` puts a marker in the queue
and waits until the writer has stored everything queued before it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import duckdb
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .errors import BatchNotAttemptedError, StoreBusyError, StoreLockedError
from .end_values import take
from .raw_spans import (RECORD_SPAN_ID, RawSpans, ResourceRegistry, is_root_record, span_record, with_end_values,
                        with_root_attributes)

logger = logging.getLogger("traceduck")

#: How long one batch is retried on a busy or failing file (disk full, ...) before it is given up.
RETRY_BUDGET_SECONDS = 60.0
#: At shutdown (interpreter exit), how long a failing store is retried before giving up.
SHUTDOWN_SECONDS = 5.0
WARN_EVERY_SECONDS = 10.0
#: Errors worth retrying: the file is busy, full or unavailable for now.
TRANSIENT_ERRORS = (StoreBusyError, duckdb.IOException, OSError)


#: Forks of this process so far, counted in the child (``os.getpid()`` is a system call: too
#: slow to ask on every span whether the writer thread survived a fork).
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_count_fork)


class _FlushMarker:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


@dataclass
class ProcessorStats:
    """Counters of a processor, readable with ``traceduck.stats()``."""

    queued: int = 0
    written_spans: int = 0
    written_traces: int = 0
    dropped_spans: int = 0
    failed_spans: int = 0
    #: Not stored because their project captures nothing (see docs/governance.md).
    uncaptured_spans: int = 0
    batches: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class QueuedSpanProcessor(SpanProcessor):
    """A bounded queue of finished spans and one background thread that writes them out.

    Subclasses say what goes in the queue (``_prepare``, on the application's thread) and how a
    batch is written (``_write``, on the writer thread).
    """

    def __init__(
        self,
        store: Any,
        max_queue_size: int = 100_000,
        max_batch_size: int = 20_000,
        flush_interval: float = 0.2,
        default_project: str = "default",
    ) -> None:
        self.store = store
        self.max_queue_size = max_queue_size
        self.max_batch_size = max_batch_size
        self.flush_interval = flush_interval
        self.default_project = default_project
        self.stats = ProcessorStats()
        self._resources = ResourceRegistry()
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._give_up_at = float("inf")
        self._last_warning = float("-inf")
        self._forks = _forks
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._start_thread()

    # -- application side ------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self._forks != _forks:  # forked: the writer thread did not survive the fork
            self._after_fork()
        queue = self._queue
        if len(queue) >= self.max_queue_size or self._stopping:
            self._drop(1)
            return
        try:
            item = self._prepare(span)
        except Exception:
            self.stats.failed_spans += 1
            logger.exception("traceduck could not convert span %r", getattr(span, "name", span))
            return
        queue.append(item)
        if len(queue) >= self.max_batch_size and not self._wake.is_set():
            self._wake.set()

    def _drop(self, count: int) -> None:
        self.stats.dropped_spans += count
        self._warn(
            f"traceduck dropped spans because its queue is full (max_queue_size={self.max_queue_size}); "
            f"{self.stats.dropped_spans} dropped so far"
        )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._forks != _forks:
            self._after_fork()
        marker = _FlushMarker()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        if self._stopping:
            return
        # Retrying a failing store must not hold up the interpreter's exit for a minute.
        self._give_up_at = time.monotonic() + SHUTDOWN_SECONDS
        self.force_flush(int(SHUTDOWN_SECONDS * 1000) + 1000)
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    # -- writer side -----------------------------------------------------------------------
    def _start_thread(self) -> None:
        with self._thread_lock:
            self._thread = threading.Thread(target=self._run, name="traceduck-writer", daemon=True)
            self._thread.start()

    def _after_fork(self) -> None:
        self._forks = _forks
        self.stats = ProcessorStats()  # this process counts its own spans
        self._queue.clear()
        self._wake = threading.Event()
        self._thread_lock = threading.Lock()
        self._start_thread()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # the writer must outlive any single failure
                logger.exception("traceduck writer failed")
            if self._stopping and not self._queue:
                return

    def _drain(self) -> None:
        queue = self._queue
        # With a backlog, batches go to a writer that takes the next one while it writes this one
        # (the writer process: it turns the next batch into rows on one core while DuckDB writes
        # on the other); at most two in flight, finished in the order they were sent. Without a
        # full batch waiting, the spans gather while the batch in flight is written instead:
        # one batch then rather than a trickle of small ones, each with its fixed cost.
        in_flight: deque[tuple[Any, Any]] = deque()
        while queue:
            if in_flight and len(queue) < self.max_batch_size:
                self._finish_all(in_flight)
            items: list[Any] = []
            markers: list[_FlushMarker] = []
            while queue and len(items) < self.max_batch_size:
                item = queue.popleft()
                if isinstance(item, _FlushMarker):
                    markers.append(item)
                    break
                items.append(item)
            self.stats.queued = len(queue)
            if items:
                sent = self._send(items)
                if sent is not None:
                    in_flight.append(sent)
                    if len(in_flight) > 1 and not self._finish(*in_flight.popleft()):
                        # the batch behind it was not attempted: write it again before any
                        # later batch, so batches are stored in the order they were taken
                        self._finish_all(in_flight)
            if markers:
                self._finish_all(in_flight)  # what a flush waits for is stored before it returns
                for marker in markers:
                    marker.done.set()
        self._finish_all(in_flight)
        release = getattr(self.store, "release", None)
        if release is not None:
            try:
                release()  # idle: let readers in other processes open the file
            except Exception:
                logger.exception("traceduck could not release the store")

    def _finish_all(self, in_flight: deque[tuple[Any, Any]]) -> None:
        while in_flight:
            self._finish(*in_flight.popleft())

    def _send(self, items: list[Any]) -> tuple[Any, Any] | None:
        """Write ``items``; or start writing them and return what ``_finish`` completes."""
        self._write(items)
        return None

    def _finish(self, batch: Any, pending: Any) -> bool:
        """Complete a batch ``_send`` started; False when its first attempt failed."""
        raise NotImplementedError

    def _prepare(self, span: ReadableSpan) -> Any:
        raise NotImplementedError

    def _write(self, items: list[Any]) -> None:
        raise NotImplementedError

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.warning(message)

    def _give_up(self, count: int, exc: BaseException) -> None:
        self.stats.failed_spans += count
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        logger.error("traceduck gave up writing %d spans: %s", count, exc)


class StoreSpanProcessor(QueuedSpanProcessor):
    """Write finished spans to a trace store (a DuckDB file, through the writer process)."""

    #: ``on_end`` takes the values traceduck parked for the span (see :mod:`traceduck.end_values`).
    takes_end_values = True
    #: The configured root attributes (``RootSpanTracker.root_attributes``), put into each root's
    #: record where the tracker left them off its span (only this processor saw it).
    root_attributes: dict[str, str] | None = None

    def _prepare(self, span: ReadableSpan) -> Any:
        record = span_record(span, self._resources)  # the span is freed now
        parked = take(record[RECORD_SPAN_ID])
        if parked is not None:
            record = with_end_values(record, *parked)
        if self.root_attributes and is_root_record(record):
            record = with_root_attributes(record, self.root_attributes)
        return record

    def _batch(self, items: list[Any]) -> RawSpans:
        raw = RawSpans(self.default_project, list(self._resources.json))
        raw.add_records(items)  # made rows by the writer process, or on this thread if there is none
        return raw

    def _write(self, items: list[Any]) -> None:
        self._write_raw(self._batch(items))

    def _send(self, items: list[Any]) -> tuple[Any, Any] | None:
        submit = getattr(self.store, "submit", None)
        if submit is None:
            self._write(items)
            return None
        raw = self._batch(items)
        try:
            return raw, submit(raw, linger=bool(self._queue))
        except Exception as exc:  # not even sent: dealt with when its turn comes
            return raw, exc

    def _finish(self, raw: RawSpans, pending: Any) -> bool:
        return self._write_raw(raw, pending)

    def _write_raw(self, raw: RawSpans, pending: Any = None) -> bool:
        """Write with retries on a busy or failing file; a batch the store refuses as data is
        split in halves until the offending span is isolated, so one bad span loses only itself.

        ``pending``: the batch was already sent (``store.submit``); its outcome is the first attempt.
        Returns whether the first attempt stored the batch.
        """
        deadline = min(time.monotonic() + RETRY_BUDGET_SECONDS, self._give_up_at)
        delay = 0.05
        first = True
        while True:
            try:
                if pending is None:
                    result = self.store.write(raw, linger=bool(self._queue))
                elif isinstance(pending, Exception):
                    raise pending
                else:
                    result = pending.result()
            except BatchNotAttemptedError:
                pending, first = None, False  # behind a batch that failed: send it again now
                continue
            except StoreLockedError as exc:
                self._give_up(len(raw), exc)
                return False
            except TRANSIENT_ERRORS as exc:
                pending, first = None, False
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= min(deadline, self._give_up_at):
                    self._give_up(len(raw), exc)
                    return False
                self._warn(f"traceduck could not write {len(raw)} spans, retrying: {exc}")
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except Exception as exc:  # the data itself: isolate the span the store refuses
                if len(raw) == 1:
                    self._give_up(1, exc)
                    return False
                for half in raw.halves():
                    self._write_raw(half)
                return False
            self.stats.written_spans += result.spans
            self.stats.written_traces += result.traces
            self.stats.uncaptured_spans += result.uncaptured_spans
            self.stats.batches += 1
            return first
