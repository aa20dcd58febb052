"""The dashboard: its page at ``/`` and the read endpoints its views need.

The page (``collector/static``: plain HTML, ES modules and CSS, no build step and no network
beyond this collector) calls the same JSON API as every other client, with the API key the user
pastes once. The endpoints here are thin shells over ``traceduck.analytics``, so a notebook gets the
numbers the dashboard shows; like the rest of the API they see only the caller's project.

- ``GET /api/me``: the caller's project and rights (what the page may offer).
- ``GET /api/pivot?group_by=&filter=&from=&to=&limit=``: traces grouped by a field.
- ``GET /api/timeseries?filter=&from=&to=&buckets=``: the same numbers per time bucket.
- ``POST /api/llm_usage`` ``{"trace_ids": [...]}``: model, tokens and cost of each trace.
- ``GET /api/sessions/{session_id}``: a session's traces in order, with totals.
- ``GET /api/fields?from=&to=``: tag and metadata keys in use, feedback names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from traceduck import analytics

from .api import stored_json
from .auth import Principal, require

STATIC = Path(__file__).resolve().parent / "static"
#: The page loads nothing from anywhere but this collector, and runs no inline script or style.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter()


def _store(request: Request, principal: Principal) -> Any:
    return principal.scoped(request.app.state.store)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/api/me", summary="The caller's project and rights")
def me(request: Request, principal: Principal = Depends(require("read"))) -> dict[str, Any]:
    return {"project": principal.project, "rights": sorted(principal.rights), "key_id": principal.key_id,
            "open": principal.key_id is None}  # fmt: skip


@router.get("/api/pivot", summary="Traces grouped by a field: count, error rate, p50/p95, tokens, cost")
def pivot(
    request: Request,
    group_by: str = Query(description="user, session, environment, project, model, status, name, pii, "
                                      "classification, tags.<key>, metadata.<key> or feedback.<name>"),
    filter: str | None = Query(None, description="the search filter language"),
    time_from: int | None = Query(None, alias="from", description="epoch ms, inclusive"),
    time_to: int | None = Query(None, alias="to", description="epoch ms, exclusive"),
    limit: int = Query(100, ge=1, le=analytics.MAX_GROUPS),
    principal: Principal = Depends(require("read")),
) -> dict[str, Any]:
    return analytics.pivot_traces(group_by, filter or None, time_from, time_to, limit,
                                  store=_store(request, principal)).to_dict()  # fmt: skip


@router.get("/api/timeseries", summary="Trace count, errors, p50/p95 latency, tokens and cost over time")
def timeseries(
    request: Request,
    filter: str | None = None,
    time_from: int | None = Query(None, alias="from", description="epoch ms, inclusive"),
    time_to: int | None = Query(None, alias="to", description="epoch ms, exclusive"),
    buckets: int = Query(60, ge=1, le=analytics.MAX_BUCKETS, description="at most this many buckets"),
    principal: Principal = Depends(require("read")),
) -> dict[str, Any]:
    return analytics.trace_timeseries(filter or None, time_from, time_to, buckets,
                                      store=_store(request, principal)).to_dict()  # fmt: skip


class TraceIds(BaseModel):
    trace_ids: list[str] = Field(max_length=analytics.MAX_USAGE_IDS)


@router.post("/api/llm_usage", summary="Models, tokens and cost of the LLM calls of each trace")
def llm_usage(request: Request, body: TraceIds, principal: Principal = Depends(require("read"))) -> dict[str, Any]:
    return {"usage": analytics.llm_usage(body.trace_ids, store=_store(request, principal))}


@router.get("/api/sessions/{session_id}", summary="A session's traces, oldest first, with totals",
            response_model=dict[str, Any])
def session(request: Request, session_id: str,
            max_results: int = Query(analytics.SESSION_PAGE, ge=1, le=5_000), page_token: str | None = None,
            principal: Principal = Depends(require("read"))) -> Response:  # fmt: skip
    return stored_json(analytics.get_session(session_id, max_results, page_token, store=_store(request, principal)).to_dict())


@router.get("/api/fields", summary="Tag and metadata keys in use and feedback names, with counts")
def fields(request: Request, time_from: int | None = Query(None, alias="from"),
           time_to: int | None = Query(None, alias="to"),
           principal: Principal = Depends(require("read"))) -> dict[str, Any]:  # fmt: skip
    return analytics.trace_fields(time_from, time_to, store=_store(request, principal)).to_dict()


def install(app: FastAPI) -> None:
    """Serve the dashboard page, its assets under ``/static`` and its endpoints."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
