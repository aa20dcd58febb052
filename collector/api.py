"""The collector's JSON API: a thin shell over traceduck's own functions.

Every handler calls the same SDK function a notebook would (``search_traces_page``,
``log_feedback``, ``tag_traces``, ...) with the caller's project-scoped view of the store, so
search, feedback and tagging exist once. Errors of those functions become 4xx JSON answers.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

import traceduck as td
from traceduck.governance import audit
from traceduck.serialize import dumps

from .auth import Principal, require

router = APIRouter(prefix="/api")


def _store(request: Request, principal: Principal) -> Any:
    return principal.scoped(request.app.state.store)


class SourceModel(BaseModel):
    source_type: str = Field(description="HUMAN, LLM_JUDGE or CODE")
    source_id: str | None = None


class ErrorModel(BaseModel):
    error_message: str
    error_code: str | None = None


class AssessmentIn(BaseModel):
    """Name the trace with exactly one of trace_id, client_request_id, response_id."""

    trace_id: str | None = None
    client_request_id: str | None = None
    response_id: str | None = Field(None, description="an LLM response id such as chatcmpl-...")
    name: str
    value: Any = None
    source: SourceModel | None = None
    rationale: str | None = None
    metadata: dict[str, Any] | None = None
    error: ErrorModel | None = None
    span_id: str | None = None


class AssessmentPatch(BaseModel):
    value: Any = None
    rationale: str | None = None
    metadata: dict[str, Any] | None = Field(None, description="merged into the assessment's metadata")
    error: ErrorModel | None = None
    source: SourceModel | None = None


class OverrideIn(BaseModel):
    value: Any
    rationale: str | None = None
    source: SourceModel | None = None
    metadata: dict[str, Any] | None = None


class TracePatch(BaseModel):
    metadata: dict[str, Any] | None = Field(None, description="REPLACES the metadata; tags are not regenerated")
    tags: dict[str, str | None] | None = Field(None, description="replaces all tags")
    add_tags: dict[str, str | None] | None = None
    remove_tags: list[str] | None = None


class BulkTags(BaseModel):
    """Name the traces by ids, by a filter string, or both (then both must match)."""

    trace_ids: list[str] | None = None
    filter: str | None = None
    add_tags: dict[str, str | None] | None = None
    remove_tags: list[str] | None = None


def _trace_json(trace: td.Trace) -> dict[str, Any]:
    return trace.to_dict()


def stored_json(content: Any) -> Response:
    """A JSON answer made of stored trace data, written by traceduck's own serialiser.

    Whatever was stored must read back: inputs may nest deeper than pydantic's serialiser accepts
    (it refuses beyond a fixed depth), and :func:`traceduck.serialize.dumps` never raises.
    """
    return Response(dumps(content), media_type="application/json")


@router.get("/traces", summary="Search traces with the filter language", response_model=dict[str, Any])
def search(
    request: Request,
    filter: str | None = Query(None, description="e.g. tags.`trace.user` = 'jane' AND status = 'ERROR'"),
    order_by: list[str] | None = Query(None, description="'<field> [ASC|DESC]', repeatable"),
    max_results: int = Query(100, ge=1, le=50_000),
    page_token: str | None = None,
    include_spans: bool = True,
    principal: Principal = Depends(require("read")),
) -> Response:
    page = td.search_traces_page(filter, order_by=order_by, max_results=max_results, page_token=page_token,
                                 include_spans=include_spans, store=_store(request, principal))  # fmt: skip
    return stored_json({"traces": [_trace_json(t) for t in page.traces], "next_page_token": page.next_page_token})


@router.get("/trace_count", summary="Count traces matching a filter")
def count(request: Request, filter: str | None = None,
          principal: Principal = Depends(require("read"))) -> dict[str, int]:  # fmt: skip
    return {"count": td.count_traces(filter, store=_store(request, principal))}


@router.get("/traces/{trace_id}", summary="One trace with its spans and assessments", response_model=dict[str, Any])
def get_trace(request: Request, trace_id: str, principal: Principal = Depends(require("read"))) -> Response:
    trace = td.get_trace(trace_id, store=_store(request, principal))
    if trace is None:
        raise HTTPException(404, detail=f"no trace {trace_id}")
    return stored_json(_trace_json(trace))


@router.get("/trace_lookup", summary="Find a trace by client request id or LLM response id",
            response_model=dict[str, Any])
def lookup(request: Request, client_request_id: str | None = None, response_id: str | None = None,
           principal: Principal = Depends(require("read"))) -> Response:  # fmt: skip
    trace = td.get_trace(client_request_id=client_request_id, response_id=response_id,
                         store=_store(request, principal))  # fmt: skip
    if trace is None:
        raise HTTPException(404, detail="no trace with that id")
    return stored_json(_trace_json(trace))


@router.patch("/traces/{trace_id}", summary="Replace metadata and/or set, add or remove tags")
def patch_trace(request: Request, trace_id: str, patch: TracePatch,
                principal: Principal = Depends(require("write"))) -> dict[str, Any]:  # fmt: skip
    store = _store(request, principal)
    before = td.get_trace(trace_id, store=store)
    if before is None:
        raise HTTPException(404, detail=f"no trace {trace_id}")
    if patch.metadata is not None:
        td.set_trace_metadata(trace_id, patch.metadata, store=store)
    if patch.tags is not None:
        td.set_trace_tags(trace_id, patch.tags, store=store)
    if patch.add_tags:
        td.add_trace_tags(trace_id, patch.add_tags, store=store)
    if patch.remove_tags:
        td.remove_trace_tags(trace_id, patch.remove_tags, store=store)
    trace = td.get_trace(trace_id, store=store)
    assert trace is not None
    _audit_edit(request, principal, before.info, trace.info, patch)
    return trace.info.to_dict()


def _audit_edit(request: Request, principal: Principal, before: Any, after: Any, patch: TracePatch) -> None:
    """Audit events for a trace's metadata and tag edits, with the values before and after."""
    record = request.app.state.store.record_audit
    if patch.metadata is not None:
        record(principal.actor, audit.METADATA_EDITED, after.project, after.trace_id, before.metadata, after.metadata)
    if patch.tags is not None or patch.add_tags or patch.remove_tags:
        record(principal.actor, audit.TAGS_EDITED, after.project, after.trace_id, before.tags, after.tags)


@router.post("/traces/tags", summary="Add or remove tags on many traces (by ids or a filter)")
def bulk_tags(request: Request, body: BulkTags, principal: Principal = Depends(require("write"))) -> dict[str, int]:
    updated = td.tag_traces(body.trace_ids, filter_string=body.filter, add=body.add_tags,
                            remove=body.remove_tags, store=_store(request, principal))  # fmt: skip
    request.app.state.store.record_audit(
        principal.actor, audit.TAGS_EDITED, principal.project, body.filter or "trace_ids", None,
        {"trace_ids": body.trace_ids, "filter": body.filter, "add_tags": body.add_tags,
         "remove_tags": body.remove_tags, "updated": updated},
    )  # fmt: skip
    return {"updated": updated}


def _log(kind: Literal["feedback", "expectation"], body: AssessmentIn, store: Any) -> dict[str, Any]:
    source = td.AssessmentSource(**body.source.model_dump()) if body.source else None
    common = dict(trace_id=body.trace_id, client_request_id=body.client_request_id,
                  response_id=body.response_id, name=body.name, value=body.value, source=source,
                  metadata=body.metadata, span_id=body.span_id, store=store)  # fmt: skip
    if kind == "expectation":
        return td.log_expectation(**common).to_dict()
    error = td.AssessmentError(**body.error.model_dump()) if body.error else None
    return td.log_feedback(rationale=body.rationale, error=error, **common).to_dict()


@router.post("/feedback", summary="Log feedback on a trace (kept pending until the trace arrives)")
def feedback(request: Request, body: AssessmentIn, principal: Principal = Depends(require("write"))) -> dict[str, Any]:
    return _log("feedback", body, _store(request, principal))


@router.post("/expectations", summary="Log an expectation (expected output) for a trace")
def expectation(request: Request, body: AssessmentIn,
                principal: Principal = Depends(require("write"))) -> dict[str, Any]:  # fmt: skip
    return _log("expectation", body, _store(request, principal))


@router.get("/assessments/pending", summary="Assessments whose trace has not arrived")
def pending(request: Request, principal: Principal = Depends(require("read"))) -> list[dict[str, Any]]:
    return [a.to_dict() for a in td.list_pending_assessments(store=_store(request, principal))]


@router.get("/assessments/{assessment_id}")
def get_assessment(request: Request, assessment_id: str,
                   principal: Principal = Depends(require("read"))) -> dict[str, Any]:  # fmt: skip
    return td.get_assessment(assessment_id, store=_store(request, principal)).to_dict()


@router.patch("/assessments/{assessment_id}", summary="Change an assessment in place")
def update_assessment(request: Request, assessment_id: str, patch: AssessmentPatch,
                      principal: Principal = Depends(require("write"))) -> dict[str, Any]:  # fmt: skip
    changes = patch.model_dump(exclude_unset=True)
    if "error" in changes:
        changes["error"] = td.AssessmentError(**changes["error"]) if changes["error"] else None
    if changes.get("source"):
        changes["source"] = td.AssessmentSource(**changes["source"])
    return td.update_assessment(assessment_id, store=_store(request, principal), **changes).to_dict()


@router.post("/assessments/{assessment_id}/override", summary="Override a feedback with a new value")
def override(request: Request, assessment_id: str, body: OverrideIn,
             principal: Principal = Depends(require("write"))) -> dict[str, Any]:  # fmt: skip
    source = td.AssessmentSource(**body.source.model_dump()) if body.source else None
    return td.override_feedback(assessment_id, body.value, rationale=body.rationale, source=source,
                                metadata=body.metadata, store=_store(request, principal)).to_dict()  # fmt: skip


@router.delete("/assessments/{assessment_id}", summary="Delete an assessment (restores what it overrode)")
def delete_assessment(request: Request, assessment_id: str,
                      principal: Principal = Depends(require("write"))) -> dict[str, str]:  # fmt: skip
    store = _store(request, principal)
    before = td.get_assessment(assessment_id, store=store)
    td.delete_assessment(assessment_id, store=store)
    request.app.state.store.record_audit(principal.actor, audit.ASSESSMENT_DELETED, before.project, assessment_id,
                                         before.to_dict(), None)  # fmt: skip
    return {"deleted": assessment_id}


@router.get("/stats", summary="Ingest counters (of the key's project only)")
def stats(request: Request, principal: Principal = Depends(require("read"))) -> dict[str, Any]:
    return request.app.state.ingest.stats_for(principal.project).as_dict()


class KeyIn(BaseModel):
    project: str
    rights: list[str] = Field(default_factory=lambda: ["read", "write"])
    description: str | None = None


@router.post("/keys", summary="Create an API key (admin; shown once)")
def create_key(request: Request, body: KeyIn = Body(...),
               principal: Principal = Depends(require("admin"))) -> dict[str, Any]:  # fmt: skip
    from traceduck.store import keys as key_store  # noqa: PLC0415

    if principal.project is not None and body.project != principal.project:
        raise HTTPException(403, detail="an admin key can only create keys of its own project")
    rights = key_store.parse_rights(body.rights)
    with request.app.state.store.connect(write=True) as con:
        info, key = key_store.create_key(con, body.project, rights, body.description)
        audit.append(con, principal.actor, audit.KEY_CREATED, info.project, info.key_id, None,
                     {"rights": sorted(info.rights), "description": info.description})  # fmt: skip
    request.app.state.keyring.forget()
    request.app.state.store.governance.invalidate()  # the first key ends open mode: projects must opt in
    return {"key_id": info.key_id, "key": key, "project": info.project, "rights": sorted(info.rights)}


@router.delete("/keys/{key_id}", summary="Revoke an API key (admin)")
def revoke_key(request: Request, key_id: str, principal: Principal = Depends(require("admin"))) -> dict[str, str]:
    from traceduck.store import keys as key_store  # noqa: PLC0415

    with request.app.state.store.connect(write=True) as con:
        known = [k for k in key_store.list_keys(con) if k.key_id == key_id]
        if not known or (principal.project is not None and known[0].project != principal.project):
            raise HTTPException(404, detail=f"no key {key_id}")
        key_store.revoke(con, key_id)
        audit.append(con, principal.actor, audit.KEY_REVOKED, known[0].project, key_id,
                     {"rights": sorted(known[0].rights), "description": known[0].description}, {"revoked": True})  # fmt: skip
    request.app.state.keyring.forget()
    return {"revoked": key_id}
