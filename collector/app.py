"""The collector service: one process that owns a DuckDB trace store and serves many apps.

``create_app(settings)`` builds the FastAPI application: OTLP/HTTP ingest at ``/v1/traces``, the
JSON API under ``/api`` (search, traces, feedback, tags, keys, stats), ``/healthz`` and
``/metrics``; governance under ``/api`` (settings, audit, purge, export; ``governance_api.py``)
and the background retention job. ``traceduck collector`` runs it with uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import traceduck as td
from traceduck.paging import InvalidPageTokenError
from traceduck.raw_spans import RawSpans
from traceduck.store.duckdb_store import DuckDBStore

from . import otlp
from .api import router as api_router
from .auth import KeyRing, Principal, require
from .chat_api import router as chat_router
from .governance_api import router as governance_router
from .dashboard_api import install as install_dashboard
from .ingest import IngestQueue, Overloaded
from .retention import RetentionJob
from .settings import CollectorSettings

logger = logging.getLogger("traceduck.collector")


def open_collector_store(path: str) -> DuckDBStore:
    """The store as the collector uses it: held open, writer, duplicates skipped."""
    store = DuckDBStore(path, hold_open=True)
    store.dedupe_spans = True
    store.acquire_writer()
    # pyarrow imports pandas on its first conversion (~0.6 s): at start, not in the first request.
    RawSpans().to_arrow()
    return store


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": message, "error": code, **extra}, status_code=status)


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
          413: "too_large", 415: "unsupported_media_type", 429: "overloaded", 503: "unavailable"}


class BodyLimit:
    """ASGI middleware: refuse a request body larger than ``limit`` bytes with 413, before reading
    it when Content-Length says so, else as soon as the bytes read pass the limit (a chunked
    body), so no request makes the collector hold more than ``limit`` bytes of body."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body is larger than {self.limit} bytes"
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _error(413, "too_large", message)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > self.limit:
                    raise StarletteHTTPException(413, detail=message)  # answered by http_error below
            return event

        await self.app(scope, limited, send)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail, "error": _CODES.get(exc.status_code, "error")},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))  # fmt: skip

    @app.exception_handler(td.InvalidFilterError)
    async def invalid_filter(request: Request, exc: td.InvalidFilterError) -> JSONResponse:
        return _error(400, "invalid_filter", exc.message, position=exc.position)

    @app.exception_handler(InvalidPageTokenError)
    async def invalid_token(request: Request, exc: InvalidPageTokenError) -> JSONResponse:
        return _error(400, "invalid_page_token", str(exc))

    @app.exception_handler(td.TraceNotFoundError)
    async def trace_not_found(request: Request, exc: td.TraceNotFoundError) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(td.AssessmentNotFoundError)
    async def assessment_not_found(request: Request, exc: td.AssessmentNotFoundError) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(td.StoreBusyError)
    async def busy(request: Request, exc: td.StoreBusyError) -> JSONResponse:
        return _error(503, "busy", str(exc))

    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return _error(400, "invalid_request", str(exc))

    @app.exception_handler(TypeError)
    async def type_error(request: Request, exc: TypeError) -> JSONResponse:
        return _error(400, "invalid_request", str(exc))


def create_app(settings: CollectorSettings, store: DuckDBStore | None = None) -> FastAPI:
    """The collector application (the store is opened here unless given)."""
    store = store or open_collector_store(settings.store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        retention = RetentionJob(store, settings.purge_interval).start()
        yield
        retention.stop()
        app.state.ingest.close()
        store.release_writer()

    app = FastAPI(
        title="traceduck collector",
        description="OTLP/HTTP trace ingest, search, feedback and curation over a DuckDB trace store.",
        version=td.__version__,
        lifespan=lifespan,
    )
    # Every body (OTLP, chat logs, API calls) stops being read past the limit: 413, bounded memory.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.state.settings = settings
    app.state.store = store
    app.state.keyring = KeyRing(store, settings.api_key_header)
    app.state.ingest = IngestQueue(store, settings.max_queued_spans, settings.batch_max_spans, settings.gather_seconds)
    _install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(chat_router)
    app.include_router(governance_router)
    install_dashboard(app)

    def _retry_later(status: int, code: str, message: str) -> JSONResponse:
        return JSONResponse({"detail": message, "error": code}, status_code=status,
                            headers={"Retry-After": str(settings.retry_after)})  # fmt: skip

    @app.post("/v1/traces", summary="OTLP/HTTP trace ingest (protobuf or JSON, gzip accepted)")
    async def ingest(request: Request, principal: Principal = Depends(require("write"))) -> Response:
        content_type = request.headers.get("content-type", "")
        if app.state.ingest.full:  # refuse before reading and decoding: overload costs nothing more
            app.state.ingest.refuse(principal.project)
            return _retry_later(429, "overloaded", "the collector is busy (its write queue is full); retry later")
        future = None
        with app.state.ingest.decoding():  # until submitted: the next write waits for these spans
            body = await request.body()
            try:
                body = otlp.decompress(body, request.headers.get("content-encoding"), settings.max_body_bytes)
                raw, rejected, reasons = await run_in_threadpool(_decode, body, content_type, principal.project)
            except otlp.TooLarge as exc:
                return _error(413, "too_large", str(exc))
            except otlp.BadRequest as exc:
                return _error(400 if "Content-Type" not in str(exc) else 415, "bad_request", str(exc))
            app.state.ingest.count_rejected(principal.project, rejected)
            if len(raw):
                try:
                    future = app.state.ingest.submit(raw, principal.project)
                except Overloaded as exc:
                    return _retry_later(429, "overloaded", f"the collector is busy ({exc}); retry later")
        if future is not None:
            try:
                await asyncio.wait_for(asyncio.wrap_future(future), settings.ack_timeout)
            except asyncio.TimeoutError:
                return _retry_later(503, "timeout", "the spans are not durable yet; retry later")
            except Exception as exc:  # the write failed: not acknowledged, the exporter retries
                return _retry_later(503, "store_failed", f"could not store the spans: {exc}")
        payload, media = otlp.response(rejected, reasons, content_type)
        return Response(payload, media_type=media)

    @app.get("/healthz", summary="Liveness and store health")
    def healthz() -> JSONResponse:
        ingest = app.state.ingest
        healthy = ingest.healthy
        body = {
            "status": "ok" if healthy else "degraded",
            "queued_spans": ingest.stats.queued_spans,
            "last_error": None if healthy else ingest.stats.last_error,
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/metrics", summary="Ingest counters in Prometheus text format")
    def metrics(principal: Principal = Depends(require("read"))) -> PlainTextResponse:
        lines = []
        for name, value in app.state.ingest.stats_for(principal.project).as_dict().items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not name.endswith("_time"):
                if name == "queued_spans":
                    lines += [f"# TYPE traceduck_{name} gauge", f"traceduck_{name} {value}"]
                else:
                    lines += [f"# TYPE traceduck_{name}_total counter", f"traceduck_{name}_total {value}"]
        return PlainTextResponse("\n".join(lines) + "\n")

    return app


def _decode(body: bytes, content_type: str, project: str | None) -> tuple[RawSpans, int, list[str]]:
    message = otlp.parse_request(body, content_type)
    raw = RawSpans()
    rejected, reasons = otlp.to_raw_spans(message, raw, project)
    return raw, rejected, reasons
