"""The requirement's full-size case: a trace of 1,000,000 spans through a real collector.

``tests/test_hostile_oversized.py`` checks a 200k-span trace in CI; this sends 1M spans (children
in requests of 5,000, the root last, as an SDK exports them) to ``traceduck collector`` on
127.0.0.1, then reads the trace back through the API, and prints the time and the collector's
peak RSS growth of each phase, and what the read returned (at most 10,000 spans, with
``data.omitted_spans``). Not part of the test run:

    python bench/oversized.py [--spans 1000000] [--per-request 5000]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _collector import PROTOBUF, new_span_id, new_trace_id, otlp_request, otlp_span, post_otlp  # noqa: E402
from _hostile import Api, RssSampler, assert_alive, create_keys, start_collector  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--per-request", type=int, default=5_000)
    parser.add_argument("--quick", action="store_true", help="100,000 spans instead of 1M")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.spans = min(args.spans, 100_000)
    with tempfile.TemporaryDirectory(prefix="traceduck-oversized-") as tmp:
        directory = Path(tmp)
        keys = create_keys(str(directory / "bench.duckdb"), {"bench": ("bench", "read,write")}, opt_in=["bench"])
        server = start_collector(directory, "bench")
        api = Api(server.base_url, keys["bench"].key, timeout=600)
        try:
            trace_id, root_id, start = new_trace_id(), new_span_id(), time.time_ns()
            with RssSampler(server.proc.pid, interval=0.01) as ingest:
                began = time.perf_counter()
                for first in range(0, args.spans, args.per_request):
                    message = otlp_request([])
                    spans = message.resource_spans[0].scope_spans[0].spans
                    for i in range(first, min(args.spans, first + args.per_request)):
                        spans.add(trace_id=trace_id, span_id=struct.pack(">Q", i + 1), parent_span_id=root_id,
                                  name=f"step-{i % 100}", start_time_unix_nano=start + 1000 * (i + 1),
                                  end_time_unix_nano=start + 1000 * (i + 1) + 500)  # fmt: skip
                    response = api.post("/v1/traces", content=message.SerializeToString(),
                                        headers={"Content-Type": PROTOBUF})  # fmt: skip
                    assert response.status_code == 200, response.text
                root = otlp_span(trace_id, "bench-root", span_id=root_id, start_ns=start,
                                 duration_ns=1000 * (args.spans + 2), attributes={"traceduck.inputs": json.dumps({"n": args.spans})})  # fmt: skip
                assert post_otlp(api.client, otlp_request([root])).status_code == 200
                ingest_s = time.perf_counter() - began
            with RssSampler(server.proc.pid, interval=0.01) as reading:
                began = time.perf_counter()
                response = api.get(f"/api/traces/{trace_id.hex()}")
                read_s = time.perf_counter() - began
            assert response.status_code == 200, response.text
            data = response.json()["data"]
            assert_alive(server)
            print(f"{args.spans:,} spans ingested in {ingest_s:.1f} s ({args.spans / ingest_s:,.0f} spans/s), "
                  f"collector RSS +{ingest.peak_growth_mb:.0f} MB")
            print(f"read back in {read_s:.2f} s ({len(response.content) / 1e6:.1f} MB of JSON), "
                  f"collector RSS +{reading.peak_growth_mb:.0f} MB: {len(data['spans']):,} spans returned, "
                  f"{data.get('omitted_spans', 0):,} omitted, {len(data['spans']) + data.get('omitted_spans', 0):,} stored")
            if args.json:
                stored = len(data["spans"]) + data.get("omitted_spans", 0)
                with open(args.json, "w") as fh:
                    json.dump({"trace_spans": args.spans, "ingest_s": round(ingest_s, 2),
                               "ingest_spans_per_s": round(args.spans / ingest_s),
                               "ingest_rss_growth_mb": round(ingest.peak_growth_mb, 1),
                               "read_s": round(read_s, 3), "read_json_mb": round(len(response.content) / 1e6, 2),
                               "read_rss_growth_mb": round(reading.peak_growth_mb, 1),
                               "spans_returned": len(data["spans"]), "spans_stored": stored}, fh, indent=1)  # fmt: skip
        finally:
            api.close()
            server.stop()


if __name__ == "__main__":
    main()
