"""Collector ingest throughput, and search through its API next to the same search in-process.

    python bench/collector.py [--spans-per-exporter 50000] [--exporters 4] [--rounds 3] [--json out.json]

Starts ``traceduck collector`` on 127.0.0.1 with a fresh store, then 4 exporter processes each
send their spans over OTLP/HTTP protobuf as fast as the collector acknowledges them. Each exporter
encodes its requests with the official OTLP encoder (``encode_spans``, what
``OTLPSpanExporter`` sends) BEFORE the clock starts, so the measured time is the collector's, not
the exporters' Python. The ingest runs ``--rounds`` times (new spans each round, into the same
collector and store, which grows), each timed from the first request to the last
acknowledgement; one round's figure varies by ±15% on a shared 2-core VM, so the figure reported
is the median round, with every round shown. Checks every span of every round is in the store
(zero lost). Then times the same searches through ``GET /api/traces`` and in-process on the
store file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

EXPORTER = r"""
import os, sys, time, json
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

index, url, spans_wanted, batch, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

class Keep(SpanExporter):
    def __init__(self): self.spans = []
    def export(self, spans): self.spans.extend(spans); return SpanExportResult.SUCCESS
    def shutdown(self): pass

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
keep = Keep()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(keep))
tracer = provider.get_tracer("bench")
trace_fields = json.dumps({"tags": {"exporter": str(index)}, "metadata": {"trace.user": f"user-{index}"}})
while len(keep.spans) < spans_wanted * rounds:
    with tracer.start_as_current_span("request", attributes={"traceduck.trace": trace_fields,
            "traceduck.inputs": '{"q": "hello"}', "traceduck.outputs": '"hi"'}):
        for k in range(4):
            with tracer.start_as_current_span(f"step-{k}", attributes={"k": k, "traceduck.span_type": "TOOL"}):
                pass
rounds_bodies = [[encode_spans(keep.spans[start + i:start + min(i + batch, spans_wanted)]).SerializeToString()
                  for i in range(0, spans_wanted, batch)]
                 for start in range(0, spans_wanted * rounds, spans_wanted)]
session = requests.Session()
print("ready", flush=True)
for bodies in rounds_bodies:
    sys.stdin.readline()  # the starting gun of this round
    for body in bodies:
        while True:
            r = session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"})
            if r.status_code == 200:
                break
            time.sleep(float(r.headers.get("Retry-After", "0.1")))  # 429/503: retry, as OTLP exporters do
    print("done", flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans-per-exporter", type=int, default=50_000)
    parser.add_argument("--exporters", type=int, default=4)
    parser.add_argument("--batch", type=int, default=512, help="spans per OTLP request (the SDK default)")
    parser.add_argument("--rounds", type=int, default=3, help="ingest rounds; the median round is reported")
    parser.add_argument("--runs", type=int, default=7, help="runs of each search")
    parser.add_argument("--json")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="traceduck-collector-bench-")
    store = os.path.join(work, "collector.duckdb")
    port = _free_port()
    traceduck_cli = [sys.executable, "-c", "import sys; from traceduck.cli import main; sys.exit(main())"]
    server = subprocess.Popen([*traceduck_cli, "collector", "--store", store, "--port", str(port)],
                              stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    results: dict[str, object] = {}
    try:
        for _ in range(200):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        exporters = [
            subprocess.Popen([sys.executable, "-c", EXPORTER, str(i), base + "/v1/traces",
                              str(args.spans_per_exporter), str(args.batch), str(args.rounds)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
            for i in range(args.exporters)
        ]
        for p in exporters:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        per_round = args.spans_per_exporter * args.exporters
        rounds = []
        before = httpx.get(base + "/api/stats").json()
        for _ in range(args.rounds):
            start = time.perf_counter()
            for p in exporters:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            for p in exporters:
                assert p.stdout is not None and p.stdout.readline().strip() == "done"
            elapsed = time.perf_counter() - start
            after = httpx.get(base + "/api/stats").json()
            rounds.append({"seconds": elapsed, "spans_per_s": per_round / elapsed,
                           "stored_spans": after["stored_spans"] - before["stored_spans"],
                           "batches": after["batches"] - before["batches"],
                           "write_seconds": after["write_seconds"] - before["write_seconds"]})  # fmt: skip
            before = after
        for p in exporters:
            p.wait()
        total = per_round * args.rounds
        stats = before  # the collector's counters after the last round
        rates = sorted(r["spans_per_s"] for r in rounds)
        results["ingest"] = {"spans": total, "rounds": rounds, "spans_per_s": statistics.median(rates),
                             "min_spans_per_s": rates[0], "max_spans_per_s": rates[-1],
                             "stored_spans": stats["stored_spans"], "lost_spans": total - stats["stored_spans"],
                             "refused_spans": stats["refused_spans"], "batches": stats["batches"],
                             "write_seconds": stats["write_seconds"]}  # fmt: skip
        print(f"ingest: {args.rounds} rounds of {per_round:,} spans from {args.exporters} exporters over "
              f"OTLP/HTTP protobuf, acknowledged after commit")
        for k, r in enumerate(rounds, 1):
            print(f"  round {k}: {r['seconds']:.1f} s = {r['spans_per_s']:,.0f} spans/s; {r['batches']} write "
                  f"transactions, {r['stored_spans'] / max(1, r['batches']):,.0f} spans each, writing "
                  f"{r['write_seconds']:.1f} s of the {r['seconds']:.1f} s")  # fmt: skip
        print(f"ingest: median round {statistics.median(rates):,.0f} spans/s (range {rates[0]:,.0f}-"
              f"{rates[-1]:,.0f}; target >= 20,000); sent {total:,}, stored {stats['stored_spans']:,}, "
              f"lost {total - stats['stored_spans']:,}, answered 429 for {stats['refused_spans']:,} (resent)")

        filters = ["tags.`trace.user` = 'user-1'", "tags.exporter = '2' AND span.type = 'TOOL'", None]
        api_ms = {}
        for flt in filters:
            params = {"max_results": 100, **({"filter": flt} if flt else {})}
            times = []
            for _ in range(args.runs):
                t = time.perf_counter()
                httpx.get(base + "/api/traces", params=params, timeout=60).raise_for_status()
                times.append((time.perf_counter() - t) * 1000)
            api_ms[flt or "(no filter)"] = statistics.median(times)
    finally:
        server.terminate()
        server.wait(timeout=30)

    import traceduck as td  # noqa: PLC0415

    local_ms = {}
    for flt in filters:
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            td.search_traces(flt, max_results=100, return_type="list", store=store)
            times.append((time.perf_counter() - t) * 1000)
        local_ms[flt or "(no filter)"] = statistics.median(times)
    results["search_ms"] = {"api": api_ms, "in_process": local_ms}
    print("\nsearch, first page of 100 with spans, median ms: through the API vs in-process on the file")
    for name in api_ms:
        print(f"  {name:45s} {api_ms[name]:7.1f}  vs {local_ms[name]:7.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
