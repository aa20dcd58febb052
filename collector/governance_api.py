"""Governance endpoints (admin right): project settings, the audit log, purge and SFT export.

A thin shell over the SDK's governance functions with the caller's project-scoped store: a key
manages only its own project (an open collector, with no key yet, manages every project).

- ``GET/PUT /api/projects/{name}/settings``: capture facets, PII mode, retention, size cap;
- ``GET /api/audit`` (paged by ``after_seq``) and ``GET /api/audit/verify``;
- ``POST /api/purge`` (``dry_run``);
- ``POST /api/export/sft``: JSONL of the train examples, the manifest in the
  ``X-Traceduck-Manifest`` header; ``"format": "json"`` answers ``{manifest, train, validation}``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

import traceduck as td
from traceduck.governance import projects
from traceduck.governance.policy import FACETS, KEEP, PII_MODES

from .auth import Principal, require

router = APIRouter(prefix="/api")
MANIFEST_HEADER = "X-Traceduck-Manifest"


def _own_project(principal: Principal, name: str) -> str:
    if principal.project is not None and name != principal.project:
        raise HTTPException(403, detail=f"this API key can only manage its own project {principal.project!r}")
    return name


class SettingsIn(BaseModel):
    """Fields left out keep their value; ``null`` retention means no age-off, ``null`` size no cap."""

    capture: dict[str, bool] | list[str] | str | None = Field(
        None, description=f"{{facet: bool}} over {', '.join(FACETS)}; or 'all', 'none', a list")
    pii: Literal["off", "detect", "redact"] | None = Field(None, description=" | ".join(PII_MODES))
    retention_days: Literal[30, 90, 120] | None = None
    max_size_bytes: int | None = Field(None, gt=0)


def _settings_json(request: Request, name: str, settings: td.ProjectSettings | None) -> dict[str, Any]:
    if settings is None:
        with request.app.state.store.connect() as con:
            effective = projects.unconfigured_default(con)
        return {"project": name, "configured": False, **effective.to_dict()}
    return {"project": name, "configured": True, **settings.to_dict()}


@router.get("/projects/{name}/settings", summary="A project's capture policy, PII mode and retention (admin)")
def get_settings(request: Request, name: str, principal: Principal = Depends(require("admin"))) -> dict[str, Any]:
    _own_project(principal, name)
    return _settings_json(request, name, td.get_project_settings(name, store=request.app.state.store))


@router.put("/projects/{name}/settings", summary="Change a project's settings (admin; audit events)")
def put_settings(request: Request, name: str, body: SettingsIn,
                 principal: Principal = Depends(require("admin"))) -> dict[str, Any]:  # fmt: skip
    _own_project(principal, name)
    given = body.model_fields_set
    settings = td.set_project_settings(
        name,
        capture=body.capture if "capture" in given else None,
        pii=body.pii if "pii" in given else None,
        retention=body.retention_days if "retention_days" in given else KEEP,
        max_size=body.max_size_bytes if "max_size_bytes" in given else KEEP,
        store=request.app.state.store,
        actor=principal.actor,
    )
    return _settings_json(request, name, settings)


@router.get("/audit", summary="Audit events in order, paged by after_seq (admin)")
def audit_list(request: Request, after_seq: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000),
               action: str | None = None, principal: Principal = Depends(require("admin"))) -> dict[str, Any]:  # fmt: skip
    events = td.audit_events(project=principal.project, after_seq=after_seq, limit=limit + 1, action=action,
                             store=request.app.state.store)  # fmt: skip
    more = len(events) > limit
    events = events[:limit]
    return {"events": [e.to_dict() for e in events], "next_after_seq": events[-1].seq if more else None}


@router.get("/audit/verify", summary="Verify the audit log's hash chain (admin)")
def audit_verify(request: Request, expected_head: str | None = None,
                 principal: Principal = Depends(require("admin"))) -> dict[str, Any]:  # fmt: skip
    return td.verify_audit(expected_head, store=request.app.state.store).to_dict()


class PurgeIn(BaseModel):
    dry_run: bool = False


@router.post("/purge", summary="Delete what the project's retention and size cap no longer keep (admin)")
def purge(request: Request, body: PurgeIn | None = None,
          principal: Principal = Depends(require("admin"))) -> dict[str, Any]:  # fmt: skip
    report = td.purge(dry_run=bool(body and body.dry_run), project=principal.project,
                      store=request.app.state.store, actor=principal.actor)  # fmt: skip
    return report.to_dict()


class ExportIn(BaseModel):
    """Name the traces with a filter, trace ids, or both (then both must match)."""

    filter: str | None = None
    trace_ids: list[str] | None = None
    split: float | None = Field(None, gt=0, lt=1)
    seed: int = 0
    redact: bool = True
    format: Literal["jsonl", "json"] = "jsonl"


@router.post("/export/sft", summary="OpenAI chat fine-tuning JSONL of the matching traces (admin)")
async def export_sft(request: Request, body: ExportIn, principal: Principal = Depends(require("admin"))) -> Response:
    if body.filter is None and body.trace_ids is None:
        raise HTTPException(400, detail="name the traces with filter, trace_ids or both")
    store = principal.scoped(request.app.state.store)
    result = await run_in_threadpool(
        lambda: td.export_sft(body.filter, trace_ids=body.trace_ids, split=body.split, seed=body.seed,
                              redact=body.redact, store=store, actor=principal.actor))  # fmt: skip
    if body.format == "json":
        return JSONResponse({"manifest": result.manifest, "train": result.train, "validation": result.validation})
    lines = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in result.train)
    return Response(lines, media_type="application/x-ndjson",
                    headers={MANIFEST_HEADER: json.dumps(result.manifest, separators=(",", ":"))})  # fmt: skip
