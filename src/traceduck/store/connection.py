"""Sharing one DuckDB file between an application that writes traces and readers elsewhere.

DuckDB lets one process hold a file for writing and then no other process may open it at all.
So the process that writes traces (the *writer*) opens the file only while it writes a batch and
closes it in between; readers in other processes open it read-only for one query and retry for a
while when they find it locked. Only one process may be the writer of a file: that role is taken
with an advisory lock on ``<file>.writer.lock`` for the life of the process, so a second
application pointed at the same file gets a clear error instead of a lock fight.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from ..errors import StoreBusyError, StoreLockedError
from . import schema

_LOCK_CONFLICT = re.compile(r"could not set lock|conflicting lock", re.IGNORECASE)


_files: weakref.WeakSet[DuckDBFile] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The writer lock belongs to the parent. Forget it without unlocking (flock locks are shared
    # with the parent through the forked descriptor); a child that wants to write must ask anew.
    for file in list(_files):
        file.forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and bool(_LOCK_CONFLICT.search(str(exc)))


class DuckDBFile:
    """One DuckDB file as this process uses it: the writer role, connections, retries."""

    def __init__(self, path: str, lock_timeout: float = 10.0, hold_open: bool = False) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        #: Keep the file open between writes (faster; other processes cannot read meanwhile).
        self.hold_open = hold_open
        self._lock = threading.RLock()
        self._writer_fd: int | None = None
        self._writer_refs = 0
        self._held: duckdb.DuckDBPyConnection | None = None
        self.migrated = False
        _files.add(self)

    def forget_after_fork(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)
        self._writer_fd = None
        self._writer_refs = 0
        self._held = None
        self._lock = threading.RLock()

    # -- the writer role -------------------------------------------------------------------
    @property
    def lock_path(self) -> str:
        return self.path + ".writer.lock"

    @property
    def is_writer(self) -> bool:
        return self._writer_fd is not None

    def acquire_writer(self) -> None:
        """Become the one process that writes traces to this file (re-entrant)."""
        with self._lock:
            if self._writer_fd is not None:
                self._writer_refs += 1
                return
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise StoreLockedError(
                    f"the trace store {self.path} is already written by process {holder}. A DuckDB "
                    "file has one writer: run `traceduck collector --store "
                    f"{self.path}` once and point every process at it with "
                    "configure(store='http://127.0.0.1:4318'), or give this process its own file "
                    "(configure(store=...) or TRACEDUCK_STORE)."
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._writer_fd = fd
            self._writer_refs = 1
        try:
            with self.connect(write=True) as con:
                schema.migrate(con)
            self.migrated = True
        except BaseException:
            self.release_writer()
            raise

    def release_writer(self) -> None:
        with self._lock:
            if self._writer_fd is None:
                return
            self._writer_refs -= 1
            if self._writer_refs > 0:
                return
            if self._held is not None:
                self._held.close()
                self._held = None
            fd, self._writer_fd = self._writer_fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    # -- connections -----------------------------------------------------------------------
    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.002
        while True:
            try:
                con = duckdb.connect(self.path, read_only=read_only)
            except duckdb.IOException as exc:
                if read_only and "does not exist" in str(exc):
                    raise FileNotFoundError(
                        f"no trace store at {self.path}: nothing has been written there yet"
                    ) from None
                if not is_lock_conflict(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise StoreBusyError(
                        f"the trace store {self.path} stayed locked by another process for "
                        f"{self.lock_timeout:.0f}s ({exc}). A long query in another process holds "
                        "it; retry, raise lock_timeout, or use the collector service."
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            # The progress bar takes the GIL while a query runs, stalling the application.
            con.execute("SET enable_progress_bar = false")
            return con

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one unit of work.

        In the writer process every connection is read-write (DuckDB refuses two differently
        configured opens of one file in one process) and writes are serialised by a thread lock.
        Normally the file is opened for the unit of work and closed after, releasing it to other
        processes; with ``hold_open`` (the collector) it stays open and each unit of work gets
        its own cursor, so searches run concurrently with writes.
        """
        if self.hold_open and self.is_writer:
            with self._lock:
                if self._held is None:
                    self._held = self._open(read_only=False)
                    if not self.migrated:
                        schema.migrate(self._held)
                        self.migrated = True
                held = self._held
            cursor = held.cursor()
            cursor.execute("SET enable_progress_bar = false")
            try:
                if write:
                    with self._lock:
                        yield cursor
                else:
                    yield cursor
            finally:
                cursor.close()
        elif self.is_writer or write:
            with self._lock:
                con = self._open(read_only=False)
                try:
                    if not self.migrated:
                        schema.migrate(con)
                        self.migrated = True
                    yield con
                finally:
                    con.close()
        else:
            con = self._open(read_only=True)
            try:
                schema.check_readable(con)
                yield con
            finally:
                con.close()
