"""Write batches to DuckDB from a child process, so DuckDB never competes for the app's GIL.

DuckDB's Python client takes the GIL between the small tasks a query is executed in. In an
application whose threads keep the GIL busy, every one of those takes waits its turn: measured
here, a batch written during a 4-thread burst took the whole burst (9 s) instead of 0.4 s. So the
local writer hands each batch over a pipe to a child process that owns nothing but
the DuckDB work; the application process only takes each span's values.

The application sends each batch's span records as one JSON document (see ``_encode``); the child
turns them into rows, builds the Arrow tables and runs the SQL. The two overlap: while DuckDB writes
one batch, a second thread of the child reads the next one from the pipe and turns it into an Arrow
table, so a backlog uses two cores (the application sends the next batch before the answer about
the one before; see ``WriterProcess.submit``). Batches are stored in the order they were sent: once
one fails, those sent behind it are answered "not attempted" until the application sends again.

The child is started with ``python -m traceduck.store.writer_process PATH`` (never
``multiprocessing``, which would re-import the application's ``__main__``), reads length-prefixed
frames from stdin and answers each with a JSON frame on stdout. It exits when stdin closes, so it never outlives the application. The application
process keeps the store's writer lock; the child writes on its behalf.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from typing import Any, BinaryIO

import orjson

from ..errors import BatchNotAttemptedError, StoreBusyError, StoreLockedError
from ..governance import pii
from ..raw_spans import RawSpans
from ..serialize import clean_text
from .writer import WriteStats

logger = logging.getLogger("traceduck")

_HEADER = struct.Struct("!I")
#: A writer that kept the file attached for a backlog lets go after this long without a batch.
IDLE_RELEASE_SECONDS = 0.05
#: The child's GIL switch interval. DuckDB's client takes the GIL back between the tasks of a
#: query; behind the thread building the next batch it would wait up to the switch interval
#: (5 ms by default) each time, and the overlap bought nothing (measured: a query ran 3x slower
#: beside a busy Python thread at 5 ms, unslowed at 50 us).
SWITCH_INTERVAL_SECONDS = 0.00005
#: With batches waiting, the child collects garbage after this many (see ``_serve``).
COLLECT_EVERY_BATCHES = 10


class WriterProcessError(RuntimeError):
    """The writer process refused a batch as data (not a busy or failing file)."""


class WriterProcessIOError(OSError):
    """The writer process found the file busy or failing, or the process itself went away."""


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def _write_frame(stream: BinaryIO, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _detectors() -> dict[str, Any] | None:
    """The application's custom PII detectors, as the child imports them (None: there are none)."""
    refs = pii.portable_refs()
    if refs is None:
        raise WriterProcessError(
            f"custom PII detector(s) {', '.join(pii.non_portable())} cannot be imported by the writer "
            "process: define them at module level of an importable module, or configure(writer_process=False)"
        )
    return {"refs": refs, "sys_path": sys.path} if refs else None


def _encode(raw: RawSpans, linger: bool, epoch: int = 0) -> bytes:
    """The batch as ONE orjson call: C code that holds the GIL once, for a few milliseconds.

    Span records go as they are and become rows in the child. (Building rows or Arrow here instead
    costs the application's GIL: microseconds per span, or hundreds of GIL hand-offs.)
    """
    rows, records = raw.unconverted()
    payload = {"default_project": raw.default_project, "linger": linger, "epoch": epoch,
               "resources": raw.resources, "rows": rows, "records": records, "pii_detectors": _detectors()}  # fmt: skip
    try:
        return orjson.dumps(payload)
    except TypeError:  # beyond orjson (an integer past 64 bits, a lone surrogate): rows made here,
        # where ``dumps`` falls back to the standard library; lone surrogates are replaced
        raw.rows = [tuple(clean_text(v) if isinstance(v, str) else v for v in row) for row in raw.rows]
        return orjson.dumps({**payload, "rows": raw.rows, "records": []})


_loaded_detectors: list[Any] = []


def _decode(frame: bytes) -> tuple[RawSpans, bool, int]:
    data = orjson.loads(frame)
    spec = data.get("pii_detectors")
    refs = spec["refs"] if spec else []
    if refs != _loaded_detectors:  # the application registered PII detectors: use them too
        pii.load_refs(refs, spec["sys_path"] if spec else [])
        _loaded_detectors[:] = refs
    raw = RawSpans(data["default_project"], data["resources"])
    raw.add_rows([tuple(row) for row in data["rows"]])
    raw.add_records(data["records"])
    return raw, bool(data["linger"]), int(data.get("epoch", 0))


class Pending:
    """A batch sent to the child: ``result()`` waits for its answer (the child answers in order)."""

    __slots__ = ("_writer", "reply", "error")

    def __init__(self, writer: WriterProcess) -> None:
        self._writer = writer
        self.reply: dict[str, Any] | None = None
        #: Why no answer will come (the child went away), if so.
        self.error: str | None = None

    def result(self) -> WriteStats:
        """The batch's ``WriteStats``; raises what writing it raised (see ``WriterProcess.write``)."""
        return self._writer._result(self)


class WriterProcess:
    """The application side: a store whose ``write`` is done by the child process."""

    def __init__(self, store: Any) -> None:
        self.store = store  # the application's DuckDBStore (it holds the writer lock)
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: Sent batches whose answer is not read yet, oldest first (the child answers in order).
        self._sent: deque[Pending] = deque()
        #: Raised after each failure the application learns of: the child does not attempt a
        #: batch of an epoch that already failed (it was sent before the failure was known).
        self._epoch = 0

    def start(self) -> None:
        """Start the child now (it imports DuckDB while the application gets going)."""
        with self._lock:
            if self._child is None:
                self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        child = subprocess.Popen(
            [sys.executable, "-m", "traceduck.store.writer_process", self.store.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's warnings go where the application's stderr goes
            env=env,
            close_fds=True,
        )
        self._child = child
        return child

    def write(self, raw: RawSpans, linger: bool = False) -> WriteStats:
        """Write ``raw`` and wait for it: raises ``StoreBusyError`` or ``WriterProcessIOError``
        (worth retrying), ``WriterProcessError`` (the batch refused as data) or
        ``BatchNotAttemptedError`` (a batch sent before this one failed)."""
        return self.submit(raw, linger).result()

    def submit(self, raw: RawSpans, linger: bool = False) -> Pending:
        """Send ``raw`` to the child and return at once; the child takes it as soon as it is done
        with the batches sent before."""
        with self._lock:
            if self._pid != os.getpid():
                raise StoreLockedError(
                    f"the trace store {self.store.path} is written by the process this one was forked "
                    "from; a forked process needs its own store or the collector service"
                )
            child = self._child
            if child is None or child.poll() is not None:
                self._read_all()  # what a child that went away answered before it did
                child = self._start()
            assert child.stdin is not None
            pending = Pending(self)
            try:
                _write_frame(child.stdin, _encode(raw, linger, self._epoch))
            except (BrokenPipeError, OSError) as exc:
                self._read_all()
                raise WriterProcessIOError(f"the writer process went away: {exc}") from None
            self._sent.append(pending)
        return pending

    def _read_all(self) -> None:
        while self._sent:
            self._read_one()
        self._child = None

    def _read_one(self) -> None:
        """Read the answer of the oldest sent batch; if the child went away, every sent batch
        without an answer fails (the application sends them again to a new child)."""
        child = self._child
        answer = None
        if child is not None and child.stdout is not None:
            try:
                answer = _read_frame(child.stdout)
            except OSError:
                answer = None
        if answer is None:
            while self._sent:
                self._sent.popleft().error = "the writer process went away"
            self._child = None
            return
        pending = self._sent.popleft()
        pending.reply = json.loads(answer)
        if not pending.reply.get("ok"):
            self._epoch += 1

    def _result(self, pending: Pending) -> WriteStats:
        with self._lock:
            while pending.reply is None and pending.error is None:
                self._read_one()
        if pending.error is not None:
            raise WriterProcessIOError(pending.error)
        reply = pending.reply
        assert reply is not None
        if reply.get("ok"):
            return WriteStats(spans=reply["spans"], traces=reply["traces"], uncaptured_spans=reply.get("uncaptured", 0))
        message = f"{reply.get('type')}: {reply.get('error')}"
        if reply.get("not_attempted"):
            raise BatchNotAttemptedError(message)
        if reply.get("transient"):
            if reply.get("type") == "StoreBusyError":
                raise StoreBusyError(message)
            raise WriterProcessIOError(message)
        raise WriterProcessError(message)

    def release(self) -> None:
        pass  # the child detaches by itself IDLE_RELEASE_SECONDS after its last batch

    def close(self) -> None:
        with self._lock:
            child, self._child = self._child, None
            self._sent.clear()
        if child is not None and self._pid == os.getpid():
            try:
                assert child.stdin is not None
                child.stdin.close()
                child.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                child.kill()


def main(argv: list[str]) -> int:
    """The child: write every batch read from stdin, answer on stdout, exit at end of input."""
    from .duckdb_store import DuckDBStore  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING, format="traceduck writer: %(message)s")
    store = DuckDBStore(argv[0])
    store.file.delegated_writer = True  # the parent holds the writer lock; write on its behalf
    # pyarrow imports pandas on its first conversion (~0.4 s): now, not in the first batch.
    RawSpans().to_arrow()
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    # A batch is tens of thousands of fresh objects (decoded records, rows), none in a cycle: the
    # cyclic garbage collector would walk them again and again while they are built (decoding a
    # 20,000-span batch, making its rows and Arrow took ~270 ms with it, ~160 ms without). It
    # runs between batches instead (see ``_serve``), with what start-up imported frozen out of
    # its way.
    gc.freeze()
    gc.disable()
    try:
        return _serve(store)
    finally:
        gc.enable()
        gc.unfreeze()  # frozen objects are never freed: extension modules report them as leaks


#: What the reading thread hands the writing one: a batch ready to write, or why there is none.
_Batch = tuple[RawSpans | None, bool, int, BaseException | None]


def _read_batches(stdin: BinaryIO, batches: queue.Queue[_Batch | None]) -> None:
    """Read each frame, decode it and build its Arrow table; ``None`` at the end of input."""
    epoch = 0
    while True:
        frame = _read_frame(stdin)
        if frame is None:
            batches.put(None)
            return
        try:
            raw, linger, epoch = _decode(frame)
        except Exception as exc:  # answered in its turn, as the batch's failure
            batches.put((None, False, epoch, exc))
            continue
        frame = None
        try:
            raw.to_arrow()  # built here, while the batch before is written; kept by ``raw``
        except Exception:  # noqa: S110  (the writer builds it again and reports what fails)
            pass
        batches.put((raw, linger, epoch, None))


def _serve(store: Any) -> int:
    import duckdb  # noqa: PLC0415

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # One batch ready behind the one being written: enough to keep both cores busy.
    batches: queue.Queue[_Batch | None] = queue.Queue(maxsize=1)
    threading.Thread(target=_read_batches, args=(stdin, batches), name="traceduck-reader", daemon=True).start()
    failed_epoch = -1
    written = 0
    while True:
        try:
            item = batches.get(timeout=IDLE_RELEASE_SECONDS) if store.file.attached else batches.get()
        except queue.Empty:
            store.release()  # no batch right behind the last one: let readers have the file
            continue
        if item is None:
            store.release()
            return 0
        raw, linger, epoch, error = item
        item = None
        reply: dict[str, Any]
        if error is None and epoch <= failed_epoch:
            reply = {"ok": False, "type": "BatchNotAttemptedError", "not_attempted": True,
                     "error": "a batch sent before this one failed; send it again"}  # fmt: skip
        else:
            try:
                if error is not None:
                    raise error
                assert raw is not None
                stats = store.write(raw, linger=linger)
                reply = {"ok": True, "spans": stats.spans, "traces": stats.traces,
                         "uncaptured": stats.uncaptured_spans}  # fmt: skip
            except Exception as exc:  # reported to the parent, which decides to retry or isolate
                failed_epoch = max(failed_epoch, epoch)
                transient = isinstance(exc, (StoreBusyError, duckdb.IOException, OSError))
                reply = {"ok": False, "type": type(exc).__name__, "error": str(exc), "transient": transient}
        raw = error = None  # freed before the reply: a collection sees only leftovers
        _write_frame(stdout, json.dumps(reply).encode())
        written += 1
        # A collection walks every object alive, the next batch's too while it is being built
        # (13-30 ms a 20,000-span batch, freeing nothing: batches make no cycles). So it runs
        # when no batch waits (the time is free) and, in a backlog, after every tenth batch.
        if batches.empty() or written % COLLECT_EVERY_BATCHES == 0:
            gc.collect()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
