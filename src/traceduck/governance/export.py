"""SFT dataset export: traces that match a filter, as OpenAI chat fine-tuning JSONL.

Each exported trace gives one example: the messages of its last LLM call (system, user,
assistant and tool turns as sent) followed by the SELECTED choice of the response as the final
assistant turn, and the request's ``tools`` when there are any. Identical conversations are
exported once; traces without a usable conversation are skipped and counted by reason. PII is
redacted (the built-in and registered detectors) unless ``redact=False``. A manifest records the
filter, the counts, the skipped reasons and the time.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from ..filters import Node, compile_filter, parse_filter
from ..stores import resolve_store
from . import pii

FORMAT = "openai-chat-fine-tuning"
CHUNK_TRACES = 2_000
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_EMPTY_PARAMETERS = {"type": "object", "properties": {}}

Progress = Callable[[int, int], None]


@dataclass
class SftExport:
    """The examples of an export and its manifest (``paths`` once written to files)."""

    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    manifest: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)


class Skip(Exception):
    """A trace without a usable conversation; the message is the reason counted."""


# -- one conversation ------------------------------------------------------------------------


def _content(value: Any, role: str, has_tool_calls: bool) -> str | None:
    if isinstance(value, str):
        return value
    if value is None:
        if role == "assistant" and has_tool_calls:
            return None
        raise Skip("empty_message")
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        return "".join(str(p.get("text", "")) for p in value)
    raise Skip("unsupported_content")


def _tool_calls(value: Any) -> list[dict[str, Any]]:
    calls = []
    for call in value or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise Skip("invalid_tool_call")
        arguments = function.get("arguments")
        calls.append({"id": str(call.get("id") or f"call_{len(calls)}"), "type": "function",
                      "function": {"name": function["name"], "arguments": arguments if isinstance(arguments, str)
                                   else json.dumps(arguments if arguments is not None else {})}})  # fmt: skip
    return calls


def _message(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Skip("invalid_message")
    role = _ROLES.get(raw.get("role"))
    if role is None:
        raise Skip("unsupported_role")
    calls = _tool_calls(raw.get("tool_calls")) if role == "assistant" and raw.get("tool_calls") else []
    out: dict[str, Any] = {"role": role, "content": _content(raw.get("content"), role, bool(calls))}
    if isinstance(raw.get("name"), str) and role in ("system", "user", "assistant"):
        out["name"] = raw["name"]
    if calls:
        out["tool_calls"] = calls
    if role == "tool":
        if not isinstance(raw.get("tool_call_id"), str):
            raise Skip("invalid_message")
        out["tool_call_id"] = raw["tool_call_id"]
    return out


def _tools(value: Any) -> list[dict[str, Any]]:
    tools = []
    for tool in value or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict) \
                or not isinstance(function.get("name"), str):  # fmt: skip
            continue
        entry: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        parameters = function.get("parameters")
        entry["parameters"] = parameters if isinstance(parameters, dict) else dict(_EMPTY_PARAMETERS)
        tools.append({"type": "function", "function": entry})
    return tools


def _selected(response: Any) -> Any:
    if not isinstance(response, dict):
        raise Skip("no_response")
    if isinstance(response.get("selected_message"), dict):
        return response["selected_message"]
    choices = response.get("choices")
    if isinstance(choices, list) and choices:
        index = response.get("selected_choice_index", 0)
        chosen = [c for c in choices if isinstance(c, dict) and c.get("index", 0) == index] or choices[:1]
        if isinstance(chosen[0], dict) and isinstance(chosen[0].get("message"), dict):
            return chosen[0]["message"]
    raise Skip("no_response")


def conversation(inputs: str | None, outputs: str | None) -> dict[str, Any]:
    """One fine-tuning example from an LLM span's stored request and response; raises
    :class:`Skip` naming why there is none."""
    if inputs is None:
        raise Skip("prompt_not_captured")
    if outputs is None:
        raise Skip("response_not_captured")
    request = orjson.loads(inputs)
    if isinstance(request, dict) and request.get("_truncated"):
        raise Skip("truncated")
    messages = request.get("messages") if isinstance(request, dict) else None
    if not isinstance(messages, list) or not messages:
        raise Skip("no_messages")
    response = orjson.loads(outputs)
    if isinstance(response, dict) and response.get("_truncated"):
        raise Skip("truncated")
    turns = [_message(m) for m in messages]
    answer = _message({**_selected(response), "role": "assistant"})
    if answer["content"] is None and not answer.get("tool_calls"):
        raise Skip("empty_response")
    example: dict[str, Any] = {"messages": [*turns, answer]}
    tools = _tools(request.get("tools"))
    if tools:
        example["tools"] = tools
    return example


# -- reading the store -----------------------------------------------------------------------


def _matching_traces(con: duckdb.DuckDBPyConnection, node: Node | None, trace_ids: list[str] | None,
                     project: str | None) -> list[tuple[str, str]]:  # fmt: skip
    where, params = compile_filter(node)
    conditions = [f"({where})"]
    if project is not None:
        conditions.append("t.project = ?")
        params = [*params, project]
    if trace_ids is not None:
        con.register("_td_export_ids", pa.table({"id": pa.array(trace_ids, pa.string())}))
        conditions.append("t.trace_id IN (SELECT TRY_CAST(id AS UUID) FROM _td_export_ids)")
    try:
        return con.execute(
            "SELECT replace(CAST(t.trace_id AS VARCHAR), '-', ''), t.project FROM traces t"
            f" WHERE {' AND '.join(conditions)} ORDER BY t.request_time, t.trace_id",
            params,
        ).fetchall()
    finally:
        if trace_ids is not None:
            con.unregister("_td_export_ids")


def _last_llm_calls(con: duckdb.DuckDBPyConnection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
    """(inputs, outputs) of the last LLM span of each trace."""
    con.register("_td_export", pa.table({"id": pa.array([k[0] for k in keys], pa.string()),
                                         "project": pa.array([k[1] for k in keys], pa.string())}))  # fmt: skip
    try:
        rows = con.execute(
            "SELECT replace(CAST(s.trace_id AS VARCHAR), '-', ''), s.project, s.inputs, s.outputs FROM spans s"
            " JOIN _td_export e ON s.trace_id = CAST(e.id AS UUID) AND s.project = e.project"
            " WHERE s.span_type = 'LLM'"
            " QUALIFY row_number() OVER (PARTITION BY s.trace_id, s.project ORDER BY s.start_time_ns DESC,"
            " s.span_id DESC) = 1"
        ).fetchall()
    finally:
        con.unregister("_td_export")
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def collect(con: duckdb.DuckDBPyConnection, node: Node | None, trace_ids: list[str] | None, project: str | None,
            redact: bool = True, progress: Progress | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:  # fmt: skip
    """The distinct examples of the matching traces, in trace order, and the counts."""
    keys = _matching_traces(con, node, trace_ids, project)
    counts: Counter[str] = Counter(matched=len(keys))
    skipped: Counter[str] = Counter()
    seen: set[bytes] = set()
    examples: list[dict[str, Any]] = []
    for first in range(0, len(keys), CHUNK_TRACES):
        chunk = keys[first : first + CHUNK_TRACES]
        calls = _last_llm_calls(con, chunk)
        for key in chunk:
            call = calls.get(key)
            try:
                if call is None:
                    raise Skip("no_llm_call")
                example = conversation(*call)
            except Skip as reason:
                skipped[str(reason)] += 1
                continue
            except (orjson.JSONDecodeError, TypeError, AttributeError):
                skipped["invalid_json"] += 1
                continue
            if redact:
                example = pii.scan_value(example, True, set())
            digest = hashlib.sha256(orjson.dumps(example, option=orjson.OPT_SORT_KEYS)).digest()
            if digest in seen:
                counts["duplicates"] += 1
                continue
            seen.add(digest)
            examples.append(example)
        if progress is not None:
            progress(min(first + CHUNK_TRACES, len(keys)), len(keys))
    counts["exported"] = len(examples)
    counts["skipped"] = sum(skipped.values())
    return examples, {**counts, "skipped_reasons": dict(sorted(skipped.items()))}


def split_examples(examples: list[dict[str, Any]], fraction: float | None,
                   seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """(train, validation): a seeded random ``fraction`` goes to validation, order kept."""
    if not fraction:
        return examples, []
    if not 0 < fraction < 1:
        raise ValueError(f"split must be a fraction between 0 and 1, not {fraction!r}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    chosen = set(order[: round(len(examples) * fraction)])
    return ([e for i, e in enumerate(examples) if i not in chosen],
            [e for i, e in enumerate(examples) if i in chosen])  # fmt: skip


def build(con: duckdb.DuckDBPyConnection, filter_string: str | None, trace_ids: list[str] | None,
          project: str | None, split: float | None, seed: int, redact: bool,
          progress: Progress | None = None) -> SftExport:  # fmt: skip
    """The export as a store makes it (examples, split and manifest)."""
    node = parse_filter(filter_string) if filter_string else None
    examples, counts = collect(con, node, trace_ids, project, redact, progress)
    train, validation = split_examples(examples, split, seed)
    manifest = {
        "format": FORMAT,
        "filter": filter_string,
        "trace_ids": len(trace_ids) if trace_ids is not None else None,
        "project": project,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "redacted": redact,
        "split": split,
        "seed": seed if split else None,
        "counts": {**{k: v for k, v in counts.items() if k != "skipped_reasons"},
                   "train": len(train), "validation": len(validation)},
        "skipped": counts["skipped_reasons"],
    }  # fmt: skip
    return SftExport(train, validation, manifest)


# -- files and the SDK function --------------------------------------------------------------


def _sibling(path: str, suffix: str) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}.{suffix}{ext or '.jsonl'}" if suffix != "manifest" else f"{root}.manifest.json"


def write_files(export: SftExport, path: str) -> dict[str, str]:
    """``path`` (the train set), ``<name>.validation.jsonl`` with a split, ``<name>.manifest.json``."""
    paths = {"train": path}
    if export.manifest.get("split"):
        paths["validation"] = _sibling(path, "validation")
    paths["manifest"] = _sibling(path, "manifest")
    for name, examples in (("train", export.train), ("validation", export.validation)):
        if name in paths:
            with open(paths[name], "wb") as fh:
                for example in examples:
                    fh.write(orjson.dumps(example) + b"\n")
    export.manifest["files"] = {k: os.path.basename(v) for k, v in paths.items()}
    with open(paths["manifest"], "w") as fh:
        json.dump(export.manifest, fh, indent=2)
        fh.write("\n")
    export.paths = paths
    return paths


def export_sft(
    filter_string: str | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    trace_ids: list[str] | None = None,
    split: float | None = None,
    seed: int = 0,
    redact: bool = True,
    store: Any = None,
    progress: Progress | None = None,
    actor: str | None = None,
) -> SftExport:
    """Export the traces matching ``filter_string`` (and/or ``trace_ids``) as an OpenAI chat
    fine-tuning dataset, typically ``export_sft("feedback.is_correct = 'true'", "data.jsonl")``.

    Writes ``path`` (JSONL, one example per line), with ``split`` (e.g. 0.1) a seeded random
    validation file next to it, and a manifest ``<name>.manifest.json``; returns the examples
    and the manifest. ``progress(done, total)`` is called as traces are read. The export is an
    audit event.
    """
    if trace_ids is not None:
        trace_ids = [t.strip().lower().replace("-", "") for t in trace_ids]
    result = resolve_store(store).export_sft(filter_string, trace_ids=trace_ids, split=split, seed=seed,
                                             redact=redact, progress=progress, actor=actor or "sdk")  # fmt: skip
    if path is not None:
        write_files(result, os.fspath(path))
    return result
