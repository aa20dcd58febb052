"""One DuckDB file, several processes: readers alongside the writer, one writer only, forks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import traceduck

from conftest import query_file, run_python

WRITER = textwrap.dedent(
    """
    import os, sys, time
    import traceduck
    from opentelemetry.sdk.trace import TracerProvider

    path, stop_file = sys.argv[1], sys.argv[2]
    traceduck.configure(path, tracer_provider=TracerProvider(), flush_interval=0.25)

    @traceduck.trace
    def handler(i):
        traceduck.update_current_trace(client_request_id=f"r{i}")
        with traceduck.start_span("step"):
            return i

    written = 0
    handler(written); written += 1
    traceduck.flush()
    print("ready", flush=True)
    while not os.path.exists(stop_file):
        handler(written); written += 1
        time.sleep(0.05)
    traceduck.flush()
    print(written, flush=True)
    """
)


def test_second_process_searches_while_the_first_keeps_writing(tmp_path):
    path, stop_file = str(tmp_path / "shared.duckdb"), str(tmp_path / "stop")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, stop_file],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        counts: list[int] = []
        for _ in range(400):
            traces = traceduck.search_traces(max_results=None, return_type="list", include_spans=False,
                                             store=path)  # fmt: skip
            newest = traceduck.get_trace(traces[0].info.trace_id, store=path)
            assert newest is not None and len(newest.data.spans) == 2
            counts.append(len(traces))
            if len(set(counts)) >= 3:
                break
            time.sleep(0.03)  # a reader polling without pause would starve the writer of the file
    finally:
        open(stop_file, "w").close()
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert counts == sorted(counts), "a later search found fewer traces"
    assert len(set(counts)) >= 3, f"the count did not grow: {counts}"
    assert traceduck.count_traces(store=path) == int(out.split()[-1])


def test_second_process_cannot_become_a_writer_of_the_same_file(configured):
    with traceduck.start_span("first-writer"):
        pass
    assert traceduck.flush()
    proc = run_python(
        f"""
        import json
        import traceduck
        from opentelemetry.sdk.trace import TracerProvider
        try:
            traceduck.configure({configured!r}, tracer_provider=TracerProvider())
        except Exception as exc:
            print(json.dumps([type(exc).__name__, isinstance(exc, traceduck.StoreLockedError), str(exc)]))
        else:
            print(json.dumps(["no error", False, ""]))
        """
    )
    name, is_locked_error, message = json.loads(proc.stdout)
    assert (name, is_locked_error) == ("StoreLockedError", True)
    assert "collector" in message
    assert "own file" in message or "another file" in message
    assert str(os.getpid()) in message


def test_first_writer_keeps_writing_after_a_second_was_refused(configured):
    run_python(
        f"""
        import traceduck
        from opentelemetry.sdk.trace import TracerProvider
        try:
            traceduck.configure({configured!r}, tracer_provider=TracerProvider())
        except traceduck.StoreLockedError:
            pass
        """
    )
    with traceduck.start_span("after-refusal"):
        pass
    assert traceduck.flush()
    assert [t.info.name for t in traceduck.search_traces(return_type="list")] == ["after-refusal"]


def test_writer_role_is_released_by_shutdown(configured):
    traceduck.shutdown()
    proc = run_python(
        f"""
        import traceduck
        from opentelemetry.sdk.trace import TracerProvider
        traceduck.configure({configured!r}, tracer_provider=TracerProvider())
        with traceduck.start_span("second-writer"):
            pass
        traceduck.flush()
        print(traceduck.stats()["written_traces"])
        """
    )
    assert proc.stdout.strip() == "1"
    assert query_file(configured, "SELECT name FROM traces") == [("second-writer",)]


# -- fork ------------------------------------------------------------------------------------

FORK = textwrap.dedent(
    """
    import json, logging, os, sys
    import traceduck
    from opentelemetry.sdk.trace import TracerProvider

    traceduck.configure(sys.argv[1], tracer_provider=TracerProvider(), flush_interval=0.05)

    def request(name):
        with traceduck.start_span(name):
            with traceduck.start_span(name + "-step"):
                pass

    request("parent-before")
    traceduck.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        records = []

        class Keep(logging.Handler):
            def emit(self, record):
                records.append([record.levelname, record.getMessage()])

        logging.getLogger("traceduck").addHandler(Keep())
        idle_flush = traceduck.flush(timeout=1)  # nothing recorded in the child yet
        before = traceduck.stats()
        for i in range(3):
            request(f"child-{i}")
        flushed = traceduck.flush(timeout=20)
        report = {"idle_flush": idle_flush, "before": before, "after": traceduck.stats(),
                  "flushed": flushed, "logs": records}
        os.write(write_end, json.dumps(report).encode())
        os.close(write_end)
        os._exit(0)
    os.close(write_end)
    for i in range(3):
        request(f"parent-after-{i}")
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    _, status = os.waitpid(pid, 0)
    for i in range(3, 6):
        request(f"parent-after-{i}")
    traceduck.flush()
    print(json.dumps({"child": json.loads(data) if data else None, "child_status": status,
                      "parent": traceduck.stats()}))
    """
)


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    """Run the fork scenario once: (parent's report, names of the spans stored in the file)."""
    path = str(tmp_path_factory.mktemp("fork") / "forked.duckdb")
    proc = subprocess.run([sys.executable, "-c", FORK, path], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    names = [r[0] for r in query_file(path, "SELECT name FROM spans ORDER BY name")]
    return report, names


def child_report(report) -> dict:
    status = report["child_status"]
    assert report["child"] is not None, (
        f"the forked child died before reporting: wait status {status}"
        f" (exit code {os.waitstatus_to_exitcode(status)})"
    )
    return report["child"]


def test_forked_child_runs_to_completion(forked):
    report, _ = forked
    assert os.waitstatus_to_exitcode(report["child_status"]) == 0


def test_forked_child_does_not_write_into_the_parents_file(forked):
    report, names = forked
    assert not [n for n in names if n.startswith("child-")]
    child = child_report(report)
    assert child["after"]["written_spans"] - child["before"]["written_spans"] == 0


def test_parent_keeps_writing_after_a_fork(forked):
    report, names = forked
    expected = ["parent-before"] + [f"parent-after-{i}" for i in range(6)]
    assert sorted(n for n in names if not n.endswith("-step")) == sorted(expected)
    assert report["parent"]["failed_spans"] == 0


def test_forked_child_logs_an_error(forked):
    child = child_report(forked[0])
    assert any(level == "ERROR" for level, _ in child["logs"]), child["logs"]


def test_forked_child_counts_every_span_it_could_not_write(forked):
    child = child_report(forked[0])
    before, after = child["before"], child["after"]
    not_written = sum(after[k] - before[k] for k in ("failed_spans", "dropped_spans"))
    assert not_written == 6  # 3 requests of 2 spans each


def test_flush_in_a_forked_child_returns_true(forked):
    child = child_report(forked[0])
    assert child["flushed"] is True


def test_flush_in_a_forked_child_with_nothing_recorded_returns_true(forked):
    child = child_report(forked[0])
    assert child["idle_flush"] is True


def test_forked_child_of_a_process_that_searched_a_store_runs(store_path, provider):
    path = store_path
    traceduck.configure(path, tracer_provider=provider)  # creates the store
    traceduck.shutdown()
    proc = run_python(
        f"""
        import os
        import traceduck

        traceduck.search_traces(store={path!r}, return_type="list")
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """
    )
    assert proc.stdout.strip() == "7"


def test_a_process_forked_after_searching_searches_too(tmp_path):
    """Searches read a page's spans and assessments on two threads; a child forked after its
    parent searched (its pool's threads did not survive the fork) still gets its answer."""
    store = str(tmp_path / "forked.duckdb")
    proc = run_python(f"""
        import os, signal
        from opentelemetry.sdk.trace import TracerProvider
        import traceduck

        traceduck.configure({store!r}, tracer_provider=TracerProvider(), writer_process=False)

        @traceduck.trace
        def step(x):
            return x

        step(1)
        traceduck.flush()
        print("parent", len(traceduck.search_traces(return_type="list")[0].data.spans), flush=True)
        traceduck.shutdown()
        pid = os.fork()
        if pid == 0:
            signal.alarm(30)  # a hang fails the test instead of blocking it
            traceduck.configure({store!r}, tracer_provider=TracerProvider(), writer_process=False)
            traces = traceduck.search_traces(return_type="list")
            print("child", len(traces), len(traces[0].data.spans), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
    """)
    assert proc.stdout.split() == ["parent", "1", "child", "1", "1"]


TRY_TO_WRITE = textwrap.dedent(
    """
    import sys
    from traceduck.errors import StoreBusyError
    from traceduck.store.connection import DuckDBFile

    try:
        with DuckDBFile(sys.argv[1], lock_timeout=0.5).connect(write=True) as con:
            con.execute("CREATE TABLE IF NOT EXISTS scratch (x INTEGER); INSERT INTO scratch VALUES (1)")
        print("wrote")
    except StoreBusyError as exc:
        print("busy", exc)
    """
)


def _try_to_write(path: str) -> str:
    proc = subprocess.run([sys.executable, "-c", TRY_TO_WRITE, path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_reader_keeps_writers_out_while_duckdb_closes_an_earlier_attachment(tmp_path):
    """DuckDB locks the file with a POSIX record lock, which belongs to the process: closing ANY
    descriptor of the file drops it. A DETACH that DuckDB defers (a cursor still has a query
    running on the file) closes its descriptor later, while the next attachment is live. Without
    the access lock, a writer in another process then attaches and checkpoints under the reader,
    whose next read fails with "Could not read enough bytes" (seen in CI)."""
    from traceduck.store.connection import ALIAS, DuckDBFile

    path = str(tmp_path / "shared.duckdb")
    creator = DuckDBFile(path)
    creator.acquire_writer()  # creates the schema
    creator.release_writer()

    reader = DuckDBFile(path, lock_timeout=5.0)
    with reader.connect() as con:
        stale = con.cursor()
        stale.execute(f"USE {ALIAS}")
        # left running: DuckDB defers the DETACH at the end of this unit of work
        stale.execute("SELECT * FROM range(10000000) r, (SELECT count(*) FROM traces)")
    with reader.connect() as con:
        stale.close()  # DuckDB closes the earlier attachment's descriptor now
        refused = _try_to_write(path)
        assert refused.startswith("busy"), "another process wrote while this one was reading"
        assert f"the trace store {path} stayed locked" in refused  # the error names the file
        assert con.execute("SELECT count(*) FROM traces").fetchall() == [(0,)]
    assert _try_to_write(path) == "wrote"  # the reader let go: writers get in again


def test_a_write_waits_for_an_earlier_attachment_duckdb_is_still_closing(tmp_path):
    """DuckDB refuses to attach a file read-write while this process's previous attachment of it
    is still open (its DETACH deferred by a running cursor); the write waits for it instead of
    failing, as it waits for a lock held elsewhere."""
    import threading

    from traceduck.store.connection import ALIAS, DuckDBFile

    path = str(tmp_path / "store.duckdb")
    store = DuckDBFile(path, lock_timeout=10.0)
    store.acquire_writer()
    try:
        with store.connect(write=True) as con:
            stale = con.cursor()
            stale.execute(f"USE {ALIAS}")
            stale.execute("SELECT * FROM range(10000000) r, (SELECT count(*) FROM traces)")
        closer = threading.Timer(0.5, stale.close)
        closer.start()
        started = time.monotonic()
        with store.connect(write=True) as con:
            con.execute("CREATE TABLE scratch AS SELECT 42 AS x")
        closer.join()
        assert time.monotonic() - started >= 0.4  # it waited for the stale cursor to go
        with store.connect() as con:
            assert con.execute("SELECT x FROM scratch").fetchall() == [(42,)]
    finally:
        store.release_writer()
