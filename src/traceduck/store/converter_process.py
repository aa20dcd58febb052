"""Turn the application's batches into Arrow tables, in a process of its own.

The local writer is two child processes in a row (see ``writer_process.py``): this one reads
the span records the application sends, makes their rows, the batch's Arrow table and its
:class:`~traceduck.raw_spans.BatchIndex`, and passes them to the DuckDB writer as Arrow IPC, which
the writer reads without making a Python object per span. Converting is Python (~8 µs a span);
DuckDB's Python client takes the GIL between the tasks of a query, so a converting thread inside
the DuckDB process slowed each write by 40-80% (measured: a 20,000-span batch written in 12-13 µs
a span alone or beside a converter in another process, 18-24 µs beside one in a thread). In a
process of its own, the next batch is converted while DuckDB writes, at no cost to the write.

In (stdin): the application's frames (``writer_process.encode``). Out (stdout), per frame, in
order: the meta's length (4 bytes), the meta as JSON (epoch, linger, default project, resources,
index, PII detectors; or the error that made the batch fail to convert, which the writer
answers in its turn), then the table as an Arrow IPC stream. Exits at the end of its input, or
when the writer is gone.

Started as ``python -m traceduck.store.converter_process PATH`` (the store's path only names
the process to whoever lists processes).
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
import pyarrow as pa

from ..raw_spans import BatchIndex, RawSpans
from ..serialize import clean_text
from .children import HEADER, exit_now, read_frame, serve, write_frame


@dataclass(slots=True)
class ConvertedBatch:
    """A batch as the writer reads it: ready to write, or why it could not be converted."""

    raw: RawSpans | None
    linger: bool
    epoch: int
    #: ``{"type": ..., "message": ...}`` of what failed to convert the batch (then no ``raw``).
    error: dict[str, str] | None
    #: How the writer imports the application's custom PII detectors (None: there are none).
    pii_detectors: dict[str, Any] | None


def decode(frame: bytes) -> tuple[RawSpans, dict[str, Any]]:
    """The application's batch (rows and span records) and its other values."""
    data = orjson.loads(frame)
    raw = RawSpans(data["default_project"], data["resources"])
    raw.add_rows([tuple(row) for row in data["rows"]])
    raw.add_records(data["records"])
    return raw, data


def _ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return sink.getvalue()


def convert(frame: bytes, epoch: int) -> tuple[list[Any], int]:
    """The parts of the frame to send on, and the batch's epoch (``epoch``, the one before, if
    the frame cannot be read)."""
    meta: dict[str, Any] = {"epoch": epoch, "linger": False}
    try:
        raw, data = decode(frame)
        meta = {"epoch": int(data.get("epoch", 0)), "linger": bool(data["linger"]),
                "default_project": raw.default_project, "resources": raw.resources,
                "pii_detectors": data.get("pii_detectors")}  # fmt: skip
        table = raw.to_arrow()
        meta["index"] = raw.index.to_json()
        encoded = orjson.dumps(meta)
        body = _ipc(table)
    except Exception as exc:  # answered by the writer in its turn, as the batch's failure
        error = {"type": type(exc).__name__, "message": clean_text(str(exc))}
        encoded = orjson.dumps({"epoch": meta["epoch"], "linger": False, "error": error})
        return [HEADER.pack(len(encoded)), encoded], meta["epoch"]
    return [HEADER.pack(len(encoded)), encoded, body], meta["epoch"]


def read_converted(frame: bytes) -> ConvertedBatch:
    """A frame of :func:`convert` as the writer uses it (the table read in place, not copied)."""
    (size,) = HEADER.unpack_from(frame)
    meta = orjson.loads(frame[HEADER.size : HEADER.size + size])
    error = meta.get("error")
    raw = None
    if error is None:
        body = pa.py_buffer(frame).slice(HEADER.size + size)
        table = pa.ipc.open_stream(body).read_all()
        index = BatchIndex.from_json(meta["index"])
        raw = RawSpans.from_arrow(table, index, meta["default_project"], meta["resources"])
    return ConvertedBatch(raw, bool(meta["linger"]), int(meta["epoch"]), error, meta.get("pii_detectors"))


def main(argv: list[str]) -> int:
    """The converter: convert every frame read from stdin, in order, to stdout."""
    return serve("converter", lambda: _serve(sys.stdin.buffer, sys.stdout.buffer))


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    epoch = 0
    while True:
        frame = read_frame(stdin)
        if frame is None:
            return 0
        parts, epoch = convert(frame, epoch)
        frame = None
        try:
            write_frame(stdout, *parts)
        except (BrokenPipeError, OSError):  # the writer is gone; the application starts both again
            return 0
        parts = []
        # Between batches, with the one just sent freed, a collection finds next to nothing to
        # walk (what start-up imported is frozen): ~1 ms, instead of 13-30 ms inside a batch.
        gc.collect()


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
