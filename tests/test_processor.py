"""StoreSpanProcessor: flush, counters, a bounded queue that drops and counts, failures that stay inside."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import duckdb
import pytest

import traceduck
from traceduck import config, processor

from conftest import query_file, run_python


def _traced_pair(i):
    with traceduck.start_span("request", span_type="CHAIN"):
        with traceduck.start_span("step", span_type="TOOL"):
            return i


def test_flush_makes_every_trace_visible_to_another_process(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider, flush_interval=3600)
    for i in range(25):
        _traced_pair(i)
    assert traceduck.flush() is True
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys, duckdb; con = duckdb.connect(sys.argv[1], read_only=True);"
         "print(con.execute('SELECT count(*) FROM traces').fetchall()[0][0],"
         " con.execute('SELECT count(*) FROM spans').fetchall()[0][0])",
         store_path],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["25", "50"]


def test_flush_with_nothing_recorded_returns_true(configured):
    assert traceduck.flush() is True


def test_flush_without_configure_returns_true():
    traceduck.shutdown()
    assert traceduck.flush() is True


def test_stats_count_written_spans_and_traces(configured):
    for i in range(3):
        _traced_pair(i)
    assert traceduck.flush()
    stats = traceduck.stats()
    assert (stats["written_spans"], stats["written_traces"]) == (6, 3)
    assert (stats["dropped_spans"], stats["failed_spans"], stats["queued"]) == (0, 0, 0)
    assert stats["batches"] >= 1


def test_full_queue_drops_and_counts_the_overflow(store_path, provider):
    # The writer only wakes on flush: the queue fills up and every further span is dropped.
    traceduck.configure(store_path, tracer_provider=provider, max_queue_size=10, max_batch_size=1000,
                        flush_interval=3600)  # fmt: skip
    tracer = provider.get_tracer("flood")
    produced = 500
    for i in range(produced):
        tracer.start_span(f"s{i}").end()
    assert traceduck.flush()
    stats = traceduck.stats()
    assert stats["dropped_spans"] > 0
    assert stats["written_spans"] + stats["dropped_spans"] == produced
    assert stats["written_spans"] == 10
    assert query_file(store_path, "SELECT count(*) FROM spans") == [(10,)]


def test_full_queue_under_parallel_load_accounts_for_every_span(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider, max_queue_size=20, max_batch_size=5,
                        flush_interval=0.01)  # fmt: skip
    tracer = provider.get_tracer("flood")
    per_thread, threads = 3000, 4

    def flood():
        for i in range(per_thread):
            tracer.start_span("s").end()

    workers = [threading.Thread(target=flood) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert traceduck.flush()
    stats = traceduck.stats()
    assert stats["dropped_spans"] > 0
    assert stats["written_spans"] + stats["dropped_spans"] == per_thread * threads
    assert query_file(store_path, "SELECT count(*) FROM spans") == [(stats["written_spans"],)]


def test_full_queue_logs_a_rate_limited_warning(store_path, provider, caplog):
    traceduck.configure(store_path, tracer_provider=provider, max_queue_size=5, max_batch_size=1000,
                        flush_interval=3600)  # fmt: skip
    tracer = provider.get_tracer("flood")
    with caplog.at_level(logging.WARNING, logger="traceduck"):
        for _ in range(300):
            tracer.start_span("s").end()
    warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
    dropped = traceduck.stats()["dropped_spans"]
    assert dropped > 100
    assert 1 <= len(warnings) < dropped  # not one warning per dropped span


def test_max_queue_size_from_the_environment(store_path, provider, monkeypatch):
    monkeypatch.setenv("TRACEDUCK_MAX_QUEUE_SIZE", "3")
    traceduck.configure(store_path, tracer_provider=provider, max_batch_size=1000, flush_interval=3600)
    assert traceduck.settings().max_queue_size == 3
    tracer = provider.get_tracer("flood")
    for _ in range(10):
        tracer.start_span("s").end()
    assert traceduck.flush()
    assert (traceduck.stats()["written_spans"], traceduck.stats()["dropped_spans"]) == (3, 7)


# -- a store that fails ----------------------------------------------------------------------


@pytest.fixture
def broken_store(store_path, provider):
    """A configured store whose file is replaced by a directory; put back at teardown.

    Each swap holds the store's own lock, as a unit of work does: a retry attaching the path in
    the instant it names nothing would create an empty store there."""
    traceduck.configure(store_path, tracer_provider=provider)
    with traceduck.start_span("before"):
        pass
    assert traceduck.flush()
    moved = store_path + ".moved"
    lock = config.current_setup().store.file._lock
    with lock:
        os.rename(store_path, moved)
        os.mkdir(store_path)

    def repair():
        with lock:
            if os.path.isdir(store_path):
                os.rmdir(store_path)
                os.rename(moved, store_path)

    yield repair
    repair()


def test_failing_store_write_never_raises_into_the_application(broken_store):
    @traceduck.trace
    def handler(x):
        return x * 2

    assert [handler(i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert traceduck.flush(timeout=0.5) is False
    assert "directory" in traceduck.stats()["last_error"].lower()


def test_batch_is_written_once_the_store_works_again(broken_store):
    with traceduck.start_span("during-outage"):
        pass
    assert traceduck.flush(timeout=0.3) is False
    broken_store()
    assert traceduck.flush() is True
    names = sorted(t.info.name for t in traceduck.search_traces(return_type="list"))
    assert names == ["before", "during-outage"]


def test_batch_given_up_after_the_retry_budget_is_counted_as_failed(broken_store, monkeypatch, caplog):
    monkeypatch.setattr(processor, "RETRY_BUDGET_SECONDS", 0.2)
    with caplog.at_level(logging.ERROR, logger="traceduck"):
        with traceduck.start_span("lost"):
            pass
        assert traceduck.flush(timeout=10) is True  # done: the batch was given up
    assert traceduck.stats()["failed_spans"] == 1
    assert any("gave up" in r.getMessage() for r in caplog.records)
    broken_store()
    with traceduck.start_span("after"):
        pass
    assert traceduck.flush() is True
    assert sorted(t.info.name for t in traceduck.search_traces(return_type="list")) == ["after", "before"]


def test_span_that_cannot_be_encoded_does_not_lose_the_rest_of_its_batch(store_path, provider, monkeypatch):
    monkeypatch.setattr(processor, "RETRY_BUDGET_SECONDS", 0.5)
    traceduck.configure(store_path, tracer_provider=provider, flush_interval=3600)
    with traceduck.start_span("good-1"):
        pass
    with traceduck.start_span("bad-\ud800-name"):  # a lone surrogate, as surrogateescape decoding makes
        pass
    with traceduck.start_span("good-2"):
        pass
    assert traceduck.flush(timeout=10)
    names = {t.info.name for t in traceduck.search_traces(return_type="list")}
    assert {"good-1", "good-2"} <= names
    stats = traceduck.stats()
    assert stats["written_spans"] + stats["failed_spans"] == 3


# -- interpreter exit ------------------------------------------------------------------------


def test_interpreter_exit_writes_everything_without_flush(tmp_path):
    path = str(tmp_path / "exit.duckdb")
    run_python(
        f"""
        import traceduck
        from opentelemetry.sdk.trace import TracerProvider

        traceduck.configure({path!r}, tracer_provider=TracerProvider(), flush_interval=3600)

        @traceduck.trace
        def handler(i):
            traceduck.update_current_trace(client_request_id=f"r{{i}}")
            return i

        for i in range(300):
            handler(i)
        """
    )
    rows = query_file(path, "SELECT count(*), count(DISTINCT client_request_id) FROM traces")
    assert rows == [(300, 300)]


def _delete_store_file(path: str) -> None:
    for name in (path, path + ".wal"):
        if os.path.exists(name):
            os.remove(name)


def _write_after_deletion() -> None:
    """A trace written after the store file was deleted is stored, alone, in a new file."""
    with traceduck.start_span("after"):
        pass
    assert traceduck.flush()
    assert traceduck.stats()["failed_spans"] == 0
    assert [t.info.name for t in traceduck.search_traces(return_type="list")] == ["after"]


def test_a_store_file_deleted_while_the_application_runs_is_made_again(store_path, provider):
    """Deleting the store file (to start afresh) while the application writes: the next batch
    makes a new file with the tables, rather than failing every batch until a restart."""
    traceduck.configure(store_path, tracer_provider=provider)
    with traceduck.start_span("before"):
        pass
    assert traceduck.flush()
    file = config.current_setup().store.file
    deadline = time.monotonic() + 10
    while file.attached and time.monotonic() < deadline:  # the writer lets go when idle
        time.sleep(0.01)
    with file._lock:
        _delete_store_file(store_path)
    _write_after_deletion()


@pytest.mark.writer_process
def test_a_store_file_deleted_under_the_writer_process_is_made_again(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider)
    with traceduck.start_span("before"):
        pass
    assert traceduck.flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the writer child lets go of the file when idle
        try:
            duckdb.connect(store_path, read_only=True).close()
            break
        except duckdb.Error:
            time.sleep(0.02)
    _delete_store_file(store_path)
    _write_after_deletion()
