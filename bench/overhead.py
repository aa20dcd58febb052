"""What tracing costs the application, measured side by side in one run.

    python bench/overhead.py [--calls 4000] [--rounds 31] [--burst 100000] [--json out.json]

Prints µs per call of (a) a bare function, (b) a bare OTel SDK span with 3 attributes on a
TracerProvider with the standard BatchSpanProcessor and an exporter that discards, (c) ``@trace``
with 3 attributes plus ``update_current_trace(user, session, client_request_id, 2 tags)`` writing
to DuckDB, and the ratio c/b. Then a burst of traced calls from 4 threads (calls/s, spans dropped,
time from the burst's end until all are durable in DuckDB), and the writer alone fed pre-built
finished spans (spans/s stored): through the writer's two child processes from span records, as
the processor writes, and the store itself fed prepared rows, with a backlog and detaching the file after each batch.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import traceduck
from traceduck.processor import StoreSpanProcessor
from traceduck.raw_spans import RECORD_ATTRIBUTES, RawSpans, ResourceRegistry, span_record, with_end_values
from traceduck.store.duckdb_store import DuckDBStore
from traceduck.store.writer_process import WriterProcess


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


def _span_records(count: int) -> tuple[list[Any], ResourceRegistry]:
    """``count`` finished spans as the processor queues them: a CHAIN root whose trace has a user,
    a session and a tag, and an LLM child, made by the OTel SDK and taken by ``span_record``, with
    the outputs and trace fields given at the end as the embedded default gives them (straight
    into the record, see traceduck/end_values.py)."""
    finished: list[Any] = []

    class Keep(SpanProcessor):
        def on_end(self, span) -> None:  # noqa: ANN001
            finished.append(span)

    provider = TracerProvider()
    provider.add_span_processor(Keep())
    tracer = provider.get_tracer("bench")
    root = {"traceduck.inputs": '{"q": "hi"}', "traceduck.span_type": "CHAIN", "a": 1}
    child = {"traceduck.inputs": '{"q": "hi"}', "traceduck.span_type": "LLM", "gen_ai.request.model": "gpt-4o"}
    for _ in range(count // 2):
        with tracer.start_as_current_span("handle", attributes=root):
            with tracer.start_as_current_span("llm", attributes=child):
                pass
    registry = ResourceRegistry()
    records = []
    for span in finished:
        fields = None
        if span.parent is None:
            fields = {"metadata": {"trace.user": "u1", "trace.session": "s1"}, "tags": {"tier": "pro"}}
        records.append(with_end_values(span_record(span, registry), '"ok"', fields))
    return records, registry


def _cpu_times() -> tuple[int, int] | None:
    """(steal, total) CPU time of the machine since boot, from Linux's /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def _steal(since: tuple[int, int] | None) -> float | None:
    """Percent of the machine's CPU time the hypervisor gave to others since ``since``: on a shared
    VM the figures of a part that ran with much of it say more about the neighbours than about us."""
    now = _cpu_times()
    if since is None or now is None or now[1] == since[1]:
        return None
    return 100.0 * (now[0] - since[0]) / (now[1] - since[1])


def _steal_note(percent: float | None) -> str:
    return "" if percent is None else f"  [CPU steal {percent:.0f}%]"


def _fresh(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """A copy of a span record whose attributes a conversion to a row may take out."""
    attributes = record[RECORD_ATTRIBUTES]
    return (*record[:RECORD_ATTRIBUTES], dict(attributes) if attributes else attributes,
            *record[RECORD_ATTRIBUTES + 1 :])  # fmt: skip


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
    results: dict[str, Any] = {}

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
    cpu = _cpu_times()
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
    results["ratio_cpu_steal_pct"] = steal = _steal(cpu)
    print(f"(a) bare function        {results['bare_us']:8.2f} µs/call")
    print(f"(b) bare OTel span       {results['otel_us']:8.2f} µs/call")
    print(f"(c) @trace + update      {results['traceduck_us']:8.2f} µs/call")
    print(f"    ratio c/b            {results['ratio_c_over_b']:8.2f}   median of {len(ratios)} paired rounds "
          f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}; target <= 1.5){_steal_note(steal)}")
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
    cpu = _cpu_times()
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
    results["burst_cpu_steal_pct"] = steal = _steal(cpu)
    traceduck.shutdown()
    import duckdb  # noqa: PLC0415

    with duckdb.connect(os.path.join(tmp, "burst.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM traces").fetchall()[0][0]
    results["burst_stored"] = stored
    print(f"burst of {per_thread * 4} calls from 4 threads: {results['burst_calls_per_s']:,.0f} calls/s, "
          f"{stats['dropped_spans']} dropped, durable {results['burst_durable_after_s']:.2f} s after the "
          f"burst ended, {stored} traces stored  (targets: 0 dropped, <= 1 s){_steal_note(steal)}")

    # The writer alone, fed pre-built finished spans (a root and an LLM child per trace, made by
    # the OTel SDK with the attributes @trace and update_current_trace give them), in batches of
    # the processor's size, three ways:
    #   (1) the writer process, end to end: the span records put in the processor's queue as
    #       ``on_end`` puts them; its writer thread sends them over the pipe in batches (the next
    #       one while the one before is written); the converter child makes rows, Arrow and the
    #       index, the writer child writes them with DuckDB (the default for a local store); timed
    #       until the processor has shut down: the file detached (checkpointed), both children exited;
    #   (2) the store fed prepared rows, with a backlog (``linger``: the file stays attached
    #       between batches, as the processor asks while more spans are queued), in this process:
    #       each batch's Arrow table built and written in turn;
    #   (3) the store fed prepared rows, each batch all there is (the file detached after it).
    batch_size = 20_000
    records, registry = _span_records(args.writer_spans)
    resources = registry.json

    def prepared_batches() -> list[RawSpans]:
        out = []
        for start in range(0, len(records), batch_size):
            raw = RawSpans("default", list(resources))
            # Making a row takes traceduck's attributes out of the record's dict: each batch
            # gets copies, so every mode stores the same spans in full.
            raw.add_records([_fresh(record) for record in records[start : start + batch_size]])
            raw.rows  # noqa: B018  (records made rows now, outside the timing)
            out.append(raw)
        return out

    # Steady state: pyarrow imports pandas on its first conversion (~0.4 s, once per process;
    # the writer process does it when it starts), which is not the writer's throughput.
    RawSpans().to_arrow()
    for key, mode in (("writer_process_spans_per_s", "process"), ("writer_backlog_spans_per_s", "backlog"),
                      ("writer_spans_per_s", "detached")):  # fmt: skip
        store = DuckDBStore(os.path.join(tmp, f"writer-{mode}.duckdb"))
        store.acquire_writer()
        todo = prepared_batches() if mode != "process" else []
        # the input is the benchmark's, not the writer's: kept out of the garbage collector's way
        gc.collect()
        gc.freeze()
        if mode == "process":
            writer = WriterProcess(store)
            writer.start()
            writer.write(RawSpans())  # the children started and warmed up before the clock starts
            processor = StoreSpanProcessor(writer, max_queue_size=len(records))
            processor._resources = registry  # the registry the records refer to by index
            cpu = _cpu_times()
            start = time.perf_counter()
            processor._queue.extend(records)  # as ``on_end`` appends them, all at once
            processor._wake.set()
            assert processor.force_flush(600_000)
            processor.shutdown()  # the writer detaches (checkpoints) the file; both children exit
            assert processor.stats.written_spans == len(records), processor.stats
        else:
            cpu = _cpu_times()
            start = time.perf_counter()
            for k, batch in enumerate(todo):
                stats = store.write(batch, linger=mode != "detached" and k < len(todo) - 1)
                assert stats.spans == len(batch), stats
            store.release()
        results[key] = len(records) / (time.perf_counter() - start)
        results[key.replace("spans_per_s", "cpu_steal_pct")] = _steal(cpu)
        store.release_writer()
        del todo
        gc.unfreeze()
    print(f"writer alone, {len(records):,} spans in batches of {batch_size:,} (target >= 50,000 spans/s):\n"
          f"  writer process, span records in:  {results['writer_process_spans_per_s']:9,.0f} spans/s"
          f"{_steal_note(results['writer_process_cpu_steal_pct'])}\n"
          f"  store, prepared rows, backlog:    {results['writer_backlog_spans_per_s']:9,.0f} spans/s"
          f"{_steal_note(results['writer_backlog_cpu_steal_pct'])}\n"
          f"  store, prepared rows, detached:   {results['writer_spans_per_s']:9,.0f} spans/s"
          f"{_steal_note(results['writer_cpu_steal_pct'])}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
