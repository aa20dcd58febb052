"""``traceduck project``, ``purge``, ``audit`` and ``export``: governance from the command line.

Every command takes ``--store`` (a DuckDB file or a collector URL with ``TRACEDUCK_API_KEY``)
and goes through the same SDK functions as a notebook would; changes are recorded in the audit
log as ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Any

from ..cli import command, store_argument
from . import audit as audit_log
from .export import export_sft
from .policy import FACETS, PII_MODES, KEEP, format_size
from .projects import get_project_settings, set_project_settings
from .retention import compact, purge


def _project_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    setter = sub.add_parser("set", help="change what a project captures and keeps (an audit event)",
                            description="change what a project captures and keeps (an audit event)")  # fmt: skip
    store_argument(setter)
    setter.add_argument("name", help="the project")
    setter.add_argument("--capture", help=f"comma list of facets ({', '.join(FACETS)}; 'context' for the six "
                                          "context fields), 'all' or 'none'")  # fmt: skip
    setter.add_argument("--pii", choices=PII_MODES, help="off, detect (tag pii.detected) or redact")
    setter.add_argument("--retention", help="30d, 90d, 120d or none (no age-off)")
    setter.add_argument("--max-size", help="size cap such as 500MB or 2GB, or none")
    show = sub.add_parser("show", help="print a project's settings", description="print a project's settings")
    store_argument(show)
    show.add_argument("name", help="the project")


def _print_settings(name: str, settings: Any) -> None:
    if settings is None:
        print(f"project {name} has no settings: a store without API keys captures every facet, a collector "
              "with API keys captures nothing until the project's owner opts in")  # fmt: skip
        return
    print(f"project    {name}")
    print(f"capture    {settings.capture}")
    print(f"pii        {settings.pii}")
    print(f"retention  {f'{settings.retention_days}d' if settings.retention_days else 'none'}")
    print(f"max size   {format_size(settings.max_size_bytes)}")


@command("project", "set or show a project's capture policy, PII mode, retention and size cap", _project_arguments)
def _project(args: argparse.Namespace) -> int:
    if args.action == "show":
        _print_settings(args.name, get_project_settings(args.name, store=args.store))
        return 0
    if args.capture is None and args.pii is None and args.retention is None and args.max_size is None:
        print("traceduck project set: give at least one of --capture, --pii, --retention, --max-size", file=sys.stderr)
        return 2
    settings = set_project_settings(
        args.name, capture=args.capture, pii=args.pii,
        retention=args.retention if args.retention is not None else KEEP,
        max_size=args.max_size if args.max_size is not None else KEEP,
        store=args.store, actor=audit_log.cli_actor(),
    )  # fmt: skip
    _print_settings(args.name, settings)
    return 0


def _purge_arguments(parser: argparse.ArgumentParser) -> None:
    store_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    parser.add_argument("--project", default=None, help="only this project (default: every project)")
    parser.add_argument("--compact", action="store_true",
                        help="then rewrite the file to give the space back (needs the file to itself)")


@command("purge", "delete traces older than each project's retention or beyond its size cap", _purge_arguments)
def _purge(args: argparse.Namespace) -> int:
    report = purge(dry_run=args.dry_run, project=args.project, store=args.store, actor=audit_log.cli_actor())
    verb = "would delete" if args.dry_run else "deleted"
    if not report.projects:
        print("no project has a retention or size cap: nothing to purge")
    for p in report.projects:
        limits = ", ".join(x for x in (f"retention {p.retention_days}d" if p.retention_days else "",
                                       f"max size {format_size(p.max_size_bytes)}" if p.max_size_bytes else "") if x)  # fmt: skip
        print(f"{p.project} ({limits}): {verb} {p.traces} traces, {p.spans} spans, {p.assessments} assessments, "
              f"{p.pending_assessments} pending assessments, {p.orphan_spans} orphan spans, {p.llm_calls} LLM calls, "
              f"{p.llm_responses} response ids")  # fmt: skip
    if args.compact and not args.dry_run:
        if args.store.startswith(("http://", "https://")):
            print("traceduck purge: --compact works on a file, not a collector", file=sys.stderr)
            return 2
        before, after = compact(args.store)
        print(f"compacted {args.store}: {before:,} -> {after:,} bytes")
    return 0


def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="print audit events in order", description="print audit events in order")
    store_argument(listing)
    listing.add_argument("--project", default=None, help="only this project's events")
    listing.add_argument("--action", dest="event_action", default=None, help="only this action, e.g. purge")
    listing.add_argument("--after", type=int, default=0, help="events after this sequence number")
    listing.add_argument("--limit", type=int, default=None, help="at most this many events")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    verify = sub.add_parser("verify", help="check the hash chain; name any edited, deleted or reordered event",
                            description="check the hash chain; name any edited, deleted or reordered event")  # fmt: skip
    store_argument(verify)
    verify.add_argument("--expect-head", default=None, help="a head hash printed by an earlier verify")


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@command("audit", "list or verify the audit log (hash-chained, append-only)", _audit_arguments)
def _audit(args: argparse.Namespace) -> int:
    if args.action == "list":
        for e in audit_log.audit_events(project=args.project, after_seq=args.after, limit=args.limit,
                                        action=args.event_action, store=args.store):  # fmt: skip
            if args.json:
                print(json.dumps(e.to_dict(), sort_keys=True))
            else:
                change = f"{json.dumps(e.before, sort_keys=True)} -> {json.dumps(e.after, sort_keys=True)}"
                print(f"{e.seq:>6}  {_when(e.time)}  {e.actor:<20}  {e.action:<24}  {e.project or '-':<16}  "
                      f"{e.target or '-'}  {change}")  # fmt: skip
        return 0
    result = audit_log.verify_audit(args.expect_head, store=args.store)
    if result.ok:
        head = f"head #{result.head_seq} {result.head_hash}" if result.head_hash else "no events yet"
        print(f"audit log OK: {result.events} events, {head}")
        return 0
    for problem in result.problems:
        print(f"event {problem.seq}: {problem.kind}: {problem.message}")
    print(f"audit log FAILED verification: {len(result.problems)} problem(s) in {result.events} events", file=sys.stderr)
    return 1


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    sft = sub.add_parser("sft", help="OpenAI chat fine-tuning JSONL from the traces matching a filter",
                         description="OpenAI chat fine-tuning JSONL from the traces matching a filter")  # fmt: skip
    store_argument(sft)
    sft.add_argument("--filter", "-f", default=None, help="e.g. \"feedback.is_correct = 'true'\"")
    sft.add_argument("--trace-id", action="append", default=None, help="export this trace (repeatable)")
    sft.add_argument("--out", "-o", required=True, help="JSONL file to write (the train set with --split)")
    sft.add_argument("--split", type=float, default=None, help="fraction for a validation file, e.g. 0.1")
    sft.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    sft.add_argument("--no-redact", action="store_true", help="do not redact PII in the examples")
    sft.add_argument("--progress", action="store_true", help="show a progress bar even when not on a terminal")


class _Bar:
    def __init__(self, out: Any) -> None:
        self.out = out

    def __call__(self, done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        end = "\n" if done >= total else ""
        print(f"\r[{'#' * filled}{' ' * (width - filled)}] {done:,}/{total:,} traces", end=end, file=self.out,
              flush=True)  # fmt: skip


@command("export", "export traces as a dataset (sft: OpenAI chat fine-tuning JSONL)", _export_arguments)
def _export(args: argparse.Namespace) -> int:
    if args.filter is None and args.trace_id is None:
        print("traceduck export sft: give --filter and/or --trace-id", file=sys.stderr)
        return 2
    bar = _Bar(sys.stderr) if args.progress or sys.stderr.isatty() else None
    result = export_sft(args.filter, args.out, trace_ids=args.trace_id, split=args.split, seed=args.seed,
                        redact=not args.no_redact, store=args.store, progress=bar, actor=audit_log.cli_actor())  # fmt: skip
    counts = result.manifest["counts"]
    print(f"exported {counts['exported']:,} examples (train {counts['train']:,}, validation {counts['validation']:,})"
          f" from {counts['matched']:,} matching traces; {counts.get('duplicates', 0):,} duplicates left out")  # fmt: skip
    if result.manifest["skipped"]:
        print("skipped: " + ", ".join(f"{k} {v:,}" for k, v in result.manifest["skipped"].items()))
    print("wrote " + ", ".join(result.paths.values()))
    return 0
