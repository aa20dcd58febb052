"""The collector's in-memory redelivery check (``store/recent.py``) on a real store file.

It may only ever say "certainly not stored" when that is true; everything else goes to the
store's own exact check. So each test sends something that IS stored (or was, or might be) and
checks it is stored exactly once, and that new spans are answered without the store.
"""

from __future__ import annotations

import os
import time

import pytest

from collector.app import open_collector_store
from traceduck.raw_spans import RawSpans
from traceduck.store.writer import PendingPatches, write_batch


def _raw(traces: int = 2, children: int = 2, start_ns: int | None = None) -> RawSpans:
    raw = RawSpans()
    res = raw.resource({"service.name": "recent-test"})
    start = start_ns or time.time_ns()
    for t in range(traces):
        trace_id, root = os.urandom(16).hex(), os.urandom(8).hex()
        raw.add(trace_id, root, None, False, "root", "INTERNAL", start + t, start + t + 10_000, "UNSET", None, {},
                None, res)  # fmt: skip
        for c in range(children):
            raw.add(trace_id, os.urandom(8).hex(), root, False, f"child-{c}", "INTERNAL", start + t + c + 1,
                    start + t + 5_000, "UNSET", None, {"k": c}, None, res)  # fmt: skip
    return raw


def _copy(raw: RawSpans) -> RawSpans:
    """The same spans as a new request would bring them (a redelivery)."""
    again = RawSpans(raw.default_project, list(raw.resources))
    again.add_rows(list(raw.rows))
    return again


def _counts(store) -> tuple[int, int, int]:
    with store.connect() as con:
        spans, distinct = con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchall()[0]
        traces = con.execute("SELECT count(*) FROM traces").fetchall()[0][0]
    return spans, distinct, traces


@pytest.fixture
def store(tmp_path):
    store = open_collector_store(str(tmp_path / "recent.duckdb"))
    yield store
    store.release_writer()


def test_new_spans_are_answered_in_memory_and_a_redelivery_by_the_store(store):
    raw = _raw()
    assert store.write(raw).spans == 6
    assert (store.recent.answered, store.recent.roots_answered, store.recent.fallbacks) == (1, 1, 0)
    stats = store.write(_copy(raw))
    assert stats.spans == 0 and stats.duplicate_spans == 6
    assert store.recent.fallbacks == 1
    assert _counts(store) == (6, 6, 2)
    store.write(_raw())  # new spans again: in memory
    assert store.recent.answered == 2 and _counts(store) == (12, 12, 4)


def test_a_span_repeated_within_one_batch_is_stored_once(store):
    raw = _raw(traces=1, children=1)
    raw.add_rows([raw.rows[1]])  # the child twice in one request
    stats = store.write(raw)
    assert store.recent.fallbacks == 1 and stats.spans == 2 and stats.duplicate_spans == 1
    assert _counts(store) == (2, 2, 1)


def test_spans_stored_behind_its_back_are_still_found(store):
    """A write that did not go through the index (any future code path): the span count no longer
    matches, so the index starts over from the store and the redelivery is caught."""
    raw = _raw()
    store.write(_raw())
    with store.connect(write=True) as con:
        write_batch(con, raw, PendingPatches())
    stats = store.write(_copy(raw))
    assert stats.duplicate_spans == 6 and _counts(store) == (12, 12, 4)


def test_spans_deleted_and_sent_again_are_stored_again(store):
    raw = _raw()
    store.write(raw)
    with store.connect(write=True) as con:
        con.execute("DELETE FROM spans")
        con.execute("DELETE FROM traces")
    assert store.write(_copy(raw)).spans == 6
    assert _counts(store) == (6, 6, 2)


def test_the_index_is_bounded_and_what_it_forgot_is_asked_of_the_store(store):
    store.recent.limit = 20
    batches = [_raw() for _ in range(10)]  # 6 spans each
    for raw in batches:
        store.write(raw)
        assert len(store.recent) <= store.recent.limit + 6
    assert store.recent.answered == 10  # the spans, always
    assert store.recent.watermark >= max(row[7] for row in batches[0].rows)  # moved past the first
    assert store.recent.roots_answered < 10  # the roots, only while the index covered the hour before them
    for raw in batches[:3]:  # forgotten: sent to the store, which finds them
        assert store.write(_copy(raw)).duplicate_spans == 6
    assert store.write(_copy(batches[-1])).duplicate_spans == 6  # remembered
    assert _counts(store) == (60, 60, 20)


def test_redeliveries_over_a_long_uptime_do_not_grow_the_index_without_bound(store):
    store.recent.limit = 60  # a tenth: 6 hashes written twice
    for _ in range(12):
        raw = _raw()
        store.write(raw)
        assert store.write(_copy(raw)).duplicate_spans == 6  # each redelivery found by the store
        assert len(store.recent._shared) <= 6 + 6 and len(store.recent) <= store.recent.limit + 12
    assert store.write(_raw()).spans == 6  # after starting over, new spans still go in
    assert _counts(store) == (78, 78, 26)


def test_after_a_restart_older_spans_go_to_the_store_and_newer_ones_are_answered(tmp_path):
    path = str(tmp_path / "restart.duckdb")
    first = open_collector_store(path)
    raw = _raw()
    first.write(raw)
    first.release_writer()
    store = open_collector_store(path)
    try:
        assert store.write(_copy(raw)).duplicate_spans == 6  # started before anything it knows
        assert store.recent.fallbacks == 1
        store.write(_raw(start_ns=time.time_ns() + 2 * 3600 * 10**9))  # roots: see the skew test below
        assert store.recent.answered == 1
        assert _counts(store) == (12, 12, 4)
    finally:
        store.release_writer()


def test_a_parentless_root_within_the_skew_of_the_newest_span_goes_to_the_store(store):
    """A parentless root may belong to a trace whose remote-parent root, started up to an hour
    earlier on another host's clock, is stored: unless that hour lies after everything the store
    held when the index started, the store is asked (and merges them into one trace)."""
    store.write(_raw())  # the index starts here: the store was empty, so every root is answered
    assert store.recent.answered == 1
    path = store.path
    store.release_writer()
    reopened = open_collector_store(path)
    try:
        reopened.write(_raw(start_ns=time.time_ns() + 10**9))  # newer than what was stored, not by an hour
        assert (reopened.recent.answered, reopened.recent.roots_answered) == (1, 0)
        reopened.write(_raw(start_ns=time.time_ns() + 2 * 3600 * 10**9))
        assert (reopened.recent.answered, reopened.recent.roots_answered) == (2, 1)
    finally:
        reopened.release_writer()


def test_a_parentless_root_after_a_remote_parent_root_of_its_trace_joins_that_trace(store):
    """Service B's root (its parent is in service A) is stored first; A's own root comes later:
    the index knows the trace has a row, so the store merges them into one trace."""
    trace_id, a_root, b_root = os.urandom(16).hex(), os.urandom(8).hex(), os.urandom(8).hex()
    start = time.time_ns()
    b = RawSpans()
    res = b.resource({"service.name": "b"})
    b.add(trace_id, b_root, a_root, True, "b-handler", "SERVER", start + 10**9, start + 2 * 10**9, "UNSET", None,
          {}, None, res)  # fmt: skip
    store.write(b)
    a = RawSpans()
    res = a.resource({"service.name": "a"})
    a.add(trace_id, a_root, None, False, "a-request", "INTERNAL", start, start + 3 * 10**9, "UNSET", None, {},
          None, res)  # fmt: skip
    store.write(a)
    assert store.recent.answered == 2 and store.recent.roots_answered == 1  # B's batch only
    with store.connect() as con:
        rows = con.execute("SELECT name FROM traces").fetchall()
    assert rows == [("a-request",)]
    assert _counts(store) == (2, 2, 1)
