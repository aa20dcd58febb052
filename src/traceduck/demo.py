"""``traceduck demo``: a small traced chat program, its traces stored and searched back.

The "LLM" here is a deterministic stand-in so the demo needs no network and no API key; the
tracing is exactly what a real application gets.
"""

from __future__ import annotations

import random
import time

import traceduck as td

USERS = ("alice", "bob", "carol")
QUESTIONS = (
    "Who won the world series in 2020?",
    "Where was it played?",
    "Summarise the release notes.",
    "Translate 'good morning' to French.",
)


@td.trace(span_type="RETRIEVER")
def retrieve(question: str) -> list[str]:
    return [f"doc-{abs(hash(question)) % 97}", f"doc-{len(question)}"]


@td.trace(span_type="LLM", attributes={"gen_ai.request.model": "demo-model"})
def generate(question: str, documents: list[str]) -> str:
    time.sleep(0.001)
    if "fail" in question:
        raise RuntimeError("the model refused")
    return f"Answer to {question!r} using {', '.join(documents)}."


@td.trace(span_type="CHAIN")
def handle_chat(question: str, user: str, session: str, request_id: str) -> str:
    td.update_current_trace(
        client_request_id=request_id,
        user=user,
        session_id=session,
        tags={"task": "chat"},
        metadata={"app_version": "1.0.0", "docs": {"type": "url", "url": "https://example.invalid/docs", "text": "Docs"}},
    )
    return generate(question, retrieve(question))


def run_demo(store: str, requests: int = 30) -> int:
    td.configure(store, service_name="traceduck-demo", environment="demo")
    rng = random.Random(7)
    for i in range(requests):
        user = USERS[i % len(USERS)]
        question = rng.choice(QUESTIONS) if i % 10 != 9 else "please fail"
        try:
            handle_chat(question, user=user, session=f"{user}-session-{i // 6}", request_id=f"req-{i:04d}")
        except RuntimeError:
            pass  # recorded as an ERROR trace; the demo carries on
    td.flush()
    print(f"Traced {requests} chat requests into {store}.\n")
    for title, filter_string in (
        ("Alice's traces", "tags.`trace.user` = 'alice'"),
        ("Failed requests", "status = 'ERROR'"),
        ("One client request id", "client_request_id = 'req-0004'"),
    ):
        page = td.search_traces_page(filter_string, max_results=5, include_spans=False)
        total = td.count_traces(filter_string)
        print(f"{title}: {filter_string}  ({total} match, newest {len(page.traces)} shown)")
        from .cli import print_traces  # noqa: PLC0415

        print_traces(page.traces)
        print()
    print(f"Search it yourself:  traceduck search --store {store} --filter \"tags.task = 'chat'\"")
    td.shutdown()
    return 0
