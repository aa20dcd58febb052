"""Where project settings live (``projects.settings_json``), how the writer sees them, and the
SDK functions that read and change them.

A project that was never configured captures everything in a store without API keys (the SDK's
own file, a collector still open for local development) and nothing in a store with API keys (a
collector serving several applications: each owner opts in). Every change is an audit event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import duckdb

from ..raw_spans import RawSpans
from ..store import keys as key_store
from ..stores import resolve_store
from . import audit
from .apply import Applied, PiiMemory, apply_policy
from .policy import COLLECTOR_DEFAULT, KEEP, LOCAL_DEFAULT, ProjectSettings

#: How long the writer trusts its copy of the settings; changes made in this process apply at once.
REFRESH_SECONDS = 1.0


def unconfigured_default(con: duckdb.DuckDBPyConnection) -> ProjectSettings:
    """Settings of a project nobody configured: everything locally, nothing once keys exist."""
    return COLLECTOR_DEFAULT if key_store.any_keys(con, include_revoked=True) else LOCAL_DEFAULT


def load_all(con: duckdb.DuckDBPyConnection) -> dict[str, ProjectSettings]:
    """The stored settings of every configured project."""
    rows = con.execute("SELECT name, settings_json FROM projects WHERE settings_json IS NOT NULL").fetchall()
    out = {}
    for name, text in rows:
        found = ProjectSettings.from_json(text)
        if found is not None:
            out[name] = found
    return out


def read(con: duckdb.DuckDBPyConnection, project: str) -> ProjectSettings | None:
    rows = con.execute("SELECT settings_json FROM projects WHERE name = ? AND settings_json IS NOT NULL",
                       [project]).fetchall()  # fmt: skip
    return ProjectSettings.from_json(rows[0][0]) if rows else None


def save(con: duckdb.DuckDBPyConnection, project: str, changes: dict[str, Any], actor: str) -> ProjectSettings:
    """Apply ``changes`` to a project's settings and record an audit event per changed aspect,
    in one transaction. New settings apply to data written from now on."""
    key_store.check_project_name(project)
    con.execute("BEGIN TRANSACTION")
    try:
        before = read(con, project)
        base = before if before is not None else unconfigured_default(con)
        after = base.changed(**changes)
        key_store.ensure_project(con, project)
        con.execute("UPDATE projects SET settings_json = ? WHERE name = ?", [after.to_json(), project])
        old, new = base.to_dict(), after.to_dict()  # before: what applied (the default if never set)
        for action, keys in ((audit.CAPTURE_CHANGED, ("capture",)), (audit.PII_CHANGED, ("pii",)),
                             (audit.RETENTION_CHANGED, ("retention_days", "max_size_bytes"))):  # fmt: skip
            was, now = {k: old[k] for k in keys}, {k: new[k] for k in keys}
            if was != now:
                audit.append(con, actor, action, project, project, {**was, "configured": before is not None}, now)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return after


class StoreGovernance:
    """The writer's view of project settings: loaded with the batch's connection, cached for
    :data:`REFRESH_SECONDS`, refreshed at once after a change made in this process."""

    def __init__(self) -> None:
        self._settings: dict[str, ProjectSettings] = {}
        self._default: ProjectSettings = LOCAL_DEFAULT
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self.memory = PiiMemory()

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = float("-inf")

    def settings_for(self, con: duckdb.DuckDBPyConnection) -> Callable[[str], ProjectSettings]:
        with self._lock:
            if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
                self._settings = load_all(con)
                self._default = unconfigured_default(con)
                self._loaded_at = time.monotonic()
            settings, default = self._settings, self._default
        return lambda project: settings.get(project, default)

    def prepare(self, con: duckdb.DuckDBPyConnection, raw: RawSpans) -> Applied:
        """The batch as its projects capture it (see ``apply.apply_policy``)."""
        return apply_policy(raw, self.settings_for(con), self.memory)


# -- the SDK functions -----------------------------------------------------------------------


def _project(project: str | None) -> str:
    if project is not None:
        return project
    from ..config import current_setup  # noqa: PLC0415

    setup = current_setup()
    return setup.settings.project if setup is not None else "default"


def set_project_settings(
    project: str | None = None,
    *,
    capture: Any = None,
    pii: str | None = None,
    retention: Any = KEEP,
    max_size: Any = KEEP,
    store: Any = None,
    actor: str | None = None,
) -> ProjectSettings:
    """Change what a project captures and keeps; each change is an audit event.

    ``capture``: ``"all"``, ``"none"``, ``"prompt,response"``, a list or ``{facet: bool}``;
    ``pii``: ``"off"``, ``"detect"`` or ``"redact"``; ``retention``: ``"30d"``, ``90``, ``120``
    or ``None`` (no age-off); ``max_size``: ``"500MB"``, bytes or ``None``. Arguments left out
    keep their value. Applies to data written from now on. ``project`` defaults to the
    configured one; ``store`` to the configured store (a path or a collector URL with an admin
    key). Returns the new settings.
    """
    changes = {"capture": capture, "pii": pii, "retention_days": retention, "max_size_bytes": max_size}
    return resolve_store(store).set_project_settings(_project(project), changes, actor or "sdk")


def get_project_settings(project: str | None = None, store: Any = None) -> ProjectSettings | None:
    """A project's stored settings; ``None`` when it was never configured (then a store without
    API keys captures everything, and a collector with keys captures nothing)."""
    return resolve_store(store).get_project_settings(_project(project))
