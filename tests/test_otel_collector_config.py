"""``otel-collector.yaml``: an OpenTelemetry Collector config that forwards to the traceduck collector."""

from __future__ import annotations

import re

import pytest
import yaml

from _collector import REPO

COMPONENTS = ("receivers", "processors", "exporters")


@pytest.fixture(scope="module")
def config() -> dict:
    with open(REPO / "otel-collector.yaml", encoding="utf-8") as f:
        loaded = yaml.safe_load(f)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def traces(config) -> dict:
    return config["service"]["pipelines"]["traces"]


def _type(component_id: str) -> str:
    """``otlphttp/traceduck`` -> ``otlphttp`` (the part before the optional /name)."""
    return component_id.split("/", 1)[0]


def test_traces_pipeline_uses_only_defined_components(config, traces):
    for kind in COMPONENTS:
        assert traces.get(kind), f"the traces pipeline has no {kind}"
        for component in traces[kind]:
            assert component in (config.get(kind) or {}), f"{kind[:-1]} {component!r} is used but not defined"


def test_every_defined_component_is_used_by_a_pipeline(config):
    pipelines = config["service"]["pipelines"].values()
    for kind in COMPONENTS:
        used = {c for pipeline in pipelines for c in pipeline.get(kind, [])}
        unused = set(config.get(kind) or {}) - used
        assert not unused, f"{kind} defined but used by no pipeline: {sorted(unused)}"


def test_every_listed_extension_is_defined(config):
    for extension in config["service"].get("extensions", []):
        assert extension in (config.get("extensions") or {}), f"extension {extension!r} is not defined"


def test_memory_limiter_comes_first_and_batch_after_it(traces):
    processors = [_type(p) for p in traces["processors"]]
    assert processors[0] == "memory_limiter"
    assert "batch" in processors and processors.index("batch") > 0


def test_otlp_receiver_accepts_grpc_and_http(config, traces):
    receivers = [r for r in traces["receivers"] if _type(r) == "otlp"]
    assert receivers, "the traces pipeline has no otlp receiver"
    protocols = config["receivers"][receivers[0]]["protocols"]
    assert {"grpc", "http"} <= set(protocols)


def test_exporter_is_otlphttp_sending_the_api_key_from_the_environment(config, traces):
    [exporter] = traces["exporters"]
    assert _type(exporter) == "otlphttp"
    settings = config["exporters"][exporter]
    assert re.fullmatch(r"\$\{env:[A-Z_][A-Z0-9_]*\}.*", str(settings["endpoint"])), settings["endpoint"]
    headers = settings["headers"]
    carrying = [v for v in headers.values() if re.search(r"\$\{env:[A-Za-z_][A-Za-z0-9_]*\}", str(v))]
    assert carrying, f"no header takes the API key from an environment variable: {headers}"
    auth = {k.lower(): v for k, v in headers.items()}.get("authorization")
    assert auth is not None and re.fullmatch(r"Bearer \$\{env:[A-Za-z_][A-Za-z0-9_]*\}", auth), auth


def test_exporter_retries_and_queues_instead_of_dropping(config, traces):
    settings = config["exporters"][traces["exporters"][0]]
    assert settings["retry_on_failure"]["enabled"] is True
    assert settings["sending_queue"]["enabled"] is True
