"""Collector ingest throughput, and search through its API next to the same search in-process.

    python bench/collector.py [--spans-per-exporter 50000] [--exporters 4] [--json out.json]

Starts ``traceduck collector`` on 127.0.0.1 with a fresh store, then 4 exporter processes each
send their spans over OTLP/HTTP protobuf as fast as the collector acknowledges them. Each exporter
encodes its requests with the official OTLP encoder (``encode_spans``, what
``OTLPSpanExporter`` sends) BEFORE the clock starts, so the measured time is the collector's, not
the exporters' Python. Reports spans/s from the first request to the last acknowledgement, and
checks every span is in the store (zero lost). Then times the same searches through
``GET /api/traces`` and in-process on the store file.
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

index, url, spans_wanted, batch = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

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
while len(keep.spans) < spans_wanted:
    with tracer.start_as_current_span("request", attributes={"traceduck.trace": trace_fields,
            "traceduck.inputs": '{"q": "hello"}', "traceduck.outputs": '"hi"'}):
        for k in range(4):
            with tracer.start_as_current_span(f"step-{k}", attributes={"k": k, "traceduck.span_type": "TOOL"}):
                pass
bodies = [encode_spans(keep.spans[i:i + batch]).SerializeToString() for i in range(0, spans_wanted, batch)]
session = requests.Session()
print("ready", flush=True)
sys.stdin.readline()  # the starting gun
sent = 0
for body in bodies:
    while True:
        r = session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"})
        if r.status_code == 200:
            break
        time.sleep(float(r.headers.get("Retry-After", "0.1")))  # 429/503: retry, as OTLP exporters do
    sent += 1
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
    parser.add_argument("--runs", type=int, default=7)
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
                              str(args.spans_per_exporter), str(args.batch)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
            for i in range(args.exporters)
        ]
        for p in exporters:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        start = time.perf_counter()
        for p in exporters:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in exporters:
            assert p.stdout is not None and p.stdout.readline().strip() == "done"
            p.wait()
        elapsed = time.perf_counter() - start
        total = args.spans_per_exporter * args.exporters
        stats = httpx.get(base + "/api/stats").json()
        results["ingest"] = {"spans": total, "seconds": elapsed, "spans_per_s": total / elapsed,
                             "stored_spans": stats["stored_spans"], "refused_spans": stats["refused_spans"],
                             "batches": stats["batches"], "write_seconds": stats["write_seconds"]}  # fmt: skip
        print(f"ingest: {total:,} spans from {args.exporters} exporters over OTLP/HTTP protobuf in "
              f"{elapsed:.1f} s = {total / elapsed:,.0f} spans/s (target >= 20,000); stored "
              f"{stats['stored_spans']:,}, lost {total - stats['stored_spans']:,}, answered 429 for "
              f"{stats['refused_spans']:,} (resent); {stats['batches']:,} write transactions, "
              f"{stats['stored_spans'] / max(1, stats['batches']):,.0f} spans each, writing "
              f"{stats['write_seconds']:.1f} s of the {elapsed:.1f} s")  # fmt: skip

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
