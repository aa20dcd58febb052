"""SFT export speed: 8,000 good examples out of 1,000,000 traces.

    python bench/export.py [--traces 1000000] [--good 8000] [--runs 3] [--json out.json]

Generates the store of ``bench/search.py`` (two spans per trace, through traceduck's writer),
replaces its feedback with ``is_correct = true`` on ``--good`` traces spread over the month, and
gives those traces' LLM spans a chat conversation (system and user turns in, a normalised
response with three choices out, a selected one). Then times ``export_sft("feedback.is_correct =
'true'", path)``: the filter, reading the LLM calls, building, de-duplicating and redacting the
examples and writing the JSONL and manifest. Target: <= 30 s.
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
import uuid

import orjson
import pyarrow as pa

import traceduck as td
from traceduck.store.duckdb_store import DuckDBStore

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from search import generate  # noqa: E402

GOOD = "feedback.is_correct = 'true'"


def conversation(i: int) -> tuple[str, str]:
    """(inputs, outputs) of an LLM span: a chat request and its normalised response."""
    question = f"Customer {i} asks: how do I change the delivery address of order {i}? Reach me at c{i}@example.com."
    request = {"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a helpful support assistant for an online shop."},
        {"role": "user", "content": question}], "temperature": 0.7, "n": 3}  # fmt: skip
    choices = [{"index": k, "finish_reason": "stop", "message": {"role": "assistant", "content":
               f"Answer {k} for order {i}: open Orders, pick the order and choose 'Change address'."}}
               for k in range(3)]  # fmt: skip
    response = {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": "gpt-4o", "choices": choices,
                "usage": {"prompt_tokens": 40, "completion_tokens": 20}, "selected_choice_index": 1,
                "selected_message": choices[1]["message"]}  # fmt: skip
    return orjson.dumps(request).decode(), orjson.dumps(response).decode()


def mark_good(path: str, good: int, seed: int = 2) -> None:
    """Feedback is_correct = true on ``good`` traces (and none elsewhere); their LLM spans get a conversation."""
    store = DuckDBStore(path)
    store.acquire_writer()
    with store.connect(write=True) as con:
        total = con.execute("SELECT count(*) FROM traces").fetchall()[0][0]
        rng = random.Random(seed)
        picks = sorted(rng.sample(range(total), good))
        con.register("_picks", pa.table({"n": pa.array(picks, pa.int64())}))
        ids = [r[0] for r in con.execute(
            "SELECT trace_id FROM (SELECT trace_id, row_number() OVER (ORDER BY request_time) - 1 AS n FROM traces)"
            " JOIN _picks USING (n)").fetchall()]  # fmt: skip
        convo = [conversation(i) for i in range(len(ids))]
        con.register("_good", pa.table({"trace_id": pa.array([str(t) for t in ids]),
                                        "inputs": [c[0] for c in convo], "outputs": [c[1] for c in convo]}))  # fmt: skip
        con.execute("DELETE FROM assessments")
        con.execute("UPDATE spans SET inputs = g.inputs, outputs = g.outputs FROM _good g"
                    " WHERE spans.trace_id = CAST(g.trace_id AS UUID) AND spans.span_type = 'LLM'")  # fmt: skip
        now = int(time.time() * 1000)
        con.register("_fb", pa.table({"assessment_id": ["a-" + uuid.uuid4().hex for _ in ids],
                                      "trace_id": [str(t) for t in ids]}))  # fmt: skip
        con.execute(
            "INSERT INTO assessments (assessment_id, trace_id, project, target_kind, target, kind, name,"
            " value_json, value_str, value_num, source_type, valid, create_time, last_update_time)"
            " SELECT assessment_id, CAST(trace_id AS UUID), 'default', 'trace_id', trace_id, 'feedback',"
            " 'is_correct', 'true', 'true', 1.0, 'HUMAN', true, ?, ? FROM _fb",
            [now, now],
        )
        con.execute("CHECKPOINT")
    store.release_writer()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--good", type=int, default=8_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to put the store (default: a temp dir)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="traceduck-export-")
    path = os.path.join(work, f"export-{args.traces}.duckdb")
    started = time.perf_counter()
    generate(path, args.traces)
    mark_good(path, args.good)
    print(f"generated {args.traces:,} traces, {args.good:,} with good feedback and a conversation, in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip
    seconds = []
    for run in range(args.runs):
        out = os.path.join(work, f"data-{run}.jsonl")
        start = time.perf_counter()
        result = td.export_sft(GOOD, out, split=0.1, seed=1, store=path)
        seconds.append(time.perf_counter() - start)
        counts = result.manifest["counts"]
        assert counts["exported"] == args.good, counts
    print(f"export_sft({GOOD!r}): {counts['exported']:,} examples (train {counts['train']:,}, validation "
          f"{counts['validation']:,}) from {args.traces:,} traces in {statistics.median(seconds):.1f} s "
          f"(median of {args.runs}; runs {', '.join(f'{s:.1f}' for s in seconds)}; target <= 30 s)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"traces": args.traces, "good": args.good, "seconds": seconds}, fh, indent=2)
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
