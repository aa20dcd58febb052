"""Faults: real processes started and broken (issue 9, "Faults").

The promise: tracing never hurts the application, and nothing acknowledged is ever lost or
leaked. Each test starts real processes on 127.0.0.1 (collectors, OTLP senders, applications in
local and remote mode) and breaks them: SIGKILL in the middle of heavy ingest, a collector that is
down or hung (SIGSTOP) while applications keep serving, a store on a filesystem that fills up or
turns read-only, and overload. Helpers: ``tests/_faults.py``; the measured figures (rates,
latencies, memory) are in ``bench/faults.py``. Bounds here are behaviour checks with wide margins,
not benchmarks.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import duckdb
import httpx
import pytest

from _collector import clean_env, create_key, otlp_request, post_otlp, simple_trace, wait_for
from _faults import (
    LOCAL_APP,
    FaultCollector,
    LineReader,
    RemoteApp,
    RssSampler,
    Searcher,
    Sender,
    check_store,
    children_of,
    expected_schema,
    ext4_image,
    fail_filesystem,
    fill_disk,
    incomplete_traces,
    kill_process,
    latest_schema_version,
    missing_acked_spans,
    processes_with_argument,
    repair_ext4,
    rss_kb,
    tmpfs,
    wait_gone,
    wait_stopped,
)

from collector import otlp as collector_otlp
from traceduck.raw_spans import RawSpans
from traceduck.store.duckdb_store import DuckDBStore

PROJECT = "faults"
MB = 1024


@pytest.fixture
def cleanup():
    """Things to kill at the end of the test whatever happened: add them, they are stopped."""
    items: list = []
    yield items
    for item in reversed(items):
        try:
            if isinstance(item, subprocess.Popen):
                kill_process(item)
            elif hasattr(item, "kill") and isinstance(item, FaultCollector):
                item.kill()
            else:
                item.stop() if hasattr(item, "stop") else item.kill()
        except Exception:  # keep cleaning up the rest  # noqa: S110
            pass


def _assert_store_intact(store: str) -> None:
    check = check_store(store)
    assert check.schema_version == latest_schema_version()
    assert check.schema == expected_schema(), "the store's tables or columns changed"
    assert check.rootless_traces == 0, f"{check.rootless_traces} trace rows have no root span: a half-written trace is visible"
    assert check.duplicate_trace_rows == 0 and check.duplicate_spans == 0


# -- kill -9 -------------------------------------------------------------------------------------


def _stored_batches(store: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(round, batch) -> (trace rows, trace rows having all their 5 spans), from the file."""
    con = duckdb.connect(store, read_only=True)
    try:
        rows = con.execute(
            "SELECT split_part(t.client_request_id, '-', 1), split_part(t.client_request_id, '-', 2),"
            " count(*), count(*) FILTER (WHERE s.n = 5)"
            " FROM traces t LEFT JOIN (SELECT trace_id, project, count(*) AS n FROM spans GROUP BY ALL) s"
            " USING (trace_id, project) GROUP BY ALL"
        ).fetchall()
    finally:
        con.close()
    return {(r, b): (n, complete) for r, b, n, complete in rows}


def test_killed_app_and_writer_process_leave_an_intact_store_with_every_flushed_trace(tmp_path, cleanup):
    """SIGKILL an application writing heavily to its own store, and its writer process, three times
    at random points; each time a new process opens the store: the schema is intact, every trace
    the app had flushed is there with all its spans, and no trace row lacks its root."""
    store = str(tmp_path / "app.duckdb")
    per_batch = 300
    flushed: dict[str, list[int]] = {}
    rng = random.Random()
    for round_ in ("a", "b", "c"):
        log = open(tmp_path / f"app-{round_}.log", "wb")  # noqa: SIM115
        code = textwrap.dedent(LOCAL_APP).replace('f"{batch}-{i}"', f'f"{round_}-{{batch}}-{{i}}"')
        app = subprocess.Popen([sys.executable, "-c", code, store, str(per_batch)], env=clean_env(),
                               stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)  # fmt: skip
        cleanup.append(app)
        lines = LineReader(app)
        flushed[round_] = []
        want = rng.randint(2, 4)
        while len(flushed[round_]) < want:
            line = lines.get(timeout=60)
            assert line is not None, f"the app stopped flushing:\n{(tmp_path / f'app-{round_}.log').read_text()}"
            flushed[round_].append(int(line.split()[1]))
        time.sleep(rng.uniform(0.05, 0.4))  # somewhere inside the next batch
        app.send_signal(signal.SIGSTOP)  # frozen: it cannot start another writer process meanwhile
        wait_stopped(app.pid)  # (delivery is asynchronous: until then it may still start one)
        writers = children_of(app.pid)
        assert writers, "the app has no writer process"
        for pid in writers:  # the writer may be in the middle of a batch
            os.kill(pid, signal.SIGKILL)
        app.send_signal(signal.SIGKILL)
        app.wait(timeout=15)
        # A writer started in the very instant of the SIGSTOP may have escaped the list above
        # (and is an orphan now): every process still writing this store goes too.
        for path in {store, os.path.realpath(store)}:
            writers += [pid for pid in processes_with_argument(path) if pid not in writers]
        for pid in writers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_gone(writers)  # killed, but they hold the file's lock until the kernel has torn them down
        log.close()
        flushed[round_] += [int(line.split()[1]) for line in lines.drain() if line and line.startswith("flushed")]

        _assert_store_intact(store)  # a new process (this one) opens it: WAL replayed, schema intact
        stored = _stored_batches(store)
        for r, batches in flushed.items():
            for b in batches:
                n, complete = stored.get((r, str(b)), (0, 0))
                assert n == per_batch, f"round {r}: flushed batch {b} has {n} of its {per_batch} traces after the kill"
                assert complete == per_batch, f"round {r}: flushed batch {b}: only {complete} traces have all 5 spans"
        incomplete = sum(n - complete for n, complete in stored.values())
        assert incomplete == 0, f"{incomplete} trace rows are visible without all their spans"

    # the store works again for a writer: a new application writes and searches it
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import json, traceduck
        traceduck.configure({store!r})
        with traceduck.start_span("after-the-kills"):
            traceduck.update_current_trace(client_request_id="z-0-0")
        assert traceduck.flush()
        print(json.dumps({{"found": traceduck.count_traces("client_request_id = 'z-0-0'"), "all": traceduck.count_traces()}}))
        """)], env=clean_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["found"] == 1
    assert result["all"] == sum(n for n, _ in _stored_batches(store).values())


def test_collector_killed_in_the_middle_of_heavy_ingest_loses_nothing_acknowledged(tmp_path, cleanup):
    """Two sender processes (8 concurrent exporters) post OTLP as fast as the collector takes it;
    SIGKILL the collector mid-ingest. Every span of every request answered 200 is stored, no
    half-written trace is visible (traces are split over two requests), the schema is intact,
    and the restarted collector ingests again."""
    store = str(tmp_path / "killed.duckdb")
    key = create_key(store, PROJECT)
    server = FaultCollector(store, str(tmp_path / "collector.log"))
    cleanup.append(server)
    run = secrets.token_bytes(4)
    senders = [Sender(server.base_url, run, key=key.key, sender=i, apps=4, traces=50, duration=90,
                      stop_on_error=True, stream_acks=True) for i in range(2)]  # fmt: skip
    cleanup.extend(s.proc for s in senders)
    for s in senders:
        s.go()
    want = random.randint(60, 120)  # acknowledged requests before the kill (30-60k spans)
    wait_for(lambda: sum(s.poll_acks() for s in senders) >= want, timeout=90, what=f"{want} acknowledged requests")
    server.kill()
    for s in senders:
        s.wait_exit(timeout=60)  # every app stops at its connection error; all ack lines read
    acked = {(s.sender, app): n for s in senders for app, n in s.acked.items()}
    assert sum(acked.values()) >= want

    _assert_store_intact(store)
    missing = missing_acked_spans(store, run, acked, traces=50)
    assert missing["missing_children"] == missing["missing_roots"] == 0, f"acknowledged spans lost: {missing}"
    assert incomplete_traces(store, run) == 0, "a trace is visible without all its spans"

    again = FaultCollector(store, str(tmp_path / "collector-2.log"))
    cleanup.append(again)
    client = again.client(key.key)
    trace_id, spans = simple_trace(3, tags={"after": "restart"})
    assert post_otlp(client, otlp_request(spans)).status_code == 200
    assert len(client.get(f"/api/traces/{trace_id}").json()["data"]["spans"]) == 4
    acked_traces = sum(max(0, n - 1) * 50 for n in acked.values())  # requests 1..n-1 carried roots
    assert client.get("/api/trace_count", params={"filter": "tags.run = 'faults'"}).json()["count"] >= acked_traces


# -- collector down or hung while applications keep serving ---------------------------------------

QUEUE = 2_000  # the remote app's max_queue_size (spans)
RSS_GROWTH_BOUND_KB = 60 * MB  # far below what 60k queued spans would take (see bench/faults.py)


def _burst(app: RemoteApp, calls: int, run: str) -> dict:
    result = app.ask(f"burst {calls} {run}")
    assert result["stats"]["failed_spans"] == 0
    return result


def _produced(*bursts: dict) -> int:
    return sum(b["spans"] for b in bursts)


def _assert_keeps_serving(up: dict, degraded: dict, rss_before_kb: int) -> None:
    # latency: the same traced call, collector up vs down/hung (wide behaviour bound, not a benchmark)
    assert degraded["p50_us"] < 3 * up["p50_us"] + 20, f"median call {degraded['p50_us']:.0f} µs vs {up['p50_us']:.0f} µs with the collector up"
    assert degraded["p90_us"] < 3 * up["p90_us"] + 50, f"p90 call {degraded['p90_us']:.0f} µs vs {up['p90_us']:.0f} µs"
    # memory: bounded by the queue, not by the spans produced
    growth = degraded["rss_max_kb"] - rss_before_kb
    assert growth < RSS_GROWTH_BOUND_KB, f"app RSS grew {growth / MB:.0f} MB while {degraded['spans']} spans were produced"


def _assert_caught_up(app: RemoteApp, produced: int, timeout: float = 90) -> dict:
    """Wait (reading counters only) until nothing is queued and every span is either exported or
    counted as dropped."""

    def settled():
        stats = app.stats()
        done = stats["written_spans"] + stats["dropped_spans"] + stats["failed_spans"]
        return stats if stats["queued"] == 0 and done == produced else None

    return wait_for(settled, timeout=timeout, what="the app's queue to drain to the collector")


def _serving_app(tmp_path, cleanup, name: str) -> tuple[str, Any, FaultCollector, RemoteApp, dict, dict]:
    """A collector and an app in remote mode that has served a warm-up and a measured burst with
    the collector up, everything flushed: (store, key, collector, app, warm burst, up burst)."""
    store = str(tmp_path / f"{name}.duckdb")
    key = create_key(store, PROJECT)
    server = FaultCollector(store, str(tmp_path / "collector.log"))
    cleanup.append(server)
    app = RemoteApp(server.base_url, key.key, QUEUE, str(tmp_path / "app.log"))
    cleanup.append(app)
    warm = _burst(app, 2_000, "warm")
    up = _burst(app, 10_000, "up")
    assert app.ask("flush 60")["flushed"]
    return store, key, server, app, warm, up


def test_app_keeps_serving_while_the_collector_is_down_and_sends_by_itself_when_it_returns(tmp_path, cleanup):
    store, key, server, app, warm, up = _serving_app(tmp_path, cleanup, "down")
    written_before = app.stats()["written_spans"]
    assert written_before == _produced(warm, up) - app.stats()["dropped_spans"]
    port = server.port
    server.stop()  # down: connections refused

    rss_before = app.ask("stats")["rss_kb"]
    down = _burst(app, 30_000, "down")  # 60,000 spans, 30x the queue
    _assert_keeps_serving(up, down, rss_before)
    stats = down["stats"]
    assert stats["written_spans"] == written_before, "spans were reported exported while the collector was down"
    held = _produced(warm, up, down) - stats["written_spans"] - stats["dropped_spans"]
    assert 0 < held <= 3 * QUEUE, f"{held} spans held in memory with max_queue_size={QUEUE}"
    assert stats["dropped_spans"] >= down["spans"] - 3 * QUEUE, "the overflow was not dropped and counted"

    back = FaultCollector(store, str(tmp_path / "collector-2.log"), port=port)  # same address
    cleanup.append(back)
    final = _assert_caught_up(app, _produced(warm, up, down))  # the app is not touched: it resends by itself
    sent_after = final["written_spans"] - written_before
    assert sent_after > 0, "nothing queued was sent after the collector came back"
    client = back.client(key.key)
    ingest = client.get("/api/stats").json()
    assert ingest["stored_spans"] == sent_after, f"collector stored {ingest['stored_spans']}, app sent {sent_after}"
    assert client.get("/api/trace_count", params={"filter": "tags.run = 'down'"}).json()["count"] > 0


def test_app_keeps_serving_while_the_collector_hangs_and_catches_up_when_it_resumes(tmp_path, cleanup):
    """A collector that accepts connections but never answers (SIGSTOP): the exporter waits on
    its own thread, the application's calls do not; on SIGCONT everything held is delivered once."""
    _, key, server, app, warm, up = _serving_app(tmp_path, cleanup, "hung")
    rss_before = app.ask("stats")["rss_kb"]
    server.pause()
    try:
        hung = _burst(app, 30_000, "hung")
        _assert_keeps_serving(up, hung, rss_before)
        assert hung["stats"]["dropped_spans"] >= hung["spans"] - 3 * QUEUE
    finally:
        server.resume()
    final = _assert_caught_up(app, _produced(warm, up, hung))
    client = server.client(key.key)
    ingest = wait_for(lambda: (s := client.get("/api/stats").json())["queued_spans"] == 0 and s, what="ingest idle")
    # a request that timed out while the collector was stopped is delivered again: stored once
    assert ingest["stored_spans"] == final["written_spans"]
    assert client.get("/api/trace_count", params={"filter": "tags.run = 'hung'"}).json()["count"] > 0


# -- disk full, read-only store ------------------------------------------------------------------


def _send(client: httpx.Client, children: int = 5, blob: int = 0) -> tuple[str, int]:
    trace_id, spans = simple_trace(children)
    if blob:
        for span in spans:
            span.attributes.add(key="blob", value={"string_value": secrets.token_hex(blob // 2)})
    return trace_id, post_otlp(client, otlp_request(spans)).status_code


def _assert_failing_clearly(server: FaultCollector, client: httpx.Client, failed: list[str], needle: str) -> None:
    health = client.get("/healthz")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "degraded" and needle in (body["last_error"] or ""), body
    log = server.log()
    assert "collector could not write" in log and needle in log, log[-2000:]
    search = client.get("/api/traces", params={"max_results": 50})  # reads keep being served
    assert search.status_code == 200, search.text
    assert search.json()["traces"], "the traces stored before the fault are no longer found"
    for trace_id in failed:  # refused spans were not half-stored
        assert client.get(f"/api/traces/{trace_id}").status_code == 404


def _collector_on(directory: str, name: str, tmp_path, cleanup, traces: int = 5) -> tuple[str, Any, FaultCollector, httpx.Client, list]:
    """A collector whose store is ``<directory>/<name>.duckdb``, with ``traces`` small traces
    acknowledged: (store, key, collector, client, [(trace id, status)])."""
    store = os.path.join(directory, f"{name}.duckdb")
    key = create_key(store, PROJECT)
    server = FaultCollector(store, str(tmp_path / "collector.log"))
    cleanup.append(server)
    client = server.client(key.key)
    stored = [_send(client) for _ in range(traces)]
    assert {status for _, status in stored} <= {200}
    return store, key, server, client, stored


def test_full_disk_answers_503_reports_it_keeps_serving_reads_and_recovers_when_space_returns(tmp_path, cleanup):
    with tmpfs(str(tmp_path / "small"), 24) as disk:
        store, key, server, client, stored = _collector_on(disk, "full", tmp_path, cleanup)
        junk = fill_disk(disk)

        failed = [_send(client, blob=2000) for _ in range(3)]
        assert [status for _, status in failed] == [503] * 3, "a write on a full disk must be refused with 503"
        _assert_failing_clearly(server, client, [t for t, _ in failed], "No space left on device")

        os.unlink(junk)
        after = wait_for(lambda: (r := _send(client))[1] == 200 and r, timeout=30, what="ingest to work again")
        assert client.get("/healthz").json()["status"] == "ok"
        for trace_id, _ in [*stored, after]:
            assert client.get(f"/api/traces/{trace_id}").status_code == 200
        server.stop()
        _assert_store_intact(store)


def test_disk_filling_up_during_ingest_keeps_reads_served_and_recovers_when_space_returns(tmp_path, cleanup):
    """The realistic way a disk fills: the WAL still fits but the checkpoint that moves it into the
    database file does not. Reads must go on, ingest answer 503, and both work again once space
    returns, without a restart."""
    with tmpfs(str(tmp_path / "small"), 48) as disk:
        store, key, server, client, _ = _collector_on(disk, "filling", tmp_path, cleanup, traces=0)
        junk = fill_disk(disk, leave_bytes=20 * 1024 * 1024)
        acked, failed = [], []
        for _ in range(200):  # ~400 KB per request until the disk is full
            trace_id, status = _send(client, children=199, blob=2000)
            assert status in (200, 503), status
            (acked if status == 200 else failed).append(trace_id)
            if failed:
                break
        assert failed, "the disk never filled up"
        health = client.get("/healthz")
        assert health.status_code == 503 and "No space left on device" in health.json()["last_error"]
        search = httpx.get(server.base_url + "/api/traces", params={"max_results": 5},
                           headers={"Authorization": f"Bearer {key.key}"}, timeout=30)  # fmt: skip
        assert search.status_code == 200, f"reads stopped being served on a full disk: {search.status_code} {search.text[:300]}"

        os.unlink(junk)
        client = server.client(key.key)
        wait_for(lambda: _send(client)[1] == 200, timeout=30, what="ingest to work again once space returned")
        assert client.get("/healthz").json()["status"] == "ok"
        for trace_id in acked:
            assert client.get(f"/api/traces/{trace_id}").status_code == 200
        server.stop()
        _assert_store_intact(store)


def _raw_trace(children: int) -> tuple[str, RawSpans]:
    trace_id, spans = simple_trace(children)
    for span in spans:
        span.attributes.add(key="blob", value={"string_value": secrets.token_hex(500)})
    raw = RawSpans()
    collector_otlp.to_raw_spans(otlp_request(spans), raw, PROJECT)
    return trace_id, raw


def test_a_commit_whose_checkpoint_fails_on_a_full_disk_is_kept_and_the_store_attached_afresh(tmp_path):
    """DuckDB's worst disk-full case, made deterministic with a small checkpoint threshold: the
    commit reached the WAL ("COMMIT succeeded and is durable") but the automatic checkpoint
    after it failed and DuckDB invalidated the attached file. That write is acknowledged (it is
    durable), the file is attached afresh for the next unit of work, reads go on, and once space
    returns writes work again; every acknowledged trace is in the file after a restart."""
    with tmpfs(str(tmp_path / "small"), 16) as disk:
        path = os.path.join(disk, "checkpoint.duckdb")
        store = DuckDBStore(path, hold_open=True)
        store.acquire_writer()
        store.file._instance_connection().execute("SET checkpoint_threshold = '64KB'")
        acked: list[str] = []
        trace_id, raw = _raw_trace(3)
        store.write(raw)
        acked.append(trace_id)
        junk = fill_disk(disk, leave_bytes=400 * 1024)
        refused = None
        for _ in range(200):
            trace_id, raw = _raw_trace(20)
            try:
                store.write(raw)
            except duckdb.Error as exc:
                refused = exc
                break
            acked.append(trace_id)
        assert refused is not None and "No space left on device" in str(refused), refused
        assert store.file.reattachments >= 1, "no checkpoint failed: the test did not reach its case"
        missing = [t for t in acked if store.get_trace(t) is None]
        assert not missing, f"reads after the failed checkpoint miss {len(missing)} acknowledged traces"

        os.unlink(junk)
        trace_id, raw = _raw_trace(3)
        store.write(raw)
        acked.append(trace_id)
        store.file.release_writer()
        store.file.release()

        reopened = DuckDBStore(path)
        for trace_id in acked:
            trace = reopened.get_trace(trace_id)
            assert trace is not None and len(trace.data.spans) in (4, 21), trace_id
        _assert_store_intact(path)


def test_store_on_a_filesystem_turned_read_only_answers_503_keeps_serving_reads_and_restarts_intact(tmp_path, cleanup):
    """ext4 with errors=remount-ro turns read-only under the collector (as after a disk error).
    Ingest answers 503 with the error in /healthz and the log, searches keep working; once the
    filesystem is repaired a restarted collector finds every acknowledged trace."""
    with ext4_image(str(tmp_path), 64) as (mount, device, image):
        store, key, server, client, stored = _collector_on(mount, "ro", tmp_path, cleanup)

        fail_filesystem(device)
        failed = [_send(client) for _ in range(3)]
        assert [status for _, status in failed] == [503] * 3, "a write to a read-only store must be refused with 503"
        _assert_failing_clearly(server, client, [t for t, _ in failed], "Read-only file system")

        server.stop()
        repair_ext4(mount, image)
        _assert_store_intact(store)
        again = FaultCollector(store, str(tmp_path / "collector-2.log"))
        cleanup.append(again)
        client = again.client(key.key)
        for trace_id, _ in stored:
            assert client.get(f"/api/traces/{trace_id}").status_code == 200
        for trace_id, _ in failed:
            assert client.get(f"/api/traces/{trace_id}").status_code == 404
        assert _send(client)[1] == 200
        assert client.get("/healthz").json()["status"] == "ok"
        again.stop()


# -- overload ------------------------------------------------------------------------------------


def test_overload_sheds_with_429_stays_responsive_bounded_and_loses_nothing_acknowledged(tmp_path, cleanup):
    """Three sender processes with four exporters each post as fast as they are answered, for 8 s,
    at a collector that queues at most 2,000 spans (each request carries 250)."""
    store = str(tmp_path / "overload.duckdb")
    key = create_key(store, PROJECT)
    server = FaultCollector(store, str(tmp_path / "collector.log"), "--max-queued-spans", "2000")
    cleanup.append(server)
    run = secrets.token_bytes(4)
    senders = [Sender(server.base_url, run, key=key.key, sender=i, apps=4, traces=50, duration=8)
               for i in range(3)]  # fmt: skip
    cleanup.extend(s.proc for s in senders)
    idle_kb = rss_kb(server.pid) or 0
    with RssSampler(server.pid) as rss, Searcher(server.base_url, key.key, "tags.run = 'faults'") as searches:
        for s in senders:
            s.go()
        summaries = [s.finish(timeout=120) for s in senders]
    statuses: dict[str, int] = {}
    for summary in summaries:
        for code, n in summary["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    assert set(statuses) <= {"200", "429", "503"}, f"unexpected answers {statuses}"
    assert statuses.get("429", 0) > 0, f"the collector never shed load: {statuses}"
    assert statuses.get("200", 0) > 0
    assert all(s["no_retry_after"] == 0 for s in summaries), "a 429/503 came without Retry-After"
    assert all(s["errors"] == 0 for s in summaries), "a request failed at the transport level"

    assert searches.results, "no search ran during the overload"
    assert {status for status, _ in searches.results} == {200}, f"searches failed during overload: {searches.results}"
    slowest = max(seconds for _, seconds in searches.results)
    assert slowest < 10, f"a search took {slowest:.1f} s during the overload"
    assert rss.max_kb - idle_kb < 500 * MB, f"collector RSS grew from {idle_kb / MB:.0f} MB to {rss.max_kb / MB:.0f} MB"

    server.stop()
    acked = {(s.sender, app): n for s in senders for app, n in s.acked.items()}
    missing = missing_acked_spans(store, run, acked, traces=50)
    assert missing["acked_spans"] == sum(s["acked_spans"] for s in summaries)
    assert missing["missing_children"] == missing["missing_roots"] == 0, f"acknowledged spans lost: {missing}"
    assert incomplete_traces(store, run) == 0
    _assert_store_intact(store)
