"""API keys: who is calling, which project they act in, and what they may do.

Keys are sent as ``Authorization: Bearer <key>`` or in a configurable header. Each key belongs to
one project and has read, write and/or admin rights. A key of project A never sees project B:
B's ids answer 404, exactly as ids that do not exist. Until the first key is created the collector
is open (every caller reads and writes every project) and, for that reason, serves loopback only;
once a key exists every request needs a valid one, even after all keys are revoked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from traceduck.store import keys as key_store
from traceduck.store.duckdb_store import DuckDBStore

CACHE_SECONDS = 5.0
#: A cache entry that is absent or stale.
_MISS = object()


@dataclass(frozen=True)
class Principal:
    """The caller: a project (None = all projects, while no key was ever created) and rights."""

    project: str | None
    rights: frozenset[str]
    key_id: str | None

    def scoped(self, store: DuckDBStore) -> DuckDBStore:
        return store if self.project is None else store.for_project(self.project)

    @property
    def actor(self) -> str:
        """Who acts, as the audit log names them: ``key:<key id>``, or ``open`` without keys."""
        return f"key:{self.key_id}" if self.key_id else "open"


OPEN = Principal(None, frozenset(key_store.RIGHTS), None)


class KeyRing:
    """Verifies keys against the store, caching results for a few seconds."""

    def __init__(self, store: DuckDBStore, header: str) -> None:
        self.store = store
        self.header = header.lower()
        self._cache: dict[str, tuple[float, key_store.KeyInfo | None]] = {}
        self._open: tuple[float, bool] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _fresh(entry: tuple[float, Any] | None, now: float) -> Any:
        """The value of a cache entry (time, value) while it is fresh, else ``_MISS``."""
        return entry[1] if entry is not None and now - entry[0] < CACHE_SECONDS else _MISS

    def is_open(self) -> bool:
        """True while no key was ever created (revoking every key does not open the service)."""
        now = time.monotonic()
        with self._lock:
            cached = self._fresh(self._open, now)
        if cached is not _MISS:
            return cached
        with self.store.connect() as con:
            value = not key_store.any_keys(con, include_revoked=True)
        with self._lock:
            self._open = (now, value)
        return value

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
            self._open = None

    def key_from(self, request: Request) -> str | None:
        auth = request.headers.get("authorization")
        if auth and auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return request.headers.get(self.header)

    def verify(self, key: str) -> key_store.KeyInfo | None:
        now = time.monotonic()
        with self._lock:
            cached = self._fresh(self._cache.get(key), now)
        if cached is not _MISS:
            return cached
        with self.store.connect() as con:
            info = key_store.verify(con, key)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, info)
        return info

    def cached_principal(self, request: Request) -> Principal | None:
        """The caller as the cache already knows them, without asking the store (None: not
        known, or not allowed: :meth:`authenticate` answers)."""
        key = self.key_from(request)
        now = time.monotonic()
        with self._lock:
            cached = self._fresh(self._open if key is None else self._cache.get(key), now)
        if key is None:
            return OPEN if cached is True else None
        if cached is _MISS or cached is None:
            return None
        return Principal(cached.project, cached.rights, cached.key_id)

    def authenticate(self, request: Request) -> Principal:
        key = self.key_from(request)
        if key is None:
            if self.is_open():
                return OPEN
            raise HTTPException(401, detail="an API key is required (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        info = self.verify(key)
        if info is None:  # a key that is presented must be valid, open service or not
            raise HTTPException(401, detail="the API key is not valid or was revoked",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        return Principal(info.project, info.rights, info.key_id)


def require(right: str) -> Callable[[Request], Any]:
    """FastAPI dependency: the caller, who must hold ``right`` (read, write or admin)."""

    async def dependency(request: Request) -> Principal:
        keyring = request.app.state.keyring
        # Most requests are answered from the cache on the event loop; a sync dependency would
        # cost every request a trip through the thread pool (a few ms of each OTLP export).
        principal = keyring.cached_principal(request)
        if principal is None:  # the store is asked, off the event loop
            principal = await run_in_threadpool(keyring.authenticate, request)
        if right not in principal.rights:
            raise HTTPException(403, detail=f"this API key lacks the {right!r} right")
        return principal

    dependency.__name__ = f"require_{right}"
    return dependency
