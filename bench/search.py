"""Search speed on a large store, and how it grows with the store.

    python bench/search.py [--traces 1000000] [--scales 10000,100000] [--runs 7] [--json out.json]

Generates traces (50 users, 20,000 sessions, 5 tags and 5 metadata keys each, two spans per
trace, 20% with a feedback) into a DuckDB file through traceduck's own writer, then times
``search_traces(..., max_results=100)`` (a DataFrame with spans, the default) for a set of filters,
the median of several runs after one cold run, and a full count of one user's traces. Then the
user-equality search at smaller scales, to show how the time grows.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid

import orjson
import pyarrow as pa

import traceduck as td
from traceduck.raw_spans import RawSpans
from traceduck.store.duckdb_store import DuckDBStore

USERS, SESSIONS = 50, 20_000
#: The filters issue 3 sets a target for; "one session" shows a filter too selective to fill a
#: page from recent traces.
TARGETED = ("user equality", "tag IN", "metadata LIKE", "time range + ERROR", "OR of two users", "feedback")
DAY_MS = 24 * 3600 * 1000


def generate(path: str, n: int, seed: int = 1) -> dict[str, float]:
    """n traces (two spans each) through the writer; 20% get an is_correct feedback."""
    for f in (path, path + ".wal", path + ".writer.lock", path + ".access.lock"):
        if os.path.exists(f):
            os.remove(f)
    store = DuckDBStore(path, hold_open=True)  # a bulk load holds the file, as the collector does
    store.acquire_writer()
    rng = random.Random(seed)
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - 30 * DAY_MS
    resource = {"service.name": "bench-app", "deployment.environment.name": "prod"}
    # Batches of more than a row group (122,880 rows) of traces: DuckDB writes such inserts
    # straight to the file instead of through the WAL (measured: 500k traces in 19.6 s instead of 25).
    batch = 125_000
    t0 = time.perf_counter()
    feedback_ids: list[str] = []
    # The batches are stored by a writer thread while the next one is built, as the SDK's writer
    # thread stores spans while the application makes more; ``linger`` keeps the file attached
    # while more batches follow (DuckDB checkpoints by itself as the WAL grows).
    batches: queue.Queue = queue.Queue(maxsize=2)
    failed: list[BaseException] = []

    def write_all() -> None:
        while (item := batches.get()) is not None:
            try:
                store.write(item[0], linger=not item[1])
            except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
                failed.append(exc)

    writer = threading.Thread(target=write_all)
    writer.start()
    for first in range(0, n, batch):
        raw = RawSpans()
        res = raw.resource(resource)
        for i in range(first, min(n, first + batch)):
            start = (start_ms + (i * (end_ms - start_ms)) // n) * 1_000_000
            trace_id = "%032x" % rng.getrandbits(128)
            root, child = "%016x" % rng.getrandbits(64), "%016x" % rng.getrandbits(64)
            user, session = f"user-{rng.randrange(USERS)}", f"session-{rng.randrange(SESSIONS)}"
            fields = orjson.dumps({
                "client_request_id": f"req-{i}",
                "metadata": {"trace.user": user, "trace.session": session, "lang": ("en", "fr", "de")[i % 3],
                             "domain": f"dom-{i % 11}", "app_version": f"1.{i % 5}"},
                "tags": {"tier": ("free", "pro", "enterprise")[i % 3], "task": f"task-{i % 7}", "region": ("eu", "us")[i % 2]},
            }).decode()  # fmt: skip
            raw.add(trace_id, child, root, False, "llm", "CLIENT", start + 1_000, start + 900_000, "UNSET", None,
                    {"traceduck.span_type": "LLM", "traceduck.inputs": '{"prompt": "hello"}',
                     "traceduck.outputs": '"hi"', "gen_ai.request.model": "gpt-4o"}, None, res)  # fmt: skip
            raw.add(trace_id, root, None, False, "chat", "SERVER", start, start + 1_000_000,
                    "ERROR" if i % 20 == 0 else "UNSET", None,
                    {"traceduck.span_type": "CHAIN", "traceduck.inputs": '{"question": "what is up"}',
                     "traceduck.outputs": '"answer"', "traceduck.trace": fields}, None, res)  # fmt: skip
            if rng.random() < 0.2:
                feedback_ids.append(trace_id)
        batches.put((raw, first + batch >= n))
    batches.put(None)
    writer.join()
    if failed:
        raise failed[0]
    spans_done = time.perf_counter()
    # The feedback rows are bulk-loaded (logging 200k feedbacks one call at a time measures
    # something else); each names its trace by id, as log_feedback(trace_id) stores them.
    now = int(time.time() * 1000)
    values = [rng.random() < 0.7 for _ in feedback_ids]
    table = pa.table({
        "assessment_id": ["a-" + uuid.uuid4().hex for _ in feedback_ids],
        "trace_id": feedback_ids,
        "value": values,
    })  # fmt: skip
    with store.connect(write=True) as con:
        con.register("_fb", table)
        con.execute(
            "INSERT INTO assessments (assessment_id, trace_id, project, target_kind, target, kind, name,"
            " value_json, value_str, value_num, source_type, valid, create_time, last_update_time)"
            " SELECT assessment_id, CAST(trace_id AS UUID), 'default', 'trace_id', trace_id, 'feedback',"
            " 'is_correct', CASE WHEN value THEN 'true' ELSE 'false' END,"
            " CASE WHEN value THEN 'true' ELSE 'false' END, CASE WHEN value THEN 1.0 ELSE 0.0 END,"
            " 'HUMAN', true, ?, ? FROM _fb",
            [now, now],
        )
        con.unregister("_fb")
    store.release_writer()
    total = time.perf_counter() - t0
    return {"seconds": total, "span_seconds": spans_done - t0, "spans_per_s": 2 * n / (spans_done - t0)}


def timed(fn, runs: int) -> tuple[float, float]:  # noqa: ANN001
    """(cold ms, median warm ms)."""
    t = time.perf_counter()
    fn()
    cold = (time.perf_counter() - t) * 1000
    warm = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        warm.append((time.perf_counter() - t) * 1000)
    return cold, statistics.median(warm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--scales", default="10000,100000", help="smaller stores for the growth curve")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where to put the stores (default: a temp dir)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="traceduck-search-")
    results: dict[str, object] = {}
    path = os.path.join(work, f"search-{args.traces}.duckdb")
    gen = generate(path, args.traces)
    results["generate"] = gen
    print(f"generated {args.traces:,} traces ({2 * args.traces:,} spans, 20% with feedback) in "
          f"{gen['seconds']:.1f} s ({gen['spans_per_s']:,.0f} spans/s through the writer; target <= 60 s)")

    end = int(time.time() * 1000)
    filters = {
        "user equality": "tags.`trace.user` = 'user-7'",
        "tag IN": "tags.tier IN ('pro', 'enterprise')",
        "metadata LIKE": "metadata.domain LIKE 'dom-1%'",
        "time range + ERROR": f"timestamp_ms > {end - 10 * DAY_MS} AND timestamp_ms < {end - 5 * DAY_MS} AND status = 'ERROR'",
        "OR of two users": "tags.`trace.user` = 'user-7' OR tags.`trace.user` = 'user-8'",
        "feedback": "feedback.is_correct = 'true'",
        "one session": "tags.`trace.session` = 'session-77'",
    }
    print(f"\nfirst page (max_results=100) at {args.traces:,} traces, ms (cold / median of {args.runs})")
    print(f"{'filter':22s} {'DataFrame+spans':>18s} {'Trace list, no spans':>22s}")
    rows = {}
    for name, flt in filters.items():
        df = timed(lambda: td.search_traces(flt, max_results=100, store=path), args.runs)
        lst = timed(lambda: td.search_traces(flt, max_results=100, return_type="list", include_spans=False,
                                             store=path), args.runs)  # fmt: skip
        rows[name] = {"dataframe_cold_ms": df[0], "dataframe_ms": df[1], "list_cold_ms": lst[0], "list_ms": lst[1]}
        note = "(target <= 50)" if name in TARGETED else "(no target: ~50 matches, so every trace is scanned)"
        print(f"{name:22s} {df[0]:7.1f} / {df[1]:6.1f}   {lst[0]:9.1f} / {lst[1]:6.1f}   {note}")
    results["first_page"] = rows
    count = timed(lambda: td.count_traces(filters["user equality"], store=path), args.runs)
    total = td.count_traces(filters["user equality"], store=path)
    results["count_user"] = {"cold_ms": count[0], "ms": count[1], "matches": total}
    print(f"{'count of one user':22s} {count[0]:7.1f} / {count[1]:6.1f}   ({total:,} traces; target <= 300)")

    growth = {}
    for scale in [int(s) for s in args.scales.split(",") if s] + [args.traces]:
        if scale == args.traces:
            p = path
        else:
            p = os.path.join(work, f"search-{scale}.duckdb")
            generate(p, scale)
        growth[scale] = timed(lambda: td.search_traces(filters["user equality"], max_results=100, store=p), args.runs)[1]
    results["user_equality_growth_ms"] = growth
    print("\nuser equality, first page, DataFrame+spans, median ms: "
          + ", ".join(f"{k:,} traces: {v:.1f}" for k, v in growth.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
