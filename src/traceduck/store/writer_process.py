"""Write batches to DuckDB from child processes, so DuckDB never competes for the app's GIL.

DuckDB's Python client takes the GIL between the small tasks a query is executed in. In an
application whose threads keep the GIL busy, every one of those takes waits its turn: measured
here, a batch written during a 4-thread burst took the whole burst (9 s) instead of 0.4 s. So the
local writer hands each batch to child processes; the application process only takes each
span's values.

Two children in a row, joined by a pipe: the *converter* (``converter_process.py``) reads the
application's batches (span records as one JSON document, see :func:`encode`), makes their rows,
Arrow table and index and passes them on as Arrow IPC; the *writer* (this module's ``main``)
runs the SQL and answers the application, batch by batch, in order. Converting is Python, so
in the writer's process it would share DuckDB's GIL; in a process of its own the next batch is
converted while DuckDB writes one, on the second core. The application sends the next batch
before the answer about the one before (see ``WriterProcess.submit``). Batches are stored in the
order they were sent: once one fails, those sent behind it are answered "not attempted" until
the application sends again.

The children are started with ``python -m`` (never ``multiprocessing``, which would re-import
the application's ``__main__``) and exit when their input closes, so they never outlive the
application. If either goes away, the application's batches in flight fail (to be sent again)
and both are started afresh. The application process keeps the store's writer lock; the writer
child writes on its behalf.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import weakref
from collections import deque
from typing import Any, BinaryIO

import orjson

from ..errors import BatchNotAttemptedError, StoreBusyError, StoreLockedError
from ..governance import pii
from ..raw_spans import RawSpans
from ..serialize import clean_text
from .children import exit_now, read_frame, serve, write_frame
from .converter_process import ConvertedBatch, read_converted
from .writer import WriteStats

logger = logging.getLogger("traceduck")

#: A writer that kept the file attached for a backlog lets go after this long without a batch.
IDLE_RELEASE_SECONDS = 0.05
#: With batches waiting, the writer collects garbage after this many (see ``_serve``).
COLLECT_EVERY_BATCHES = 10


class WriterProcessError(RuntimeError):
    """The writer process refused a batch as data (not a busy or failing file)."""


class WriterProcessIOError(OSError):
    """The writer process found the file busy or failing, or the process itself went away."""


def _detectors() -> dict[str, Any] | None:
    """The application's custom PII detectors, as the child imports them (None: there are none)."""
    refs = pii.portable_refs()
    if refs is None:
        raise WriterProcessError(
            f"custom PII detector(s) {', '.join(pii.non_portable())} cannot be imported by the writer "
            "process: define them at module level of an importable module, or configure(writer_process=False)"
        )
    return {"refs": refs, "sys_path": sys.path} if refs else None


def encode(raw: RawSpans, linger: bool, epoch: int = 0) -> bytes:
    """The batch as ONE orjson call: C code that holds the GIL once, for a few milliseconds.

    Span records go as they are and become rows in the converter. (Building rows or Arrow here instead
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


def _load_detectors(spec: dict[str, Any] | None) -> None:
    """Use the PII detectors the application registered (once, and again when they change)."""
    refs = spec["refs"] if spec else []
    if refs != _loaded_detectors:
        pii.load_refs(refs, spec["sys_path"] if spec else [])
        _loaded_detectors[:] = refs


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
    """The application side: a store whose ``write`` is done by the child processes."""

    def __init__(self, store: Any) -> None:
        self.store = store  # the application's DuckDBStore (it holds the writer lock)
        #: The DuckDB writer (it answers each batch) and the converter in front of it.
        self._child: subprocess.Popen[bytes] | None = None
        self._converter: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: Sent batches whose answer is not read yet, oldest first (the writer answers in order).
        self._sent: deque[Pending] = deque()
        #: Raised after each failure the application learns of: the writer does not attempt a
        #: batch of an epoch that already failed (it was sent before the failure was known).
        self._epoch = 0
        _writers.add(self)

    def start(self) -> None:
        """Start the children now (they import DuckDB and pyarrow while the application gets going)."""
        with self._lock:
            if self._child is None:
                self._start()

    def _start(self) -> None:
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)

        def child(module: str, stdin: Any) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", f"traceduck.store.{module}", self.store.path],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=None,  # the children's warnings go where the application's stderr goes
                env=env,
                close_fds=True,  # each end of each pipe only where it is used: closing one ends the chain
            )

        converter = child("converter_process", subprocess.PIPE)
        try:
            self._child = child("writer_process", converter.stdout)
        except BaseException:
            _stop(converter)
            raise
        finally:
            assert converter.stdout is not None
            converter.stdout.close()  # the converter's output is the writer's input, not ours
        self._converter = converter

    def _alive(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self._child, self._converter))

    def write(self, raw: RawSpans, linger: bool = False) -> WriteStats:
        """Write ``raw`` and wait for it: raises ``StoreBusyError`` or ``WriterProcessIOError``
        (worth retrying), ``WriterProcessError`` (the batch refused as data) or
        ``BatchNotAttemptedError`` (a batch sent before this one failed)."""
        return self.submit(raw, linger).result()

    def submit(self, raw: RawSpans, linger: bool = False) -> Pending:
        """Send ``raw`` to the children and return at once; the writer takes it as soon as it is
        done with the batches sent before."""
        with self._lock:
            if self._pid != os.getpid():
                raise StoreLockedError(
                    f"the trace store {self.store.path} is written by the process this one was forked "
                    "from; a forked process needs its own store or the collector service"
                )
            if not self._alive():
                self._read_all()  # what the writer answered before a child went away
                self._start()
            converter = self._converter
            assert converter is not None and converter.stdin is not None
            pending = Pending(self)
            try:
                write_frame(converter.stdin, encode(raw, linger, self._epoch))
            except (BrokenPipeError, OSError) as exc:
                self._read_all()
                raise WriterProcessIOError(f"the writer process went away: {exc}") from None
            self._sent.append(pending)
        return pending

    def _read_all(self) -> None:
        """Read every answer still to come, then stop the children (both, whichever went away)."""
        while self._sent:
            self._read_one()
        self._stop_children()

    def _stop_children(self) -> None:
        converter, child = self._converter, self._child
        self._converter = self._child = None
        for process in (converter, child):
            if process is not None:
                _stop(process)

    def _read_one(self) -> None:
        """Read the answer of the oldest sent batch; if a child went away, every sent batch
        without an answer fails (the application sends them again to new children)."""
        child = self._child
        answer = None
        if child is not None and child.stdout is not None:
            try:
                answer = read_frame(child.stdout)
            except OSError:
                answer = None
        if answer is None:
            while self._sent:
                self._sent.popleft().error = "the writer process went away"
            self._stop_children()
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
        pass  # the writer detaches by itself IDLE_RELEASE_SECONDS after its last batch

    def close(self) -> None:
        """Close the converter's input: it converts what it has, the writer writes it, both exit."""
        with self._lock:
            converter, child = self._converter, self._child
            self._converter = self._child = None
            self._sent.clear()
        if self._pid != os.getpid():
            return
        if converter is not None and converter.stdin is not None:
            try:
                converter.stdin.close()
            except OSError:
                pass
        for process in (converter, child):
            if process is not None:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                if process.stdout is not None:
                    process.stdout.close()


_writers: weakref.WeakSet[WriterProcess] = weakref.WeakSet()


def _let_go_after_fork() -> None:
    """In a process forked from one with writer children: let go of the inherited ends of the
    pipes to them (pointed at /dev/null, so nothing of the parent's is closed or flushed twice).
    Held by a long-lived fork, the converter's input stayed open after the parent closed it: the
    parent's shutdown waited 10 s, then killed both children before the file was detached. The
    fork itself never writes through them (``submit`` refuses)."""
    for writer in list(_writers):
        writer._lock = threading.Lock()  # another thread may have held it at the fork
        writer._sent.clear()
        for process, stream in ((writer._converter, "stdin"), (writer._child, "stdout")):
            handle = getattr(process, stream, None) if process is not None else None
            if handle is None:
                continue
            try:
                null = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(null, handle.fileno())
                finally:
                    os.close(null)
            except (OSError, ValueError):  # already closed
                pass


os.register_at_fork(after_in_child=_let_go_after_fork)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End a child now (its input and output closed, the process reaped)."""
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    if process.poll() is None:
        process.kill()
    process.wait()


def main(argv: list[str]) -> int:
    """The writer: write every batch the converter passes on, answer on stdout, exit at end of input."""
    from .duckdb_store import DuckDBStore  # noqa: PLC0415

    store = DuckDBStore(argv[0])
    store.file.delegated_writer = True  # the parent holds the writer lock; write on its behalf
    return serve("writer", lambda: _serve(store))


def _read_batches(stdin: BinaryIO, batches: queue.Queue[ConvertedBatch | None]) -> None:
    """Read each converted batch (while the one before is written); ``None`` at the end of input."""
    epoch = 0
    while True:
        frame = read_frame(stdin)
        if frame is None:
            batches.put(None)
            return
        try:
            batch = read_converted(frame)
        except Exception as exc:  # answered in its turn, as the batch's failure
            batch = ConvertedBatch(None, False, epoch, {"type": type(exc).__name__, "message": str(exc)}, None)
        epoch = batch.epoch
        frame = None
        batches.put(batch)


def _serve(store: Any) -> int:
    import duckdb  # noqa: PLC0415

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # One batch ready behind the one being written: the converter goes on with the next.
    batches: queue.Queue[ConvertedBatch | None] = queue.Queue(maxsize=1)
    threading.Thread(target=_read_batches, args=(stdin, batches), name="traceduck-reader", daemon=True).start()
    failed_epoch = -1
    written = 0
    while True:
        try:
            batch = batches.get(timeout=IDLE_RELEASE_SECONDS) if store.file.attached else batches.get()
        except queue.Empty:
            store.release()  # no batch right behind the last one: let readers have the file
            continue
        if batch is None:
            store.release()
            return 0
        reply: dict[str, Any]
        if batch.error is None and batch.epoch <= failed_epoch:
            reply = {"ok": False, "type": "BatchNotAttemptedError", "not_attempted": True,
                     "error": "a batch sent before this one failed; send it again"}  # fmt: skip
        elif batch.error is not None:
            failed_epoch = max(failed_epoch, batch.epoch)
            reply = {"ok": False, "type": batch.error["type"], "error": batch.error["message"], "transient": False}
        else:
            try:
                _load_detectors(batch.pii_detectors)
                assert batch.raw is not None
                stats = store.write(batch.raw, linger=batch.linger)
                reply = {"ok": True, "spans": stats.spans, "traces": stats.traces,
                         "uncaptured": stats.uncaptured_spans}  # fmt: skip
            except Exception as exc:  # reported to the parent, which decides to retry or isolate
                failed_epoch = max(failed_epoch, batch.epoch)
                transient = isinstance(exc, (StoreBusyError, duckdb.IOException, OSError))
                reply = {"ok": False, "type": type(exc).__name__, "error": str(exc), "transient": transient}
        batch = None  # freed before the reply: a collection sees only leftovers
        write_frame(stdout, json.dumps(reply).encode())
        written += 1
        # A collection walks every object alive, the next batch's too when its rows are made
        # (a capture policy), so it runs when no batch waits (the time is free) and, in a
        # backlog, after every tenth batch.
        if batches.empty() or written % COLLECT_EVERY_BATCHES == 0:
            gc.collect()


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
