"""Seed data for the dashboard tests and screenshots, sent through the collector's real paths.

``seed(client, project)`` posts OTLP traces (a CHAIN root with a retriever, an LLM call and a
tool span; users, sessions, environments, tags, typed metadata, some errors) over the last 20
hours, logs chat completions (one with n=3 choices, the second selected) through
``/v1/chat/completions``, and feedback through ``/api/feedback``. It returns what was sent, so a
test computes what the dashboard should show from the inputs, not from the store.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from _collector import (
    new_span_id, new_trace_id, otlp_request, otlp_span, post_otlp, simple_trace, trace_fields, wait_for,
)

USERS = ("alice", "bob", "carol", "dan")
TASKS = ("chat", "summarize", "translate")
CLASSES = ("public", "internal", "confidential")
MODELS = ("gpt-4o", "gpt-4o-mini")
HOUR_MS = 3_600_000
QUESTIONS = (
    "How do I reset my password?", "Summarise this support ticket about a late delivery.",
    "Translate 'where is the station' into German.", "Which plan includes SSO?",
    "Why was my card declined?", "Draft a polite reply to a refund request.",
)  # fmt: skip
N_CHOICES = (
    ("Where was the 2020 World Series played?",
     ["It was played at Globe Life Field.", "The 2020 World Series was played at Globe Life Field in Arlington, Texas.",
      "Globe Life Field."]),
)  # fmt: skip


@dataclass
class SeededTrace:
    trace_id: str
    start_ms: int
    duration_ms: int
    user: str | None
    session: str | None
    environment: str | None
    task: str | None
    error: bool
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    classification: str | None = None
    pii: str | None = None
    name: str = "handle_request"
    kind: str = "otlp"


@dataclass
class Seeded:
    project: str
    traces: list[SeededTrace] = field(default_factory=list)
    #: trace id -> the latest is_correct feedback value
    feedback: dict[str, bool] = field(default_factory=dict)
    #: the trace id of the chat completion logged with three choices (choice 1 selected)
    n_choices_trace: str = ""

    def by_id(self, trace_id: str) -> SeededTrace:
        return next(t for t in self.traces if t.trace_id == trace_id)


def _cost(model: str, input_tokens: int, output_tokens: int) -> float:
    rates = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6)}[model]
    return (input_tokens * rates[0] + output_tokens * rates[1]) / 1_000_000


def otlp_trace(i: int, now_ms: int, n: int) -> tuple[SeededTrace, list[Any]]:
    """Trace ``i`` of ``n``: spans and what they hold."""
    trace_id = new_trace_id()
    start_ms = now_ms - int(20 * HOUR_MS * (n - i - 0.5) / n)
    duration_ms = 180 + 37 * i + (900 if i % 9 == 4 else 0)
    user, session = USERS[i % 4], f"sess-{i % 6}"
    environment = "staging" if i % 5 == 0 else "prod"
    task = TASKS[(i // 2) % 3]
    error = i % 7 == 3
    model = MODELS[i % 2]
    input_tokens, output_tokens = 120 + 13 * i, 25 + 7 * i
    cost = _cost(model, input_tokens, output_tokens)
    classification = CLASSES[i % 3]
    pii = "EMAIL" if i % 8 == 1 else None
    question = QUESTIONS[i % len(QUESTIONS)]
    answer = f"Here is what I found about {question.lower().rstrip('?.')}."
    tags: dict[str, Any] = {"task": task, "tier": ("free", "pro")[i % 2]}
    if pii:
        tags["pii.detected"] = pii
    metadata: dict[str, Any] = {"trace.user": user, "trace.session": session, "trace.environment": environment,
                                "app_version": f"1.4.{i % 3}", "context.data_classification": classification}  # fmt: skip
    if i % 4 == 0:
        metadata["runbook"] = {"type": "url", "url": f"https://runbooks.example.com/support/{i}", "text": f"Runbook #{i}"}
    root_id = new_span_id()
    start_ns = start_ms * 1_000_000
    ms = 1_000_000
    messages = [{"role": "system", "content": "You are a concise support assistant."}, {"role": "user", "content": question}]
    llm_attrs = {
        "traceduck.span_type": "LLM", "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens,
        "traceduck.llm.cost_usd": cost,
        "traceduck.inputs": json.dumps({"model": model, "messages": messages}),
        "traceduck.outputs": json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                                      "finish_reason": "stop"}],
                                         "selected_choice_index": 0,
                                         "selected_message": {"role": "assistant", "content": answer}}),
    }  # fmt: skip
    llm_start = start_ns + 40 * ms
    llm_ms = max(duration_ms - 80, 20)
    spans = [
        otlp_span(trace_id, "retrieve_docs", parent=root_id, start_ns=start_ns + 5 * ms, duration_ns=30 * ms,
                  attributes={"traceduck.span_type": "RETRIEVER", "traceduck.inputs": json.dumps({"query": question}),
                              "traceduck.outputs": json.dumps([{"doc": "kb-17", "score": 0.82}])}),
        otlp_span(trace_id, f"chat {model}", parent=root_id, start_ns=llm_start, duration_ns=llm_ms * ms, attributes=llm_attrs),
        otlp_span(trace_id, "format_answer", parent=root_id, start_ns=llm_start + llm_ms * ms + ms, duration_ns=20 * ms,
                  attributes={"traceduck.span_type": "TOOL", "traceduck.inputs": json.dumps({"text": answer}),
                              "traceduck.outputs": json.dumps(answer)}, status=2 if error else 0),
    ]  # fmt: skip
    root_attrs = {"traceduck.span_type": "CHAIN", "traceduck.inputs": json.dumps({"question": question}),
                  "traceduck.outputs": json.dumps(None if error else answer),
                  **trace_fields(tags=tags, metadata=metadata, client_request_id=f"req-{i:04d}")}  # fmt: skip
    spans.append(otlp_span(trace_id, "handle_request", span_id=root_id, start_ns=start_ns, duration_ns=duration_ms * ms,
                           attributes=root_attrs, status=2 if error else 1))  # fmt: skip
    seeded = SeededTrace(trace_id.hex(), start_ms, duration_ms, user, session, environment, task, error, model,
                         input_tokens, output_tokens, cost, classification, pii)  # fmt: skip
    return seeded, spans


def _chat_body(project: str, question: str, answers: list[str], selected: int, i: int) -> dict[str, Any]:
    return {
        "application": project,
        "request": {"model": "gpt-4o-mini", "n": len(answers),
                    "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                 {"role": "user", "content": question}]},
        "response": {"id": f"chatcmpl-dash-{i}-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                     "model": "gpt-4o-mini",
                     "choices": [{"index": k, "message": {"role": "assistant", "content": a}, "finish_reason": "stop"}
                                 for k, a in enumerate(answers)],
                     "usage": {"prompt_tokens": 30 + i, "completion_tokens": 12 * len(answers), "total_tokens": 42 + i}},
        "request_attributes": {"user.id": "erin"},
        "response_attributes": {"latency_ms": 420 + 10 * i},
        "tags": {"task": "qa"},
        "session_id": "sess-chat",
        "selected_choice_index": selected,
    }  # fmt: skip


def seed(client: httpx.Client, project: str, n: int = 36, chats: int = 3, feedback: int = 6) -> Seeded:
    """Send everything; returns once every trace is searchable."""
    now_ms = int(time.time() * 1000)
    out = Seeded(project)
    spans: list[Any] = []
    for i in range(n):
        seeded, trace_spans = otlp_trace(i, now_ms, n)
        out.traces.append(seeded)
        spans += trace_spans
    # one trace without an LLM call, user or session: the NULL group of those pivots
    bare_start = now_ms - 30 * 60_000
    bare_id, bare_spans = simple_trace(1, root_name="healthcheck", start_ns=bare_start * 1_000_000)
    out.traces.append(SeededTrace(bare_id, bare_start, 0, None, None, None, None, False, None, None, None, None,
                                  name="healthcheck", kind="bare"))  # fmt: skip
    response = post_otlp(client, otlp_request(spans + bare_spans, resource={"service.name": "support-bot"}))
    assert response.status_code == 200, response.text
    for i in range(chats):
        question, answers = N_CHOICES[0] if i == 0 else (f"Quick question number {i}?", [f"Answer {i}."])
        selected = 1 if i == 0 else 0
        body = _chat_body(project, question, answers, selected, i)
        answer = client.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        trace_id = answer.json()["trace_id"]
        usage = body["response"]["usage"]
        latency = body["response_attributes"]["latency_ms"]
        out.traces.append(SeededTrace(trace_id, 0, latency, "erin", "sess-chat", None, "qa", False, "gpt-4o-mini",
                                      usage["prompt_tokens"], usage["completion_tokens"],
                                      _cost("gpt-4o-mini", usage["prompt_tokens"], usage["completion_tokens"]),
                                      name="chat gpt-4o-mini", kind="chat"))  # fmt: skip
        if i == 0:
            out.n_choices_trace = trace_id
    wait_for(lambda: client.get("/api/trace_count").json().get("count", 0) >= len(out.traces), what="seeded traces")
    for t in out.traces:
        if t.kind == "chat":  # logged "now" by the collector: read back when
            t.start_ms = client.get(f"/api/traces/{t.trace_id}").json()["info"]["request_time"]
    for k, t in enumerate(out.traces[n - feedback:n]):  # the newest OTLP traces
        value = k % 3 != 1
        answer = client.post("/api/feedback", json={
            "trace_id": t.trace_id, "name": "is_correct", "value": value,
            "source": {"source_type": "LLM_JUDGE" if k % 2 else "HUMAN", "source_id": "judge-v1" if k % 2 else "reviewer@example.com"},
            "rationale": "Matches the knowledge base." if value else "Cites the wrong plan.",
        })  # fmt: skip
        assert answer.status_code == 200, answer.text
        out.feedback[t.trace_id] = value
    return out
