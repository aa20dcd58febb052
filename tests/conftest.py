"""Shared fixtures: a fresh OTel SDK provider and a DuckDB store file in tmp_path per test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from hypothesis import settings as hypothesis_settings
from opentelemetry.sdk.trace import TracerProvider

import traceduck
from traceduck.entities import Span, Trace

# The test run is reproducible: hypothesis draws the same examples every run (CI must not fail by
# chance). `HYPOTHESIS_PROFILE=explore python -m pytest tests/test_hostile_fuzz.py` draws new ones.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False, database=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    config.addinivalue_line("markers", "no_store: the test needs no configured trace store")
    config.addinivalue_line(
        "markers", "writer_process: the test runs with the default writer process (see below)"
    )


@pytest.fixture(autouse=True)
def _writer_in_this_process(request, monkeypatch):
    """Most tests write batches in the test process: the same storage code as the default writer
    process, without starting a Python child for every configure() (0.5 s each). The transport
    itself is tested in tests/test_writer_process.py (marked ``writer_process``)."""
    if request.node.get_closest_marker("writer_process") is None:
        monkeypatch.setenv("TRACEDUCK_WRITER_PROCESS", "0")


@pytest.fixture(autouse=True)
def _shutdown_traceduck():
    """Every test ends with traceduck shut down: writer thread stopped, store file released."""
    yield
    traceduck.shutdown()


@pytest.fixture
def store_path(tmp_path) -> str:
    return str(tmp_path / "t.duckdb")


@pytest.fixture
def provider() -> TracerProvider:
    return TracerProvider()


@pytest.fixture
def configured(store_path, provider) -> str:
    """traceduck configured on a fresh provider and an empty store; returns the store path."""
    traceduck.configure(store_path, tracer_provider=provider)
    return store_path


# -- reading back ------------------------------------------------------------------------------


def stored_traces(**kwargs) -> list[Trace]:
    """Every stored trace (after a flush), as Trace objects."""
    assert traceduck.flush(), "flush() did not finish"
    return traceduck.search_traces(max_results=None, return_type="list", **kwargs)


def only_trace() -> Trace:
    """The one stored trace (after a flush)."""
    traces = stored_traces()
    assert len(traces) == 1, f"expected exactly one stored trace, found {len(traces)}"
    return traces[0]


def stored_trace(trace_id: str) -> Trace:
    assert traceduck.flush(), "flush() did not finish"
    found = traceduck.get_trace(trace_id)
    assert found is not None, f"trace {trace_id} was not stored"
    return found


def span_named(trace: Trace, name: str) -> Span:
    matches = [s for s in trace.data.spans if s.name == name]
    assert len(matches) == 1, f"expected one span named {name!r}, found {[s.name for s in trace.data.spans]}"
    return matches[0]


def query_file(path: str, sql: str, params: list | None = None) -> list[tuple]:
    """Rows physically stored in the DuckDB file (shuts traceduck down first to release it)."""
    traceduck.shutdown()
    con = duckdb.connect(path, read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


# -- subprocesses ------------------------------------------------------------------------------


def run_python(code: str, *, env: dict[str, str] | None = None, cwd: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (fresh global TracerProvider); fail on a non-zero exit."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEDUCK_")}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc
