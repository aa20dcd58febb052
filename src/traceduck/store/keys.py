"""API keys of the collector, stored hashed: ``td_<key id>_<secret>``.

The key id is public (it names the key in listings and revocations); only the SHA-256 of the whole
key is stored, so a stolen store file does not yield working keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

import duckdb

RIGHTS = ("read", "write", "admin")
_KEY = re.compile(r"^td_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    project: str
    rights: frozenset[str]
    description: str | None
    created_at: int
    revoked_at: int | None


def check_project_name(project: str) -> str:
    if not isinstance(project, str) or not PROJECT_NAME.match(project):
        raise ValueError(
            f"project name {project!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return project


def parse_rights(rights: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    items = [r.strip().lower() for r in (rights.split(",") if isinstance(rights, str) else rights) if r.strip()]
    unknown = sorted(set(items) - set(RIGHTS))
    if unknown or not items:
        raise ValueError(f"rights must be a comma list of {', '.join(RIGHTS)}; got {rights!r}")
    return frozenset(items)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(con: duckdb.DuckDBPyConnection, project: str, rights: frozenset[str],
               description: str | None = None) -> tuple[KeyInfo, str]:
    """Store a new key; returns its info and the key itself (shown once, never stored)."""
    check_project_name(project)
    key_id = secrets.token_hex(6)
    key = f"td_{key_id}_{secrets.token_urlsafe(30)}"
    now = int(time.time() * 1000)
    ordered = ",".join(r for r in RIGHTS if r in rights)
    con.execute(
        "INSERT INTO api_keys (key_id, key_hash, project, rights, description, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [key_id, _hash(key), project, ordered, description, now],
    )
    ensure_project(con, project)
    return KeyInfo(key_id, project, rights, description, now, None), key


def ensure_project(con: duckdb.DuckDBPyConnection, project: str) -> None:
    exists = con.execute("SELECT count(*) FROM projects WHERE name = ?", [project]).fetchall()[0][0]
    if not exists:
        con.execute("INSERT INTO projects (name, created_at) VALUES (?, ?)", [project, int(time.time() * 1000)])


def _info(row: tuple) -> KeyInfo:
    key_id, project, rights, description, created_at, revoked_at = row
    return KeyInfo(key_id, project, frozenset(rights.split(",")), description, created_at, revoked_at)


_COLUMNS = "key_id, project, rights, description, created_at, revoked_at"


def verify(con: duckdb.DuckDBPyConnection, key: str) -> KeyInfo | None:
    """The key's info if ``key`` is a valid, unrevoked key; else None."""
    match = _KEY.match(key or "")
    if not match:
        return None
    rows = con.execute(f"SELECT {_COLUMNS}, key_hash FROM api_keys WHERE key_id = ?", [match.group(1)]).fetchall()
    for row in rows:
        if hmac.compare_digest(row[-1], _hash(key)) and row[5] is None:
            return _info(row[:-1])
    return None


def revoke(con: duckdb.DuckDBPyConnection, key_id: str) -> KeyInfo | None:
    rows = con.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ? AND revoked_at IS NULL", [key_id]).fetchall()
    if not rows:
        return None
    con.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [int(time.time() * 1000), key_id])
    return _info(rows[0])


def list_keys(con: duckdb.DuckDBPyConnection) -> list[KeyInfo]:
    return [_info(r) for r in con.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at").fetchall()]


def any_keys(con: duckdb.DuckDBPyConnection, include_revoked: bool = False) -> bool:
    """Whether a key exists (active ones only, unless ``include_revoked``)."""
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    return bool(con.execute(f"SELECT count(*) FROM api_keys{where}").fetchall()[0][0])
