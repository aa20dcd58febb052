"""The traceduck collector as a REAL server for tests, its key CLI, and OTLP request builders.

``Collector`` runs ``traceduck collector`` in a subprocess on 127.0.0.1 and a port the OS hands
out, waits for ``/healthz`` and terminates it on ``stop()``. ``create_key``/``revoke_key`` run
``traceduck keys ...`` (the collector holds its DuckDB file open, so keys are managed while it is
stopped). The ``otlp_*`` helpers build ``opentelemetry.proto`` messages by hand for the ingest
tests; application-side tests use the real OTel SDK and OTLP/HTTP exporter instead.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from _servers import HOST, REPO, free_port, wait_for  # noqa: F401  (one copy, shared by the suites)

START_TIMEOUT = 60.0
#: ``traceduck ...`` with the interpreter running the tests (``-m traceduck.cli`` has no main guard).
TRACEDUCK = [sys.executable, "-c", "from traceduck.cli import main; import sys; sys.exit(main())"]
PROTOBUF = "application/x-protobuf"
JSON = "application/json"



def marker() -> str:
    """A short unique string that tells one test's traces apart from the others' in a shared store."""
    return uuid.uuid4().hex[:12]


def open_collector(tmp_path_factory, name: str) -> Collector:
    """A keyless collector (loopback only) on a fresh store, for a module's tests to share."""
    directory = tmp_path_factory.mktemp(name)
    return Collector(str(directory / f"{name}.duckdb"), str(directory / "collector.log"))


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test environment without TRACEDUCK_* settings (so nothing leaks into a subprocess)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEDUCK_")}
    env.update(extra or {})
    return env


# -- the key CLI ---------------------------------------------------------------------------------


def traceduck_cli(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run([*TRACEDUCK, *args], capture_output=True, text=True, env=clean_env(),
                          cwd=str(REPO), timeout=timeout)  # fmt: skip
    if check:
        assert proc.returncode == 0, f"traceduck {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@dataclass(frozen=True)
class Key:
    key: str
    key_id: str
    project: str
    rights: str


#: (store, project) pairs already opted in to capture by :func:`create_key`.
_opted_in: set[tuple[str, str]] = set()


def create_key(store: str, project: str, rights: str = "read,write", opt_in: bool = True) -> Key:
    """``traceduck keys create``; the key is the one line it prints on stdout.

    A collector with keys captures nothing of a project until its owner opts in, so (unless
    ``opt_in=False``) the project is also set to capture every facet: ``traceduck project set
    PROJECT --capture all``, once per store and project.
    """
    proc = traceduck_cli("keys", "create", "--store", store, "--project", project, "--rights", rights)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected the key alone on stdout, got {proc.stdout!r}"
    key = lines[0].strip()
    assert key.startswith("td_"), key
    if opt_in and (store, project) not in _opted_in:
        traceduck_cli("project", "set", project, "--store", store, "--capture", "all")
        _opted_in.add((store, project))
    return Key(key, key.split("_")[1], project, rights)


def revoke_key(store: str, key_id: str) -> subprocess.CompletedProcess:
    return traceduck_cli("keys", "revoke", "--store", store, key_id)


# -- the collector -------------------------------------------------------------------------------


class Collector:
    """``traceduck collector`` in a subprocess, serving one DuckDB store on 127.0.0.1."""

    def __init__(self, store: str, log_path: str, *args: str, host: str = HOST,
                 env: Mapping[str, str] | None = None) -> None:  # fmt: skip
        self.store = store
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            [*TRACEDUCK, "collector", "--store", store, "--host", host, "--port", str(self.port), *args],
            cwd=str(REPO), env=clean_env(env), stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._clients: list[httpx.Client] = []
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the collector exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"the collector did not answer /healthz within {START_TIMEOUT:.0f}s:\n{self.log()}")
            time.sleep(0.05)

    def client(self, key: str | None = None, header: str = "Authorization", timeout: float = 30.0) -> httpx.Client:
        """An HTTP client of this collector, sending ``key`` as a Bearer token or in ``header``."""
        headers: dict[str, str] = {}
        if key is not None:
            headers[header] = f"Bearer {key}" if header.lower() == "authorization" else key
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._clients.append(client)
        return client

    def stop(self) -> int | None:
        """Terminate the server (it drains its queue and releases the store); its exit code."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- OTLP messages -------------------------------------------------------------------------------


def new_trace_id() -> bytes:
    return secrets.token_bytes(16)


def new_span_id() -> bytes:
    return secrets.token_bytes(8)


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, (list, tuple)):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    if isinstance(value, Mapping):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(v)) for k, v in value.items())
        return out
    raise TypeError(f"no AnyValue for {value!r}")


def key_values(attributes: Mapping[str, Any] | None) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in (attributes or {}).items()]


def trace_fields(**fields: Any) -> dict[str, str]:
    """The ``traceduck.trace`` root attribute that carries trace-level fields (attributes.py)."""
    return {"traceduck.trace": json.dumps(fields)}


def otlp_span(trace_id: bytes, name: str, *, span_id: bytes | None = None, parent: bytes | None = None,
              start_ns: int | None = None, duration_ns: int = 5_000_000,
              attributes: Mapping[str, Any] | None = None, status: int = 0,
              events: Sequence[tuple[str, int, Mapping[str, Any]]] = ()) -> Span:  # fmt: skip
    start = start_ns if start_ns is not None else time.time_ns()
    span = Span(
        trace_id=trace_id,
        span_id=span_id if span_id is not None else new_span_id(),
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
        attributes=key_values(attributes),
        status=Status(code=status),
    )
    if parent is not None:
        span.parent_span_id = parent
    for event_name, ts, event_attrs in events:
        span.events.add(time_unix_nano=ts, name=event_name, attributes=key_values(event_attrs))
    return span


def otlp_request(spans: Iterable[Span], resource: Mapping[str, Any] | None = None) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource_spans = ResourceSpans()
    resource_spans.resource.attributes.extend(key_values(resource or {"service.name": "ingest-test"}))
    scope = ScopeSpans()
    scope.scope.name = "tests"
    scope.spans.extend(spans)
    resource_spans.scope_spans.append(scope)
    message.resource_spans.append(resource_spans)
    return message


def simple_trace(n_children: int = 1, *, client_request_id: str | None = None,
                 tags: Mapping[str, str] | None = None, metadata: Mapping[str, Any] | None = None,
                 root_name: str = "root", start_ns: int | None = None) -> tuple[str, list[Span]]:  # fmt: skip
    """A root span with trace fields and ``n_children`` children; (hex trace id, spans)."""
    trace_id = new_trace_id()
    start = start_ns if start_ns is not None else time.time_ns()
    fields: dict[str, Any] = {}
    if client_request_id is not None:
        fields["client_request_id"] = client_request_id
    if tags:
        fields["tags"] = dict(tags)
    if metadata:
        fields["metadata"] = dict(metadata)
    root_id = new_span_id()
    spans = [
        otlp_span(trace_id, f"child-{i}", parent=root_id, start_ns=start + 1_000 * (i + 1), duration_ns=1_000)
        for i in range(n_children)
    ]
    attrs: dict[str, Any] = {"traceduck.span_type": "CHAIN", "traceduck.inputs": json.dumps({"q": "hello"}),
                             "traceduck.outputs": json.dumps("world")}  # fmt: skip
    if fields:
        attrs.update(trace_fields(**fields))
    spans.append(otlp_span(trace_id, root_name, span_id=root_id, start_ns=start,
                           duration_ns=1_000 * (n_children + 2), attributes=attrs))  # fmt: skip
    return trace_id.hex(), spans


def to_otlp_json(message: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as the spec writes it: camelCase keys, trace and span ids as HEX strings."""
    data = json_format.MessageToDict(message)

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("traceId", "spanId", "parentSpanId"):
                if isinstance(node.get(key), str):
                    node[key] = base64.b64decode(node[key]).hex()
            for value in node.values():
                hexify(value)
        elif isinstance(node, list):
            for item in node:
                hexify(item)

    hexify(data)
    return json.dumps(data).encode()


def post_otlp(client: httpx.Client, message: ExportTraceServiceRequest, *, encoding: str = "protobuf",
              compress: bool = False) -> httpx.Response:  # fmt: skip
    if encoding == "json":
        body, content_type = to_otlp_json(message), JSON
    else:
        body, content_type = message.SerializeToString(), PROTOBUF
    headers = {"Content-Type": content_type}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return client.post("/v1/traces", content=body, headers=headers)


def export_response(response: httpx.Response) -> ExportTraceServiceResponse:
    """The ExportTraceServiceResponse in the encoding the server answered with."""
    message = ExportTraceServiceResponse()
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if media == JSON:
        json_format.Parse(response.text, message)
    else:
        assert media == PROTOBUF, f"unexpected response Content-Type {media!r}"
        message.ParseFromString(response.content)
    return message
