"""What PII detection and redaction cost the writer, side by side in one run.

    python bench/redaction.py [--spans 200000] [--rounds 3] [--pii-share 0.1] [--json out.json]

Builds batches of realistic spans once (a CHAIN root with a question and answer, an LLM child
with a chat request and a normalised response, metadata and GenAI attributes; ``--pii-share`` of
the traces carry an e-mail address, a phone number and a card number), then stores them through
the store's writer (``DuckDBStore.write``, what the writer process and the collector call) into a
fresh file per mode: PII ``off``, ``detect`` and ``redact``. Prints spans/s stored per mode (the
median of the rounds, modes interleaved) and the cost relative to ``off``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import orjson

import traceduck as td
from traceduck.raw_spans import RawSpans
from traceduck.store.duckdb_store import DuckDBStore

BATCH = 20_000
WORDS = ("the model answered about billing accounts refunds shipping orders warranty invoices "
         "passwords settings profile upgrade plan support ticket delivery address").split()  # fmt: skip


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build_batches(n_spans: int, pii_share: float, seed: int = 1) -> list[list[tuple]]:
    """Rows of ``n_spans`` spans (two per trace) in batches of BATCH spans."""
    rng = random.Random(seed)
    raw = RawSpans()
    resource = raw.resource({"service.name": "bench-redaction"})
    now = time.time_ns()
    for i in range(n_spans // 2):
        trace_id, root, child = "%032x" % rng.getrandbits(128), "%016x" % rng.getrandbits(64), "%016x" % rng.getrandbits(64)
        question = _text(rng, 30)
        answer = _text(rng, 60)
        if rng.random() < pii_share:
            question += f" my email is user{i}@example.com and my card 4111 1111 1111 1111"
            answer += " call us at +1 415 555 2671"
        start = now - (n_spans - i) * 1_000_000
        messages = [{"role": "system", "content": "You are a support assistant. " + _text(rng, 20)},
                    {"role": "user", "content": question}]  # fmt: skip
        response = {"id": f"chatcmpl-{i}", "model": "gpt-4o", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 80, "completion_tokens": 60}, "selected_choice_index": 0,
            "selected_message": {"role": "assistant", "content": answer}}  # fmt: skip
        raw.add(trace_id, child, root, False, "chat gpt-4o", "CLIENT", start + 1_000, start + 800_000, "OK", None,
                {"traceduck.span_type": "LLM", "traceduck.inputs": orjson.dumps({"model": "gpt-4o", "messages": messages}).decode(),
                 "traceduck.outputs": orjson.dumps(response).decode(), "gen_ai.request.model": "gpt-4o",
                 "gen_ai.response.id": f"chatcmpl-{i}", "gen_ai.usage.input_tokens": 80,
                 "gen_ai.usage.output_tokens": 60, "traceduck.llm.latency_ms": 799.0}, None, resource)  # fmt: skip
        raw.add(trace_id, root, None, False, "handle_chat", "SERVER", start, start + 1_000_000, "OK", None,
                {"traceduck.span_type": "CHAIN", "traceduck.inputs": orjson.dumps({"question": question}).decode(),
                 "traceduck.outputs": orjson.dumps(answer).decode(),
                 "traceduck.trace": orjson.dumps({"client_request_id": f"req-{i}", "metadata": {
                     "trace.user": f"user-{i % 50}", "trace.session": f"s-{i % 997}", "app_version": "1.4.2"},
                     "tags": {"task": "chat"}}).decode()}, None, resource)  # fmt: skip
    rows = raw.rows
    return [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)], raw.resources


def store_all(path: str, batches: list[list[tuple]], resources: list[str], pii: str) -> float:
    """Seconds to store every batch in a fresh file with the project's PII mode ``pii``."""
    for suffix in ("", ".wal"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    store = DuckDBStore(path)
    store.acquire_writer()
    td.set_project_settings("default", capture="all", pii=pii, store=store)
    start = time.perf_counter()
    for rows in batches:
        raw = RawSpans("default", resources)
        raw.add_rows(rows)
        store.write(raw)
    elapsed = time.perf_counter() - start
    store.release_writer()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pii-share", type=float, default=0.1, help="share of traces carrying PII")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="traceduck-redaction-")
    batches, resources = build_batches(args.spans, args.pii_share)
    modes = ("off", "detect", "redact")
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            seconds[mode].append(store_all(os.path.join(work, f"{mode}.duckdb"), batches, resources, mode))
    results = {m: args.spans / statistics.median(s) for m, s in seconds.items()}
    print(f"{args.spans:,} spans ({args.pii_share:.0%} of traces with PII) stored through DuckDBStore.write, "
          f"batches of {BATCH:,}; median of {args.rounds} rounds")  # fmt: skip
    for mode in modes:
        print(f"  pii={mode:7s} {results[mode]:10,.0f} spans/s   ({results['off'] / results[mode]:.2f}x the time of off)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"spans": args.spans, "spans_per_s": results}, fh, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
