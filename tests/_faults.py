"""Machinery of the fault tests (``tests/test_faults.py``) and of ``bench/faults.py``.

Everything here starts REAL processes on 127.0.0.1 and breaks them: a collector that can be
killed, paused and restarted on the same port; OTLP senders in their own processes; application
processes in local and remote mode driven over stdin; small filesystems that fill up or turn
read-only. Nothing is mocked.

The OTLP sender (``python tests/_faults.py send ...``) models traceduck's own export processor:
each virtual *app* (a thread) has a bounded queue of batches and one request in flight, retries a
refused batch after ``Retry-After`` and counts batches it had to drop. Request bodies are encoded
once with the official OTLP encoder (``encode_spans``) from SDK spans whose trace ids, and times,
are placeholders; each request patches in its own (a few µs of ``bytes.replace``), so the senders
cost the machine almost nothing. Request ``seq`` of an app carries the 4 children of each of its
``traces`` traces and the ROOTS of the traces of request ``seq - 1``: a trace is split over two
requests, so a collector killed between them leaves children without their root (an unfinished
trace, which must not be visible as a trace) and every acknowledged request says exactly which
spans must be stored.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import secrets
import signal
import statistics
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _collector import HOST, TRACEDUCK, Collector, clean_env, free_port, wait_for  # noqa: E402

REPO = HERE.parent

# -- processes -----------------------------------------------------------------------------------


def rss_kb(pid: int) -> int | None:
    """Resident set size of a process in kB (``VmRSS`` of /proc/PID/status), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """Wait until a SIGSTOPped process is really stopped (signal delivery is asynchronous: until
    then it may still start a child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t", "Z", "X"):
                    return
        except OSError:
            return  # gone
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


def processes_with_argument(argument: str) -> list[int]:
    """Live processes (other than this one) with ``argument`` in their command line, whoever
    their parent is now (an orphaned writer process is re-parented)."""
    found = []
    needle = argument.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in args and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def _threads(pid: int) -> int:
    """How many threads of ``pid`` the kernel still lists (0: the process is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def wait_gone(pids: list[int], timeout: float = 15.0) -> None:
    """Wait until the processes ``pids`` (not our children: we cannot reap them) have exited:
    a SIGKILLed process keeps its file locks until the kernel has torn it down."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                break  # gone
            if state in ("Z", "X") and _threads(pid) <= 1:
                # exited, waiting to be reaped: its locks are released. (A zombie leader of a
                # process whose other threads are still being torn down keeps them until the last
                # one has gone: the open files belong to the process, not to the leader.)
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"process {pid} did not exit within {timeout} s")


def kill_process(proc: subprocess.Popen | None) -> None:
    """SIGKILL a process we started (and reap it); quiet if it already exited."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a paused process would never die
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds from a background thread: ``max_kb``,
    and ``peak_growth_mb`` over the RSS when the sampler was made."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.base_kb = rss_kb(pid) or 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kb(self.pid)
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def max_kb(self) -> int:
        return max(self.samples) if self.samples else 0

    @property
    def peak_growth_mb(self) -> float:
        return (max(self.max_kb, self.base_kb) - self.base_kb) / 1024


class FaultCollector(Collector):
    """``traceduck collector`` that may be started on a given port, killed, paused and resumed."""

    def __init__(self, store: str, log_path: str, *args: str, port: int | None = None,
                 env: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.store = store
        self.port = port if port is not None else free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [*TRACEDUCK, "collector", "--store", store, "--host", HOST, "--port", str(self.port),
             "--purge-interval", "0", *args],
            cwd=str(REPO), env=clean_env(env), stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._clients = []
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> int | None:
        """SIGKILL: no shutdown of any kind, only what was committed survives."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)
        return self.stop()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.resume()  # SIGTERM to a stopped process would wait forever
        return super().stop()


# -- filesystems ---------------------------------------------------------------------------------


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _unmount(path: str) -> None:
    for _ in range(50):
        if _run("umount", path, check=False).returncode == 0 or not os.path.ismount(path):
            return
        time.sleep(0.1)
    _run("umount", "-l", path, check=False)  # still busy: detach it lazily rather than leak it


@contextlib.contextmanager
def tmpfs(path: str, size_mb: int) -> Iterator[str]:
    """A tmpfs of ``size_mb`` MiB mounted at ``path`` (the test machine runs tests as root)."""
    os.makedirs(path, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", path)
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def ext4_image(directory: str, size_mb: int) -> Iterator[tuple[str, str, str]]:
    """An ext4 filesystem in a file, loop-mounted with ``errors=remount-ro``: (mount, device, image).

    ``fail_filesystem(device)`` then makes the kernel turn it read-only as it does after a disk
    error; ``repair_ext4`` unmounts, checks and mounts it again.
    """
    image = os.path.join(directory, "fs.img")
    mount = os.path.join(directory, "fs")
    os.makedirs(mount, exist_ok=True)
    with open(image, "wb") as fh:
        fh.truncate(size_mb * 1024 * 1024)
    _run("mkfs.ext4", "-q", "-F", image)
    _run("mount", "-o", "loop,errors=remount-ro", image, mount)
    try:
        yield mount, mounted_device(mount), image
    finally:
        _unmount(mount)


def mounted_device(mount: str) -> str:
    with open("/proc/mounts") as fh:
        for line in fh:
            device, point = line.split()[:2]
            if point == mount:
                return device
    raise AssertionError(f"nothing is mounted at {mount}")


def fail_filesystem(device: str) -> None:
    """Make ext4 report an error: with ``errors=remount-ro`` the kernel turns the filesystem
    read-only at once (writes fail with EROFS), as after a failing disk."""
    name = os.path.basename(device)
    with open(f"/sys/fs/ext4/{name}/trigger_fs_error", "w") as fh:
        fh.write("traceduck fault test\n")


def repair_ext4(mount: str, image: str) -> None:
    _unmount(mount)
    _run("e2fsck", "-fy", image, check=False)  # exit 1: errors corrected
    _run("mount", "-o", "loop,errors=remount-ro", image, mount)


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill_disk(directory: str, leave_bytes: int = 0) -> str:
    """Write a junk file until the filesystem of ``directory`` has ``leave_bytes`` left (0: full)."""
    junk = os.path.join(directory, "junk.bin")
    chunk = b"\xa5" * (1 << 20)
    with open(junk, "ab") as fh:
        while True:
            room = free_bytes(directory) - leave_bytes
            if room <= 0:
                break
            try:
                fh.write(chunk[: min(len(chunk), room)])
                fh.flush()
            except OSError:  # ENOSPC: full
                break
    return junk


# -- the store -----------------------------------------------------------------------------------


def expected_schema() -> dict[str, list[tuple[str, str]]]:
    """Tables and columns of a store created by this traceduck (migrations run on a fresh DB)."""
    import duckdb  # noqa: PLC0415

    from traceduck.store import schema  # noqa: PLC0415

    con = duckdb.connect()
    try:
        schema.migrate(con)
        return _schema_of(con)
    finally:
        con.close()


def _schema_of(con: Any) -> dict[str, list[tuple[str, str]]]:
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns()"
        " WHERE database_name = current_database() AND schema_name = 'main' ORDER BY table_name, column_index"
    ).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        out.setdefault(table, []).append((column, kind))
    return out


@dataclass
class StoreCheck:
    """What a store file holds, read by a fresh process after a fault."""

    schema_version: int
    schema: dict[str, list[tuple[str, str]]]
    traces: int
    spans: int
    #: Trace rows whose root span (span_id = root_span_id) is not stored: a half-written trace.
    rootless_traces: int
    duplicate_trace_rows: int
    duplicate_spans: int


def check_store(path: str) -> StoreCheck:
    """Open the store read-only (as a new reader would, WAL replayed) and check its invariants."""
    import duckdb  # noqa: PLC0415

    con = duckdb.connect(path, read_only=True)
    try:
        one = lambda sql: con.execute(sql).fetchall()[0][0]  # noqa: E731
        return StoreCheck(
            schema_version=one("SELECT max(version) FROM schema_version"),
            schema=_schema_of(con),
            traces=one("SELECT count(*) FROM traces"),
            spans=one("SELECT count(*) FROM spans"),
            rootless_traces=one(
                "SELECT count(*) FROM traces t WHERE NOT EXISTS (SELECT 1 FROM spans s WHERE"
                " s.trace_id = t.trace_id AND s.project = t.project AND s.span_id = t.root_span_id)"
            ),
            duplicate_trace_rows=one(
                "SELECT count(*) FROM (SELECT trace_id, project FROM traces GROUP BY ALL HAVING count(*) > 1)"
            ),
            duplicate_spans=one(
                "SELECT count(*) FROM (SELECT trace_id, project, span_id FROM spans GROUP BY ALL HAVING count(*) > 1)"
            ),
        )
    finally:
        con.close()


def latest_schema_version() -> int:
    from traceduck.store.schema import LATEST_VERSION  # noqa: PLC0415

    return LATEST_VERSION


# -- OTLP sender ---------------------------------------------------------------------------------

#: Children per trace (each trace also has one root).
CHILDREN = 4
_T0 = 1_763_000_000_000_000_000


def prefix(run: bytes, sender: int, app: int, seq: int) -> bytes:
    """The first 12 bytes of the trace ids of request ``seq`` of an app (the last 4: the trace)."""
    return run + struct.pack(">HHI", sender, app, seq)


def trace_prefix_hex(run: bytes, sender: int, app: int, seq: int) -> str:
    return prefix(run, sender, app, seq).hex()


class Bodies:
    """Pre-encoded OTLP/protobuf requests with placeholder trace ids and times, patched per request."""

    def __init__(self, traces: int, run_tag: str, payload_bytes: int = 100) -> None:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import ReadableSpan  # noqa: PLC0415
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: PLC0415
        from opentelemetry.trace import SpanContext, TraceFlags  # noqa: PLC0415

        self.traces = traces
        while True:  # placeholders that occur nowhere else in the encoded bytes
            self.cur, self.prev = secrets.token_bytes(12), secrets.token_bytes(12)
            self.start, self.end = struct.pack("<Q", _T0 + secrets.randbits(40)), struct.pack("<Q", _T0 + (1 << 41) + secrets.randbits(40))
            marks = [self.cur, self.prev, self.start, self.end]
            if len({m[:4] for m in marks}) == 4:
                break
        start_ns, end_ns = struct.unpack("<Q", self.start)[0], struct.unpack("<Q", self.end)[0]
        resource = Resource.create({"service.name": "fault-sender"})
        scope = InstrumentationScope("traceduck-faults")
        flags = TraceFlags(TraceFlags.SAMPLED)
        fields = json.dumps({"tags": {"run": run_tag}})
        text = "x" * payload_bytes

        def ctx(trace_prefix: bytes, k: int, span: int) -> SpanContext:
            return SpanContext(int.from_bytes(trace_prefix + struct.pack(">I", k), "big"), span, False, flags)

        def root_id(k: int) -> int:
            return (0x5200_0000_0000_0000 | k) & ((1 << 64) - 1)

        def children(trace_prefix: bytes) -> list[Any]:
            out = []
            for k in range(traces):
                parent = ctx(trace_prefix, k, root_id(k))
                for j in range(CHILDREN):
                    out.append(ReadableSpan(
                        f"step-{j}", context=ctx(trace_prefix, k, 0x4300_0000_0000_0000 | (k << 8) | (j + 1)),
                        parent=parent, resource=resource, instrumentation_scope=scope,
                        attributes={"traceduck.span_type": "TOOL", "traceduck.inputs": json.dumps({"q": text}),
                                    "step": j},
                        start_time=start_ns, end_time=end_ns))  # fmt: skip
            return out

        def roots(trace_prefix: bytes) -> list[Any]:
            return [ReadableSpan(
                "request", context=ctx(trace_prefix, k, root_id(k)), parent=None, resource=resource,
                instrumentation_scope=scope,
                attributes={"traceduck.trace": fields, "traceduck.span_type": "CHAIN",
                            "traceduck.inputs": json.dumps({"q": text}), "traceduck.outputs": json.dumps("ok")},
                start_time=start_ns, end_time=end_ns) for k in range(traces)]  # fmt: skip

        self.first = encode_spans(children(self.cur)).SerializeToString()
        self.regular = encode_spans(children(self.cur) + roots(self.prev)).SerializeToString()
        # every placeholder occurs exactly where it was put, nowhere else
        assert self.first.count(self.cur) == traces * CHILDREN and self.first.count(self.prev) == 0
        assert self.regular.count(self.cur) == traces * CHILDREN and self.regular.count(self.prev) == traces
        assert self.regular.count(self.start) == self.regular.count(self.end) == traces * (CHILDREN + 1)
        self.spans_first = traces * CHILDREN
        self.spans_regular = traces * (CHILDREN + 1)

    def body(self, run: bytes, sender: int, app: int, seq: int) -> tuple[bytes, int]:
        """The request ``seq`` of an app, and how many spans it carries."""
        now = time.time_ns()
        template = self.first if seq == 0 else self.regular
        out = template.replace(self.cur, prefix(run, sender, app, seq))
        if seq:
            out = out.replace(self.prev, prefix(run, sender, app, seq - 1))
        out = out.replace(self.start, struct.pack("<Q", now)).replace(self.end, struct.pack("<Q", now + 3_000_000))
        return out, self.spans_first if seq == 0 else self.spans_regular


@dataclass
class AppResult:
    acked: int = 0  # requests answered 200: seq 0 .. acked-1
    produced: int = 0  # batches the app produced
    dropped: int = 0  # batches dropped because the app's queue was full
    acked_spans: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    no_retry_after: int = 0  # 429/503 answers without a Retry-After header
    errors: int = 0
    ack_ms: list[float] = field(default_factory=list)


def _post(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
    conn.request("POST", "/v1/traces", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, response.getheader("Retry-After")


def run_app(url: str, key: str | None, run: bytes, sender: int, app: int, bodies: Bodies, deadline: float,
            rate: float, queue_limit: int, stop_on_error: bool, acks: queue.SimpleQueue | None,
            stop: threading.Event, timeout: float) -> AppResult:  # fmt: skip
    """One virtual application: produce batches at ``rate`` per second (0: as fast as the
    collector takes them) into a queue of ``queue_limit``, send one at a time, retry after
    Retry-After."""
    host, port = url.split("//", 1)[1].split(":")
    headers = {"Content-Type": "application/x-protobuf"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    result = AppResult()
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    started = time.monotonic()
    pending = 0
    seq = 0
    current: tuple[bytes, int] | None = None
    while not stop.is_set() and time.monotonic() < deadline:
        if rate:
            due = int((time.monotonic() - started) * rate) - result.produced
            if due > 0:
                result.produced += due
                room = queue_limit - pending
                pending += min(due, room)
                result.dropped += max(0, due - room)
            if pending == 0:
                time.sleep(min(0.01, 1 / rate))
                continue
        if current is None:
            current = bodies.body(run, sender, app, seq)
        t = time.perf_counter()
        try:
            status, retry_after = _post(conn, current[0], headers)
        except (OSError, http.client.HTTPException):
            result.errors += 1
            conn.close()
            if stop_on_error:
                break
            time.sleep(0.2)
            continue
        result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
        if status == 200:
            result.ack_ms.append((time.perf_counter() - t) * 1000)
            result.acked += 1
            result.acked_spans += current[1]
            if acks is not None:
                acks.put(f"A {app} {seq}")
            seq += 1
            current = None
            if rate:
                pending -= 1
            else:
                result.produced += 1
        elif status in (429, 503):
            if retry_after is None:
                result.no_retry_after += 1
            stop.wait(min(float(retry_after or 1), 5.0))
        else:
            break  # anything else is a bug the caller reports
    conn.close()
    return result


def sender_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_faults.py send")
    parser.add_argument("--url", required=True)
    parser.add_argument("--key")
    parser.add_argument("--run", required=True, help="4 bytes, hex: the first bytes of every trace id")
    parser.add_argument("--tag", default="faults", help="value of the tag `run` on every trace")
    parser.add_argument("--sender", type=int, default=0)
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--traces", type=int, default=100, help="traces per request (5 spans each)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="batches per second per app (0: as fast as acknowledged)")
    parser.add_argument("--queue", type=int, default=20, help="batches an app keeps before dropping")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    parser.add_argument("--stop-on-error", action="store_true", help="stop an app at its first connection error")
    parser.add_argument("--stream-acks", action="store_true", help="print 'A app seq' as each request is answered 200")
    args = parser.parse_args(argv)
    run = bytes.fromhex(args.run)
    bodies = Bodies(args.traces, args.tag)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":  # the starting gun (EOF: the caller went away)
        return 1
    acks: queue.SimpleQueue | None = queue.SimpleQueue() if args.stream_acks else None
    stop = threading.Event()
    deadline = time.monotonic() + args.duration
    results: dict[int, AppResult] = {}

    def one(app: int) -> None:
        results[app] = run_app(args.url, args.key, run, args.sender, app, bodies, deadline, args.rate,
                               args.queue, args.stop_on_error, acks, stop, args.timeout)  # fmt: skip

    threads = [threading.Thread(target=one, args=(a,), daemon=True) for a in range(args.apps)]
    started = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if acks is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    print(acks.get_nowait(), flush=True)
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    if acks is not None:
        with contextlib.suppress(queue.Empty):
            while True:
                print(acks.get_nowait(), flush=True)
    statuses: dict[str, int] = {}
    for r in results.values():
        for code, n in r.statuses.items():
            statuses[code] = statuses.get(code, 0) + n
    ack_ms = sorted(ms for r in results.values() for ms in r.ack_ms)
    summary = {
        "sender": args.sender,
        "seconds": elapsed,
        "acked": {str(a): r.acked for a, r in results.items()},
        "acked_spans": sum(r.acked_spans for r in results.values()),
        "produced_batches": sum(r.produced for r in results.values()),
        "dropped_batches": sum(r.dropped for r in results.values()),
        "statuses": statuses,
        "no_retry_after": sum(r.no_retry_after for r in results.values()),
        "errors": sum(r.errors for r in results.values()),
        "ack_ms_p50": ack_ms[len(ack_ms) // 2] if ack_ms else None,
        "ack_ms_p95": ack_ms[int(len(ack_ms) * 0.95)] if ack_ms else None,
        "spans_per_request": bodies.spans_regular,
    }
    print("S " + json.dumps(summary), flush=True)
    return 0


class Sender:
    """``python tests/_faults.py send ...`` in its own process; ``go()`` starts it."""

    def __init__(self, url: str, run: bytes, *, key: str | None = None, sender: int = 0, apps: int = 4,
                 traces: int = 100, duration: float = 10.0, rate: float = 0.0, queue_limit: int = 20,
                 stop_on_error: bool = False, stream_acks: bool = False, tag: str = "faults") -> None:  # fmt: skip
        cmd = [sys.executable, str(HERE / "_faults.py"), "send", "--url", url, "--run", run.hex(),
               "--sender", str(sender), "--apps", str(apps), "--traces", str(traces), "--duration", str(duration),
               "--rate", str(rate), "--queue", str(queue_limit), "--tag", tag]  # fmt: skip
        if key:
            cmd += ["--key", key]
        if stop_on_error:
            cmd.append("--stop-on-error")
        if stream_acks:
            cmd.append("--stream-acks")
        self.sender = sender
        self.proc = subprocess.Popen(cmd, cwd=str(REPO), env=clean_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
        self.lines = LineReader(self.proc)
        self.acked: dict[int, int] = {}  # app -> requests acknowledged (seq 0..n-1)
        self.summary: dict[str, Any] | None = None
        first = self.lines.get(timeout=60)
        assert first == "ready", f"sender did not start: {first!r}"

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def poll_acks(self) -> int:
        """Take the ack lines printed so far; the number of requests acknowledged."""
        for line in self.lines.drain():
            self._take(line)
        return sum(self.acked.values())

    def _take(self, line: str) -> None:
        if line.startswith("A "):
            _, app, seq = line.split()
            self.acked[int(app)] = max(self.acked.get(int(app), 0), int(seq) + 1)
        elif line.startswith("S "):
            self.summary = json.loads(line[2:])
            for app, n in self.summary["acked"].items():
                self.acked[int(app)] = max(self.acked.get(int(app), 0), n)

    def finish(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while self.summary is None:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"sender {self.sender} gave no summary within {timeout:.0f}s")
            self._take(line)
        self.proc.wait(timeout=30)
        return self.summary

    def wait_exit(self, timeout: float = 60) -> None:
        """Wait for the sender to end on its own (e.g. after its collector died), taking every line."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                break
            self._take(line)
        self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))

    def kill(self) -> None:
        kill_process(self.proc)


class LineReader:
    """Lines of a child's stdout, read by a thread, taken with a timeout."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._thread.start()

    def _run(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def get(self, timeout: float) -> str | None:
        """The next line; None at end of output or after ``timeout`` seconds."""
        if self._done:
            return None
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            self._done = True
        return line

    def drain(self) -> list[str]:
        out = []
        while not self._done:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._done = True
                break
            out.append(line)
        return out


def missing_acked_spans(store: str, run: bytes, acked: Mapping[tuple[int, int], int], traces: int) -> dict[str, Any]:
    """Check every span of every acknowledged request is in the store file.

    ``acked[(sender, app)] = n``: requests seq 0..n-1 of that app were answered 200. Request seq
    carries the children of traces ``prefix(seq)`` and the roots of ``prefix(seq - 1)``.
    Returns the counts of missing children and roots and the number of acknowledged spans.
    """
    import duckdb  # noqa: PLC0415

    con = duckdb.connect(store, read_only=True)
    try:
        rows = con.execute(
            "SELECT substr(h, 1, 24) AS p, count(*) FILTER (WHERE parent_span_id IS NULL),"
            " count(*) FILTER (WHERE parent_span_id IS NOT NULL)"
            " FROM (SELECT replace(CAST(trace_id AS VARCHAR), '-', '') AS h, parent_span_id FROM spans)"
            " WHERE starts_with(h, ?) GROUP BY p",
            [run.hex()],
        ).fetchall()
    finally:
        con.close()
    stored = {p: (roots, kids) for p, roots, kids in rows}
    missing_children = missing_roots = acked_spans = 0
    for (sender, app), n in acked.items():
        for seq in range(n):
            kids = stored.get(trace_prefix_hex(run, sender, app, seq), (0, 0))[1]
            missing_children += max(0, traces * CHILDREN - kids)
            acked_spans += traces * CHILDREN
            if seq:
                roots = stored.get(trace_prefix_hex(run, sender, app, seq - 1), (0, 0))[0]
                missing_roots += max(0, traces - roots)
                acked_spans += traces
    return {"missing_children": missing_children, "missing_roots": missing_roots, "acked_spans": acked_spans,
            "stored_spans_of_run": sum(r + k for r, k in stored.values())}  # fmt: skip


def incomplete_traces(store: str, run: bytes) -> int:
    """Trace rows of the run that do not have all their spans (root + CHILDREN)."""
    import duckdb  # noqa: PLC0415

    con = duckdb.connect(store, read_only=True)
    try:
        return con.execute(
            "SELECT count(*) FROM traces t JOIN (SELECT trace_id, project, count(*) AS n FROM spans GROUP BY ALL) s"
            " USING (trace_id, project) WHERE starts_with(replace(CAST(t.trace_id AS VARCHAR), '-', ''), ?)"
            " AND s.n <> ?",
            [run.hex(), CHILDREN + 1],
        ).fetchall()[0][0]
    finally:
        con.close()


# -- searches during a fault ---------------------------------------------------------------------


class Searcher:
    """GET /api/traces every ``interval`` seconds from a thread; records (status, seconds)."""

    def __init__(self, base_url: str, key: str | None, filter_string: str | None = None,
                 interval: float = 0.25, timeout: float = 30.0) -> None:  # fmt: skip
        import httpx  # noqa: PLC0415

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self.params: dict[str, Any] = {"max_results": 20}
        if filter_string:
            self.params["filter"] = filter_string
        self.interval = interval
        self.results: list[tuple[int, float]] = []  # (status or -1 for a transport error, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="searcher", daemon=True)

    def _run(self) -> None:
        import httpx  # noqa: PLC0415

        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                status = self.client.get("/api/traces", params=self.params).status_code
            except httpx.HTTPError:
                status = -1
            self.results.append((status, time.perf_counter() - t))
            self._stop.wait(self.interval)

    def __enter__(self) -> Searcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()

    def seconds(self) -> list[float]:
        return sorted(s for _, s in self.results)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -- application processes -----------------------------------------------------------------------

#: A local-mode application that writes heavily to its own store and says after each flush().
LOCAL_APP = r"""
import sys
import traceduck

store, per_batch = sys.argv[1], int(sys.argv[2])
traceduck.configure(store, service_name="fault-local-app", flush_interval=0.05)


@traceduck.trace(span_type="CHAIN")
def handle(batch, i):
    traceduck.update_current_trace(client_request_id=f"{batch}-{i}", tags={"batch": str(batch)})
    for j in range(4):
        with traceduck.start_span(f"step-{j}", span_type="TOOL") as span:
            span.set_inputs({"i": i, "j": j, "text": "x" * 200})
            span.set_outputs({"ok": True})
    return i


batch = 0
while True:
    for i in range(per_batch):
        handle(batch, i)
    if traceduck.flush(60):
        print(f"flushed {batch}", flush=True)
    batch += 1
"""

#: A remote-mode application driven over stdin: ``burst N RUN``, ``stats``, ``flush T``, ``quit``.
REMOTE_APP = r"""
import json, sys, time
import traceduck

url, key, max_queue = sys.argv[1], sys.argv[2], int(sys.argv[3])
traceduck.configure(url, api_key=key, max_queue_size=max_queue, flush_interval=0.05, service_name="fault-remote-app")
WORK = 300


def rss_kb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


@traceduck.trace(span_type="CHAIN")
def handle(i, run):
    traceduck.update_current_trace(tags={"run": run})
    with traceduck.start_span("work", span_type="TOOL") as span:
        span.set_inputs({"i": i})
        total = sum(range(WORK))
        span.set_outputs(total)
    return total


def burst(n, run):
    lat = []
    rss_max = rss_kb()
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter_ns()
        handle(i, run)
        lat.append(time.perf_counter_ns() - t)
        if i % 500 == 0:
            rss_max = max(rss_max, rss_kb())
    seconds = time.perf_counter() - start
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000
    return {"calls": n, "spans": 2 * n, "seconds": seconds, "p50_us": pick(0.5), "p90_us": pick(0.9),
            "p99_us": pick(0.99), "max_us": lat[-1] / 1000, "mean_us": sum(lat) / len(lat) / 1000,
            "rss_kb": rss_kb(), "rss_max_kb": max(rss_max, rss_kb())}


print(json.dumps({"ready": True, "rss_kb": rss_kb()}), flush=True)
for line in sys.stdin:
    cmd, *rest = line.split()
    if cmd == "burst":
        out = burst(int(rest[0]), rest[1])
    elif cmd == "flush":
        out = {"flushed": traceduck.flush(float(rest[0]))}
    elif cmd == "quit":
        break
    else:
        out = {}
    out["stats"] = traceduck.stats()
    out["rss_kb"] = rss_kb()
    print(json.dumps(out), flush=True)
"""


class RemoteApp:
    """``REMOTE_APP`` in its own process, configured against ``url``; ``ask`` sends one command."""

    def __init__(self, url: str, key: str, max_queue_size: int, log_path: str) -> None:
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(REMOTE_APP), url, key, str(max_queue_size)],
            cwd=str(REPO), env=clean_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, text=True, bufsize=1,
        )  # fmt: skip
        self.log_path = log_path
        self.lines = LineReader(self.proc)
        first = self.lines.get(timeout=60)
        assert first and json.loads(first).get("ready"), f"remote app did not start: {first!r}\n{self.log()}"

    def log(self) -> str:
        self._log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def ask(self, command: str, timeout: float = 120) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.lines.get(timeout=timeout)
        assert line is not None, f"remote app gave no answer to {command!r} within {timeout:.0f}s\n{self.log()[-3000:]}"
        return json.loads(line)

    def stats(self) -> dict[str, Any]:
        return self.ask("stats")["stats"]

    def stop(self) -> None:
        kill_process(self.proc)
        self._log.close()


def median(values: list[float]) -> float:
    return statistics.median(values)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "send":
        sys.exit(sender_main(sys.argv[2:]))
    print("usage: python tests/_faults.py send --url URL --run HEX8 [...]", file=sys.stderr)
    sys.exit(2)
