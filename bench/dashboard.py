"""What the dashboard asks of a large store, timed: pivots, time series, the list page, usage.

    python bench/dashboard.py [--traces 1000000] [--store existing.duckdb] [--runs 5] [--json out.json]

Generates the store of ``bench/search.py`` (50 users, 20,000 sessions, tags and metadata, two
spans per trace with one LLM call each, 20% with a feedback), gives every LLM call tokens and a
cost, then times each query the dashboard's views make, through ``traceduck.analytics`` and
``search_traces_page`` (what the collector's endpoints run): cold, then the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import duckdb

import traceduck as td

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from search import generate, timed  # noqa: E402

DAY_MS = 24 * 3600 * 1000


def add_usage(path: str) -> None:
    """Tokens and cost on every LLM call (the generator's calls carry a model only)."""
    con = duckdb.connect(path)
    con.execute(
        "UPDATE llm_calls SET input_tokens = 50 + hash(span_id) % 400, output_tokens = 10 + hash(span_id) % 200,"
        " cost_usd = (50 + hash(span_id) % 400) * 2.5e-6 + (10 + hash(span_id) % 200) * 1e-5"
    )
    con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--store", help="time this existing store (made by this script) instead of generating one")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    work = None
    if args.store:
        path = args.store
    else:
        work = tempfile.mkdtemp(prefix="traceduck-dashboard-")
        path = os.path.join(work, f"dashboard-{args.traces}.duckdb")
        t = time.perf_counter()
        generate(path, args.traces)
        add_usage(path)
        print(f"generated {args.traces:,} traces in {time.perf_counter() - t:.0f} s")
    n = td.count_traces(store=path)
    now = int(time.time() * 1000)
    day, week = (now - DAY_MS, now + 1), (now - 7 * DAY_MS, now + 1)
    page = td.search_traces_page(max_results=50, include_spans=False, store=path)
    ids = [t.info.trace_id for t in page.traces]
    session = page.traces[0].info.tags.get("trace.session") or "session-77"

    def list_page(window: tuple[int, int], flt: str | None = None) -> Any:
        text = f"timestamp_ms >= {window[0]} AND timestamp_ms < {window[1]}"
        return td.search_traces_page(f"({flt}) AND {text}" if flt else text, max_results=50, include_spans=False,
                                     store=path)  # fmt: skip

    cases: dict[str, Callable[[], Any]] = {
        "list page, last 7 days (50 traces)": lambda: list_page(week),
        "list page, 7 days, one user": lambda: list_page(week, "tags.`trace.user` = 'user-7'"),
        "llm usage of a page (50 ids)": lambda: td.llm_usage(ids, store=path),
        "pivot user, all time": lambda: td.pivot_traces("user", store=path),
        "pivot session, all time (20k groups)": lambda: td.pivot_traces("session", store=path),
        "pivot model, all time": lambda: td.pivot_traces("model", store=path),
        "pivot tags.tier, all time": lambda: td.pivot_traces("tags.tier", store=path),
        "pivot metadata.lang, all time": lambda: td.pivot_traces("metadata.lang", store=path),
        "pivot feedback.is_correct, all time": lambda: td.pivot_traces("feedback.is_correct", store=path),
        "pivot user, filter tags.tier = 'pro'": lambda: td.pivot_traces("user", "tags.tier = 'pro'", store=path),
        "pivot user, last 7 days": lambda: td.pivot_traces("user", time_from=week[0], time_to=week[1], store=path),
        "pivot user, last 24 hours": lambda: td.pivot_traces("user", time_from=day[0], time_to=day[1], store=path),
        "timeseries, all time (60 buckets)": lambda: td.trace_timeseries(store=path),
        "timeseries, last 7 days": lambda: td.trace_timeseries(time_from=week[0], time_to=week[1], store=path),
        "timeseries, last 24 hours": lambda: td.trace_timeseries(time_from=day[0], time_to=day[1], store=path),
        "session view": lambda: td.get_session(session, store=path),
        "fields (keys in use)": lambda: td.trace_fields(store=path),
    }
    print(f"\ndashboard queries at {n:,} traces, ms (cold / median of {args.runs})")
    results: dict[str, Any] = {"traces": n}
    for name, fn in cases.items():
        cold, warm = timed(fn, args.runs)
        results[name] = {"cold_ms": round(cold, 1), "ms": round(warm, 1)}
        print(f"{name:40s} {cold:8.1f} / {warm:7.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    if work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
