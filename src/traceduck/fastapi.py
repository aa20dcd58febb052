"""FastAPI integration: one trace per request, with request headers mapped onto the trace.

``instrument(app)`` uses ``opentelemetry-instrumentation-fastapi`` for the server span (the root
of each request's trace), maps ``X-Request-ID`` / ``X-Session-ID`` / ``X-User-ID`` (names
configurable) onto the trace's client request id, session and user, and returns the trace id in
an ``X-Trace-ID`` response header. ``@trace`` on a handler works above or below ``@app.post``.
Needs the extra ``traceduck[fastapi]``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from .config import current_setup, get_tracer
from .current_trace import get_current_trace_id, update_current_trace
from .tracing import traced_functions

logger = logging.getLogger("traceduck")

DEFAULT_HEADERS: dict[str, str] = {
    "client_request_id": "X-Request-ID",
    "session_id": "X-Session-ID",
    "user": "X-User-ID",
}
#: Trace fields a header can fill (arguments of update_current_trace).
HEADER_FIELDS = frozenset({"client_request_id", "session_id", "user", "environment"})
DEFAULT_TRACE_ID_HEADER = "X-Trace-ID"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def patch_traced_routes(app: Any) -> int:
    """Route handlers registered BEFORE ``@trace`` wrapped them now call the traced wrapper.

    ``@trace`` above ``@app.post(...)`` means FastAPI registered the plain function; this swaps
    in the wrapper, keeping FastAPI's parameter handling (it was built from the same signature).
    """
    from fastapi.routing import APIRoute  # noqa: PLC0415

    patched = 0
    for route in getattr(app, "routes", []):
        router = getattr(route, "original_router", None)  # an included APIRouter (FastAPI >= 0.13x)
        if router is not None:
            inner = patch_traced_routes(router)
            if inner and callable(getattr(router, "_mark_routes_changed", None)):
                router._mark_routes_changed()  # let FastAPI rebuild its per-route contexts
            patched += inner
            continue
        if not isinstance(route, APIRoute):
            continue
        wrapper = traced_functions.get(route.endpoint)
        if wrapper is not None and route.endpoint is not wrapper:
            route.endpoint = wrapper
            route.dependant.call = wrapper
            patched += 1
    return patched


class TraceduckMiddleware:
    """ASGI middleware inside the OTel server span: headers -> trace fields, trace id -> header."""

    def __init__(self, app: ASGIApp, fastapi_app: Any, headers: Mapping[str, str],
                 trace_id_header: str | None) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.headers = {field: name.lower() for field, name in headers.items()}
        self.trace_id_header = trace_id_header.lower().encode("latin-1") if trace_id_header else None
        self.patched = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if not self.patched:  # routes are all registered by the first request
            patch_traced_routes(self.fastapi_app)
            self.patched = True
        self._record_headers(scope)
        trace_id = get_current_trace_id()
        if trace_id is None or self.trace_id_header is None:
            await self.app(scope, receive, send)
            return
        header = (self.trace_id_header, trace_id.encode("latin-1"))

        async def send_with_trace_id(message: Message) -> None:
            if message.get("type") == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_trace_id)

    def _record_headers(self, scope: Scope) -> None:
        wanted = {name: field for field, name in self.headers.items()}
        found: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", []):
            field = wanted.get(raw_name.decode("latin-1").lower())
            value = raw_value.decode("latin-1").strip()
            if field is not None and value:  # an empty header is no value: leave the field absent
                found[field] = value
        for field, value in found.items():
            try:
                update_current_trace(**{field: value})
            except (TypeError, ValueError) as exc:  # e.g. an oversized header: skip it, serve the request
                logger.warning("traceduck ignored header for %s: %s", field, exc)


def instrument(
    app: Any,
    headers: Mapping[str, str] | None = None,
    trace_id_header: str | None = DEFAULT_TRACE_ID_HEADER,
    excluded_urls: str | None = None,
) -> Any:
    """Trace every request of a FastAPI ``app`` (call once, before serving).

    ``headers`` maps trace fields (``client_request_id``, ``session_id``, ``user``,
    ``environment``) to request header names; missing headers are simply absent from the trace.
    ``trace_id_header`` names the response header that returns the trace id (``None``: none).
    """
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415

    mapping = dict(DEFAULT_HEADERS if headers is None else headers)
    unknown = set(mapping) - HEADER_FIELDS
    if unknown:
        raise ValueError(
            f"unknown trace field(s) {', '.join(sorted(unknown))} in headers; "
            f"use {', '.join(sorted(HEADER_FIELDS))}"
        )
    get_tracer()  # configure the defaults if the application has not
    setup = current_setup()
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=setup.provider if setup else None,
        excluded_urls=excluded_urls,
        exclude_spans=["receive", "send"],  # one span per ASGI message is noise in a trace
    )
    app.add_middleware(
        TraceduckMiddleware, fastapi_app=app, headers=mapping, trace_id_header=trace_id_header
    )
    patch_traced_routes(app)
    return app
