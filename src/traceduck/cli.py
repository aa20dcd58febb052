"""The ``traceduck`` command: a demo, searching a store, and (with extras) the collector."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .config import DEFAULT_STORE

Command = Callable[[argparse.Namespace], int]
_COMMANDS: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Command]] = []


def command(name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None]) -> Callable[[Command], Command]:
    """Register a sub-command (modules with optional dependencies add theirs lazily)."""

    def register(fn: Command) -> Command:
        _COMMANDS.append((name, help_text, arguments, fn))
        return fn

    return register


def store_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--store",
        default=default or os.environ.get("TRACEDUCK_STORE", DEFAULT_STORE),
        help="DuckDB file of the trace store, or a collector URL (env TRACEDUCK_STORE; "
        f"default {default or DEFAULT_STORE})",
    )


def _format_row(values: Sequence[Any], widths: Sequence[int]) -> str:
    return "  ".join(str(v if v is not None else "")[:w].ljust(w) for v, w in zip(values, widths))


def print_traces(traces: list[Any], out: Any = None) -> None:
    """A compact table of traces: time, id, name, state, user, session, duration, request."""
    import datetime  # noqa: PLC0415

    out = out or sys.stdout
    widths = (19, 32, 14, 5, 10, 12, 7, 40)
    print(_format_row(("time (UTC)", "trace_id", "name", "state", "user", "session", "ms", "request"),
                      widths), file=out)  # fmt: skip
    for t in traces:
        info = t.info
        when = datetime.datetime.fromtimestamp(info.request_time / 1000, tz=datetime.timezone.utc)
        print(_format_row((when.strftime("%Y-%m-%d %H:%M:%S"), info.trace_id, info.name, info.state,
                           info.tags.get("trace.user"), info.tags.get("trace.session"),
                           info.execution_duration, info.request_preview), widths), file=out)  # fmt: skip


def _search_arguments(parser: argparse.ArgumentParser) -> None:
    store_argument(parser)
    parser.add_argument("--filter", "-f", default=None, help="filter string, e.g. \"tags.`trace.user` = 'alice'\"")
    parser.add_argument("--order-by", action="append", default=None, help="'<field> [ASC|DESC]' (repeatable)")
    parser.add_argument("--max-results", "-n", type=int, default=20, help="how many traces to show (default 20)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


@command("search", "search a trace store with the filter language", _search_arguments)
def _search(args: argparse.Namespace) -> int:
    from .search import search_traces_page  # noqa: PLC0415

    page = search_traces_page(args.filter, order_by=args.order_by, max_results=args.max_results,
                              include_spans=args.json, store=args.store)  # fmt: skip
    if args.json:
        for t in page.traces:
            print(json.dumps(t.to_dict(), default=str))
    else:
        print_traces(page.traces)
    return 0


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    store_argument(parser)
    parser.add_argument("trace_id", help="32-hex-character trace id")


@command("show", "print one trace with its spans as JSON", _show_arguments)
def _show(args: argparse.Namespace) -> int:
    from .search import get_trace  # noqa: PLC0415

    trace = get_trace(args.trace_id, store=args.store)
    if trace is None:
        print(f"no trace {args.trace_id} in {args.store}", file=sys.stderr)
        return 1
    print(json.dumps(trace.to_dict(), indent=2, default=str))
    return 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    store_argument(parser, default="traceduck-demo.duckdb")
    parser.add_argument("--requests", type=int, default=30, help="how many chat requests to trace (default 30)")


@command("demo", "trace a small chat program into a local DuckDB file and search it", _demo_arguments)
def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415

    return run_demo(args.store, args.requests)


def _load_optional_commands() -> None:
    """Commands that live with optional extras register themselves when importable."""
    for module in ("traceduck.governance.cli", "collector.cli"):
        try:
            __import__(module)
        except ImportError:
            continue


def build_parser() -> argparse.ArgumentParser:
    _load_optional_commands()
    parser = argparse.ArgumentParser(
        prog="traceduck",
        description="Trace LLM applications on OpenTelemetry into DuckDB, and find every request again.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for name, help_text, arguments, fn in _COMMANDS:
        if name in seen:
            continue
        seen.add(name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        arguments(sub_parser)
        sub_parser.set_defaults(handler=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    from .errors import TraceduckError  # noqa: PLC0415

    try:
        return int(handler(args) or 0)
    except (TraceduckError, FileNotFoundError, ValueError) as exc:
        print(f"traceduck {args.command}: {exc}", file=sys.stderr)
        return 1
