"""The chat service of MLflow's production-tracing guide, written with traceduck.

POST /chat with the headers X-Request-ID, X-Session-ID and X-User-ID records one trace per request
carrying those three ids; POST /chat_feedback?client_request_id=... attaches the user's verdict to
that exact trace as HUMAN feedback named ``response_is_correct``. The store is the DuckDB file in
``TRACEDUCK_STORE`` (default ./traceduck.duckdb). Run with:

    TRACEDUCK_STORE=chat.duckdb uvicorn examples.fastapi_chat:app --port 8000
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel

import traceduck as td
from traceduck.fastapi import instrument

td.configure(os.environ.get("TRACEDUCK_STORE", "traceduck.duckdb"), service_name="chat-service")

app = FastAPI()


class ChatRequest(BaseModel):
    message: str


class FeedbackRequest(BaseModel):
    is_correct: bool  # True for correct, False for incorrect
    comment: str | None = None


@td.trace(span_type="LLM")
def answer(message: str) -> str:
    """Stands in for the model call."""
    return f"Processed message: '{message}'"


@td.trace  # above @app.post, as in the guide: traceduck.fastapi.instrument makes this order work
@app.post("/chat")
def handle_chat(request: Request, chat_request: ChatRequest) -> dict[str, str]:
    # The X-Request-ID / X-Session-ID / X-User-ID headers are already on the trace (instrument());
    # anything else about the request goes here.
    td.update_current_trace(
        metadata={"app_version": os.environ.get("APP_VERSION", "1.0.0")},
        tags={"endpoint": "chat"},
    )
    return {"response": answer(chat_request.message)}


@app.post("/chat_feedback")
def handle_chat_feedback(
    request: Request,
    feedback: FeedbackRequest,
    client_request_id: str = Query(..., description="The client request ID from the original chat request"),
) -> dict:
    td.flush()  # the chat request may still be queued for writing
    if td.get_trace(client_request_id=client_request_id) is None:
        raise HTTPException(
            status_code=404, detail=f"Unable to find data for client request ID: {client_request_id}"
        )
    assessment = td.log_feedback(
        client_request_id=client_request_id,
        name="response_is_correct",
        value=feedback.is_correct,
        source=td.AssessmentSource(source_type="HUMAN", source_id=request.headers.get("X-User-ID")),
        rationale=feedback.comment,
    )
    return assessment.to_dict()


instrument(app)
