"""The audit log: append-only, hash-chained events for everything that changes privacy or security.

Each event records who (an API key ``key:<id>``, ``cli:<user>``, ``sdk`` or the collector's
retention job), what (``action``, ``project``, ``target``), when (epoch ms) and the state before
and after, as JSON. Its ``hash`` is the SHA-256 of all of that plus the previous event's hash, so
editing, deleting or reordering an event breaks the chain where it happened, and
:func:`verify_chain` says which event. Rewriting the whole chain after some point is only caught
against a head hash kept elsewhere (``verify_audit(expected_head=...)``): keep the head that
``traceduck audit verify`` prints.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb

from ..stores import resolve_store

GENESIS = "0" * 64
_COLUMNS = "seq, time, actor, action, project, target, before_json, after_json, prev_hash, hash"

# Actions (the ``action`` column).
CAPTURE_CHANGED = "capture_policy.changed"
PII_CHANGED = "pii_mode.changed"
RETENTION_CHANGED = "retention.changed"
KEY_CREATED = "api_key.created"
KEY_REVOKED = "api_key.revoked"
METADATA_EDITED = "trace.metadata_edited"
TAGS_EDITED = "trace.tags_edited"
ASSESSMENT_DELETED = "assessment.deleted"
PURGED = "purge"
EXPORTED = "export.sft"


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli:unknown"


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    time: int
    actor: str
    action: str
    project: str | None
    target: str | None
    before: Any
    after: Any
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditProblem:
    seq: int
    #: ``edited``, ``deleted`` or ``reordered``.
    kind: str
    message: str


@dataclass
class AuditVerification:
    ok: bool
    events: int
    head_seq: int | None
    head_hash: str | None
    problems: list[AuditProblem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _digest(seq: int, when: int, actor: str, action: str, project: str | None, target: str | None,
            before_json: str | None, after_json: str | None, prev_hash: str) -> str:  # fmt: skip
    canonical = json.dumps([seq, when, actor, action, project, target, before_json, after_json, prev_hash],
                           separators=(",", ":"), ensure_ascii=False)  # fmt: skip
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def append(con: duckdb.DuckDBPyConnection, actor: str, action: str, project: str | None = None,
           target: str | None = None, before: Any = None, after: Any = None) -> AuditEvent:  # fmt: skip
    """Append one event (in the caller's transaction, if it has one)."""
    last = con.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchall()
    seq, prev = (last[0][0] + 1, last[0][1]) if last else (1, GENESIS)
    when = int(time.time() * 1000)
    before_json, after_json = _json(before), _json(after)
    digest = _digest(seq, when, actor, action, project, target, before_json, after_json, prev)
    con.execute(f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [seq, when, actor, action, project, target, before_json, after_json, prev, digest])  # fmt: skip
    return AuditEvent(seq, when, actor, action, project, target, before, after, prev, digest)


def _event(row: tuple) -> AuditEvent:
    seq, when, actor, action, project, target, before_json, after_json, prev, digest = row
    return AuditEvent(seq, when, actor, action, project, target,
                      json.loads(before_json) if before_json else None,
                      json.loads(after_json) if after_json else None, prev, digest)  # fmt: skip


def list_events(con: duckdb.DuckDBPyConnection, project: str | None = None, after_seq: int = 0,
                limit: int | None = None, action: str | None = None) -> list[AuditEvent]:  # fmt: skip
    """Events in order, after ``after_seq``; with ``project`` only that project's."""
    sql = f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ?"
    params: list[Any] = [after_seq]
    if project is not None:
        sql += " AND project = ?"
        params.append(project)
    if action is not None:
        sql += " AND action = ?"
        params.append(action)
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [_event(r) for r in con.execute(sql, params).fetchall()]


def verify_chain(con: duckdb.DuckDBPyConnection, expected_head: str | None = None) -> AuditVerification:
    """Check every event's hash and link; name each edited, deleted or reordered event."""
    rows = con.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq, time").fetchall()
    by_hash = {r[9]: r for r in rows}
    problems: list[AuditProblem] = []
    flagged: set[int] = set()  # positions explained as reordered
    moved_from: set[int] = set()  # original seqs of reordered events

    def content_hash(row: tuple, seq: int | None = None) -> str:
        return _digest(row[0] if seq is None else seq, *row[1:9])

    for i, row in enumerate(rows):
        if content_hash(row) == row[9]:
            continue
        source = by_hash.get(row[8])
        original = source[0] + 1 if source is not None else (1 if row[8] == GENESIS else None)
        if original is not None and original != row[0] and content_hash(row, original) == row[9]:
            problems.append(AuditProblem(row[0], "reordered",
                                         f"event {original} was moved to position {row[0]}"))  # fmt: skip
            flagged.add(i)
            moved_from.add(original)
        else:
            problems.append(AuditProblem(row[0], "edited",
                                         f"event {row[0]} was edited: its hash does not match its content"))  # fmt: skip
            flagged.add(i)
    for i, row in enumerate(rows):
        expected_prev = rows[i - 1][9] if i else GENESIS
        expected_seq = rows[i - 1][0] + 1 if i else 1
        if row[0] > expected_seq:
            for missing in range(expected_seq, row[0]):
                if missing not in moved_from:
                    problems.append(AuditProblem(missing, "deleted", f"event {missing} is missing: it was deleted"))
            continue
        if row[0] < expected_seq:
            problems.append(AuditProblem(row[0], "reordered", f"event {row[0]} appears twice or out of order"))
            continue
        if row[8] != expected_prev and i not in flagged and (i - 1) not in flagged:
            problems.append(AuditProblem(rows[i - 1][0] if i else row[0], "edited",
                                         f"event {rows[i - 1][0] if i else row[0]} was edited and re-hashed: "
                                         f"event {row[0]} no longer links to it"))  # fmt: skip
    if expected_head is not None and expected_head not in by_hash:
        problems.append(AuditProblem(rows[-1][0] if rows else 0, "deleted",
                                     f"the recorded head {expected_head[:16]}... is not in the log: events after "
                                     "it were deleted or the chain was rewritten"))  # fmt: skip
    problems.sort(key=lambda p: p.seq)
    head = rows[-1] if rows else None
    return AuditVerification(not problems, len(rows), head[0] if head else None, head[9] if head else None, problems)


# -- the SDK functions -----------------------------------------------------------------------


def audit_events(project: str | None = None, after_seq: int = 0, limit: int | None = None,
                 action: str | None = None, store: Any = None) -> list[AuditEvent]:  # fmt: skip
    """Audit events in order (``after_seq`` and ``limit`` page through them)."""
    return resolve_store(store).audit_events(project=project, after_seq=after_seq, limit=limit, action=action)


def verify_audit(expected_head: str | None = None, store: Any = None) -> AuditVerification:
    """Verify the audit log's hash chain; ``.problems`` names each edited, deleted or reordered
    event. ``expected_head``: a head hash recorded earlier, which must still be in the log."""
    return resolve_store(store).verify_audit(expected_head)
