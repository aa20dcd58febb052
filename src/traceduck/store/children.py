"""What the local writer's two child processes share: length-prefixed frames over their pipes,
and how each one starts, serves and exits (see ``converter_process.py`` and ``writer_process.py``)."""

from __future__ import annotations

import gc
import logging
import os
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, NoReturn

HEADER = struct.Struct("!I")


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame; ``None`` at the end of input (or a frame cut short by it)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def write_frame(stream: BinaryIO, *parts: Any) -> None:
    """One frame made of ``parts`` (bytes or other buffers, written without being joined)."""
    sizes = [memoryview(part).nbytes for part in parts]
    stream.write(HEADER.pack(sum(sizes)))
    for part in parts:
        stream.write(part)
    stream.flush()


def serve(name: str, work: Callable[[], int]) -> int:
    """Run a child's ``work`` (its loop over frames) the way both children run it.

    pyarrow imports pandas on its first conversion (~0.4 s): done at start, not in the first
    batch. A batch is tens of thousands of fresh objects, none in a cycle: the cyclic garbage
    collector would walk them again and again while they are built (decoding a 20,000-span batch,
    making its rows and Arrow took ~270 ms with it, ~160 ms without), so ``work`` collects between
    batches itself, with what start-up imported frozen out of the collector's way.
    """
    from ..raw_spans import RawSpans  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING, format=f"traceduck {name}: %(message)s")
    RawSpans().to_arrow()
    gc.freeze()
    gc.disable()
    try:
        return work()
    finally:
        gc.enable()
        gc.unfreeze()  # frozen objects are never freed: extension modules report them as leaks


def exit_now(code: int) -> NoReturn:
    """End the child once its work is flushed. Nothing is left to clean up (the file detached,
    every frame written), and the interpreter's teardown of pyarrow, pandas and DuckDB (~150 ms a
    process, measured) is what the application's exit would wait for: it is skipped."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
