"""Acknowledge OTLP requests only after their spans are durably in DuckDB, and shed load early.

Each request's spans join a queue; one writer thread takes everything waiting (up to a batch
limit), writes it in ONE transaction (group commit) and then resolves every request's future, so
a 200 always means "committed". When the queue already holds ``max_queued_spans`` the request is
refused at once with 429 + Retry-After, which OTel exporters retry, instead of buffering without
bound. A failed write (disk full, read-only file) fails the waiting requests with 503: their spans
were not acknowledged, so the exporters send them again.

A transaction costs DuckDB tens of milliseconds whatever its size, and exporters send their next
request only once the last one is acknowledged, so the requests of one transaction come back
together. The writer therefore waits (at most ``gather_seconds``) for requests still being
decoded, and for as many requests as the largest of its recent transactions acknowledged, to join
the transaction it is about to write: fewer, larger transactions. A lone sender's request waits
for nobody, nor does a transaction that already holds ``batch_max_spans``.

The counters exist for the whole collector (``stats``: health, and what an open collector shows)
and per project (``stats_for``): a key of one project sees only its own project's traffic, so
requests of different projects waiting together are written in one transaction per project.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace

from traceduck.raw_spans import RawSpans
from traceduck.store.duckdb_store import DuckDBStore

logger = logging.getLogger("traceduck.collector")


class Overloaded(RuntimeError):
    """The ingest queue is full; the client should retry after a while."""


@dataclass
class IngestStats:
    received_spans: int = 0
    stored_spans: int = 0
    duplicate_spans: int = 0
    #: Accepted (200) but not stored: their project has not opted in to capture anything.
    uncaptured_spans: int = 0
    rejected_spans: int = 0
    refused_spans: int = 0  # answered 429 after decoding: not accepted, the sender retries
    refused_requests: int = 0  # answered 429 (most before their body is even read)
    failed_spans: int = 0  # a write failed: answered 503, the sender retries
    queued_spans: int = 0
    batches: int = 0
    #: Time spent in write transactions (busy / elapsed is the writer's load).
    write_seconds: float = 0.0
    requests: int = 0
    last_error: str | None = None
    last_error_time: float | None = None
    last_write_time: float | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class IngestQueue:
    """The collector's single writer: group commit with a bounded queue."""

    def __init__(self, store: DuckDBStore, max_queued_spans: int, batch_max_spans: int,
                 gather_seconds: float = 0.05) -> None:
        self.store = store
        self.max_queued_spans = max_queued_spans
        self.batch_max_spans = batch_max_spans
        self.gather_seconds = gather_seconds
        #: Requests being decoded now: they will most likely be submitted in a moment.
        self._decoding = 0
        #: Requests in the write under way.
        self._writing = 0
        #: Most requests at once in flight (being decoded, waiting or being written) since the
        #: last write began: how many senders there are.
        self._peak = 0
        #: That figure for each recent write: senders acknowledged together send again together,
        #: so a write waits for as many requests as the most of these. Otherwise phases persist:
        #: 3 + 1, or 2 + 2 where each half arrives while the other is written (counting only
        #: the requests of each write would never see the 4 senders).
        self._recent_requests: deque[int] = deque(maxlen=8)
        self.stats = IngestStats()
        #: The same counters per project, for requests made with a key of that project.
        self._by_project: dict[str, IngestStats] = {}
        self._items: deque[tuple[RawSpans, Future[int], str | None]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="traceduck-collector-writer", daemon=True)
        self._thread.start()

    def _counters(self, project: str | None) -> tuple[IngestStats, ...]:
        """The collector's counters and, for a project, that project's (hold the lock)."""
        if project is None:
            return (self.stats,)
        return self.stats, self._by_project.setdefault(project, IngestStats())

    @property
    def full(self) -> bool:
        """No request would be accepted now (a cheap check before decoding one)."""
        return self._stopping or self.stats.queued_spans >= self.max_queued_spans

    def refuse(self, project: str | None) -> None:
        """Count a request refused before it was decoded (the queue was full)."""
        with self._cond:
            for stats in self._counters(project):
                stats.requests += 1
                stats.refused_requests += 1

    def stats_for(self, project: str | None) -> IngestStats:
        """A copy of the counters a caller may see: all of them for ``None`` (an open collector),
        else only those of ``project``."""
        with self._cond:
            return replace(self.stats if project is None else self._by_project.get(project) or IngestStats())

    @contextmanager
    def decoding(self) -> Iterator[None]:
        """Around the decoding of a request: a write about to start waits for it to join."""
        with self._cond:
            self._decoding += 1
            self._peak = max(self._peak, self._decoding + len(self._items) + self._writing)
        try:
            yield
        finally:
            with self._cond:
                self._decoding -= 1
                self._cond.notify()

    def count_rejected(self, project: str | None, count: int) -> None:
        with self._cond:
            for stats in self._counters(project):
                stats.rejected_spans += count

    def submit(self, raw: RawSpans, project: str | None = None) -> Future[int]:
        """Queue spans (sent with a key of ``project``, if any) for writing; the future resolves
        once they are committed."""
        future: Future[int] = Future()
        count = len(raw)
        with self._cond:
            counters = self._counters(project)
            for stats in counters:
                stats.requests += 1
                stats.received_spans += count
            if self._stopping or (self.stats.queued_spans and self.stats.queued_spans + count > self.max_queued_spans):
                for stats in counters:
                    stats.refused_spans += count
                    stats.refused_requests += 1
                raise Overloaded(f"{self.stats.queued_spans} spans are waiting to be written")
            for stats in counters:
                stats.queued_spans += count
            self._items.append((raw, future, project))
            self._cond.notify()
        return future

    @property
    def healthy(self) -> bool:
        """False while the last write failed and nothing has been written since."""
        s = self.stats
        return s.last_error_time is None or (s.last_write_time or 0) > s.last_error_time

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _take(self) -> list[tuple[RawSpans, Future[int], str | None]]:
        with self._cond:
            while not self._items and not self._stopping:
                self._cond.wait()
            taken: list[tuple[RawSpans, Future[int], str | None]] = []
            spans = 0
            deadline = time.monotonic() + self.gather_seconds
            while True:
                while self._items and (not taken or spans + len(self._items[0][0]) <= self.batch_max_spans):
                    item = self._items.popleft()
                    spans += len(item[0])
                    taken.append(item)
                left = deadline - time.monotonic()
                expected = self._decoding or len(taken) < max(self._recent_requests, default=0)
                full = spans >= self.batch_max_spans  # a request still coming could not join it
                if self._items or full or not expected or self._stopping or left <= 0 or not taken:
                    if taken:
                        self._recent_requests.append(max(len(taken), self._peak))
                        self._writing = len(taken)
                        self._peak = self._writing + self._decoding + len(self._items)
                    return taken  # full, nothing more coming, or waited long enough
                self._cond.wait(left)  # a request on its way joins this transaction

    def _run(self) -> None:
        while True:
            taken = self._take()
            if not taken:
                return  # stopping and drained
            groups: dict[str | None, list[tuple[RawSpans, Future[int], str | None]]] = {}
            for item in taken:  # one transaction per project: each project's counters are exact
                groups.setdefault(item[2], []).append(item)
            for project, items in groups.items():
                self._write(project, items)
            with self._cond:
                self._writing = 0

    def _write(self, project: str | None, items: list[tuple[RawSpans, Future[int], str | None]]) -> None:
        batch = RawSpans(items[0][0].default_project)
        for raw, _, _ in items:
            batch.extend(raw)
        started = time.perf_counter()
        try:
            result = self.store.write(batch)
        except Exception as exc:  # disk full, read-only file, ...: fail these requests
            logger.error("collector could not write %d spans: %s", len(batch), exc)
            with self._cond:
                for stats in self._counters(project):
                    stats.failed_spans += len(batch)
                    stats.queued_spans -= len(batch)
                    stats.last_error = f"{type(exc).__name__}: {exc}"
                    stats.last_error_time = time.time()
            for _, future, _ in items:
                future.set_exception(exc)
            return
        with self._cond:
            for stats in self._counters(project):
                stats.stored_spans += result.spans
                stats.duplicate_spans += result.duplicate_spans
                stats.uncaptured_spans += result.uncaptured_spans
                stats.queued_spans -= len(batch)
                stats.batches += 1
                stats.write_seconds += time.perf_counter() - started
                stats.last_write_time = time.time()
        for raw, future, _ in items:
            future.set_result(len(raw))
