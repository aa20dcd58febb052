"""Shared pieces of the hostile-input suites (issue 9): a keyed collector, careful HTTP calls,
corpora of hostile strings, deep JSON, memory sampling and a look at the store file.

``deploy`` makes the API keys (and opts each project in to capture everything) with the real
``traceduck keys create`` / ``traceduck project set`` commands, all in ONE interpreter (starting
one per command costs ~0.8 s), then starts the real collector on 127.0.0.1. ``Api`` sends each
request on a fresh connection: after a 500 the server drops the connection, and the next request
of a keep-alive client would fail with a reset instead of showing its own answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx

from _collector import REPO, Collector, clean_env
from _faults import RssSampler, rss_kb  # noqa: F401  (RssSampler: shared with the hostile suites)

# -- hostile strings ---------------------------------------------------------------------------

#: Classic SQL injection payloads and other strings that break naive quoting. Each one must be a
#: clean error or plain data wherever it goes.
SQL_INJECTION: tuple[str, ...] = (
    "'; DROP TABLE traces; --",
    "' OR '1'='1",
    "' OR 1=1 --",
    '"; DELETE FROM spans; --',
    "'); DELETE FROM assessments; --",
    "x' UNION SELECT key_hash FROM api_keys --",
    "'; UPDATE api_keys SET revoked_at = NULL; --",
    "'; ATTACH '/tmp/traceduck-injected.duckdb' AS pwn; --",
    "'; COPY traces TO '/tmp/traceduck-injected.csv'; --",
    "a`b",
    "`",
    "``; DROP TABLE spans; --`",
    '"',
    '""',
    "'",
    "''",
    "%' --",
    "%",
    "_",
    "\\'",
    "\\",
    "\\\\'; DROP TABLE traces; --",
    "\u2019 OR \u20181\u2019=\u20181",  # unicode quotes
    "\u02bc; DROP TABLE traces; --",  # modifier letter apostrophe
    "\uff07 OR 1=1 --",  # fullwidth apostrophe
    "a\x00b",
    "\x00",
    "'\x00; DROP TABLE traces; --",
    "$1",
    "$stored_at",
    "?",
    "?, ?); DROP TABLE traces; --",
    "/* */",
    "*/ DROP TABLE traces; /*",
    "-- ",
    "1; SELECT * FROM api_keys",
    "NULL",
    "TRUE) OR (1=1",
    "\r\n'; DROP TABLE traces; --",
    "\u202e'; DROP TABLE traces; --",
    "\U0001f986' OR 1=1 --",  # a duck, then a break-out
    "x" * 8000 + "'; DROP TABLE traces; --",
)
#: Strings only a JSON body can carry (a lone surrogate cannot be encoded in a URL or as UTF-8).
JSON_ONLY_INJECTION: tuple[str, ...] = ("\ud800'; DROP TABLE traces; --", "x\udfff")

#: One very long string, for places that only search with it (stored values cap at 8192 chars).
VERY_LONG = "'" + "A" * 200_000 + "'; DROP TABLE traces; --"

#: Payloads that may stand anywhere a stored tag key, metadata key, name or id may (<= 250 chars).
SHORT_INJECTION = tuple(p for p in SQL_INJECTION if len(p) <= 250)


def filter_literal(value: str) -> str:
    """``value`` as a single-quoted filter string literal (quotes doubled, backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def filter_key(key: str) -> str:
    """``key`` as a backticked filter key (a backtick inside is doubled, as the printer does)."""
    from traceduck.filters import Comparison, Field, to_filter_string  # noqa: PLC0415

    text = to_filter_string(Comparison(Field("tag", key=key), "IS NULL"))
    return text[len("tags."): -len(" IS NULL")]


# -- deep JSON -----------------------------------------------------------------------------------


def nested_json(depth: int, kind: str = "list", leaf: str = "1") -> str:
    """JSON text nested ``depth`` levels deep (built as text: no recursion here)."""
    if kind == "list":
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + "}" * depth


def nested_value(depth: int, kind: str = "list") -> Any:
    """The same as a Python value (built iteratively)."""
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def deep_any_value_json(depth: int) -> dict[str, Any]:
    """An OTLP/JSON AnyValue nested ``depth`` array levels deep."""
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


# -- HTTP ----------------------------------------------------------------------------------------


class Api:
    """Requests to a collector with one key (or none), each on a fresh connection."""

    def __init__(self, base_url: str, key: str | None = None, timeout: float = 120.0) -> None:
        headers = {"Connection": "close"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        self.key = key
        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.client.request(method, path, **kwargs)
        except httpx.TransportError:  # a dropped connection: try once more, then let it raise
            time.sleep(0.05)
            return self.client.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self.client.close()


def describe(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.path} -> {response.status_code} {response.text[:300]!r}"


def clean_problem(response: httpx.Response, allowed: Iterable[int] | None = None) -> str | None:
    """Why ``response`` is not a clean answer (None if it is): no 5xx; a 4xx carries a JSON
    ``detail`` message; with ``allowed``, the status must be one of them."""
    status = response.status_code
    if status >= 500:
        return f"server error: {describe(response)}"
    if allowed is not None and status not in set(allowed):
        return f"unexpected status (allowed {sorted(set(allowed))}): {describe(response)}"
    if 400 <= status < 500:
        try:
            body = response.json()
        except ValueError:
            return f"a {status} without a JSON body: {describe(response)}"
        if not isinstance(body, dict) or not body.get("detail"):
            return f"a {status} without a message: {describe(response)}"
    return None


@dataclass
class Problems:
    """Collects what went wrong over a corpus run, so one failure lists every bad input."""

    items: list[str] = field(default_factory=list)

    def add(self, problem: str | None, context: str = "") -> None:
        if problem:
            self.items.append(f"{context}: {problem}" if context else problem)

    def check(self, response: httpx.Response, context: str = "", allowed: Iterable[int] | None = None) -> bool:
        """Record a problem if ``response`` is not clean; True when it was clean."""
        problem = clean_problem(response, allowed)
        self.add(problem, context)
        return problem is None

    def assert_none(self, what: str = "") -> None:
        if self.items:
            shown = "\n  ".join(self.items[:40])
            more = f"\n  ... and {len(self.items) - 40} more" if len(self.items) > 40 else ""
            raise AssertionError(f"{len(self.items)} problem(s){' ' + what if what else ''}:\n  {shown}{more}")


def assert_alive(server: Collector) -> None:
    """The collector process still runs and reports itself healthy."""
    assert server.proc.poll() is None, f"the collector exited with {server.proc.returncode}:\n{server.log()[-3000:]}"
    response = httpx.get(server.base_url + "/healthz", timeout=30, headers={"Connection": "close"})
    assert response.status_code == 200 and response.json()["status"] == "ok", (
        f"/healthz answered {response.status_code} {response.text}"
    )


# -- keys and collectors -------------------------------------------------------------------------

_CLI_BATCH = """
import contextlib, io, json, sys
from traceduck.cli import main
out = []
for argv in json.loads(sys.stdin.read()):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(argv)
    out.append({"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
print(json.dumps(out))
"""


def cli_batch(commands: Sequence[Sequence[str]], timeout: float = 120) -> list[dict[str, Any]]:
    """Run several ``traceduck`` commands in one interpreter; each one's rc, stdout and stderr."""
    proc = subprocess.run([sys.executable, "-c", _CLI_BATCH], input=json.dumps([list(c) for c in commands]),
                          capture_output=True, text=True, env=clean_env(), cwd=str(REPO), timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"traceduck CLI batch failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for argv, result in zip(commands, results):
        assert result["rc"] == 0, f"traceduck {' '.join(argv)} failed ({result['rc']}): {result['stderr']}"
    return results


@dataclass(frozen=True)
class KeyInfo:
    key: str
    key_id: str
    project: str
    rights: frozenset[str]


def create_keys(store: str, wanted: Mapping[str, tuple[str, str]], opt_in: Iterable[str] = ()) -> dict[str, KeyInfo]:
    """Keys ``{label: (project, "read,write,...")}`` made with ``traceduck keys create``, and the
    projects in ``opt_in`` set to capture everything (``traceduck project set P --capture all``)."""
    labels = list(wanted)
    commands: list[list[str]] = [["keys", "create", "--store", store, "--project", wanted[label][0], "--rights",
                                  wanted[label][1]] for label in labels]  # fmt: skip
    commands += [["project", "set", project, "--store", store, "--capture", "all"] for project in opt_in]
    results = cli_batch(commands)
    keys = {}
    for label, result in zip(labels, results):
        key = result["stdout"].strip().splitlines()[0].strip()
        assert key.startswith("td_"), result
        project, rights = wanted[label]
        keys[label] = KeyInfo(key, key.split("_")[1], project, frozenset(rights.split(",")))
    return keys


def start_collector(directory: Path, name: str, *args: str) -> Collector:
    return Collector(str(directory / f"{name}.duckdb"), str(directory / f"{name}.log"), "--purge-interval", "0", *args)


# -- the store file ------------------------------------------------------------------------------


def table_counts(path: str) -> dict[str, int]:
    """Every table of the store file and its row count (the collector must be stopped)."""
    con = duckdb.connect(path, read_only=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1").fetchall()]  # fmt: skip
        return {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]) for t in tables}
    finally:
        con.close()


def query_store(path: str, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(path, read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


# -- memory --------------------------------------------------------------------------------------


def status_kb(pid: int) -> int:
    """A process's VmRSS in kB (0 if it is gone)."""
    return rss_kb(pid) or 0


def python_script(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = clean_env(extra)
    env.setdefault("PYTHONPATH", str(REPO / "tests") + os.pathsep + env.get("PYTHONPATH", ""))
    return env
