"""Faults, measured: what a collector that is down, hung, overloaded or killed costs, side by side.

    python bench/faults.py [--quick] [--only outage,overload,kill] [--json out.json]

The figures behind the hardening promise (the behaviour checks are ``tests/test_faults.py``; this
reuses its machinery, ``tests/_faults.py``). Everything runs as real processes on 127.0.0.1:

1. **Collector down / hung.** An application in remote mode (``configure(store=URL, api_key=...,
   max_queue_size=Q)``) serves traced calls in bursts, in rounds of: collector up, collector
   stopped (SIGTERM; connections refused) for ``--outage-seconds``, restarted on the same port,
   collector hung (SIGSTOP; connections accepted, never answered) for as long, resumed. Per state:
   p50/p99 µs of a traced call, and their ratios to the same round's "up" burst; the app's RSS
   growth (sampled every 50 ms) over its RSS before the round, against its queue bound Q; spans
   dropped and counted (produced = exported + dropped + failed, nothing unaccounted); seconds from
   the collector being healthy / resumed until the app has caught up (its queue is empty and every
   span is exported or counted as dropped, i.e. acknowledged = committed); and at the end, spans
   the app had acknowledged that are not in the store file (must be 0).
2. **Overload.** N sender processes (``tests/_faults.py send``: exporters with one request in
   flight each, retrying after Retry-After) first post as fast as they are acknowledged: the
   sustainable ingest rate. Then searches (``GET /api/traces`` with a filter) are timed idle, and
   again while 4x that rate is offered for ``--overload-seconds`` by more exporters than the
   collector's ingest queue can hold (``--max-queued-spans``, small here so that shedding happens
   at all: with the default 200,000 the same load is absorbed by queueing instead). Reports the
   share of requests answered 429/503, the rate acknowledged under overload against the
   sustainable rate measured before and again after it (with the store grown and the same
   searches running as during the overload), search p50/p99 during overload vs idle (before and
   after it) vs sustainable ingest, the collector's RSS peak, and acknowledged spans missing
   afterwards (must be 0) or traces visible incomplete (must be 0). A fresh collector is warmed
   up with 2 s of ingest first.
3. **kill -9 mid-ingest.** Senders post as fast as acknowledged, the collector is SIGKILLed after
   ``--kill-after`` seconds; the file is checked as a new reader sees it: acknowledged spans
   missing (must be 0), incomplete traces visible (must be 0; traces are split over two requests).
   Then the time to restart until /healthz answers, after the kill (WAL replay) vs after a clean
   stop of the same store.

``--quick`` takes about a minute, the full run a few minutes. Exits 1 (after printing and writing
the figures) if an invariant that must hold (0 lost, 0 incomplete, 0 unaccounted) did not.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from _collector import create_key  # noqa: E402
from _faults import (  # noqa: E402
    FaultCollector,
    RemoteApp,
    RssSampler,
    Searcher,
    Sender,
    check_store,
    incomplete_traces,
    missing_acked_spans,
    percentile,
    rss_kb,
)

PROJECT = "faults-bench"
TAG = "faults"
SECTIONS = ("outage", "overload", "kill")

#: Sizes per mode; each can be overridden by its flag.
MODES: dict[str, dict[str, Any]] = {
    "quick": {"rounds": 1, "queue": 5_000, "warm_calls": 2_000, "up_calls": 5_000, "outage_calls": 15_000,
              "outage_seconds": 4.0, "rate_seconds": 3.0, "idle_seconds": 2.0, "overload_seconds": 10.0,
              "kill_rounds": 1, "kill_after": 3.0},
    "full": {"rounds": 3, "queue": 20_000, "warm_calls": 5_000, "up_calls": 20_000, "outage_calls": 40_000,
             "outage_seconds": 15.0, "rate_seconds": 10.0, "idle_seconds": 10.0, "overload_seconds": 60.0,
             "kill_rounds": 3, "kill_after": 8.0},
}  # fmt: skip


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- 1. collector down / hung ---------------------------------------------------------------------


def _settle(app: RemoteApp, produced: int, timeout: float) -> tuple[float, dict[str, Any]]:
    """Poll the app's counters (every 50 ms) until every span it produced is exported or counted
    as dropped/failed; (seconds it took, counters)."""
    start = time.monotonic()
    while True:
        stats = app.stats()
        if stats["written_spans"] + stats["dropped_spans"] + stats["failed_spans"] >= produced:
            return time.monotonic() - start, stats
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"the app did not catch up within {timeout:.0f}s: {stats}, produced {produced}")
        time.sleep(0.05)


def _burst(app: RemoteApp, calls: int, run: str) -> tuple[dict[str, Any], int]:
    """One burst of traced calls, its RSS peak sampled from outside every 50 ms."""
    with RssSampler(app.proc.pid, interval=0.05) as rss:
        result = app.ask(f"burst {calls} {run}", timeout=600)
    return result, max(rss.max_kb, result["rss_max_kb"])


def bench_outage(cfg: dict[str, Any], work: str) -> dict[str, Any]:
    store = os.path.join(work, "outage.duckdb")
    key = create_key(store, PROJECT)
    q = cfg["queue"]
    with ExitStack() as stack:
        server = FaultCollector(store, os.path.join(work, "outage-collector-0.log"))
        current = [server]
        stack.callback(lambda: current[0].stop())
        app = RemoteApp(server.base_url, key.key, q, os.path.join(work, "outage-app.log"))
        stack.callback(app.stop)
        port = server.port

        produced = app.ask(f"burst {cfg['warm_calls']} warm", timeout=600)["spans"]
        _settle(app, produced, timeout=300)
        rounds: list[dict[str, Any]] = []
        for r in range(cfg["rounds"]):
            row: dict[str, Any] = {}
            rss_before = app.ask("stats")["rss_kb"]
            before = app.stats()
            up, peak = _burst(app, cfg["up_calls"], f"up-{r}")
            produced += up["spans"]
            row["up"] = up
            row["rss_growth_up"] = peak - rss_before
            _, after = _settle(app, produced, timeout=300)
            row["dropped_up"] = after["dropped_spans"] - before["dropped_spans"]

            for state in ("down", "hung"):
                before = app.stats()
                with RssSampler(app.proc.pid, interval=0.05) as rss:  # the outage and the catch-up after it
                    started = time.monotonic()
                    if state == "down":
                        server.stop()
                    else:
                        server.pause()
                    try:
                        result = app.ask(f"burst {cfg['outage_calls']} {state}-{r}", timeout=600)
                        produced += result["spans"]
                        time.sleep(max(0.0, cfg["outage_seconds"] - (time.monotonic() - started)))
                        during = app.stats()
                    finally:
                        if state == "down":
                            server = FaultCollector(store, os.path.join(work, f"outage-collector-{r + 1}.log"),
                                                    port=port)  # fmt: skip
                            current[0] = server
                        else:
                            server.resume()
                    outage_s = time.monotonic() - started
                    catchup_s, _ = _settle(app, produced, timeout=600)
                row[state] = result
                row[f"rss_growth_{state}"] = max(rss.max_kb, result["rss_max_kb"]) - rss_before
                row[f"outage_s_{state}"] = outage_s
                row[f"produced_{state}"] = result["spans"]
                row[f"written_during_{state}"] = during["written_spans"] - before["written_spans"]
                row[f"dropped_{state}"] = during["dropped_spans"] - before["dropped_spans"]
                row[f"held_{state}"] = (produced - during["written_spans"] - during["dropped_spans"]
                                        - during["failed_spans"])  # fmt: skip
                row[f"catchup_s_{state}"] = catchup_s
            rounds.append(row)

        assert app.ask("flush 60")["flushed"]
        final = app.stats()
        client = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key.key}"}, timeout=30)
        ingest = client.get("/api/stats").json()
        client.close()
        app.stop()
        server.stop()
    stored = check_store(store)

    def each(name: str) -> list[float]:
        return [row[name] for row in rounds]

    def lat(state: str, q_: str) -> float | None:
        return med([row[state][f"{q_}_us"] for row in rounds])

    def ratio(state: str, q_: str) -> float | None:
        return med([row[state][f"{q_}_us"] / row["up"][f"{q_}_us"] for row in rounds])

    growth = max(max(each("rss_growth_up")), max(each("rss_growth_down")), max(each("rss_growth_hung")))
    out: dict[str, Any] = {
        "outage_rounds": cfg["rounds"],
        "outage_seconds": med(each("outage_s_down") + each("outage_s_hung")),
        "app_queue_bound_spans": q,
        "calls_per_burst_up": cfg["up_calls"],
        "calls_per_burst_outage": cfg["outage_calls"],
    }
    for state in ("up", "down", "hung"):
        out[f"call_p50_us_{state}"] = lat(state, "p50")
        out[f"call_p99_us_{state}"] = lat(state, "p99")
    for state in ("down", "hung"):
        out[f"call_p50_ratio_{state}_over_up"] = ratio(state, "p50")
        out[f"call_p99_ratio_{state}_over_up"] = ratio(state, "p99")
    for state in ("up", "down", "hung"):
        out[f"app_rss_growth_kb_{state}"] = max(each(f"rss_growth_{state}"))
    out["app_rss_growth_bytes_per_queued_span"] = growth * 1024 / q
    out["spans_dropped_up"] = sum(each("dropped_up"))
    for state in ("down", "hung"):
        out[f"spans_produced_{state}"] = sum(each(f"produced_{state}"))
        out[f"spans_dropped_{state}"] = sum(each(f"dropped_{state}"))
        out[f"spans_exported_during_{state}"] = sum(each(f"written_during_{state}"))
        out[f"spans_held_max_{state}"] = max(each(f"held_{state}"))
    out["spans_unaccounted"] = produced - final["written_spans"] - final["dropped_spans"] - final["failed_spans"]
    out["spans_failed"] = final["failed_spans"]
    for state in ("down", "hung"):
        out[f"catchup_s_after_{state}"] = med(each(f"catchup_s_{state}"))
        out[f"catchup_s_after_{state}_max"] = max(each(f"catchup_s_{state}"))
    out["collector_duplicate_spans_after_hang"] = ingest["duplicate_spans"]  # resent after a timed-out request
    out["app_acked_spans"] = final["written_spans"]
    out["app_acked_spans_missing"] = max(0, final["written_spans"] - stored.spans)
    return out


# -- 2. overload ----------------------------------------------------------------------------------


def _statuses(summaries: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in summaries:
        for code, n in s["statuses"].items():
            out[code] = out.get(code, 0) + n
    return out


def _run_senders(senders: list[Sender], timeout: float) -> list[dict[str, Any]]:
    for s in senders:
        s.go()
    return [s.finish(timeout=timeout) for s in senders]


def _searches(searcher: Searcher) -> tuple[list[float], int]:
    ok = [seconds * 1000 for status, seconds in searcher.results if status == 200]
    return ok, len(searcher.results) - len(ok)


def bench_overload(cfg: dict[str, Any], work: str) -> dict[str, Any]:
    store = os.path.join(work, "overload.duckdb")
    key = create_key(store, PROJECT)
    run = secrets.token_bytes(4)
    traces = cfg["traces_per_request"]
    flt = cfg["search_filter"]
    with ExitStack() as stack:
        server = FaultCollector(store, os.path.join(work, "overload-collector.log"),
                                "--max-queued-spans", str(cfg["max_queued_spans"]))  # fmt: skip
        stack.callback(server.stop)
        client = server.client(key.key)

        def ingest_idle() -> None:
            deadline = time.monotonic() + 120
            while client.get("/api/stats").json()["queued_spans"] and time.monotonic() < deadline:
                time.sleep(0.05)

        in_flight = cfg["senders"] * cfg["rate_apps"] * traces * 5
        if in_flight > cfg["max_queued_spans"]:
            print(f"warning: {in_flight} spans in flight > --max-queued-spans {cfg['max_queued_spans']}: the"
                  " sustainable rate will be measured with shedding", file=sys.stderr)  # fmt: skip
        if cfg["overload_senders"] * cfg["overload_apps"] * traces * 5 <= cfg["max_queued_spans"]:
            print("warning: the overload exporters cannot fill the ingest queue: expect no 429", file=sys.stderr)
        # warm-up (a fresh collector and store are slow for their first requests), not measured
        warm = [Sender(server.base_url, run, key=key.key, sender=300 + i, apps=cfg["rate_apps"], traces=traces,
                       duration=2.0, tag=TAG) for i in range(cfg["senders"])]  # fmt: skip
        for s in warm:
            stack.callback(s.kill)
        _run_senders(warm, timeout=120)
        ingest_idle()
        # the sustainable rate: closed loop, as fast as acknowledged, fewer requests in flight than the queue holds
        senders = [Sender(server.base_url, run, key=key.key, sender=i, apps=cfg["rate_apps"], traces=traces,
                          duration=cfg["rate_seconds"], tag=TAG) for i in range(cfg["senders"])]  # fmt: skip
        for s in senders:
            stack.callback(s.kill)
        rate_summaries = _run_senders(senders, timeout=cfg["rate_seconds"] + 120)
        sustainable = sum(s["acked_spans"] for s in rate_summaries) / max(s["seconds"] for s in rate_summaries)
        rate_statuses = _statuses(rate_summaries)
        ingest_idle()

        with Searcher(server.base_url, key.key, flt, interval=0.1) as idle_before:
            time.sleep(cfg["idle_seconds"])
        rss_idle = rss_kb(server.pid) or 0

        # 4x the sustainable rate, open loop, from more exporters than the ingest queue holds requests
        exporters = cfg["overload_senders"] * cfg["overload_apps"]
        spans_per_request = rate_summaries[0]["spans_per_request"]
        offered = cfg["factor"] * sustainable
        per_app = offered / spans_per_request / exporters
        overload = [Sender(server.base_url, run, key=key.key, sender=100 + i, apps=cfg["overload_apps"],
                           traces=traces, duration=cfg["overload_seconds"], rate=per_app, queue_limit=20, tag=TAG)
                    for i in range(cfg["overload_senders"])]  # fmt: skip
        for s in overload:
            stack.callback(s.kill)
        with RssSampler(server.pid, interval=0.1) as rss, Searcher(server.base_url, key.key, flt, interval=0.1) as busy:
            summaries = _run_senders(overload, timeout=cfg["overload_seconds"] + 180)
        ingest_idle()
        with Searcher(server.base_url, key.key, flt, interval=0.1) as idle_after:
            time.sleep(cfg["idle_seconds"])
        # the sustainable rate again, on the store as the overload left it and with the same searches
        # running as during the overload: a lower rate under overload than here is the overload's
        # doing, not the store's growth nor the searches'
        after = [Sender(server.base_url, run, key=key.key, sender=200 + i, apps=cfg["rate_apps"], traces=traces,
                        duration=cfg["rate_seconds"], tag=TAG) for i in range(cfg["senders"])]  # fmt: skip
        for s in after:
            stack.callback(s.kill)
        with Searcher(server.base_url, key.key, flt, interval=0.1) as loaded:
            after_summaries = _run_senders(after, timeout=cfg["rate_seconds"] + 120)
        sustainable_after = sum(s["acked_spans"] for s in after_summaries) / max(s["seconds"] for s in after_summaries)
        ingest_idle()
        stats = client.get("/api/stats").json()
        server.stop()

    acked = {(s.sender, app): n for s in [*warm, *senders, *overload, *after] for app, n in s.acked.items()}
    missing = missing_acked_spans(store, run, acked, traces=traces)
    incomplete = incomplete_traces(store, run)
    check = check_store(store)

    statuses = _statuses(summaries)
    answered = sum(statuses.values())
    seconds = max(s["seconds"] for s in summaries)
    idle_ms, idle_failed = _searches(idle_before)
    idle2_ms, idle2_failed = _searches(idle_after)
    idle_all = idle_ms + idle2_ms
    busy_ms, busy_failed = _searches(busy)
    loaded_ms, loaded_failed = _searches(loaded)
    produced = sum(s["produced_batches"] for s in summaries)
    acked_rate = sum(s["acked_spans"] for s in summaries) / seconds
    p = lambda values, q: percentile(values, q)  # noqa: E731
    return {
        "sustainable_spans_per_s": sustainable,
        "sustainable_spans_per_s_after_overload": sustainable_after,
        "sustainable_exporters": cfg["senders"] * cfg["rate_apps"],
        "sustainable_share_429": rate_statuses.get("429", 0) / max(1, sum(rate_statuses.values())),
        "overload_factor": cfg["factor"],
        "overload_seconds": seconds,
        "overload_exporters": exporters,
        "overload_collector_max_queued_spans": cfg["max_queued_spans"],
        "overload_offered_spans_per_s": offered,
        "overload_produced_spans_per_s": produced * spans_per_request / seconds,  # as the exporters counted it
        "overload_acked_spans_per_s": acked_rate,
        "overload_acked_ratio_over_sustainable": acked_rate / sustainable,
        "overload_acked_ratio_over_sustainable_after": acked_rate / sustainable_after,
        "overload_requests": answered,
        "overload_share_429": statuses.get("429", 0) / max(1, answered),
        "overload_share_503": statuses.get("503", 0) / max(1, answered),
        "overload_other_statuses": answered - sum(statuses.get(c, 0) for c in ("200", "429", "503")),
        "overload_no_retry_after": sum(s["no_retry_after"] for s in summaries),
        "overload_transport_errors": sum(s["errors"] for s in summaries),
        "overload_sender_dropped_share": sum(s["dropped_batches"] for s in summaries) / max(1, produced),
        "overload_ack_ms_p50": med([s["ack_ms_p50"] for s in summaries if s["ack_ms_p50"] is not None]),
        "search_filter": flt,
        "search_count_idle": len(idle_all),
        "search_count_overload": len(busy_ms),
        "search_p50_ms_idle": p(idle_all, 0.5),
        "search_p99_ms_idle": p(idle_all, 0.99),
        "search_p50_ms_overload": p(busy_ms, 0.5),
        "search_p99_ms_overload": p(busy_ms, 0.99),
        "search_p50_ms_sustainable_ingest": p(loaded_ms, 0.5),
        "search_p99_ms_sustainable_ingest": p(loaded_ms, 0.99),
        "search_p50_ratio_overload_over_idle": (p(busy_ms, 0.5) or 0) / (p(idle_all, 0.5) or 1),
        "search_p99_ratio_overload_over_idle": (p(busy_ms, 0.99) or 0) / (p(idle_all, 0.99) or 1),
        "search_failed_idle": idle_failed + idle2_failed,
        "search_failed_overload": busy_failed + loaded_failed,
        "collector_rss_idle_kb": rss_idle,
        "collector_rss_peak_kb_overload": rss.max_kb,
        "collector_refused_spans": stats["refused_spans"],
        "collector_stored_spans": stats["stored_spans"],
        "overload_acked_spans": missing["acked_spans"],
        "overload_acked_spans_missing": missing["missing_children"] + missing["missing_roots"],
        "overload_incomplete_traces": incomplete + check.rootless_traces,
    }


# -- 3. kill -9 mid-ingest ------------------------------------------------------------------------


def bench_kill(cfg: dict[str, Any], work: str) -> dict[str, Any]:
    store = os.path.join(work, "kill.duckdb")
    key = create_key(store, PROJECT)
    traces = cfg["traces_per_request"]
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        current: list[FaultCollector] = [FaultCollector(store, os.path.join(work, "kill-collector-0.log"))]
        stack.callback(lambda: current[0].kill())
        for r in range(cfg["kill_rounds"]):
            server = current[0]
            run = secrets.token_bytes(4)
            senders = [Sender(server.base_url, run, key=key.key, sender=i, apps=cfg["rate_apps"], traces=traces,
                              duration=cfg["kill_after"] + 300, stop_on_error=True, stream_acks=True, tag=TAG)
                       for i in range(cfg["senders"])]  # fmt: skip
            for s in senders:
                stack.callback(s.kill)
            for s in senders:
                s.go()
            deadline = time.monotonic() + cfg["kill_after"]
            while time.monotonic() < deadline:
                for s in senders:
                    s.poll_acks()
                time.sleep(0.05)
            wal = store + ".wal"
            server.kill()
            wal_bytes = os.path.getsize(wal) if os.path.exists(wal) else 0  # what the restart has to replay
            for s in senders:
                s.wait_exit(timeout=60)
            acked = {(s.sender, app): n for s in senders for app, n in s.acked.items()}
            # as a new reader sees the file right after the kill (WAL replayed in memory, not checkpointed)
            check = check_store(store)
            missing = missing_acked_spans(store, run, acked, traces=traces)
            incomplete = incomplete_traces(store, run)

            wal_restart = os.path.getsize(wal) if os.path.exists(wal) else 0  # the checks did not checkpoint it
            t = time.perf_counter()
            server = FaultCollector(store, os.path.join(work, f"kill-collector-{r}-restart.log"))
            current[0] = server
            restart_after_kill = time.perf_counter() - t
            server.stop()  # clean: drains and checkpoints
            t = time.perf_counter()
            server = FaultCollector(store, os.path.join(work, f"kill-collector-{r}-clean.log"))
            current[0] = server
            restart_clean = time.perf_counter() - t
            rows.append({
                "acked_spans": missing["acked_spans"],
                "missing": missing["missing_children"] + missing["missing_roots"],
                "incomplete": incomplete + check.rootless_traces,
                "duplicates": check.duplicate_spans + check.duplicate_trace_rows,
                "wal_mb": wal_bytes / 1e6,
                "wal_mb_restart": wal_restart / 1e6,
                "restart_kill": restart_after_kill,
                "restart_clean": restart_clean,
            })  # fmt: skip
        current[0].stop()
    each = lambda name: [row[name] for row in rows]  # noqa: E731
    return {
        "kill_rounds": cfg["kill_rounds"],
        "kill_after_s": cfg["kill_after"],
        "kill_acked_spans": sum(each("acked_spans")),
        "kill_acked_spans_missing": sum(each("missing")),
        "kill_incomplete_traces": sum(each("incomplete")),
        "kill_duplicate_rows": sum(each("duplicates")),
        "kill_wal_mb_at_kill": med(each("wal_mb")),
        "kill_wal_mb_at_restart": med(each("wal_mb_restart")),
        "kill_store_mb": os.path.getsize(store) / 1e6,
        "restart_s_after_kill": med(each("restart_kill")),
        "restart_s_after_clean_stop": med(each("restart_clean")),
        "restart_ratio_kill_over_clean": med([k / c for k, c in zip(each("restart_kill"), each("restart_clean"))]),
    }


# -- output ---------------------------------------------------------------------------------------

#: Figures that must be exactly 0 (the promise), and figures with an expectation worth printing.
MUST_BE_ZERO = ("spans_unaccounted", "app_acked_spans_missing", "spans_exported_during_down",
                "overload_acked_spans_missing", "overload_incomplete_traces", "overload_no_retry_after",
                "overload_transport_errors", "overload_other_statuses", "search_failed_overload",
                "kill_acked_spans_missing", "kill_incomplete_traces", "kill_duplicate_rows")  # fmt: skip

TABLE: list[tuple[str, list[tuple[str, str]]]] = [
    ("collector down / hung: an app in remote mode serving traced calls", [
        ("app_queue_bound_spans", "app queue bound (max_queue_size, spans)"),
        ("outage_seconds", "each outage lasted (s)"),
        ("call_p50_us_up", "traced call p50 µs: up"), ("call_p50_us_down", "                   down"),
        ("call_p50_us_hung", "                   hung"),
        ("call_p99_us_up", "traced call p99 µs: up"), ("call_p99_us_down", "                   down"),
        ("call_p99_us_hung", "                   hung"),
        ("call_p50_ratio_down_over_up", "p50 ratio down/up (paired)"), ("call_p99_ratio_down_over_up", "p99 ratio down/up"),
        ("call_p50_ratio_hung_over_up", "p50 ratio hung/up"), ("call_p99_ratio_hung_over_up", "p99 ratio hung/up"),
        ("app_rss_growth_kb_up", "app RSS growth kB: up"), ("app_rss_growth_kb_down", "                   down"),
        ("app_rss_growth_kb_hung", "                   hung"),
        ("app_rss_growth_bytes_per_queued_span", "max growth / queue bound (bytes per span)"),
        ("spans_produced_down", "spans produced while down"), ("spans_dropped_down", "  dropped and counted"),
        ("spans_held_max_down", "  held in memory (max)"), ("spans_exported_during_down", "  reported exported"),
        ("spans_produced_hung", "spans produced while hung"), ("spans_dropped_hung", "  dropped and counted"),
        ("spans_held_max_hung", "  held in memory (max)"),
        ("spans_dropped_up", "spans dropped while up (app faster than export)"),
        ("spans_unaccounted", "spans neither exported nor counted"),
        ("catchup_s_after_down", "caught up s after restart (median)"), ("catchup_s_after_down_max", "  max"),
        ("catchup_s_after_hung", "caught up s after SIGCONT (median)"), ("catchup_s_after_hung_max", "  max"),
        ("collector_duplicate_spans_after_hang", "spans resent after a timed-out request (deduplicated)"),
        ("app_acked_spans_missing", "acknowledged spans missing from the store"),
    ]),
    ("overload", [
        ("sustainable_spans_per_s", "sustainable ingest, spans/s acknowledged"),
        ("sustainable_share_429", "  share answered 429 meanwhile"),
        ("sustainable_spans_per_s_after_overload", "  again after, with the overload's searches"),
        ("overload_offered_spans_per_s", "offered spans/s (x factor)"),
        ("overload_acked_spans_per_s", "acknowledged spans/s under overload"),
        ("overload_acked_ratio_over_sustainable", "  ratio to the sustainable rate before"),
        ("overload_acked_ratio_over_sustainable_after", "  ratio to the sustainable rate after"),
        ("overload_exporters", "exporters (1 request in flight each)"),
        ("overload_collector_max_queued_spans", "collector --max-queued-spans"),
        ("overload_requests", "requests answered"),
        ("overload_share_429", "share answered 429"), ("overload_share_503", "share answered 503"),
        ("overload_no_retry_after", "429/503 without Retry-After"),
        ("overload_sender_dropped_share", "batches dropped by the exporters (queue full)"),
        ("overload_ack_ms_p50", "ack latency ms p50 (median of senders)"),
        ("search_p50_ms_idle", "search p50 ms: idle"),
        ("search_p50_ms_sustainable_ingest", "                sustainable ingest"),
        ("search_p50_ms_overload", "                overload"),
        ("search_p99_ms_idle", "search p99 ms: idle"),
        ("search_p99_ms_sustainable_ingest", "                sustainable ingest"),
        ("search_p99_ms_overload", "                overload"),
        ("search_p50_ratio_overload_over_idle", "search p50 ratio overload/idle"),
        ("search_failed_overload", "searches failed during overload"),
        ("collector_rss_idle_kb", "collector RSS kB: idle"), ("collector_rss_peak_kb_overload", "  peak in overload"),
        ("overload_acked_spans", "acknowledged spans (all phases)"),
        ("overload_acked_spans_missing", "  missing afterwards"),
        ("overload_incomplete_traces", "incomplete traces visible"),
    ]),
    ("kill -9 of the collector mid-ingest", [
        ("kill_acked_spans", "spans acknowledged before the kills"),
        ("kill_acked_spans_missing", "  missing after the kill"),
        ("kill_incomplete_traces", "incomplete traces visible"),
        ("kill_wal_mb_at_kill", "WAL at the kill (MB)"),
        ("restart_s_after_kill", "restart until healthy s: after kill -9"),
        ("restart_s_after_clean_stop", "                        after clean stop"),
        ("restart_ratio_kill_over_clean", "ratio (paired)"),
    ]),
]  # fmt: skip


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def print_table(results: dict[str, Any]) -> None:
    for title, rows in TABLE:
        present = [(k, label) for k, label in rows if k in results]
        if not present:
            continue
        print(f"\n{title}")
        for k, label in present:
            note = "  (must be 0)" if k in MUST_BE_ZERO else ""
            print(f"  {label:52s} {_fmt(results[k]):>14s}{note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute (a smoke run)")
    parser.add_argument("--only", help=f"comma list of sections to run ({','.join(SECTIONS)}; default all)")
    parser.add_argument("--rounds", type=int, help="down/hung rounds (quick 1, full 3)")
    parser.add_argument("--queue", type=int, help="the remote app's max_queue_size in spans (quick 5,000, full 20,000)")
    parser.add_argument("--warm-calls", type=int)
    parser.add_argument("--up-calls", type=int, help="traced calls per burst with the collector up")
    parser.add_argument("--outage-calls", type=int, help="traced calls per burst with the collector down or hung")
    parser.add_argument("--outage-seconds", type=float, help="how long the collector stays down, and hung (quick 4, full 15)")
    parser.add_argument("--senders", type=int, default=2, help="sender processes for the sustainable rate and the kill")
    parser.add_argument("--rate-apps", type=int, default=8,
                        help="exporters per sender process, closed loop (2 x 8 x 250 spans in flight = the 4,000"
                             " the overload collector queues: as busy as it gets without shedding)")  # fmt: skip
    parser.add_argument("--traces-per-request", type=int, default=50, help="traces per OTLP request (5 spans each)")
    parser.add_argument("--rate-seconds", type=float, help="how long the sustainable rate is measured")
    parser.add_argument("--idle-seconds", type=float, help="idle searches before and after the overload")
    parser.add_argument("--factor", type=float, default=4.0, help="offered rate / sustainable rate")
    parser.add_argument("--overload-seconds", type=float, help="quick 10, full 60")
    parser.add_argument("--overload-senders", type=int, default=3)
    parser.add_argument("--overload-apps", type=int, default=8, help="exporters per overload sender process")
    parser.add_argument("--max-queued-spans", type=int, default=4_000,
                        help="the overload collector's ingest queue bound (product default 200,000)")  # fmt: skip
    parser.add_argument("--search-filter", default=f"tags.run = '{TAG}'")
    parser.add_argument("--kill-rounds", type=int)
    parser.add_argument("--kill-after", type=float, help="seconds of heavy ingest before each kill -9")
    parser.add_argument("--work", help="directory for stores and logs (default: a temporary one, removed)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    cfg = dict(MODES["quick" if args.quick else "full"])
    for name, value in vars(args).items():
        if value is not None and name not in ("quick", "only", "work", "json"):
            cfg[name] = value
    sections = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    work = args.work or tempfile.mkdtemp(prefix="traceduck-faults-bench-")
    os.makedirs(work, exist_ok=True)
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full"}
    started = time.perf_counter()
    try:
        for section, fn in (("outage", bench_outage), ("overload", bench_overload), ("kill", bench_kill)):
            if section in sections:
                t = time.perf_counter()
                print(f"[{section}] ...", flush=True)
                results.update(fn(cfg, work))
                results[f"{section}_section_s"] = time.perf_counter() - t
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = time.perf_counter() - started
    failed = [k for k in MUST_BE_ZERO if results.get(k) not in (None, 0)]
    results["checks_failed"] = failed
    print_table(results)
    print(f"\n{len(sections)} section(s) in {results['total_s']:.0f} s; "
          + (f"INVARIANTS BROKEN: {', '.join(failed)}" if failed else "every must-be-0 figure is 0"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    if failed:
        print(f"faults: must-be-0 figures that are not: {', '.join(f'{k}={results[k]}' for k in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
