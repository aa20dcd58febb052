"""FastAPI integration, driven over real HTTP on 127.0.0.1.

``examples/fastapi_chat.py`` runs as a real uvicorn server in a subprocess writing its own store
file, which this process reads meanwhile. The ``@trace`` decorator-order tests serve small apps
from a uvicorn thread of this process.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

import traceduck
from traceduck.entities import Span, Trace
from traceduck.fastapi import instrument

from _servers import ThreadedServer, UvicornProcess, wait_for
from conftest import stored_traces

# -- the example chat server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory) -> UvicornProcess:
    directory = tmp_path_factory.mktemp("chat_server")
    server = UvicornProcess("examples.fastapi_chat:app", store=str(directory / "chat.duckdb"),
                            log_path=str(directory / "uvicorn.log"))  # fmt: skip
    yield server
    server.stop()


@pytest.fixture
def client(chat_server) -> httpx.Client:
    with httpx.Client(base_url=chat_server.base_url, timeout=30.0) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def identity(request_id: str | None = None, session: str | None = None, user: str | None = None) -> dict:
    headers = {}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    if session is not None:
        headers["X-Session-ID"] = session
    if user is not None:
        headers["X-User-ID"] = user
    return headers


def chat(client: httpx.Client, message: str, **ids: str | None) -> str:
    """POST /chat; returns the X-Trace-ID the server answered with."""
    response = client.post("/chat", json={"message": message}, headers=identity(**ids))
    assert response.status_code == 200, response.text
    assert response.json() == {"response": f"Processed message: '{message}'"}
    trace_id = response.headers.get("X-Trace-ID")
    assert trace_id is not None and len(trace_id) == 32, dict(response.headers)
    return trace_id


def stored_on_server(server: UvicornProcess, trace_id: str) -> Trace:
    """The trace once the server's background writer has stored it."""
    return wait_for(lambda: traceduck.get_trace(trace_id, store=server.store), what=f"trace {trace_id}")


def search_server(server: UvicornProcess, filter_string: str) -> list[Trace]:
    return traceduck.search_traces(filter_string, return_type="list", store=server.store)


def only_span(trace: Trace, name: str) -> Span:
    matches = [s for s in trace.data.spans if s.name == name]
    assert len(matches) == 1, [s.name for s in trace.data.spans]
    return matches[0]


def mentions(trace: Trace, text: str) -> bool:
    return any(text in repr(s.inputs) or text in repr(s.outputs) for s in trace.data.spans)


def test_chat_request_records_exactly_one_trace(chat_server, client):
    message = unique("one-trace")
    trace_id = chat(client, message, request_id=unique("req"), session=unique("s"), user=unique("u"))
    stored_on_server(chat_server, trace_id)
    about_this_request = [t.info.trace_id for t in search_server(chat_server, None) if mentions(t, message)]
    assert about_this_request == [trace_id]


def test_chat_request_headers_become_the_trace_identity(chat_server, client):
    request_id, session, user = unique("req"), unique("s"), unique("u")
    trace_id = chat(client, "hello", request_id=request_id, session=session, user=user)
    info = stored_on_server(chat_server, trace_id).info
    assert info.client_request_id == request_id
    assert info.tags["trace.session"] == session
    assert info.tags["trace.user"] == user


def test_chat_x_trace_id_header_is_the_stored_trace_id(chat_server, client):
    request_id = unique("req")
    header_trace_id = chat(client, "hello", request_id=request_id)
    stored_on_server(chat_server, header_trace_id)
    found = traceduck.get_trace(client_request_id=request_id, store=chat_server.store)
    assert found is not None
    assert found.info.trace_id == header_trace_id


def test_chat_handler_span_is_a_child_of_the_server_span(chat_server, client):
    trace = stored_on_server(chat_server, chat(client, "hello", request_id=unique("req")))
    roots = [s for s in trace.data.spans if s.parent_id is None]
    assert len(roots) == 1
    root = roots[0]
    assert (root.name, root.kind) == ("POST /chat", "SERVER")
    handler = only_span(trace, "handle_chat")
    assert handler.parent_id == root.span_id
    assert only_span(trace, "answer").parent_id == handler.span_id


def test_chat_request_without_identity_headers_has_no_identity_fields(chat_server, client):
    trace = stored_on_server(chat_server, chat(client, "anonymous"))
    info = trace.info
    assert info.client_request_id is None
    for key in ("trace.user", "trace.session"):
        assert key not in info.tags
        assert key not in info.metadata
    assert search_server(chat_server, f"trace.trace_id = '{info.trace_id}' AND tags.`trace.user` IS NULL")


def test_empty_identity_headers_are_absent_from_the_trace(chat_server, client):
    trace_id = chat(client, "empty ids", request_id="", session="", user="")
    info = stored_on_server(chat_server, trace_id).info
    assert info.client_request_id is None
    assert "trace.user" not in info.tags
    assert "trace.session" not in info.tags


# -- feedback through the example's /chat_feedback ----------------------------------------------


@pytest.fixture
def rated_chat(chat_server, client) -> dict[str, str]:
    """A chat request, then the user's feedback on it through /chat_feedback."""
    ids = {"request_id": unique("req"), "session": unique("s"), "user": unique("jane")}
    trace_id = chat(client, "What is the capital of France?", **ids)
    stored_on_server(chat_server, trace_id)
    response = client.post(
        "/chat_feedback", params={"client_request_id": ids["request_id"]},
        json={"is_correct": True, "comment": "Paris, correct"}, headers={"X-User-ID": ids["user"]},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return {**ids, "trace_id": trace_id, "assessment_id": response.json()["assessment_id"]}


def test_chat_feedback_is_human_feedback_from_the_user(chat_server, rated_chat):
    trace = traceduck.get_trace(rated_chat["trace_id"], store=chat_server.store)
    (feedback,) = trace.info.assessments
    assert feedback.assessment_id == rated_chat["assessment_id"]
    assert (feedback.kind, feedback.name, feedback.value) == ("feedback", "response_is_correct", True)
    assert (feedback.source.source_type, feedback.source.source_id) == ("HUMAN", rated_chat["user"])
    assert feedback.rationale == "Paris, correct"
    assert feedback.trace_id == rated_chat["trace_id"]


@pytest.mark.parametrize("key,field", [("trace.user", "user"), ("trace.session", "session")])
def test_search_by_identity_finds_the_trace_with_its_feedback(chat_server, rated_chat, key, field):
    found = search_server(chat_server, f"tags.`{key}` = '{rated_chat[field]}'")
    chats = [t for t in found if t.info.trace_id == rated_chat["trace_id"]]
    assert len(chats) == 1
    assert [a.assessment_id for a in chats[0].info.assessments] == [rated_chat["assessment_id"]]
    # the only other request of this user is the feedback request itself
    assert {t.info.name for t in found} <= {"POST /chat", "POST /chat_feedback"}


def test_search_by_feedback_value_finds_the_rated_trace(chat_server, rated_chat):
    scope = f"attributes.client_request_id = '{rated_chat['request_id']}'"
    assert [t.info.trace_id for t in search_server(chat_server, f"feedback.response_is_correct = 'true' AND {scope}")] \
        == [rated_chat["trace_id"]]  # fmt: skip
    assert search_server(chat_server, f"feedback.response_is_correct = 'false' AND {scope}") == []


def test_feedback_logged_by_another_process_before_the_request_joins_its_trace(chat_server, client):
    request_id = unique("req-early")
    early = traceduck.log_feedback(client_request_id=request_id, name="expected_topic", value="geo",
                                   store=chat_server.store)  # fmt: skip
    assert early.trace_id is None
    trace_id = chat(client, "hello", request_id=request_id)
    stored_on_server(chat_server, trace_id)
    joined = wait_for(lambda: traceduck.get_assessment(early.assessment_id, store=chat_server.store).trace_id,
                      what="the pending feedback to join")  # fmt: skip
    assert joined == trace_id
    trace = traceduck.get_trace(trace_id, store=chat_server.store)
    assert [a.assessment_id for a in trace.info.assessments] == [early.assessment_id]


def test_chat_feedback_for_an_unknown_request_is_404_json(chat_server, client):
    response = client.post("/chat_feedback", params={"client_request_id": unique("never-sent")},
                           json={"is_correct": True})  # fmt: skip
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert "never-sent" in response.json()["detail"]


MALFORMED_FEEDBACK = {
    "is_correct_not_a_bool": {"json": {"is_correct": "maybe"}},
    "is_correct_missing": {"json": {"comment": "no verdict"}},
    "comment_not_a_string": {"json": {"is_correct": True, "comment": {"text": "nested"}}},
    "body_is_a_list": {"json": [True]},
    "body_is_not_json": {"content": b"is_correct=true", "headers": {"content-type": "application/json"}},
    "no_body": {},
}


@pytest.mark.parametrize("body", list(MALFORMED_FEEDBACK.values()), ids=list(MALFORMED_FEEDBACK))
def test_malformed_chat_feedback_is_422_json_and_stores_nothing(chat_server, client, body):
    request_id = unique("req")
    trace_id = chat(client, "hello", request_id=request_id)
    stored_on_server(chat_server, trace_id)
    response = client.post("/chat_feedback", params={"client_request_id": request_id}, **body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json()["detail"], list)
    assert traceduck.get_trace(trace_id, store=chat_server.store).info.assessments == []


def test_chat_feedback_without_client_request_id_is_422_json(chat_server, client):
    response = client.post("/chat_feedback", json={"is_correct": True})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "client_request_id"]


# -- many users at once ------------------------------------------------------------------------


def test_concurrent_requests_never_cross_their_identities(chat_server):
    run = uuid.uuid4().hex[:8]
    sent = [
        {"request_id": f"conc-{run}-u{u}-r{r}", "session": f"sess-{run}-u{u}-{r % 2}", "user": f"user-{run}-{u}"}
        for u in range(20) for r in range(5)
    ]  # fmt: skip

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(sent))
        async with httpx.AsyncClient(base_url=chat_server.base_url, timeout=60.0, limits=limits) as ac:
            return await asyncio.gather(*(
                ac.post("/chat", json={"message": ids["request_id"]}, headers=identity(**ids)) for ids in sent
            ))  # fmt: skip

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * len(sent)
    header_ids = [r.headers["X-Trace-ID"] for r in responses]
    assert len(set(header_ids)) == len(sent), "two requests were answered with the same trace id"

    scope = f"attributes.client_request_id LIKE 'conc-{run}-%'"
    wait_for(lambda: traceduck.count_traces(scope, store=chat_server.store) >= len(sent), what="100 traces")
    stored = {t.info.trace_id: t for t in search_server(chat_server, scope)}
    assert len(stored) == len(sent)
    for ids, trace_id in zip(sent, header_ids):
        trace = stored[trace_id]
        seen = (trace.info.client_request_id, trace.info.tags.get("trace.session"), trace.info.tags.get("trace.user"))
        assert seen == (ids["request_id"], ids["session"], ids["user"])
        assert only_span(trace, "answer").inputs == {"message": ids["request_id"]}  # spans not crossed either


# -- @trace above or below the route decorator, in-process apps ---------------------------------


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def build_app(order: str) -> FastAPI:
    """Two routes (async and sync) taking a path param, a query param, a body and the Request.

    ``order``: ``trace_above_route``, ``trace_below_route`` or ``untraced``.
    """
    app = FastAPI()

    def decorate(path: str):
        route = app.post(path)
        if order == "untraced":
            return route
        if order == "trace_above_route":
            return lambda fn: traceduck.trace(route(fn))
        return lambda fn: route(traceduck.trace(fn))

    @decorate("/items/{item_id}")
    async def create_item(item_id: int, item: Item, request: Request, q: str | None = None) -> dict:
        return {"item_id": item_id, "q": q, "item": item.model_dump(), "marker": request.headers.get("x-marker"),
                "path": request.url.path, "trace_id": traceduck.get_current_trace_id()}  # fmt: skip

    @decorate("/sync-items/{item_id}")
    def create_item_sync(item_id: int, item: Item, request: Request, q: str | None = None) -> dict:
        return {"item_id": item_id, "q": q, "item": item.model_dump(), "marker": request.headers.get("x-marker"),
                "path": request.url.path, "trace_id": traceduck.get_current_trace_id()}  # fmt: skip

    return app


ORDERS = ["trace_above_route", "trace_below_route"]
ROUTES = [("/items", "create_item"), ("/sync-items", "create_item_sync")]


@pytest.fixture(params=ORDERS)
def traced_app(request, store_path) -> ThreadedServer:
    traceduck.configure(store_path, tracer_provider=TracerProvider())
    app = build_app(request.param)
    instrument(app)
    with ThreadedServer(app) as server:
        yield server


def post_item(server: ThreadedServer, prefix: str, item_id: object = 7, **kwargs) -> httpx.Response:
    kwargs.setdefault("json", {"name": "lamp", "price": 12.5, "tags": ["home"]})
    kwargs.setdefault("params", {"q": "hello"})
    kwargs.setdefault("headers", {"X-Marker": "m-1"})
    return httpx.post(f"{server.base_url}{prefix}/{item_id}", timeout=30.0, **kwargs)


@pytest.mark.parametrize("prefix,handler", ROUTES, ids=["async", "sync"])
def test_traced_handler_records_one_trace_per_request_with_the_handler_span(traced_app, prefix, handler):
    header_ids = []
    for _ in range(3):
        response = post_item(traced_app, prefix)
        assert response.status_code == 200, response.text
        assert response.json()["trace_id"] == response.headers["X-Trace-ID"]
        header_ids.append(response.headers["X-Trace-ID"])
    traces = stored_traces()
    assert sorted(t.info.trace_id for t in traces) == sorted(header_ids)
    for trace in traces:
        (root,) = [s for s in trace.data.spans if s.parent_id is None]
        assert root.kind == "SERVER"
        handler_spans = [s for s in trace.data.spans if s.name.endswith(handler)]
        assert len(handler_spans) == 1, [s.name for s in trace.data.spans]
        assert handler_spans[0].parent_id == root.span_id
        assert handler_spans[0].outputs["item"]["name"] == "lamp"


@pytest.mark.parametrize("prefix,handler", ROUTES, ids=["async", "sync"])
def test_traced_handler_keeps_fastapi_parameter_and_body_handling(traced_app, prefix, handler):
    response = post_item(traced_app, prefix, item_id="42", params={"q": "find me"},
                         json={"name": "desk", "price": "99.5"}, headers={"X-Marker": "m-2"})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["item_id"] == 42  # converted from the path
    assert body["q"] == "find me"
    assert body["item"] == {"name": "desk", "price": 99.5, "tags": []}  # validated, defaults applied
    assert body["marker"] == "m-2"  # the Request was injected
    assert body["path"] == f"{prefix}/42"
    assert post_item(traced_app, prefix, params={}).json()["q"] is None  # the query param stays optional


@pytest.mark.parametrize("prefix,handler", ROUTES, ids=["async", "sync"])
@pytest.mark.parametrize("bad", [
    {"item_id": "not-a-number"},
    {"json": {"name": "desk"}},
    {"json": {"name": "desk", "price": "cheap"}},
], ids=["bad_path_param", "missing_body_field", "bad_body_field"])  # fmt: skip
def test_traced_handler_keeps_fastapi_validation(traced_app, prefix, handler, bad):
    response = post_item(traced_app, prefix, **bad)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


def test_traced_handler_openapi_schema_matches_the_untraced_handler(traced_app):
    served = httpx.get(f"{traced_app.base_url}/openapi.json", timeout=30.0).json()
    untraced = build_app("untraced").openapi()
    assert served["paths"] == untraced["paths"]
    assert served["components"] == untraced["components"]
    operation = served["paths"]["/items/{item_id}"]["post"]
    assert sorted(p["name"] for p in operation["parameters"]) == ["item_id", "q"]


@pytest.mark.parametrize("order", ORDERS)
def test_traced_handler_on_an_apirouter_records_the_handler_span(store_path, order):
    traceduck.configure(store_path, tracer_provider=TracerProvider())
    router = APIRouter(prefix="/v1")

    def routed(fn):
        if order == "trace_above_route":
            return traceduck.trace(router.post("/echo/{n}")(fn))
        return router.post("/echo/{n}")(traceduck.trace(fn))

    @routed
    async def echo(n: int, item: Item) -> dict:
        return {"n": n, "name": item.name}

    app = FastAPI()
    app.include_router(router)
    instrument(app)
    with ThreadedServer(app) as server:
        response = httpx.post(f"{server.base_url}/v1/echo/3", json={"name": "x", "price": 1}, timeout=30.0)
    assert response.status_code == 200, response.text
    assert response.json() == {"n": 3, "name": "x"}
    (trace,) = stored_traces()
    assert trace.info.trace_id == response.headers["X-Trace-ID"]
    handler_spans = [s for s in trace.data.spans if s.name.endswith("echo")]
    assert len(handler_spans) == 1, [s.name for s in trace.data.spans]
    (root,) = [s for s in trace.data.spans if s.parent_id is None]
    assert handler_spans[0].parent_id == root.span_id


# -- instrument() options ---------------------------------------------------------------------


def test_instrument_reads_the_client_request_id_from_a_configured_header(store_path):
    traceduck.configure(store_path, tracer_provider=TracerProvider())
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict:
        return {"ok": True}

    instrument(app, headers={"client_request_id": "X-Correlation-ID"})
    with ThreadedServer(app) as server:
        response = httpx.get(f"{server.base_url}/ping", timeout=30.0,
                             headers={"X-Correlation-ID": "corr-1", "X-Request-ID": "not-this-one"})  # fmt: skip
    assert response.status_code == 200
    (trace,) = stored_traces()
    assert trace.info.trace_id == response.headers["X-Trace-ID"]
    assert trace.info.client_request_id == "corr-1"


def test_instrument_rejects_an_unknown_trace_field(store_path):
    traceduck.configure(store_path, tracer_provider=TracerProvider())
    app = FastAPI()
    with pytest.raises(ValueError, match="client_id"):
        instrument(app, headers={"client_id": "X-Client-ID"})
    assert app.user_middleware == []  # nothing half-installed
