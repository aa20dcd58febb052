"""A real OpenTelemetry collector (``rotel-agent``, shipped in the ``rotel`` package) in front of
the traceduck collector: app --OTLP/HTTP--> rotel --OTLP/HTTP + API key--> traceduck collector."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import rotel
from opentelemetry.sdk.trace import TracerProvider

import traceduck

from _collector import HOST, Collector, clean_env, create_key, free_port, wait_for

ROTEL_AGENT = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
PROJECT = "via-rotel"


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """(rotel's OTLP/HTTP port, an API client of the traceduck collector with a read key)."""
    directory = tmp_path_factory.mktemp("rotel")
    store = str(directory / "rotel.duckdb")
    write_key = create_key(store, PROJECT, "write")
    read_key = create_key(store, PROJECT, "read")
    collector = Collector(store, str(directory / "collector.log"))
    http_port, grpc_port = free_port(), free_port()
    log = open(directory / "rotel.log", "wb")  # noqa: SIM115
    agent = subprocess.Popen(
        [ROTEL_AGENT, "start",
         "--otlp-http-endpoint", f"{HOST}:{http_port}", "--otlp-grpc-endpoint", f"{HOST}:{grpc_port}",
         "--exporter", "otlp", "--otlp-exporter-endpoint", collector.base_url,
         "--otlp-exporter-protocol", "http",
         "--otlp-exporter-custom-headers", f"Authorization=Bearer {write_key.key}",
         "--batch-timeout", "200ms",
         "--pid-file", str(directory / "rotel.pid"), "--log-file", str(directory / "rotel-daemon.log")],
        stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=str(directory),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not _accepts(http_port):
            assert agent.poll() is None, Path(directory / "rotel.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "rotel-agent did not listen within 30s"
            time.sleep(0.05)
        yield http_port, collector.client(read_key.key)
    finally:
        agent.terminate()
        try:
            agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=5)
        log.close()
        collector.stop()


@traceduck.trace(span_type="RETRIEVER")
def _retrieve(question: str) -> list[str]:
    with traceduck.start_span("rerank", span_type="RERANKER") as span:
        span.set_inputs({"n": 2})
        span.set_outputs(["d2", "d1"])
    return ["d1", "d2"]


@traceduck.trace(span_type="LLM")
def _generate(question: str, docs: list[str]) -> str:
    return f"{question} -> {','.join(docs)}"


@traceduck.trace(span_type="CHAIN")
def _handle(question: str, request_id: str, run: str) -> str:
    traceduck.update_current_trace(
        client_request_id=request_id, user="carol", session_id="s-rotel", tags={"run": run, "via": "rotel"},
        metadata={"app_version": "3.1", "doc": {"type": "url", "url": "https://example.com/x", "text": "X"}},
    )  # fmt: skip
    return _generate(question, _retrieve(question))


def test_traces_forwarded_by_rotel_arrive_with_every_span_and_their_trace_fields(pipeline):
    http_port, api = pipeline
    run = uuid.uuid4().hex[:12]
    # the application exports OTLP/HTTP to rotel (traceduck's remote mode points the exporter there)
    traceduck.configure(f"http://{HOST}:{http_port}", tracer_provider=TracerProvider(), flush_interval=0.05)
    sent = {f"{run}-{i}": _handle(f"q{i}", f"{run}-{i}", run) for i in range(5)}
    assert traceduck.flush()
    traceduck.shutdown()

    def arrived():
        page = api.get("/api/traces", params={"filter": f"tags.run = '{run}'", "max_results": 100})
        assert page.status_code == 200, page.text
        traces = page.json()["traces"]
        complete = len(traces) == 5 and all(len(t["data"]["spans"]) == 4 for t in traces)
        return traces if complete else None

    traces = wait_for(arrived, timeout=10, what="every span to arrive through rotel")
    assert {t["info"]["client_request_id"] for t in traces} == set(sent)
    for t in traces:
        info = t["info"]
        assert info["project"] == PROJECT
        assert info["name"] == "_handle" and info["state"] == "OK"
        assert info["tags"]["trace.user"] == "carol" and info["tags"]["trace.session"] == "s-rotel"
        assert info["tags"]["via"] == "rotel" and info["tags"]["run"] == run
        assert info["metadata"]["app_version"] == "3.1"
        assert info["metadata"]["doc"] == {"type": "url", "url": "https://example.com/x", "text": "X"}
        question = f"q{info['client_request_id'].rsplit('-', 1)[1]}"
        assert json.loads(info["request_preview"]) == {"question": question, "request_id": info["client_request_id"],
                                                       "run": run}  # fmt: skip
        assert json.loads(info["response_preview"]) == sent[info["client_request_id"]]
        spans = {s["name"]: s for s in t["data"]["spans"]}
        assert spans["_handle"]["parent_id"] is None
        assert spans["_retrieve"]["parent_id"] == spans["_handle"]["span_id"]
        assert spans["_generate"]["parent_id"] == spans["_handle"]["span_id"]
        assert spans["rerank"]["parent_id"] == spans["_retrieve"]["span_id"]
        assert spans["rerank"]["span_type"] == "RERANKER" and spans["rerank"]["outputs"] == ["d2", "d1"]
        assert spans["_generate"]["inputs"] == {"question": question, "docs": ["d1", "d2"]}
