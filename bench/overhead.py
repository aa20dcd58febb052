"""What tracing costs the application, measured side by side in one run.

    python bench/overhead.py [--calls 4000] [--rounds 31] [--burst 100000] [--json out.json]

Prints µs per call of (a) a bare function, (b) a bare OTel SDK span with 3 attributes on a
TracerProvider with the standard BatchSpanProcessor and an exporter that discards, (c) ``@trace``
with 3 attributes plus ``update_current_trace(user, session, client_request_id, 2 tags)`` writing
to DuckDB, and the ratio c/b. Then a burst of traced calls from 4 threads (calls/s, spans dropped,
time from the burst's end until all are durable in DuckDB), and the writer alone fed pre-built
finished spans (spans/s stored, detaching the file after each batch and with a backlog).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import traceduck
from traceduck.raw_spans import RawSpans
from traceduck.store.duckdb_store import DuckDBStore


class DiscardExporter(SpanExporter):
    def export(self, spans):  # noqa: ANN001
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def bare(x: int) -> int:
    return x + 1


def per_call_us(fn, calls: int) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Many short rounds: this VM's speed drifts within seconds, and a ratio paired within a round
    # of ~0.5 s is steadier than one over rounds of several seconds.
    parser.add_argument("--calls", type=int, default=4_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--burst", type=int, default=100_000, help="traced calls in the 4-thread burst")
    parser.add_argument("--writer-spans", type=int, default=200_000)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="traceduck-bench-")
    results: dict[str, float] = {}

    # (b) bare OTel span, BatchSpanProcessor + discarding exporter
    provider_b = TracerProvider()
    provider_b.add_span_processor(BatchSpanProcessor(DiscardExporter()))
    tracer_b = provider_b.get_tracer("bench")

    def otel_span(x: int) -> int:
        with tracer_b.start_as_current_span("bare", attributes={"a": 1, "b": "x", "c": 2.5}):
            return x + 1

    # (c) traceduck, writing to a DuckDB file
    store_path = os.path.join(tmp, "overhead.duckdb")
    traceduck.configure(store_path, tracer_provider=TracerProvider())

    @traceduck.trace(attributes={"a": 1, "b": "x", "c": 2.5})
    def traced(x: int) -> int:
        traceduck.update_current_trace(
            user="user-1", session_id="session-1", client_request_id=f"req-{x}",
            tags={"tier": "pro", "task": "chat"},
        )
        return x + 1

    rows: dict[str, list[float]] = {"bare": [], "otel": [], "traceduck": []}
    for fn in (bare, otel_span, traced):  # warm up
        per_call_us(fn, 2000)
    traceduck.flush()
    for round_ in range(args.rounds):
        rows["bare"].append(per_call_us(bare, args.calls))
        # (b) and (c) take turns going first, so a drift within a round favours neither
        pair = [("otel", otel_span), ("traceduck", traced)]
        for key, fn in pair if round_ % 2 == 0 else reversed(pair):
            rows[key].append(per_call_us(fn, args.calls))
        provider_b.force_flush()
        traceduck.flush()
    for key, values in rows.items():
        results[f"{key}_us"] = statistics.median(values)
    # (b) and (c) run back to back in each round, so each round gives a paired ratio; the median
    # of those is steadier on a noisy machine than the ratio of the two medians.
    ratios = sorted(c / b for b, c in zip(rows["otel"], rows["traceduck"]))
    results["ratio_c_over_b"] = statistics.median(ratios)
    results["ratio_range"] = [ratios[0], ratios[-1]]
    print(f"(a) bare function        {results['bare_us']:8.2f} µs/call")
    print(f"(b) bare OTel span       {results['otel_us']:8.2f} µs/call")
    print(f"(c) @trace + update      {results['traceduck_us']:8.2f} µs/call")
    print(f"    ratio c/b            {results['ratio_c_over_b']:8.2f}   median of {len(ratios)} paired rounds "
          f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}; target <= 1.5)")
    provider_b.shutdown()

    # burst: N traced calls from 4 threads
    traceduck.configure(os.path.join(tmp, "burst.duckdb"), tracer_provider=TracerProvider())
    per_thread = args.burst // 4
    barrier = threading.Barrier(5)

    def worker() -> None:
        barrier.wait()
        for i in range(per_thread):
            traced(i)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    burst_end = time.perf_counter()
    traceduck.flush(timeout=120)
    durable = time.perf_counter()
    stats = traceduck.stats()
    results["burst_calls_per_s"] = per_thread * 4 / (burst_end - start)
    results["burst_dropped"] = stats["dropped_spans"]
    results["burst_durable_after_s"] = durable - burst_end
    traceduck.shutdown()
    import duckdb  # noqa: PLC0415

    with duckdb.connect(os.path.join(tmp, "burst.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM traces").fetchall()[0][0]
    results["burst_stored"] = stored
    print(f"burst of {per_thread * 4} calls from 4 threads: {results['burst_calls_per_s']:,.0f} calls/s, "
          f"{stats['dropped_spans']} dropped, durable {results['burst_durable_after_s']:.2f} s after the "
          f"burst ended, {stored} traces stored  (targets: 0 dropped, <= 1 s)")

    # the writer alone, fed pre-built finished spans: twice, to two files, as the processor writes
    # (a) when each batch is all there is (the file attached and detached, so checkpointed, per
    # batch) and (b) with a backlog (``linger``: the file stays attached between batches, as the
    # processor asks while more spans are queued; detached, so checkpointed, after the last one)
    batch_size = 20_000
    base = time.time_ns()
    resource = {"service.name": "bench"}
    child_attrs = ({"traceduck.inputs": '{"q": "hi"}', "traceduck.outputs": '"ok"',
                              "traceduck.span_type": "LLM", "gen_ai.request.model": "gpt-4o"})
    root_attrs = ({"traceduck.inputs": '{"q": "hi"}', "traceduck.outputs": '"ok"',
                             "traceduck.span_type": "CHAIN", "a": 1,
                             "traceduck.trace": json.dumps({"metadata": {"trace.user": "u1", "trace.session": "s1"},
                                                            "tags": {"tier": "pro"}})})

    def batches() -> list[RawSpans]:
        out = []
        for b in range(args.writer_spans // batch_size):
            raw = RawSpans()
            res = raw.resource(resource)
            for i in range(batch_size // 2):
                n = b * batch_size + i
                trace_id = f"{n:032x}"
                start_ns = base + n * 1000
                root_id, child_id = f"{2 * n + 1:016x}", f"{2 * n + 2:016x}"
                raw.add(trace_id, child_id, root_id, False, "llm", "INTERNAL", start_ns + 10, start_ns + 800,
                        "UNSET", None, dict(child_attrs), None, res)
                raw.add(trace_id, root_id, None, False, "handle", "INTERNAL", start_ns, start_ns + 900,
                        "UNSET", None, dict(root_attrs), None, res)
            out.append(raw)
        return out

    # Steady state: pyarrow imports pandas on its first conversion (~0.4 s, once per process;
    # the writer process does it when it starts), which is not the writer's throughput.
    RawSpans().to_arrow()
    for key, linger in (("writer_spans_per_s", False), ("writer_backlog_spans_per_s", True)):
        store = DuckDBStore(os.path.join(tmp, f"writer-{key}.duckdb"))
        store.acquire_writer()
        todo = batches()
        start = time.perf_counter()
        for k, batch in enumerate(todo):
            store.write(batch, linger=linger and k < len(todo) - 1)
        store.release()
        results[key] = args.writer_spans / (time.perf_counter() - start)
        store.release_writer()
    print(f"writer alone: {results['writer_spans_per_s']:,.0f} spans/s stored with the file attached and "
          f"detached per batch; {results['writer_backlog_spans_per_s']:,.0f} spans/s with a backlog (attached "
          f"while more batches wait, as the processor writes them); batches of {batch_size} spans, rows "
          "prepared (target >= 50,000)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
