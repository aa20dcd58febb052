"""Which spans and traces the collector stored lately: redelivery checks without reading the store.

An exporter that gets no answer sends its batch again, so the collector skips spans it already
stored (``dedupe_spans``). Asking the store costs every write ~14 ms whatever its size (an
anti-join over the spans that started in the batch's time range and two counts, ~9 ms; the
lookup of its roots' traces, ~5 ms: measured on ``bench/collector.py``'s spans), as much as
writing 512 spans costs otherwise. This index answers the common case in memory, EXACTLY, and
leaves the rest to the store:

- It holds hashes of the (trace id, span id, project) of every span written through it, and of
  the (trace id, project) of every root, grouped per write. A ``watermark`` W keeps the answer
  exact: every stored span that started after W has its hash here. So a span that started after
  W and whose hash is absent is certainly not stored. Anything else (a span that started before
  W, a hash that is present, which is a redelivery or, rarely, a collision) sends the batch down
  the store's exact path.
- A parentless root's trace can already have a row only if another root of it (one with a remote
  parent, stored first) started at most ``skew_ns`` before it, the same assumption the store's
  own lookup makes (``EXISTING_ROOTS_BEFORE_MS``, an hour). Roots are answered here only when
  that window lies entirely after W; else the store looks their traces up (the ~5 ms part).
  So the roots are answered here for a while after a start on an empty store, or an hour after a
  restart, and only as long as the index holds more than the last hour (at most ``limit`` spans
  an hour); the spans are answered here whatever the rate.
- At most ``limit`` span hashes are kept: the oldest writes are dropped first and W moves past
  every span they held. On first use, and whenever the store holds a different number of spans
  than the index expects (a purge, a write that bypassed it), it starts over with W at the
  newest stored span's start; also when the hashes written twice (redeliveries, which are never
  dropped) grow past a tenth of ``limit``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import duckdb

from ..raw_spans import RAW_COLUMNS, RawSpans

_PARENT = RAW_COLUMNS.index("parent_span_id")
_IS_ROOT = RAW_COLUMNS.index("is_root")
_PROJECT = RAW_COLUMNS.index("project")
_START = RAW_COLUMNS.index("start_time_ns")

#: Spans remembered by default: ~70 bytes each (a hash in a set), so ~35 MB.
DEFAULT_LIMIT = 500_000


class RecentSpans:
    def __init__(self, skew_ns: int, limit: int = DEFAULT_LIMIT) -> None:
        self.skew_ns = skew_ns
        self.limit = limit
        self.watermark: int | None = None  # None: not loaded yet
        self.expected_spans = 0
        self._spans: set[int] = set()
        self._traces: set[int] = set()
        #: Hashes added twice (a collision, or a redelivery written by the exact path): never
        #: dropped, so dropping the older write cannot drop the newer one's.
        self._shared: set[int] = set()
        self._writes: deque[tuple[int, list[int], list[int]]] = deque()
        #: Batches whose spans were answered here / sent down the exact path, and those whose
        #: roots were answered here too (health figures, and for tests).
        self.answered = 0
        self.fallbacks = 0
        self.roots_answered = 0
        self._last: tuple[RawSpans, tuple[list[int], list[int], list[tuple[int, Any]]]] | None = None

    def __len__(self) -> int:
        return len(self._spans)

    def reset(self, con: duckdb.DuckDBPyConnection) -> None:
        """Start over from what the store holds (every stored span starts at or before W)."""
        count, newest = con.execute("SELECT count(*), max(start_time_ns) FROM spans").fetchall()[0]
        self.watermark = newest if newest is not None else -(2**63)
        self.expected_spans = count
        self._spans.clear()
        self._traces.clear()
        self._shared.clear()
        self._writes.clear()

    def _keys(self, raw: RawSpans) -> tuple[list[int], list[int], list[tuple[int, Any]]]:
        if self._last is not None and self._last[0] is raw:
            return self._last[1]
        default = raw.default_project
        spans: list[int] = []
        traces: list[int] = []
        roots: list[tuple[int, Any]] = []
        for row in raw.rows:
            project = row[_PROJECT] or default
            spans.append(hash((row[0], row[1], project)))
            if row[_IS_ROOT]:
                key = hash((row[0], project))
                traces.append(key)
                roots.append((row[_START], row[_PARENT]))
        self._last = (raw, (spans, traces, roots))
        return spans, traces, roots

    def check(self, con: duckdb.DuckDBPyConnection, raw: RawSpans) -> tuple[bool, bool]:
        """(spans, roots): ``spans`` True if certainly no span of ``raw`` is stored (nor repeated
        within it); ``roots`` True if, besides, certainly no parentless root of it has a stored
        trace. False: ask the store. Call it holding the write lock, before writing ``raw``."""
        count = con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
        if self.watermark is None or count != self.expected_spans:
            self.reset(con)
        watermark = self.watermark
        assert watermark is not None
        spans, traces, roots = self._keys(raw)
        new_spans = (
            len(raw) > 0
            and min(row[_START] for row in raw.rows) > watermark
            and self._spans.isdisjoint(spans)
            and len(set(spans)) == len(spans)
        )
        new_roots = (
            new_spans
            and all(parent is not None or start - self.skew_ns > watermark for start, parent in roots)
            and self._traces.isdisjoint(traces)
        )
        self.answered += new_spans
        self.fallbacks += not new_spans
        self.roots_answered += new_roots
        return new_spans, new_roots

    def stored(self, raw: RawSpans, inserted: int) -> None:
        """``raw`` was committed (``inserted`` of its spans were new): remember all of it."""
        if self.watermark is None or not len(raw):
            return
        spans, traces, _ = self._keys(raw)
        self._last = None
        shared = self._shared
        for keys, index in ((spans, self._spans), (traces, self._traces)):
            for key in keys:
                if key in index:
                    shared.add(key)
                else:
                    index.add(key)
        self._writes.append((max(row[_START] for row in raw.rows), spans, traces))
        self.expected_spans += inserted
        while len(self._spans) > self.limit and len(self._writes) > 1:
            newest_start, old_spans, old_traces = self._writes.popleft()
            self.watermark = max(self.watermark, newest_start)
            for keys, index in ((old_spans, self._spans), (old_traces, self._traces)):
                for key in keys:
                    if key not in shared:
                        index.discard(key)
        if len(shared) > self.limit // 10:
            # Shared hashes are never dropped, so redeliveries written over a long uptime would
            # keep them forever: start over instead (from the store, on the next check).
            self.watermark = None
