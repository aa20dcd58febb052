"""The audit log: hash-chained, append-only; every kind of tampering is detected and named.

Events are made through the real paths (settings changes, the key CLI); tampering is done the way
an attacker with the file would do it: SQL on the DuckDB file directly.
"""

from __future__ import annotations

import duckdb
import pytest

import traceduck as td
from traceduck.governance.audit import GENESIS

from _collector import create_key, revoke_key, traceduck_cli


@pytest.fixture
def five_events(store_path) -> str:
    """A store whose audit log holds five events (settings changes of five projects)."""
    for i in range(5):
        td.set_project_settings(f"p{i}", capture="prompt", store=store_path)
    assert [e.seq for e in td.audit_events(store=store_path)] == [1, 2, 3, 4, 5]
    return store_path


def tamper(path: str, *statements: str) -> None:
    td.shutdown()
    con = duckdb.connect(path)
    try:
        for sql in statements:
            con.execute(sql)
    finally:
        con.close()


def problems(path: str, **kwargs) -> list[tuple[int, str]]:
    result = td.verify_audit(store=path, **kwargs)
    assert result.ok == (not result.problems)
    return [(p.seq, p.kind) for p in result.problems]


def test_each_event_links_to_the_one_before(five_events):
    events = td.audit_events(store=five_events)
    assert events[0].prev_hash == GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(events, events[1:]))
    result = td.verify_audit(store=five_events)
    assert result.ok and result.events == 5 and result.head_hash == events[-1].hash


def test_events_record_who_what_when_and_the_change(five_events):
    event = td.audit_events(store=five_events)[0]
    assert (event.actor, event.action, event.project, event.target) == ("sdk", "capture_policy.changed", "p0", "p0")
    assert event.before["capture"]["prompt"] is True and event.before["capture"]["response"] is True
    assert event.after["capture"] == {**event.before["capture"], **{k: False for k in event.before["capture"]
                                                                   if k != "prompt"}}  # fmt: skip
    assert event.time > 0


def test_an_edited_event_is_named(five_events):
    tamper(five_events, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3")
    assert problems(five_events) == [(3, "edited")]


def test_an_edited_and_rehashed_event_is_named(five_events):
    from traceduck.governance.audit import _digest  # noqa: PLC0415  (what an attacker would recompute)

    td.shutdown()
    con = duckdb.connect(five_events, read_only=True)
    row = con.execute("SELECT seq, time, actor, action, project, target, before_json, after_json, prev_hash"
                      " FROM audit_log WHERE seq = 2").fetchall()[0]  # fmt: skip
    con.close()
    forged = _digest(row[0], row[1], "nobody", *row[3:])
    tamper(five_events, f"UPDATE audit_log SET actor = 'nobody', hash = '{forged}' WHERE seq = 2")
    assert problems(five_events) == [(2, "edited")]


def test_a_deleted_event_is_named(five_events):
    tamper(five_events, "DELETE FROM audit_log WHERE seq = 4")
    assert problems(five_events) == [(4, "deleted")]


def test_reordered_events_are_named(five_events):
    tamper(five_events, "UPDATE audit_log SET seq = CASE seq WHEN 2 THEN 4 WHEN 4 THEN 2 END WHERE seq IN (2, 4)")
    assert problems(five_events) == [(2, "reordered"), (4, "reordered")]


def test_an_event_moved_to_the_end_is_named_as_reordered_not_deleted(five_events):
    tamper(five_events, "UPDATE audit_log SET seq = 6 WHERE seq = 2")
    assert problems(five_events) == [(6, "reordered")]


def test_removing_the_newest_events_is_caught_against_a_recorded_head(five_events):
    head = td.verify_audit(store=five_events).head_hash
    tamper(five_events, "DELETE FROM audit_log WHERE seq = 5")
    assert problems(five_events) == []  # a shorter chain is still a chain...
    assert problems(five_events, expected_head=head) == [(4, "deleted")]  # ...but not the one recorded


def test_audit_verify_cli_exits_1_and_names_the_event(five_events):
    assert "audit log OK: 5 events" in traceduck_cli("audit", "verify", "--store", five_events).stdout
    tamper(five_events, "UPDATE audit_log SET after_json = '{}' WHERE seq = 1")
    proc = traceduck_cli("audit", "verify", "--store", five_events, check=False)
    assert proc.returncode == 1 and "event 1: edited" in proc.stdout


def test_audit_list_cli_prints_events_in_order(five_events):
    lines = traceduck_cli("audit", "list", "--store", five_events, "--after", "3").stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == [4, 5]
    assert "capture_policy.changed" in lines[0] and "p3" in lines[0]


def test_key_creation_and_revocation_with_the_cli_are_audited(store_path):
    key = create_key(store_path, "proj-k", "read", opt_in=False)
    revoke_key(store_path, key.key_id)
    events = td.audit_events(store=store_path)
    assert [(e.action, e.target) for e in events] == [("api_key.created", key.key_id), ("api_key.revoked", key.key_id)]
    assert events[0].actor.startswith("cli:") and events[0].after == {"rights": ["read"], "description": None}
    assert key.key not in repr([e.to_dict() for e in events])
    assert td.verify_audit(store=store_path).ok
