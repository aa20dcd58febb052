"""Sharing one DuckDB file between an application that writes traces and readers elsewhere.

DuckDB lets one process hold a file for writing and then no other process may open it at all.
So the process that writes traces (the *writer*) opens the file only while it writes a batch and
closes it in between; readers in other processes open it read-only for one query and retry for a
while when they find it locked. Only one process may be the writer of a file: that role is taken
with an advisory lock on ``<file>.writer.lock`` for the life of the process, so a second
application pointed at the same file gets a clear error instead of a lock fight.

While a process has the file attached it also holds ``<file>.access.lock`` (``flock``: shared to
read, exclusive to write). DuckDB's own lock on the file is a POSIX record lock, which belongs to
the process and is dropped when the process closes ANY descriptor of the file: a DETACH that DuckDB
defers (a cursor still runs a query on the file) followed by a new ATTACH leaves the new attachment
unlocked once the old one closes, and a writer elsewhere then checkpoints under a reader (which
fails with "Could not read enough bytes"). A ``flock`` belongs to the descriptor traceduck opened
and holds until traceduck lets go of it.
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
from typing import Any

import duckdb

from ..errors import StoreBusyError, StoreLockedError
from . import schema

_LOCK_CONFLICT = re.compile(r"could not set lock|conflicting lock", re.IGNORECASE)


_files: weakref.WeakSet[DuckDBFile] = weakref.WeakSet()
#: DuckDB instances inherited from the parent by a forked child. They must never be destroyed
#: there (their threads did not survive the fork), so they are kept referenced forever.
_abandoned: list[object] = []


def _after_fork_in_child() -> None:
    # The writer lock belongs to the parent. Forget it without unlocking (flock locks are shared
    # with the parent through the forked descriptor); a child that wants to write must ask anew.
    for file in list(_files):
        file.forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


#: How long a reader waits for a writer that signalled it wants the file.
WRITER_PRIORITY_SECONDS = 0.5
#: Longest time a busy writer keeps the file attached between batches before letting readers in.
MAX_LINGER_SECONDS = 1.0
#: How often a reader re-checks that it can read the store's schema version.
SCHEMA_CHECK_SECONDS = 10.0


def _touch(path: str) -> bool:
    try:
        with open(path, "a"):
            os.utime(path, None)
        return True
    except OSError:
        return False


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``: another value means another file."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def is_invalidated(exc: BaseException) -> bool:
    """DuckDB gave up on the attached file (a checkpoint failed, e.g. on a full disk): it must be
    detached and attached again before use; what was committed is safe in the file and its WAL."""
    text = str(exc)
    return isinstance(exc, duckdb.Error) and any(
        needle in text for needle in ("invalidated", "Detach and reattach", "Reopen the database")
    )


def is_durable_commit(exc: BaseException) -> bool:
    """The transaction committed durably and only the automatic checkpoint after it failed."""
    return isinstance(exc, duckdb.Error) and "COMMIT succeeded and is durable" in str(exc)


def is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and bool(_LOCK_CONFLICT.search(str(exc)))


def is_still_closing(exc: BaseException) -> bool:
    """This process's previous attachment of the file is not closed yet: DuckDB defers a DETACH
    while a cursor still runs a query on the file, and refuses to attach it read-write meanwhile."""
    return isinstance(exc, duckdb.Error) and "Unique file handle conflict" in str(exc)


def not_unicode(exc: BaseException) -> ValueError | None:
    """The caller's string could not be bound as a parameter because it is not Unicode text (a
    lone surrogate, as a JSON ``\\ud800`` escape makes): bad input, so a ValueError (a 400 in the
    collector), not a database failure. None for any other error."""
    if isinstance(exc, duckdb.InvalidInputException) and "cannot encode str as UTF-8" in str(exc):
        return ValueError(
            "a string holds a lone surrogate (such as \\ud800), which is not Unicode text: "
            "it cannot be stored or searched"
        )
    return None


ALIAS = "td_store"


class _AccessConflict(Exception):
    """Another process, or another store object of this one, holds the access lock the other way
    (retried like DuckDB's lock conflict)."""


class DuckDBFile:
    """One DuckDB file as this process uses it: the writer role, connections, retries.

    Creating a DuckDB instance costs ~25 ms whatever the file, attaching a file to a live
    instance ~1.5 ms. So each process keeps one in-memory instance and, for every unit of work,
    ATTACHes the store file, runs the work on a cursor that ``USE``s it, and DETACHes it, which
    checkpoints and releases the file lock for other processes.
    """

    def __init__(self, path: str, lock_timeout: float = 10.0, hold_open: bool = False) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        #: Keep the file attached between units of work (the collector: faster, and searches run
        #: concurrently with writes; other processes cannot open the file meanwhile).
        self.hold_open = hold_open
        self._lock = threading.RLock()
        self._writer_fd: int | None = None
        #: Our descriptor of ``access_lock_path`` (None: not opened yet, or it cannot be).
        self._access_fd: int | None = None
        self._writer_refs = 0
        self._instance: duckdb.DuckDBPyConnection | None = None
        self._attached: bool | None = None  # None: not attached; else True if read-only
        self._threads_set = False
        #: In the writer process: write on behalf of the parent, which holds the writer lock.
        self.delegated_writer = False
        #: In the application: a writer process writes the batches; this process only reads
        #: (and makes the occasional small write, such as feedback).
        self.writes_elsewhere = False
        self._attached_at = 0.0
        #: DuckDB invalidated the attachment (a failed checkpoint): attach afresh before next use.
        self._invalidated = False
        #: How many times an invalidated file was attached afresh (a health figure).
        self.reattachments = 0
        self._schema_checked_at = float("-inf")
        #: Which file (device, inode) the schema was checked on for writing (None: not yet), and
        #: which one is attached: a store file deleted (ATTACH then makes an empty one) or replaced
        #: while the application runs is checked again, not written as if it had the tables
        #: (every batch would fail until a restart).
        self._migrated_file: tuple[int, int] | None = None
        self._attached_file: tuple[int, int] | None = None
        _files.add(self)

    def __del__(self, _close: Any = os.close) -> None:  # os.close bound now: usable at interpreter exit
        fd = getattr(self, "_access_fd", None)
        if fd is not None:
            try:
                _close(fd)  # closing the descriptor also lets go of its flock
            except OSError:
                pass

    def forget_after_fork(self) -> None:
        # Close, never unlock: a flock is shared with the parent through the forked descriptor.
        for fd in (self._writer_fd, self._access_fd):
            if fd is not None:
                os.close(fd)
        self._writer_fd = None
        self._access_fd = None
        self._writer_refs = 0
        if self._instance is not None:
            _abandoned.append(self._instance)  # destroying it in the child would crash
        self._instance = None
        self._attached = None
        self._lock = threading.RLock()

    # -- the writer role -------------------------------------------------------------------
    @property
    def lock_path(self) -> str:
        return self.path + ".writer.lock"

    @property
    def is_writer(self) -> bool:
        """This process holds the writer role (or, in the writer process, writes for it)."""
        return self._writer_fd is not None or self.delegated_writer

    @property
    def attached(self) -> bool:
        return self._attached is not None

    @property
    def writes_here(self) -> bool:
        """Batches of spans are written by this process (not by its writer process)."""
        return self.delegated_writer or (self._writer_fd is not None and not self.writes_elsewhere)

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
            with self.connect(write=True):
                pass  # connecting to write checks the schema (creates or migrates it)
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
            self._detach()
            fd, self._writer_fd = self._writer_fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    # -- connections -----------------------------------------------------------------------
    def _instance_connection(self) -> duckdb.DuckDBPyConnection:
        if self._instance is None:
            self._instance = duckdb.connect(":memory:")
            # The progress bar takes the GIL while a query runs, stalling the application.
            self._instance.execute("SET enable_progress_bar = false")
            self._threads_set = False
        if self.writes_here and not self.hold_open and not self._threads_set:
            # The span writer shares the machine with the application it traces: one core is
            # plenty for its batches and leaves the others to the application (measured in bench/).
            self._instance.execute("SET threads = 1")
            self._threads_set = True
        return self._instance

    # -- the access lock ---------------------------------------------------------------------
    @property
    def access_lock_path(self) -> str:
        return self.path + ".access.lock"

    def _lock_access(self, read_only: bool) -> bool:
        """Take the access lock for an attachment (shared to read, exclusive to write) without
        waiting; False when another process holds it the other way. True as well where the lock
        file cannot be made (a read-only directory): DuckDB's own lock is all there is then."""
        if self._access_fd is None:
            if read_only and not os.path.exists(self.path):
                return True  # nothing to read (ATTACH says so); leave no lock file behind
            try:
                self._access_fd = os.open(self.access_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                try:
                    self._access_fd = os.open(self.access_lock_path, os.O_RDONLY)
                except OSError:
                    return True
        try:
            fcntl.flock(self._access_fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            pass  # a filesystem without flock: DuckDB's lock only
        return True

    def _unlock_access(self) -> None:
        if self._access_fd is not None:
            try:
                fcntl.flock(self._access_fd, fcntl.LOCK_UN)
            except OSError:
                pass

    @property
    def wants_path(self) -> str:
        return self.path + ".writer.wants"

    def _yield_to_writer(self) -> None:
        """A reader in another process lets a waiting writer in before taking the file again."""
        waited = 0.0
        while waited < WRITER_PRIORITY_SECONDS:
            try:
                age = time.time() - os.stat(self.wants_path).st_mtime
            except OSError:
                return
            if age > 2 * WRITER_PRIORITY_SECONDS + 1:
                return  # a stale flag (the writer went away)
            time.sleep(0.005)
            waited += 0.005

    def _attach(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Attach the store file (called with the lock held), retrying while it is locked.

        Returns the instance connection, its default database the store. Every DuckDB call costs
        a GIL round trip, which is slow while application threads keep the GIL busy, so attaching
        and selecting the store is one call.
        """
        instance = self._instance_connection()
        if self._attached is not None:
            if self._attached == read_only or not self._attached:
                return instance  # already attached (a read-write attachment serves reads too)
            self._detach()
        if not self.writes_here:
            self._yield_to_writer()
        quoted = self.path.replace("'", "''")
        sql = f"ATTACH '{quoted}' AS {ALIAS}" + (" (READ_ONLY)" if read_only else "") + f"; USE {ALIAS}"
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.002
        flagged = False
        while True:
            try:
                if not self._lock_access(read_only):
                    raise _AccessConflict(
                        f"{self.access_lock_path} is held by another process (or another store object of "
                        "this process) that has the file attached"
                    )
                created = not os.path.exists(self.path)  # ATTACH makes an empty file: no tables yet
                instance.execute(sql)
                self._attached = read_only
                self._attached_at = time.monotonic()
                self._attached_file = None if created else _file_identity(self.path)
                if self.writes_here and flagged:
                    _remove(self.wants_path)
                return instance
            except (duckdb.Error, _AccessConflict) as exc:
                self._unlock_access()
                if read_only and "does not exist" in str(exc):
                    raise FileNotFoundError(
                        f"no trace store at {self.path}: nothing has been written there yet"
                    ) from None
                if not (isinstance(exc, _AccessConflict) or is_lock_conflict(exc) or is_still_closing(exc)):
                    raise
                if self.writes_here and not flagged:  # ask readers elsewhere to make way
                    flagged = _touch(self.wants_path)
                if time.monotonic() >= deadline:
                    if flagged:
                        _remove(self.wants_path)
                    raise StoreBusyError(
                        f"the trace store {self.path} stayed locked by another process for "
                        f"{self.lock_timeout:.0f}s ({exc}). A long query in another process holds "
                        "it; retry, raise lock_timeout, or use the collector service."
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def _detach(self) -> None:
        if self._attached is not None and self._instance is not None:
            self._attached = None
            try:
                self._instance.execute(f"USE memory; DETACH {ALIAS}")
            except duckdb.Error:
                self._close_instance()
                raise
            finally:
                self._unlock_access()

    def _close_instance(self) -> None:
        """Give up the instance (a DETACH failed): closing it closes the file."""
        instance, self._instance, self._attached = self._instance, None, None
        if instance is not None:
            try:
                instance.close()
            except duckdb.Error:
                pass

    def invalidated(self) -> None:
        """The attachment is unusable (DuckDB invalidated it): drop it at the end of this unit of work."""
        self._invalidated = True

    def _drop_if_invalidated(self, exc: BaseException | None = None) -> None:
        """Detach an invalidated file (called with the lock held) so the next unit of work
        attaches it afresh, replaying its WAL; a fresh instance if even DETACH fails."""
        if not (self._invalidated or (exc is not None and is_invalidated(exc))):
            return
        self._invalidated = False
        self.reattachments += 1
        if self._instance is None:
            return
        try:
            self._detach()
        except duckdb.Error:
            pass  # _detach closed the instance
        self._migrated_file = None  # re-checked on the next write

    def release(self) -> None:
        """Detach a store kept attached by ``connect(linger=True)`` (the writer is idle)."""
        with self._lock:
            if not self.hold_open:
                self._detach()

    @contextmanager
    def connect(self, write: bool = False, linger: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the store (its default database) for one unit of work.

        In the writer process every attachment is read-write (a read-only one would make the
        writer wait) and the units of work are serialised by a lock, so the writer thread and the
        application's own searches take turns. The file is detached afterwards, releasing it to
        other processes, unless ``linger`` (the writer has more batches waiting; it still lets go
        after ``MAX_LINGER_SECONDS``). With ``hold_open`` (the collector) the file stays attached,
        each unit of work gets its own cursor and only writes take the lock.
        """
        read_only = not (write or self.writes_here)
        if self.hold_open and self.is_writer:
            with self._cursor(write) as cursor:
                yield cursor
            return
        with self._lock:
            con = self._attach(read_only)
            try:
                self._check_schema(con, read_only)
                yield con
            except duckdb.Error as exc:
                self._drop_if_invalidated(exc)
                bad_text = not_unicode(exc)
                if bad_text is not None:
                    raise bad_text from exc
                raise
            finally:
                self._drop_if_invalidated()
                keep = linger and self.writes_here and time.monotonic() - self._attached_at < MAX_LINGER_SECONDS
                if not keep:
                    self._detach()

    def _check_schema(self, con: duckdb.DuckDBPyConnection, read_only: bool) -> None:
        if not read_only and (self._migrated_file is None or self._migrated_file != self._attached_file):
            schema.migrate(con)
            self._migrated_file = self._attached_file or _file_identity(self.path)
        elif read_only and time.monotonic() - self._schema_checked_at > SCHEMA_CHECK_SECONDS:
            schema.check_readable(con)
            self._schema_checked_at = time.monotonic()

    @contextmanager
    def _cursor(self, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            self._attach(False)
            self._check_schema(self._instance_connection(), False)
            cursor = self._instance_connection().cursor()
        failure: BaseException | None = None
        try:
            cursor.execute(f"USE {ALIAS}; SET enable_progress_bar = false")
            if write:
                with self._lock:
                    yield cursor
            else:
                yield cursor
        except duckdb.Error as exc:
            failure = exc
            bad_text = not_unicode(exc)
            if bad_text is not None:
                raise bad_text from exc
            raise
        finally:
            cursor.close()
            if failure is not None or self._invalidated:
                with self._lock:
                    self._drop_if_invalidated(failure)
