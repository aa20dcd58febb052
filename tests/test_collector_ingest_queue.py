"""The collector's ingest queue (``collector/ingest.py``) on a real store: group commit, and the
short wait that lets requests arriving together share one write transaction."""

from __future__ import annotations

import os
import time

import pytest

from collector.app import open_collector_store
from collector.ingest import IngestQueue
from traceduck.raw_spans import RawSpans


def _raw(n: int = 3) -> RawSpans:
    raw = RawSpans()
    res = raw.resource({"service.name": "queue-test"})
    for _ in range(n):
        trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
        raw.add(trace_id, span_id, None, False, "root", "INTERNAL", time.time_ns(), time.time_ns() + 1000,
                "UNSET", None, {}, None, res)  # fmt: skip
    return raw


@pytest.fixture
def store(tmp_path):
    store = open_collector_store(str(tmp_path / "queue.duckdb"))
    yield store
    store.release_writer()


def _queue(store, gather_seconds: float) -> IngestQueue:
    return IngestQueue(store, max_queued_spans=100_000, batch_max_spans=20_000, gather_seconds=gather_seconds)


def test_a_write_waits_for_a_request_being_decoded_and_commits_both_together(store):
    queue = _queue(store, gather_seconds=10.0)
    try:
        with queue.decoding():  # request B arrived and is being decoded
            first = queue.submit(_raw())
            time.sleep(0.3)
            assert not first.done(), "the write did not wait for the request being decoded"
            second = queue.submit(_raw())
        assert first.result(10) == 3 and second.result(10) == 3
        assert queue.stats.batches == 1 and queue.stats.stored_spans == 6
    finally:
        queue.close()


def test_the_wait_is_bounded_by_gather_seconds(store):
    queue = _queue(store, gather_seconds=0.3)
    stuck = queue.decoding()
    stuck.__enter__()  # a request that never finishes decoding
    try:
        started = time.monotonic()
        assert queue.submit(_raw()).result(10) == 3
        waited = time.monotonic() - started
        assert 0.25 <= waited < 5, f"acknowledged after {waited:.2f} s"
    finally:
        stuck.__exit__(None, None, None)
        queue.close()


def test_a_full_transaction_waits_for_nobody(store):
    # Another request is being decoded, but the transaction already holds batch_max_spans: that
    # request could not join it, so waiting for it (up to gather_seconds) would only delay this one.
    queue = IngestQueue(store, max_queued_spans=100_000, batch_max_spans=3, gather_seconds=10.0)
    try:
        with queue.decoding():
            started = time.monotonic()
            assert queue.submit(_raw(3)).result(10) == 3
            waited = time.monotonic() - started
        assert waited < 5, f"a full transaction waited {waited:.2f} s for a request that could not join it"
        assert queue.stats.batches == 1
    finally:
        queue.close()


def test_a_lone_request_is_written_at_once(store):
    queue = _queue(store, gather_seconds=10.0)
    try:
        started = time.monotonic()
        assert queue.submit(_raw()).result(10) == 3
        assert time.monotonic() - started < 5  # nobody was expected: no 10 s wait
    finally:
        queue.close()


def test_after_a_transaction_of_two_requests_the_next_waits_for_two(store):
    """Senders whose requests were acknowledged together send again together."""
    queue = _queue(store, gather_seconds=2.0)
    try:
        with queue.decoding():
            a = queue.submit(_raw())
            b = queue.submit(_raw())
        a.result(10), b.result(10)
        assert queue.stats.batches == 1
        c = queue.submit(_raw())
        time.sleep(0.3)
        assert not c.done(), "the write did not wait for the second sender"
        d = queue.submit(_raw())
        c.result(10), d.result(10)
        assert queue.stats.batches == 2 and queue.stats.stored_spans == 12
        e = queue.submit(_raw())  # the last transaction had two: one wait, bounded, for the other
        assert e.result(15) == 3
    finally:
        queue.close()


def test_senders_answered_in_two_halves_are_brought_back_to_one_transaction(store):
    """Four senders, two of whose requests arrive while the other two are being written: each
    write counts only two requests, yet four are in flight. The queue learns there are four and,
    one round later, waits for all of them instead of alternating halves forever."""
    queue = _queue(store, gather_seconds=2.0)
    try:
        with store.file._lock:  # the first write blocks on the file: a write under way
            with queue.decoding():
                first_half = [queue.submit(_raw()), queue.submit(_raw())]
            time.sleep(0.2)  # the writer took both and waits for the file
            with queue.decoding(), queue.decoding():  # the other two senders' requests arrive meanwhile
                second_half = [queue.submit(_raw()), queue.submit(_raw())]
        for future in first_half + second_half:
            assert future.result(10) == 3
        assert queue.stats.batches == 2
        # The first half's senders send again, then the second half's: one transaction for all four.
        again = [queue.submit(_raw())]
        time.sleep(0.2)
        again.append(queue.submit(_raw()))
        time.sleep(0.3)
        assert not any(f.done() for f in again), "the write did not wait for the other two senders"
        again += [queue.submit(_raw()), queue.submit(_raw())]
        for future in again:
            assert future.result(10) == 3
        assert queue.stats.batches == 3 and queue.stats.stored_spans == 24
    finally:
        queue.close()
