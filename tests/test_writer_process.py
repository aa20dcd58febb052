"""The default local writer: batches written by a child process, never in the application's GIL."""

from __future__ import annotations

import os
import signal
import time

import pytest

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

import traceduck
from traceduck import config
from traceduck.errors import BatchNotAttemptedError
from traceduck.processor import StoreSpanProcessor
from traceduck.raw_spans import RawSpans, span_record
from traceduck.store.duckdb_store import DuckDBStore
from traceduck.store.children import write_frame
from traceduck.store.writer_process import Pending, WriterProcess, WriterProcessError

from conftest import query_file, run_python

pytestmark = pytest.mark.writer_process


def _writer() -> WriterProcess:
    setup = config.current_setup()
    assert setup is not None
    writer = setup.span_processor.store  # type: ignore[union-attr]
    assert isinstance(writer, WriterProcess)
    return writer


def _children_writing(path: str) -> list[int]:
    """Pids of the live children (converter and writer) for the store at ``path`` (from /proc)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().split(")")[-1].split()[0]
        except OSError:
            continue
        children = (b"traceduck.store.writer_process", b"traceduck.store.converter_process")
        if any(name in cmd for name in children) and path.encode() in cmd and state != "Z":
            pids.append(int(pid))
    return sorted(pids)


def test_configure_uses_a_writer_process_by_default(configured):
    with traceduck.start_span("through-the-child"):
        pass
    assert traceduck.flush()
    assert _writer()._child is not None
    assert [t.info.name for t in traceduck.search_traces(return_type="list")] == ["through-the-child"]
    assert traceduck.stats()["written_spans"] == 1


def test_the_children_prepare_arrow_before_the_first_batch(configured):
    """pyarrow's first conversion imports pandas (when installed, as with the test extras): both
    children do that as they start, so the first batch is not held up by it."""
    writer = _writer()
    for child in (writer._converter, writer._child):
        assert child is not None
        deadline = time.monotonic() + 30
        loaded = False
        while not loaded and time.monotonic() < deadline:
            with open(f"/proc/{child.pid}/maps") as fh:
                loaded = "pandas/_libs" in fh.read()
            time.sleep(0.05)
        assert loaded, f"{child.args[2]} had not imported pandas (pyarrow's first conversion) by itself"
    assert traceduck.stats()["written_spans"] == 0  # nothing was written to get there


def test_trace_fields_arrive_intact_through_the_writer_process(configured):
    with traceduck.start_span("root", span_type="CHAIN"):
        traceduck.update_current_trace(user="jane", client_request_id="req-1", tags={"t": "v"},
                                       metadata={"link": {"type": "url", "url": "https://x", "text": "X"}})  # fmt: skip
        with traceduck.start_span("child", span_type="LLM") as span:
            span.set_inputs({"q": "hi"})
            span.set_outputs("hello")
    assert traceduck.flush()
    trace = traceduck.search_traces(return_type="list")[0]
    assert trace.info.client_request_id == "req-1"
    assert trace.info.tags["trace.user"] == "jane" and trace.info.tags["t"] == "v"
    assert trace.info.metadata["link"] == {"type": "url", "url": "https://x", "text": "X"}
    child = next(s for s in trace.data.spans if s.name == "child")
    assert (child.span_type, child.inputs, child.outputs) == ("LLM", {"q": "hi"}, "hello")


def test_writer_process_lets_go_of_the_file_when_idle(configured):
    with traceduck.start_span("a"):
        pass
    assert traceduck.flush()
    time.sleep(0.3)  # the child detaches 50 ms after its last batch
    result = run_python(
        f"""
        import duckdb
        con = duckdb.connect({configured!r}, read_only=True)
        print(con.execute("SELECT count(*) FROM traces").fetchall()[0][0])
        """
    )
    assert result.stdout.strip() == "1"


def test_a_killed_writer_process_is_replaced_and_nothing_is_lost(configured):
    with traceduck.start_span("before"):
        pass
    assert traceduck.flush()
    child = _writer()._child
    assert child is not None
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    with traceduck.start_span("after"):
        pass
    assert traceduck.flush(timeout=30)
    assert sorted(t.info.name for t in traceduck.search_traces(return_type="list")) == ["after", "before"]
    assert _writer()._child is not None and _writer()._child.pid != child.pid


def test_a_killed_converter_process_is_replaced_and_nothing_is_lost(configured):
    """The converter gone, the writer reads the end of its input and exits; the application
    starts both afresh and stores what it sends next."""
    with traceduck.start_span("before"):
        pass
    assert traceduck.flush()
    writer = _writer()
    converter, child = writer._converter, writer._child
    assert converter is not None and child is not None
    os.kill(converter.pid, signal.SIGKILL)
    converter.wait(timeout=10)
    assert child.wait(timeout=10) == 0  # its input ended: it exits cleanly
    with traceduck.start_span("after"):
        pass
    assert traceduck.flush(timeout=30)
    assert sorted(t.info.name for t in traceduck.search_traces(return_type="list")) == ["after", "before"]
    assert writer._converter is not None and writer._converter.pid != converter.pid
    assert writer._child is not None and writer._child.pid != child.pid
    assert _children_writing(configured) == sorted([writer._converter.pid, writer._child.pid])


def test_closing_the_writer_ends_both_children(tmp_path):
    store = DuckDBStore(str(tmp_path / "close.duckdb"))
    store.acquire_writer()
    writer = WriterProcess(store)
    pending = writer.submit(_one_span_batch("last", f"{1:032x}"))
    converter, child = writer._converter, writer._child
    assert converter is not None and child is not None
    assert pending.result().spans == 1
    writer.close()
    assert (converter.returncode, child.returncode) == (0, 0)
    assert _children_writing(store.path) == []
    store.release_writer()
    assert query_file(store.path, "SELECT name FROM spans") == [("last",)]


def test_span_with_a_lone_surrogate_is_stored_cleaned(configured):
    with traceduck.start_span("bad-\ud800-name"):
        pass
    with traceduck.start_span("good"):
        pass
    assert traceduck.flush()
    names = sorted(t.info.name for t in traceduck.search_traces(return_type="list"))
    assert names == ["bad-\ufffd-name", "good"]


def test_writer_process_ends_with_the_application(tmp_path):
    path = str(tmp_path / "exit.duckdb")
    run_python(
        f"""
        import traceduck
        traceduck.configure({path!r})
        with traceduck.start_span("x"):
            pass
        """
    )
    deadline = time.monotonic() + 10
    while _children_writing(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children_writing(path) == []
    assert traceduck.count_traces(store=path) == 1


def test_forked_application_process_does_not_write_through_the_parents_writer(configured):
    with traceduck.start_span("parent-before"):
        pass
    assert traceduck.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: record a span and report what happened to it
        os.close(read)
        try:
            with traceduck.start_span("from-the-fork"):
                pass
            traceduck.flush(timeout=10)
            stats = traceduck.stats()
            os.write(write, f"{stats['written_spans']} {stats['failed_spans']}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    report = os.read(read, 100).decode()
    os.close(read)
    assert report == "0 1"
    with traceduck.start_span("parent-after"):
        pass
    assert traceduck.flush()
    names = sorted(t.info.name for t in traceduck.search_traces(return_type="list"))
    assert names == ["parent-after", "parent-before"]


def test_a_long_lived_fork_does_not_hold_the_children_open_at_shutdown(tmp_path):
    """A process forked after configure() (a pre-forking server's worker) inherits the pipes to
    the writer's children; it lets go of them, so the parent's shutdown ends both children by
    closing their input (they exit by themselves, the file detached) instead of waiting for a
    fork that may live on, then killing them."""
    path = str(tmp_path / "fork.duckdb")
    result = run_python(
        f"""
        import os, signal, time
        import traceduck
        from traceduck import config

        traceduck.configure({path!r})
        with traceduck.start_span("before-fork"):
            pass
        assert traceduck.flush()
        writer = config.current_setup().span_processor.store
        children = (writer._converter, writer._child)
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        try:
            traceduck.shutdown()
            print([child.returncode for child in children])
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        """
    )
    assert result.stdout.strip() == "[0, 0]"  # exited by themselves, not killed (-9) after a timeout
    assert traceduck.count_traces(store=path) == 1


def test_the_children_keep_the_garbage_collector_out_of_a_batch(tmp_path):
    """Both children turn automatic collection off while they convert and write batches
    (collecting between them instead), give the collector back as it was when they end, and
    exit with nothing on stderr (frozen objects would be reported as leaks by DuckDB's bindings).
    The converter's output, fed to the writer, stores every batch."""
    path = str(tmp_path / "gc.duckdb")
    converted_path = str(tmp_path / "converted")
    replies_path = str(tmp_path / "replies")
    converter = run_python(
        f"""
        import gc, os, sys
        from traceduck.raw_spans import RawSpans
        from traceduck.store import children, converter_process, writer_process

        data = b""
        for n in range(12):
            raw = RawSpans()
            res = raw.resource({{"service.name": "svc"}})
            raw.add(f"{{n + 1:032x}}", f"{{n + 1:016x}}", None, False, "root", "INTERNAL", 10**18 + n,
                    10**18 + n + 5, "UNSET", None, {{"k": n}}, None, res)
            frame = writer_process.encode(raw, linger=n < 11)
            data += children.HEADER.pack(len(frame)) + frame
        enabled_while_converting = []
        full_collections_at = []  # before each batch's conversion
        real = RawSpans._build_arrow

        def spy(self):
            enabled_while_converting.append((len(self), gc.isenabled()))
            full_collections_at.append(gc.get_stats()[2]["collections"])
            return real(self)

        RawSpans._build_arrow = spy
        read_end, write_end = os.pipe()
        os.write(write_end, data)
        os.close(write_end)
        sys.stdin = os.fdopen(read_end, "r")
        sys.stdout = open({converted_path!r}, "w")
        assert converter_process.main([{path!r}]) == 0
        full_collections_at.append(gc.get_stats()[2]["collections"])  # after the last batch
        sys.stdout.close()
        sys.stdout = sys.__stdout__
        print(enabled_while_converting)
        batches = full_collections_at[1:]  # the first conversion is start-up's warm-up
        print(gc.isenabled(), gc.get_freeze_count(), [b - a for a, b in zip(batches, batches[1:])])
        """
    )
    converted, state = converter.stdout.strip().splitlines()
    # the warm-up conversion at start-up with the collector on; the twelve batches with it off
    assert converted == "[(0, True)" + ", (1, False)" * 12 + "]"
    enabled, frozen, between = state.split(" ", 2)
    assert (enabled, frozen) == ("True", "0")
    assert between == str([1] * 12)  # one full collection after each batch, none while one is converted
    assert converter.stderr == ""
    writer = run_python(
        f"""
        import gc, os, sys
        from traceduck.store import writer_process

        sys.stdin = open({converted_path!r}, "r")  # the writer reads it on a thread of its own
        sys.stdout = open({replies_path!r}, "w")
        collections_before = gc.get_stats()[2]["collections"]
        assert writer_process.main([{path!r}]) == 0
        sys.stdout.close()
        sys.stdout = sys.__stdout__
        print(gc.isenabled(), gc.get_freeze_count(), gc.get_stats()[2]["collections"] - collections_before)
        print(open({replies_path!r}, "rb").read().count(b'"ok": true'))
        """
    )
    state, replies = writer.stdout.strip().splitlines()
    enabled, frozen, full_collections = state.split()
    assert (enabled, frozen) == ("True", "0")
    assert 1 <= int(full_collections) <= 12  # between batches: the tenth at least, never more than one each
    assert replies == "12"
    assert writer.stderr == ""
    assert traceduck.count_traces(store=path) == 12


# -- two batches in flight ------------------------------------------------------------------------


def _one_span_batch(name: str, trace_id: str) -> RawSpans:
    raw = RawSpans()
    res = raw.resource({"service.name": "svc"})
    raw.add(trace_id, "00000000000000a1", None, False, name, "INTERNAL", 10**18, 10**18 + 5, "UNSET", None,
            {"k": 1}, None, res)  # fmt: skip
    return raw


def _send_garbage(writer: WriterProcess) -> Pending:
    """A frame the converter cannot read, sent as a batch would be."""
    converter = writer._converter
    assert converter is not None and converter.stdin is not None
    pending = Pending(writer)
    with writer._lock:
        write_frame(converter.stdin, b"{not json")
        writer._sent.append(pending)
    return pending


@pytest.mark.parametrize(
    ("failing", "error"),
    [
        (lambda writer: writer.submit(_one_span_batch("bad", "not-a-trace-id")), "not-a-trace-id"),  # refused by the store
        (_send_garbage, "JSONDecodeError"),  # unreadable by the converter: answered by the writer in its turn
    ],
    ids=["refused-by-the-store", "unreadable-by-the-converter"],
)
def test_a_batch_sent_behind_one_that_failed_is_not_attempted_until_sent_again(tmp_path, failing, error):
    """Batches are stored in the order they were sent: the writer answers a batch sent before the
    application learned that the one ahead of it failed "not attempted" and stores nothing of it;
    sent again, it is stored. The same children go on throughout."""
    store = DuckDBStore(str(tmp_path / "order.duckdb"))
    store.acquire_writer()
    writer = WriterProcess(store)
    try:
        writer.start()
        children = (writer._converter, writer._child)
        bad = failing(writer)
        behind = writer.submit(_one_span_batch("behind", f"{1:032x}"))
        with pytest.raises(WriterProcessError, match=error):
            bad.result()
        with pytest.raises(BatchNotAttemptedError):
            behind.result()
        assert writer.write(_one_span_batch("behind", f"{1:032x}")).spans == 1
        after = writer.submit(_one_span_batch("after", f"{2:032x}"))  # the failure is dealt with
        assert after.result().spans == 1
        assert (writer._converter, writer._child) == children
    finally:
        writer.close()
        store.release_writer()
    assert query_file(store.path, "SELECT name FROM spans ORDER BY rowid") == [("behind",), ("after",)]


def _spy_processor(tmp_path, max_batch_size: int) -> tuple[StoreSpanProcessor, DuckDBStore, list[int]]:
    """A processor writing through a real writer process; the list gets the number of batches
    sent and not yet answered right after each send."""
    store = DuckDBStore(str(tmp_path / "inflight.duckdb"))
    store.acquire_writer()
    writer = WriterProcess(store)
    in_flight: list[int] = []
    real_submit = writer.submit

    def submit(raw, linger=False):  # noqa: ANN001
        pending = real_submit(raw, linger)
        in_flight.append(len(writer._sent))
        return pending

    writer.submit = submit  # type: ignore[method-assign]
    return StoreSpanProcessor(writer, max_batch_size=max_batch_size, flush_interval=3600), store, in_flight


def _records(processor: StoreSpanProcessor, names: list[str]) -> list[tuple]:
    provider = TracerProvider()
    finished = []

    class Keep(SpanProcessor):
        def on_end(self, span):  # noqa: ANN001
            finished.append(span)

    provider.add_span_processor(Keep())
    for name in names:
        provider.get_tracer("t").start_span(name).end()
    return [span_record(span, processor._resources) for span in finished]


def _write_queued(processor: StoreSpanProcessor, store: DuckDBStore, records: list[tuple]) -> None:
    processor._queue.extend(records)  # as on_end appends them, all queued before the writer wakes
    processor._wake.set()
    assert processor.force_flush(30_000)
    processor.shutdown()
    store.release_writer()


def test_the_processor_keeps_two_batches_in_flight_and_stores_them_in_order_past_a_failure(tmp_path, caplog):
    """With a backlog, the processor sends the next batch while the child writes one; when a
    batch is refused, the batch sent behind it is sent again before any later one, so the store's
    order is the queue's; the refused span alone is lost, and nothing is reported as a retry."""
    processor, store, in_flight = _spy_processor(tmp_path, max_batch_size=1)
    records = _records(processor, ["first", "second", "refused", "fourth", "fifth", "sixth"])
    refused = list(records[2])
    refused[0] = -1  # a trace id no UUID is made of: the store refuses this span as data
    records[2] = tuple(refused)
    _write_queued(processor, store, records)
    assert max(in_flight) == 2
    assert (processor.stats.written_spans, processor.stats.failed_spans) == (5, 1)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]  # not attempted is no failure
    names = [row[0] for row in query_file(store.path, "SELECT name FROM spans ORDER BY rowid")]
    assert names == ["first", "second", "fourth", "fifth", "sixth"]


def test_without_a_full_batch_waiting_the_processor_lets_spans_gather_behind_the_batch_in_flight(tmp_path):
    """Less than a batch behind the one sent: the processor waits for it before it takes the rest,
    so a trickle of spans makes one more batch, not a stream of small ones."""
    processor, store, in_flight = _spy_processor(tmp_path, max_batch_size=4)
    _write_queued(processor, store, _records(processor, ["a", "b", "c", "d", "e"]))
    assert in_flight == [1, 1]  # [a, b, c, d], then [e] once the first was answered
    assert processor.stats.written_spans == 5
