"""Run every benchmark of the project and write BENCHMARKS.md.

    python bench/run_all.py [--quick] [--out BENCHMARKS.md]

Each benchmark runs as its own process (so one cannot warm the next) with ``--json`` and its
figures go into one table per benchmark, with the machine, the versions and the date. Ratios
(tracing against a bare OTel span, with and without redaction) are measured side by side within a
run, as the benchmarks print them. ``--quick`` shrinks the sizes for a smoke run; the published
figures come from a full run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: (script, full-run arguments, quick-run arguments)
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("overhead.py", [], ["--calls", "5000", "--rounds", "5", "--burst", "20000", "--writer-spans", "40000"]),
    ("search.py", ["--traces", "1000000", "--scales", "10000,100000"], ["--traces", "100000", "--scales", "10000", "--runs", "3"]),
    ("collector.py", [], ["--spans-per-exporter", "10000", "--runs", "3"]),
    ("redaction.py", [], ["--quick"]),
    ("export.py", [], ["--quick"]),
    ("dashboard.py", [], ["--quick"]),
    ("faults.py", [], ["--quick"]),
    ("oversized.py", [], ["--quick"]),
]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("traceduck", "duckdb", "pyarrow", "opentelemetry-sdk", "fastapi", "orjson"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        if names:
            cpu = f"{names[0]} x{len(names)}"
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            total_kb = int(fh.readline().split()[1])
        memory = f"{total_kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        memory = "?"
    return f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, {memory}"


def _flatten(prefix: str, value: Any, rows: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, rows)
    elif isinstance(value, float):
        rows.append((prefix, f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"))
    else:
        rows.append((prefix, f"{value:,}" if isinstance(value, int) else str(value)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    parser.add_argument("--only", action="append", help="run only these scripts (repeatable)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="traceduck-bench-all-")
    sections = []
    started = datetime.datetime.now(datetime.timezone.utc)
    for script, full, quick in BENCHMARKS:
        if args.only and script not in args.only:
            continue
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            sections.append((script, None, "not present in this checkout", 0.0))
            continue
        out_json = os.path.join(work, script + ".json")
        command = [sys.executable, path, *(quick if args.quick else full), "--json", out_json]
        print(f"== {' '.join(['python', 'bench/' + script, *(quick if args.quick else full)])}", flush=True)
        t = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, text=True, capture_output=True)
        elapsed = time.perf_counter() - t
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0 or not os.path.exists(out_json):
            sys.stdout.write(proc.stderr[-2000:])
            sections.append((script, None, f"failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}", elapsed))
            continue
        with open(out_json) as fh:
            sections.append((script, json.load(fh), proc.stdout, elapsed))

    lines = [
        "# Benchmarks",
        "",
        f"Written by `python bench/run_all.py{' --quick' if args.quick else ''}` on "
        f"{started.strftime('%Y-%m-%d %H:%M UTC')}. Figures are from one run on a noisy shared machine:",
        "read them as orders of magnitude and ratios (ratios are measured side by side in one run).",
        "",
        f"- Machine: {_machine()}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()),
        "",
    ]
    for script, data, printed, elapsed in sections:
        lines += [f"## `bench/{script}`", ""]
        if data is None:
            lines += [f"_{printed}_", ""]
            continue
        lines += [f"Ran in {elapsed:.0f} s. What it printed:", "", "```", printed.strip(), "```", "",
                  "<details><summary>All figures (JSON)</summary>", "", "| figure | value |", "|---|---|"]  # fmt: skip
        rows: list[tuple[str, str]] = []
        _flatten("", data, rows)
        lines += [f"| `{name}` | {value} |" for name, value in rows]
        lines += ["", "</details>", ""]
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {args.out}")
    return 0 if all(data is not None for _, data, _, _ in sections) else 1


if __name__ == "__main__":
    sys.exit(main())
