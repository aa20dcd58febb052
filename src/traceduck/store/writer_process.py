"""Write batches to DuckDB from a child process, so DuckDB never competes for the app's GIL.

DuckDB's Python client takes the GIL between the small tasks a query is executed in. In an
application whose threads keep the GIL busy, every one of those takes waits its turn: measured
here, a batch written during a 4-thread burst took the whole burst (9 s) instead of 0.4 s. So the
local writer hands each batch over a pipe to a child process that owns nothing but
the DuckDB work; the application process only takes each span's values.

The application sends each batch's span records as one JSON document (see ``_encode``); the child
turns them into rows, builds the Arrow tables and runs the SQL. The child is started with
``python -m traceduck.store.writer_process PATH`` (never ``multiprocessing``, which would re-import the
application's ``__main__``), reads length-prefixed frames from stdin and answers each with a JSON
frame on stdout. It exits when stdin closes, so it never outlives the application. The application
process keeps the store's writer lock; the child writes on its behalf.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO

import orjson

from ..errors import StoreBusyError, StoreLockedError
from ..governance import pii
from ..raw_spans import RawSpans
from ..serialize import clean_text
from .writer import WriteStats

logger = logging.getLogger("traceduck")

_HEADER = struct.Struct("!I")
#: A writer that kept the file attached for a backlog lets go after this long without a batch.
IDLE_RELEASE_SECONDS = 0.05


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


def _encode(raw: RawSpans, linger: bool) -> bytes:
    """The batch as ONE orjson call: C code that holds the GIL once, for a few milliseconds.

    Span records go as they are and become rows in the child. (Building rows or Arrow here instead
    costs the application's GIL: microseconds per span, or hundreds of GIL hand-offs.)
    """
    rows, records = raw.unconverted()
    payload = {"default_project": raw.default_project, "linger": linger, "resources": raw.resources,
               "rows": rows, "records": records, "pii_detectors": _detectors()}  # fmt: skip
    try:
        return orjson.dumps(payload)
    except TypeError:  # beyond orjson (an integer past 64 bits, a lone surrogate): rows made here,
        # where ``dumps`` falls back to the standard library; lone surrogates are replaced
        raw.rows = [tuple(clean_text(v) if isinstance(v, str) else v for v in row) for row in raw.rows]
        return orjson.dumps({**payload, "rows": raw.rows, "records": []})


_loaded_detectors: list[Any] = []


def _decode(frame: bytes) -> tuple[RawSpans, bool]:
    data = orjson.loads(frame)
    spec = data.get("pii_detectors")
    refs = spec["refs"] if spec else []
    if refs != _loaded_detectors:  # the application registered PII detectors: use them too
        pii.load_refs(refs, spec["sys_path"] if spec else [])
        _loaded_detectors[:] = refs
    raw = RawSpans(data["default_project"], data["resources"])
    raw.add_rows([tuple(row) for row in data["rows"]])
    raw.add_records(data["records"])
    return raw, bool(data["linger"])


class WriterProcess:
    """The application side: a store whose ``write`` is done by the child process."""

    def __init__(self, store: Any) -> None:
        self.store = store  # the application's DuckDBStore (it holds the writer lock)
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

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
        with self._lock:
            if self._pid != os.getpid():
                raise StoreLockedError(
                    f"the trace store {self.store.path} is written by the process this one was forked "
                    "from; a forked process needs its own store or the collector service"
                )
            child = self._child if self._child is not None and self._child.poll() is None else self._start()
            assert child.stdin is not None and child.stdout is not None
            try:
                _write_frame(child.stdin, _encode(raw, linger))
                answer = _read_frame(child.stdout)
            except (BrokenPipeError, OSError) as exc:
                self._child = None
                raise WriterProcessIOError(f"the writer process went away: {exc}") from None
            if answer is None:
                self._child = None
                raise WriterProcessIOError("the writer process went away")
        reply = json.loads(answer)
        if reply.get("ok"):
            return WriteStats(spans=reply["spans"], traces=reply["traces"], uncaptured_spans=reply.get("uncaptured", 0))
        message = f"{reply.get('type')}: {reply.get('error')}"
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
    # A batch is tens of thousands of fresh objects (decoded records, rows), none in a cycle: the
    # cyclic garbage collector would walk them again and again while they are built (decoding a
    # 20,000-span batch, making its rows and Arrow took ~270 ms with it, ~160 ms without). It
    # runs once after each batch instead, over what the batch left behind: under a millisecond,
    # since what start-up imported is frozen out of its way.
    gc.freeze()
    gc.disable()
    try:
        return _serve(store)
    finally:
        gc.enable()
        gc.unfreeze()  # frozen objects are never freed: extension modules report them as leaks


def _serve(store: Any) -> int:
    import duckdb  # noqa: PLC0415

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        if store.file.attached and not select.select([stdin], [], [], IDLE_RELEASE_SECONDS)[0]:
            store.release()  # no batch right behind the last one: let readers have the file
        frame = _read_frame(stdin)
        if frame is None:
            store.release()
            return 0
        try:
            raw, linger = _decode(frame)
            stats = store.write(raw, linger=linger)
            reply: dict[str, Any] = {"ok": True, "spans": stats.spans, "traces": stats.traces,
                                     "uncaptured": stats.uncaptured_spans}  # fmt: skip
        except Exception as exc:  # reported to the parent, which decides to retry or isolate
            transient = isinstance(exc, (StoreBusyError, duckdb.IOException, OSError))
            reply = {"ok": False, "type": type(exc).__name__, "error": str(exc), "transient": transient}
        frame = raw = None  # freed before the reply: the collection below sees only leftovers
        _write_frame(stdout, json.dumps(reply).encode())
        gc.collect()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
