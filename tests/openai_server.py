"""The OpenAI side of the LLM tests: a small OpenAI-compatible server, and the seed's examples.

``create_app()`` serves ``POST /v1/chat/completions`` like OpenAI does, deterministically: ``n``
choices (the seed's three World Series answers, in turn), SSE streaming with interleaved choices
and, with ``stream_options.include_usage``, a final usage chunk. The ``model`` picks a behaviour:

- ``test-tool``: the answer is two tool calls (streamed with names and arguments split across chunks);
- ``test-no-usage``: no ``usage`` in the response;
- ``test-truncated``: the stream stops mid-answer, without a finish reason or ``[DONE]``;
- ``test-gated``: the stream sends its first chunk, then waits for ``app.state.gate`` to be set;
- ``test-bad-chunk``: a chunk whose ``delta.content`` is a number (openai passes it through);
- ``test-fail``: a 400 error, as OpenAI answers a bad request;
- anything else: a normal answer (``gpt-4o-mini`` answers as ``gpt-4o-mini-2024-07-18``).

Every request body is appended to ``app.state.requests``. The server runs in a thread of the test
process on 127.0.0.1 (``_servers.ThreadedServer``).

``seed_text``/``seed_json`` read the seed's examples from ``tests/fixtures`` exactly as the seed
prints them; ``seed_json`` tolerates what the seed's JSON-with-comments has (``//`` comments,
trailing commas, a missing comma before a key on the next line).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ANSWERS = (
    "It was played at Globe Life Field.",
    "The 2020 World Series was played at Globe Life Field.",
    "Globe Life Field.",
)
TOOL_CALLS = (
    ("call_weather_1", "get_weather", '{"location": "Arlington, TX", "unit": "fahrenheit"}'),
    ("call_time_2", "get_time", '{"timezone": "America/Chicago"}'),
)
GATE_TIMEOUT = 20.0
SNAPSHOTS = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"}


def _words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _usage(body: dict[str, Any], answers: list[str]) -> dict[str, int]:
    prompt = sum(2 + _words(m.get("content")) for m in body.get("messages", []))
    completion = sum(_words(a) for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _pieces(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Answer:
    """What one request is answered with (shared by the plain and the streamed forms)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model = body.get("model", "")
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.n = int(body.get("n") or 1)
        self.tool = self.model == "test-tool"
        self.answers = [ANSWERS[i % len(ANSWERS)] for i in range(self.n)]

    def head(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "model": SNAPSHOTS.get(self.model, self.model),
                "system_fingerprint": "fp_test"}  # fmt: skip

    def message(self, i: int) -> dict[str, Any]:
        if self.tool:
            calls = [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                     for cid, name, args in TOOL_CALLS]  # fmt: skip
            return {"role": "assistant", "content": None, "tool_calls": calls}
        return {"role": "assistant", "content": self.answers[i]}

    def completion(self) -> dict[str, Any]:
        out = {**self.head(), "object": "chat.completion", "choices": [
            {"index": i, "message": self.message(i), "logprobs": None,
             "finish_reason": "tool_calls" if self.tool else "stop"} for i in range(self.n)]}  # fmt: skip
        if self.model != "test-no-usage":
            out["usage"] = _usage(self.body, [] if self.tool else self.answers)
        return out

    def deltas(self, i: int) -> list[dict[str, Any]]:
        """The deltas of choice ``i``, in order."""
        if self.tool:
            out: list[dict[str, Any]] = [{"role": "assistant", "content": None}]
            for k, (cid, name, args) in enumerate(TOOL_CALLS):
                out.append({"tool_calls": [{"index": k, "id": cid, "type": "function",
                                            "function": {"name": name[:4], "arguments": ""}}]})  # fmt: skip
                out.append({"tool_calls": [{"index": k, "function": {"name": name[4:]}}]})
                out.extend({"tool_calls": [{"index": k, "function": {"arguments": p}}]} for p in _pieces(args, 9))
            return out
        return [{"role": "assistant", "content": ""}, *({"content": p} for p in _pieces(self.answers[i]))]

    def chunk(self, choices: list[dict[str, Any]], usage: Any = None) -> str:
        data = {**self.head(), "object": "chat.completion.chunk", "choices": choices}
        if (self.body.get("stream_options") or {}).get("include_usage"):
            data["usage"] = usage
        return "data: " + json.dumps(data) + "\n\n"

    def events(self) -> Iterator[str]:
        """The SSE events of the streamed answer: choices interleaved, as OpenAI sends them for n > 1."""
        per_choice = [self.deltas(i) for i in range(self.n)]
        for step in range(max(len(d) for d in per_choice)):
            for i, deltas in enumerate(per_choice):
                if step < len(deltas):
                    yield self.chunk([{"index": i, "delta": deltas[step], "logprobs": None, "finish_reason": None}])
        if self.model == "test-truncated":
            return
        reason = "tool_calls" if self.tool else "stop"
        for i in range(self.n):
            yield self.chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}])
        if (self.body.get("stream_options") or {}).get("include_usage"):
            yield self.chunk([], usage=_usage(self.body, [] if self.tool else self.answers))
        yield "data: [DONE]\n\n"


def create_app() -> FastAPI:
    """A fresh server; ``app.state.requests`` holds the bodies received, ``app.state.gate`` the gate."""
    app = FastAPI()
    app.state.requests = []
    app.state.gate = threading.Event()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append(body)
        if body.get("model") == "test-fail":
            return JSONResponse({"error": {"message": "test-fail is refused", "type": "invalid_request_error",
                                           "param": "model", "code": None}}, status_code=400)  # fmt: skip
        answer = _Answer(body)
        if not body.get("stream"):
            return answer.completion()
        return StreamingResponse(_stream(app, answer), media_type="text/event-stream")

    return app


async def _stream(app: FastAPI, answer: _Answer) -> Any:
    for number, event in enumerate(answer.events()):
        if number == 1 and answer.model == "test-gated":
            await asyncio.to_thread(app.state.gate.wait, GATE_TIMEOUT)
        if number == 2 and answer.model == "test-bad-chunk":
            yield answer.chunk([{"index": 0, "delta": {"content": 42}, "finish_reason": None}])
        yield event


def sse_text(body: dict[str, Any]) -> str:
    """The SSE text the server streams for ``body`` (for logging a captured stream)."""
    return "".join(_Answer({**body, "stream": True}).events())


# -- the seed's examples -------------------------------------------------------------------------


def seed_text(name: str) -> str:
    """A fixture exactly as the seed prints it."""
    return (FIXTURES / name).read_text()


def _strip_comments(text: str) -> str:
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(text):
        char = text[i]
        if in_string:
            out.append(char)
            if char == "\\":
                out.append(text[i + 1])
                i += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(char)
        i += 1
    return "".join(out)


def seed_json(name: str) -> Any:
    """A fixture's JSON, read as the seed means it (comments, trailing and missing commas fixed;
    an elided object ``{...}`` reads as null)."""
    text = _strip_comments(seed_text(name)).replace("{...}", "null")
    text = re.sub(r",(\s*[}\]])", r"\1", text)
    text = re.sub(r'("|\d|true|false|null|[}\]])(\s*\n\s*")', r"\1,\2", text)
    return json.loads(text)


def seed_n3_choices() -> list[dict[str, Any]]:
    """The three choices of the seed's n=3 example (the example elides the other fields)."""
    text = seed_text("gantry_n3_choices.txt")
    start = text.index("[", text.index('"choices"'))
    body = _strip_comments(text[start : text.rindex("]") + 1])
    return json.loads(re.sub(r",(\s*[}\]])", r"\1", body))


def seed_event_strings(name: str = "gantry_stream.txt") -> list[str]:
    """The seed's stream as a list of event strings (one ``data: ...`` each)."""
    return [event.strip() for event in seed_text(name).split("\n\n") if event.strip()]
