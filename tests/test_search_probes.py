"""Newest-first pages probe recent time windows first (``store/query.py``): every page, walked
with its tokens, is exactly the page a full scan gives, whether a probe fills it or not."""

from __future__ import annotations

import json
import random

import pytest

from traceduck.raw_spans import RawSpans
from traceduck.search import prepare_search
from traceduck.store import query as query_sql
from traceduck.store.duckdb_store import DuckDBStore

START_NS = 1_700_000_000_000 * 1_000_000
DAY_NS = 24 * 3600 * 10**9


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """600 traces over 100 days in two projects; many share a millisecond (ties by trace id);
    'rare' traces only in the oldest days, 'common' ones everywhere."""
    path = str(tmp_path_factory.mktemp("probes") / "probes.duckdb")
    store = DuckDBStore(path)
    store.acquire_writer()
    rng = random.Random(7)
    raw = RawSpans()
    res = raw.resource({"service.name": "probe-test"})
    feedback = []
    for i in range(600):
        start = START_NS + (i * 100 * DAY_NS) // 600 // 3 * 3  # groups of equal timestamps
        kind = "rare" if i < 12 else rng.choice(["common", "common", "other"])
        fields = {"tags": {"kind": kind, "n": str(i % 7)}, "metadata": {"trace.user": f"u{i % 5}", "lang": rng.choice("ab")}}
        trace_id = f"{rng.getrandbits(128):032x}"
        project = "p1" if i % 4 else "p2"
        raw.add(trace_id, f"{i + 1:016x}", None, False, "root", "INTERNAL", start, start + 10**6,
                "UNSET", None, {"traceduck.trace": json.dumps(fields)}, None, res, project=project)  # fmt: skip
        if i % 3 == 0:  # feedback; on some traces a later one (or an invalid one) changes the verdict
            verdict = rng.random() < 0.5
            feedback.append((trace_id, project, verdict, 1, True))
            if i % 9 == 0:
                feedback.append((trace_id, project, not verdict, 2, i % 18 == 0))
    store.write(raw)
    with store.file.connect(write=True) as con:
        for n, (trace_id, project, verdict, created, valid) in enumerate(feedback):
            value = "true" if verdict else "false"
            con.execute(
                "INSERT INTO assessments (assessment_id, trace_id, project, target_kind, target, kind, name,"
                " value_json, value_str, value_num, source_type, valid, create_time, last_update_time)"
                " VALUES (?, CAST(? AS UUID), ?, 'trace_id', ?, 'feedback', 'ok', ?, ?, ?, 'HUMAN', ?, ?, ?)",
                [f"a-{n}", trace_id, project, trace_id, value, value, float(verdict), valid, created, created],
            )
    yield store
    store.release_writer()


FILTERS = [
    "tags.kind = 'common'",
    "tags.kind = 'rare'",  # only old traces: every probe comes back short
    "tags.kind IN ('common', 'other') AND metadata.lang = 'a'",
    "NOT tags.n = '3' OR metadata.`trace.user` = 'u2'",
    "tags.kind LIKE 'c%'",
    "feedback.ok = 'true'",  # the latest valid verdict counts, in a window as everywhere
    "feedback.ok = 'false' AND tags.kind = 'common'",
    "feedback.ok IS NULL AND metadata.lang = 'a'",
]


def _walk(store, filter_string, page_size, project, probes, monkeypatch):
    monkeypatch.setattr(query_sql, "PROBE_FRACTIONS", probes)
    pages, token = [], None
    with store.file.connect() as con:
        while True:
            query = prepare_search(filter_string, None, page_size, token, False)
            page = query_sql.search(con, query, project)
            pages.append([t.info.trace_id for t in page.traces])
            token = page.next_page_token
            if token is None:
                return pages


@pytest.mark.parametrize("filter_string", FILTERS)
@pytest.mark.parametrize("page_size", [3, 40])
@pytest.mark.parametrize("project", [None, "p2"])
def test_probed_pages_are_the_pages_of_a_full_scan(store, monkeypatch, filter_string, page_size, project):
    probed = _walk(store, filter_string, page_size, project, (1 / 128, 1 / 16), monkeypatch)
    full = _walk(store, filter_string, page_size, project, (), monkeypatch)
    assert probed == full
    found = [trace_id for page in full for trace_id in page]
    assert found and len(found) == len(set(found))


def test_a_probe_that_fills_the_page_is_used(store, monkeypatch):
    """With the windows, the first page of a common tag comes from the newest traces only (the
    probe's statement carries the time bound); a rare one falls back to the full scan."""
    statements: list[str] = []
    with store.file.connect() as con:
        class Recorder:
            def execute(self, sql, params=None):
                statements.append(sql)
                return con.execute(sql, params)

            def __getattr__(self, name):
                return getattr(con, name)

        common = query_sql.search(Recorder(), prepare_search("tags.kind = 'common'", None, 2, None, False), None)
        probed = [s for s in statements if "t.request_time >= ?" in s]
        assert len(probed) == 1 and len(common.traces) == 2  # the newest 1/128 holds 4 traces
        statements.clear()
        rare = query_sql.search(Recorder(), prepare_search("tags.kind = 'rare'", None, 10, None, False), None)
        assert len([s for s in statements if "t.request_time >= ?" in s]) == 2  # both windows short
        assert len(rare.traces) == 10 and all(t.info.tags["kind"] == "rare" for t in rare.traces)
