"""Which store a read or an assessment goes to: the configured one, or the one named."""

from __future__ import annotations

import os
from typing import Any

from .config import DEFAULT_STORE, current_setup


def resolve_store(store: Any = None) -> Any:
    """A store object for ``store`` (a path, a collector URL or a store), else the configured one.

    Reading never configures tracing: a notebook that only searches does not become the writer.
    """
    if store is not None and not isinstance(store, (str, os.PathLike)):
        return store
    setup = current_setup()
    if store is None:
        if setup is not None:
            if setup.store is not None:
                return setup.store
            return _remote(setup.settings.store, setup.settings.api_key)
        store = os.environ.get("TRACEDUCK_STORE", DEFAULT_STORE)
    location = os.fspath(store)
    if location.startswith(("http://", "https://")):
        api_key = setup.settings.api_key if setup is not None else os.environ.get("TRACEDUCK_API_KEY")
        return _remote(location, api_key)
    from .store.duckdb_store import open_store  # noqa: PLC0415

    return open_store(location)


_remotes: dict[tuple[str, str | None], Any] = {}


def _remote(url: str, api_key: str | None) -> Any:
    """One client per collector and key, reused (it keeps its HTTP connections)."""
    from .remote import RemoteStore  # noqa: PLC0415

    key = (url.rstrip("/"), api_key)
    store = _remotes.get(key)
    if store is None:
        store = _remotes[key] = RemoteStore(url, api_key=api_key)
    return store
