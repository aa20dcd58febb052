"""Settings of the collector service; each has a command-line flag and an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass
class CollectorSettings:
    store: str = "traces.duckdb"
    host: str = "127.0.0.1"
    port: int = 4318
    #: Header that may carry an API key besides ``Authorization: Bearer`` (e.g. X-Gantry-Api-Key).
    api_key_header: str = "X-Traceduck-Api-Key"
    #: Spans accepted but not yet written; beyond it ingest answers 429 with Retry-After.
    max_queued_spans: int = 200_000
    #: Spans written per DuckDB transaction (requests waiting together are written together).
    batch_max_spans: int = 20_000
    #: How long a write waits for requests still being decoded to join its transaction (seconds).
    gather_seconds: float = 0.05
    #: Largest request body accepted, after decompression.
    max_body_bytes: int = 64 * 1024 * 1024
    #: How long ingest waits for its spans to be durably written before answering 503.
    ack_timeout: float = 30.0
    #: Retry-After seconds sent with 429/503.
    retry_after: int = 1
    #: Seconds between runs of the background retention job (0: no job).
    purge_interval: float = 3600.0

    @classmethod
    def from_env(cls) -> CollectorSettings:
        base = cls()
        return cls(
            store=_env("TRACEDUCK_STORE", base.store),
            host=_env("TRACEDUCK_HOST", base.host),
            port=int(_env("TRACEDUCK_PORT", str(base.port))),
            api_key_header=_env("TRACEDUCK_API_KEY_HEADER", base.api_key_header),
            max_queued_spans=int(_env("TRACEDUCK_MAX_QUEUED_SPANS", str(base.max_queued_spans))),
            batch_max_spans=int(_env("TRACEDUCK_BATCH_MAX_SPANS", str(base.batch_max_spans))),
            gather_seconds=float(_env("TRACEDUCK_GATHER_SECONDS", str(base.gather_seconds))),
            max_body_bytes=int(_env("TRACEDUCK_MAX_BODY_BYTES", str(base.max_body_bytes))),
            ack_timeout=float(_env("TRACEDUCK_ACK_TIMEOUT", str(base.ack_timeout))),
            retry_after=int(_env("TRACEDUCK_RETRY_AFTER", str(base.retry_after))),
            purge_interval=float(_env("TRACEDUCK_PURGE_INTERVAL", str(base.purge_interval))),
        )
