"""Length-prefixed frames: how the application and its writer processes talk over pipes."""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

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
