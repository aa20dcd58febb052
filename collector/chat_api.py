"""The chat-completion logging API (the Gantry workflow): log OpenAI calls made elsewhere.

- ``POST /v1/chat/completions``: ``application`` (the project), ``request`` and ``response`` (a
  ``chat.completion`` object or a stream: one string of ``data:`` events, a list of event strings
  or a list of chunk objects) are required; ``request_attributes``, ``response_attributes``,
  ``tags``, ``session_id``, ``feedback`` and ``selected_choice_index`` are optional. The call is
  normalised by :func:`traceduck.llm.normalize_chat` (the same code the SDK instrumentation uses)
  and stored as a trace of one LLM span, durably, before the answer ``{"trace_id", "response_id"}``.
- ``POST /v1/chat/completions/feedback``: ``application``, ``chat_id`` (the OpenAI response id)
  and ``feedback`` (a dict; each key becomes a HUMAN feedback assessment); joined to the logged
  call, also when it arrives before the call is logged.
- ``POST /api/llm/select_choice``: select another choice of a logged call (``select_choice``).

A malformed body answers 400 naming the field (never 422); keys work as for the rest of the
collector (401 without a valid key, 403 when ``application`` is not the key's project).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

import traceduck as td
from traceduck import attributes as attr
from traceduck.assessments import check_name, check_value
from traceduck.llm import CallContext, ChatLog, normalize_chat
from traceduck.raw_spans import RawSpans
from traceduck.serialize import dumps, to_json

from .auth import Principal, require
from .ingest import Overloaded

HUMAN = td.AssessmentSource("HUMAN")


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"detail": message, "error": "invalid_request"}, status_code=400)


def _validation_message(exc: RequestValidationError) -> str:
    """'<field>: <problem>' for each invalid field of the body (the first few)."""
    parts = []
    for error in exc.errors()[:3]:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        parts.append(f"{'.'.join(loc) or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "malformed request body"


class _BadRequestRoute(APIRoute):
    """Answers 400 (not FastAPI's 422) with a message naming the field for a malformed body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _bad_request(_validation_message(exc))

        return route


router = APIRouter(route_class=_BadRequestRoute)


class ChatLogIn(BaseModel):
    application: str = Field(min_length=1, max_length=250, description="the project (Gantry application)")
    request: Any = Field(description="the OpenAI chat-completion request as sent")
    response: Any = Field(description="the response object, or the stream: event text, event strings or chunks")
    request_attributes: dict[str, Any] | None = None
    response_attributes: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    session_id: str | None = None
    feedback: dict[str, Any] | None = Field(None, description="each key becomes a feedback assessment")
    selected_choice_index: int = Field(0, ge=0)


class ChatFeedbackIn(BaseModel):
    application: str = Field(min_length=1, max_length=250)
    chat_id: str = Field(min_length=1, description="the OpenAI response id, e.g. chatcmpl-123")
    feedback: dict[str, Any] = Field(description="each key becomes a feedback assessment")


class SelectChoiceIn(BaseModel):
    index: int = Field(ge=0)
    trace_id: str | None = None
    response_id: str | None = None


def _project(principal: Principal, application: str) -> str:
    """The project to write to: ``application``, which must be the API key's project."""
    if principal.project is not None and application != principal.project:
        raise HTTPException(403, detail=f"application {application!r} is not the project of this API key")
    return application


def _check_feedback(feedback: dict[str, Any] | None) -> list[tuple[str, Any]]:
    items = list((feedback or {}).items())
    for name, value in items:
        try:
            check_name(name)
            check_value(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"feedback[{name!r}]: {exc}") from None
        if value is None:
            raise ValueError(f"feedback[{name!r}]: the value must not be null")
    return items


def _latency(attributes: dict[str, Any] | None) -> float | None:
    """``response_attributes.latency_ms`` (the seed's example), when it is a non-negative number."""
    value = (attributes or {}).get("latency_ms")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e12:
        return float(value)
    return None


def build_trace(body: ChatLogIn, project: str) -> tuple[RawSpans, str, ChatLog]:
    """The call as a trace of one root LLM span, exactly as the SDK would record it."""
    latency = _latency(body.response_attributes)
    log = normalize_chat(body.request, body.response, selected_choice_index=body.selected_choice_index,
                         latency_ms=latency)  # fmt: skip
    context = CallContext.of(body.request_attributes, body.response_attributes, body.tags, body.session_id)
    attributes = context.span_attributes(log)
    attributes[attr.SPAN_TYPE] = "LLM"
    attributes[attr.INPUTS] = to_json(log.request)
    attributes[attr.OUTPUTS] = to_json(log.response)
    attributes[attr.TRACE_FIELDS] = dumps(context.trace_fields(log, is_root=True))
    end_ns = time.time_ns()
    start_ns = end_ns - int((latency or 0) * 1_000_000)
    error = log.response.get("error")
    raw = RawSpans(default_project=project)
    trace_id = secrets.token_hex(16)
    raw.add(trace_id, secrets.token_hex(8), None, False, f"chat {log.model}", "INTERNAL", start_ns, end_ns,
            "ERROR" if error is not None else "OK", dumps(error) if error is not None else None,
            attributes, None, raw.resource({}), project=project)  # fmt: skip
    return raw, trace_id, log


def _log_feedback(store: Any, items: list[tuple[str, Any]], **target: str) -> list[str]:
    return [td.log_feedback(name=name, value=value, source=HUMAN, store=store, **target).assessment_id
            for name, value in items]  # fmt: skip


async def _store_durably(request: Request, raw: RawSpans, project: str | None) -> JSONResponse | None:
    """Queue the spans and wait for the commit; an error answer if that fails."""
    settings = request.app.state.settings
    headers = {"Retry-After": str(settings.retry_after)}
    try:
        future = request.app.state.ingest.submit(raw, project)
    except Overloaded as exc:
        return JSONResponse({"detail": f"the collector is busy ({exc}); retry later", "error": "overloaded"},
                            status_code=429, headers=headers)  # fmt: skip
    try:
        await asyncio.wait_for(asyncio.wrap_future(future), settings.ack_timeout)
    except asyncio.TimeoutError:
        return JSONResponse({"detail": "the call is not durable yet; retry later", "error": "timeout"},
                            status_code=503, headers=headers)  # fmt: skip
    except Exception as exc:
        return JSONResponse({"detail": f"could not store the call: {exc}", "error": "store_failed"},
                            status_code=503, headers=headers)  # fmt: skip
    return None


@router.post("/v1/chat/completions", summary="Log an OpenAI chat-completion call (request, response, extras)")
async def log_chat_completion(request: Request, body: ChatLogIn,
                              principal: Principal = Depends(require("write"))) -> Any:  # fmt: skip
    project = _project(principal, body.application)
    try:
        feedback = _check_feedback(body.feedback)
        raw, trace_id, log = await run_in_threadpool(build_trace, body, project)
    except (ValueError, TypeError) as exc:
        return _bad_request(str(exc))
    failed = await _store_durably(request, raw, principal.project)
    if failed is not None:
        return failed
    assessment_ids: list[str] = []
    if feedback:
        store = request.app.state.store.for_project(project)
        # the call just stored, by its trace id: its response id may name other calls of the project too
        assessment_ids = await run_in_threadpool(_log_feedback, store, feedback, trace_id=trace_id)
    return {"trace_id": trace_id, "response_id": log.response_id, "assessment_ids": assessment_ids}


@router.post("/v1/chat/completions/feedback", summary="Log feedback on a logged (or not yet logged) call")
async def chat_feedback(request: Request, body: ChatFeedbackIn,
                        principal: Principal = Depends(require("write"))) -> Any:  # fmt: skip
    project = _project(principal, body.application)
    try:
        items = _check_feedback(body.feedback)
        if not items:
            raise ValueError("feedback: must name at least one assessment")
    except ValueError as exc:
        return _bad_request(str(exc))
    store = request.app.state.store.for_project(project)
    ids = await run_in_threadpool(_log_feedback, store, items, response_id=body.chat_id)
    trace_id = await run_in_threadpool(store.find_trace_id, "response_id", body.chat_id)
    return {"chat_id": body.chat_id, "trace_id": trace_id, "pending": trace_id is None, "assessment_ids": ids}


@router.post("/api/llm/select_choice", summary="Select another choice of a logged LLM call")
def select_choice(request: Request, body: SelectChoiceIn,
                  principal: Principal = Depends(require("write"))) -> dict[str, Any]:  # fmt: skip
    store = principal.scoped(request.app.state.store)
    return store.select_choice(body.index, trace_id=body.trace_id, response_id=body.response_id)
