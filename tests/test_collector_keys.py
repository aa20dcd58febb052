"""API keys of the collector: hashed storage, headers, 401/403, revocation, project isolation.

Keys are made with the real ``traceduck keys`` CLI before the collector starts (it holds its DuckDB
file open while running); the collector runs as a real server on 127.0.0.1.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import duckdb
import pytest

from _collector import (
    Collector,
    create_key,
    otlp_request,
    otlp_span,
    post_otlp,
    revoke_key,
    simple_trace,
    trace_fields,
    traceduck_cli,
)
from _collector import marker as _marker

GANTRY = "X-Gantry-Api-Key"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A collector with keys of projects A and B, taking keys also in X-Gantry-Api-Key."""
    directory = tmp_path_factory.mktemp("keys")
    store = str(directory / "keys.duckdb")
    keys = {
        "a": create_key(store, "proj-a", "read,write"),
        "a_read": create_key(store, "proj-a", "read"),
        "a_write": create_key(store, "proj-a", "write"),
        "a_admin": create_key(store, "proj-a", "admin"),
        "b": create_key(store, "proj-b", "read,write"),
    }
    server = Collector(store, str(directory / "collector.log"), "--api-key-header", GANTRY)
    yield server, keys
    server.stop()


@pytest.fixture(scope="module")
def server(keyed):
    return keyed[0]


@pytest.fixture(scope="module")
def keys(keyed):
    return keyed[1]


@pytest.fixture(scope="module")
def a(server, keys):
    return server.client(keys["a"].key)


@pytest.fixture(scope="module")
def b(server, keys):
    return server.client(keys["b"].key)


def _ingest(client, **kwargs) -> str:
    trace_id, spans = simple_trace(1, **kwargs)
    response = post_otlp(client, otlp_request(spans))
    assert response.status_code == 200, response.text
    return trace_id


# -- storage of keys -----------------------------------------------------------------------------


def test_keys_created_with_the_cli_are_stored_hashed(tmp_path):
    store = str(tmp_path / "hashed.duckdb")
    made = [create_key(store, "proj-h", "read,write"), create_key(store, "proj-h", "admin")]
    con = duckdb.connect(store, read_only=True)
    try:
        columns = [c[0] for c in con.execute("DESCRIBE api_keys").fetchall()]
        rows = con.execute("SELECT * FROM api_keys").fetchall()
    finally:
        con.close()
    assert len(rows) == 2
    for key in made:
        secret = key.key.split("_", 2)[2]
        for row in rows:
            for column, value in zip(columns, row):
                assert key.key not in str(value), f"column {column} holds the key"
                assert secret not in str(value), f"column {column} holds the key's secret"
    assert {r[columns.index("key_id")] for r in rows} == {k.key_id for k in made}


def test_keys_list_shows_ids_projects_and_rights_never_the_keys(tmp_path):
    store = str(tmp_path / "listed.duckdb")
    key = create_key(store, "proj-l", "read")
    listing = traceduck_cli("keys", "list", "--store", store).stdout
    assert key.key_id in listing and "proj-l" in listing and "read" in listing
    assert key.key not in listing and key.key.split("_", 2)[2] not in listing


# -- presenting a key ----------------------------------------------------------------------------


def test_bearer_key_is_accepted(server, keys):
    client = server.client(keys["a"].key)
    assert client.get("/api/trace_count").status_code == 200
    assert post_otlp(client, otlp_request(simple_trace(1)[1])).status_code == 200


def test_key_in_the_configured_header_is_accepted(server, keys):
    client = server.client(keys["a"].key, header=GANTRY)
    assert "authorization" not in client.headers
    assert client.get("/api/trace_count").status_code == 200
    trace_id, spans = simple_trace(1)
    assert post_otlp(client, otlp_request(spans)).status_code == 200
    assert client.get(f"/api/traces/{trace_id}").json()["info"]["project"] == "proj-a"


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/api/traces"), ("GET", "/api/trace_count"), ("POST", "/v1/traces"), ("POST", "/api/feedback"),
     ("GET", "/api/stats"), ("GET", "/metrics"), ("GET", "/api/assessments/pending")],
)  # fmt: skip
def test_request_without_a_key_answers_401_once_keys_exist(server, method, path):
    client = server.client()
    response = client.request(method, path, json={"client_request_id": "r", "name": "x", "value": 1}
                              if path == "/api/feedback" else None)  # fmt: skip
    assert response.status_code == 401, f"{method} {path}: {response.status_code}"
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


@pytest.mark.parametrize("key", ["nonsense", "td_000000000000_" + "x" * 40], ids=["malformed", "unknown"])
def test_invalid_key_answers_401(server, key):
    client = server.client(key)
    assert client.get("/api/trace_count").status_code == 401
    assert post_otlp(client, otlp_request(simple_trace(1)[1])).status_code == 401


def test_key_revoked_with_the_cli_answers_401(tmp_path):
    store, log = str(tmp_path / "revoke.duckdb"), str(tmp_path / "collector.log")
    keep, doomed = create_key(store, "proj-r"), create_key(store, "proj-r")
    with Collector(store, log) as before:
        assert before.client(doomed.key).get("/api/trace_count").status_code == 200
    result = revoke_key(store, doomed.key_id)
    assert doomed.key_id in result.stdout
    with Collector(store, log) as after:
        assert after.client(doomed.key).get("/api/trace_count").status_code == 401
        assert post_otlp(after.client(doomed.key), otlp_request(simple_trace(1)[1])).status_code == 401
        assert after.client(keep.key).get("/api/trace_count").status_code == 200


def test_key_revoked_through_the_api_answers_401_at_once(server, keys):
    admin = server.client(keys["a_admin"].key)
    made = admin.post("/api/keys", json={"project": "proj-a", "rights": ["read"]})
    assert made.status_code == 200, made.text
    key = made.json()
    assert key["key"].startswith("td_") and key["rights"] == ["read"]
    client = server.client(key["key"])
    assert client.get("/api/trace_count").status_code == 200
    assert admin.delete(f"/api/keys/{key['key_id']}").status_code == 200
    assert client.get("/api/trace_count").status_code == 401


def test_revoking_the_last_key_does_not_open_the_collector(tmp_path):
    store = str(tmp_path / "last.duckdb")
    only = create_key(store, "proj-last", "admin,read,write")
    with Collector(store, str(tmp_path / "collector.log")) as server:
        admin = server.client(only.key)
        assert server.client().get("/api/trace_count").status_code == 401
        assert admin.delete(f"/api/keys/{only.key_id}").status_code == 200
        assert admin.get("/api/trace_count").status_code == 401, "the revoked key still works"
        assert server.client().get("/api/trace_count").status_code == 401, "no key is needed any more"


def test_admin_key_cannot_create_keys_of_another_project(server, keys):
    admin = server.client(keys["a_admin"].key)
    response = admin.post("/api/keys", json={"project": "proj-b", "rights": ["read", "write"]})
    assert response.status_code == 403


def test_admin_key_cannot_revoke_keys_of_another_project(server, keys, b):
    admin = server.client(keys["a_admin"].key)
    assert admin.delete(f"/api/keys/{keys['b'].key_id}").status_code == 404
    assert b.get("/api/trace_count").status_code == 200


def test_key_without_admin_right_cannot_create_keys(a):
    assert a.post("/api/keys", json={"project": "proj-a"}).status_code == 403


# -- rights --------------------------------------------------------------------------------------


def test_read_only_key_cannot_ingest(server, keys):
    client = server.client(keys["a_read"].key)
    trace_id, spans = simple_trace(1)
    response = post_otlp(client, otlp_request(spans))
    assert response.status_code == 403
    assert server.client(keys["a"].key).get(f"/api/traces/{trace_id}").status_code == 404


def test_read_only_key_cannot_log_feedback_or_edit_traces(server, keys, a):
    trace_id = _ingest(a, client_request_id="ro-" + _marker())
    client = server.client(keys["a_read"].key)
    assert client.post("/api/feedback", json={"trace_id": trace_id, "name": "x", "value": 1}).status_code == 403
    assert client.post("/api/expectations", json={"trace_id": trace_id, "name": "x", "value": 1}).status_code == 403
    assert client.patch(f"/api/traces/{trace_id}", json={"add_tags": {"x": "y"}}).status_code == 403
    assert client.post("/api/traces/tags", json={"trace_ids": [trace_id], "add_tags": {"x": "y"}}).status_code == 403
    info = a.get(f"/api/traces/{trace_id}").json()["info"]
    assert info["assessments"] == [] and "x" not in info["tags"]


def test_read_only_key_can_search(server, keys, a):
    trace_id = _ingest(a)
    client = server.client(keys["a_read"].key)
    assert client.get(f"/api/traces/{trace_id}").status_code == 200
    assert client.get("/api/traces", params={"filter": f"trace_id = '{trace_id}'"}).json()["traces"]


def test_write_only_key_cannot_search_or_read(server, keys, a):
    trace_id = _ingest(a)
    client = server.client(keys["a_write"].key)
    for path in ("/api/traces", "/api/trace_count", f"/api/traces/{trace_id}", "/api/assessments/pending"):
        assert client.get(path).status_code == 403, path


def test_write_only_key_can_ingest(server, keys, a):
    client = server.client(keys["a_write"].key)
    trace_id, spans = simple_trace(1)
    assert post_otlp(client, otlp_request(spans)).status_code == 200
    assert a.get(f"/api/traces/{trace_id}").json()["info"]["project"] == "proj-a"


# -- project isolation ---------------------------------------------------------------------------


def test_trace_ingested_with_a_key_belongs_to_the_keys_project(a, b):
    trace_id, spans = simple_trace(1)
    spans[-1].attributes.add(key="traceduck.trace.project").value.string_value = "proj-b"
    assert post_otlp(a, otlp_request(spans)).status_code == 200
    assert a.get(f"/api/traces/{trace_id}").json()["info"]["project"] == "proj-a"
    assert b.get(f"/api/traces/{trace_id}").status_code == 404


def test_other_projects_trace_answers_404_on_get_exactly_like_an_unknown_id(a, b):
    b_trace = _ingest(b, client_request_id="b-get-" + _marker())
    theirs = a.get(f"/api/traces/{b_trace}")
    unknown = a.get(f"/api/traces/{uuid.uuid4().hex}")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json().keys() == unknown.json().keys()
    assert b.get(f"/api/traces/{b_trace}").status_code == 200


def test_other_projects_trace_cannot_be_found_by_its_client_request_id(a, b):
    request_id = "b-lookup-" + _marker()
    _ingest(b, client_request_id=request_id)
    assert a.get("/api/trace_lookup", params={"client_request_id": request_id}).status_code == 404


def test_other_projects_trace_answers_404_on_patch_and_is_unchanged(a, b):
    b_trace = _ingest(b, client_request_id="b-patch-" + _marker(), metadata={"owner": "b"})
    before = b.get(f"/api/traces/{b_trace}").json()
    for body in ({"metadata": {"owner": "a"}}, {"tags": {"owner": "a"}}, {"add_tags": {"x": "y"}},
                 {"remove_tags": ["owner"]}):  # fmt: skip
        assert a.patch(f"/api/traces/{b_trace}", json=body).status_code == 404, body
    assert b.get(f"/api/traces/{b_trace}").json() == before


def test_feedback_from_another_project_never_attaches_to_the_trace(a, b):
    request_id = "b-fb-" + _marker()
    b_trace = _ingest(b, client_request_id=request_id)
    by_id = a.post("/api/feedback", json={"trace_id": b_trace, "name": "sneaky", "value": 0})
    unknown = a.post("/api/feedback", json={"trace_id": uuid.uuid4().hex, "name": "sneaky", "value": 0})
    assert by_id.status_code == unknown.status_code, "another project's trace id answers unlike an unknown id"
    assert by_id.status_code != 403
    by_request = a.post("/api/feedback", json={"client_request_id": request_id, "name": "sneaky", "value": 0})
    assert by_request.status_code != 403
    expectation = a.post("/api/expectations", json={"trace_id": b_trace, "name": "sneaky", "value": "x"})
    assert expectation.status_code != 403
    assert b.get(f"/api/traces/{b_trace}").json()["info"]["assessments"] == []
    assert all(x.status_code >= 400 or x.json()["trace_id"] is None for x in (by_id, by_request, expectation))


def test_feedback_from_another_project_logged_before_the_trace_arrives_never_joins_it(a, b):
    request_id = "b-later-" + _marker()
    early = a.post("/api/feedback", json={"client_request_id": request_id, "name": "sneaky", "value": 0})
    assert early.status_code == 200 and early.json()["trace_id"] is None
    b_trace = _ingest(b, client_request_id=request_id)
    assert b.get(f"/api/traces/{b_trace}").json()["info"]["assessments"] == []
    assert a.get(f"/api/assessments/{early.json()['assessment_id']}").json()["trace_id"] is None


def test_feedback_by_a_shared_client_request_id_attaches_to_the_callers_own_trace(a, b):
    request_id = "shared-" + _marker()
    b_trace = _ingest(b, client_request_id=request_id)
    a_trace = _ingest(a, client_request_id=request_id)
    logged = a.post("/api/feedback", json={"client_request_id": request_id, "name": "mine", "value": 1})
    assert logged.status_code == 200
    assert logged.json()["trace_id"] == a_trace
    assert b.get(f"/api/traces/{b_trace}").json()["info"]["assessments"] == []


def test_other_projects_assessments_answer_404(a, b):
    b_trace = _ingest(b)
    theirs = b.post("/api/feedback", json={"trace_id": b_trace, "name": "b-only", "value": 1}).json()
    aid = theirs["assessment_id"]
    assert a.get(f"/api/assessments/{aid}").status_code == 404
    assert a.patch(f"/api/assessments/{aid}", json={"value": 2}).status_code == 404
    assert a.post(f"/api/assessments/{aid}/override", json={"value": 3}).status_code == 404
    assert a.delete(f"/api/assessments/{aid}").status_code == 404
    [kept] = b.get(f"/api/traces/{b_trace}").json()["info"]["assessments"]
    assert (kept["assessment_id"], kept["value"], kept["valid"]) == (aid, 1, True)


def test_searches_and_counts_never_include_another_projects_traces(a, b):
    marker = _marker()
    b_ids = {_ingest(b, tags={"suite": marker}) for _ in range(3)}
    a_ids = {_ingest(a, tags={"suite": marker}) for _ in range(2)}
    flt = f"tags.suite = '{marker}'"
    assert a.get("/api/trace_count", params={"filter": flt}).json()["count"] == 2
    assert b.get("/api/trace_count", params={"filter": flt}).json()["count"] == 3
    found = a.get("/api/traces", params={"filter": flt}).json()["traces"]
    assert {t["info"]["trace_id"] for t in found} == a_ids
    everything = a.get("/api/traces", params={"max_results": 50_000, "include_spans": "false"}).json()["traces"]
    assert {t["info"]["project"] for t in everything} == {"proj-a"}
    assert not b_ids & {t["info"]["trace_id"] for t in everything}
    assert a.get("/api/trace_count").json()["count"] == len(everything)


def test_bulk_tagging_by_filter_never_touches_another_projects_traces(a, b):
    marker = _marker()
    b_ids = [_ingest(b, tags={"suite": marker}) for _ in range(2)]
    a_ids = [_ingest(a, tags={"suite": marker}) for _ in range(2)]
    response = a.post("/api/traces/tags", json={"filter": f"tags.suite = '{marker}'", "add_tags": {"hit": "a"},
                                                "remove_tags": ["suite"]})  # fmt: skip
    assert response.json() == {"updated": 2}
    for trace_id in b_ids:
        tags = b.get(f"/api/traces/{trace_id}").json()["info"]["tags"]
        assert tags.get("suite") == marker and "hit" not in tags
    for trace_id in a_ids:
        assert a.get(f"/api/traces/{trace_id}").json()["info"]["tags"].get("hit") == "a"


def test_bulk_tagging_by_ids_never_touches_another_projects_traces(a, b):
    b_ids = [_ingest(b) for _ in range(2)]
    response = a.post("/api/traces/tags", json={"trace_ids": b_ids, "add_tags": {"hit": "a"}})
    assert response.status_code == 200 and response.json() == {"updated": 0}
    assert all("hit" not in b.get(f"/api/traces/{t}").json()["info"]["tags"] for t in b_ids)


def test_pending_assessments_are_listed_only_to_their_project(a, b):
    logged = b.post("/api/feedback", json={"client_request_id": "never-" + _marker(), "name": "p", "value": 1})
    assert logged.status_code == 200
    aid = logged.json()["assessment_id"]
    assert aid in {x["assessment_id"] for x in b.get("/api/assessments/pending").json()}
    assert aid not in {x["assessment_id"] for x in a.get("/api/assessments/pending").json()}


# -- no keys: loopback only ----------------------------------------------------------------------


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a LISTEN socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


def test_collector_without_keys_asked_for_all_addresses_serves_loopback_only(tmp_path):
    with Collector(str(tmp_path / "open.duckdb"), str(tmp_path / "collector.log"), host="0.0.0.0") as server:
        assert server.client().get("/healthz").status_code == 200
        listening = _listening(server.port)
        log = server.log()
    assert "127.0.0.1 only" in log and "0.0.0.0" in log, log
    assert listening == {"0100007F"}, f"listening on {listening} (0100007F is 127.0.0.1)"



def _b_trace_and_its_root(b):
    trace_id, spans = simple_trace(1, client_request_id="b-owned-" + _marker(), tags={"owner": "b"})
    assert post_otlp(b, otlp_request(spans)).status_code == 200
    return trace_id, next(s for s in spans if s.name == "root"), b.get(f"/api/traces/{trace_id}").json()


def test_trace_fields_sent_with_one_projects_key_never_change_another_projects_trace(a, b):
    trace_id, root, before = _b_trace_and_its_root(b)
    # A knows B's trace id (trace ids travel in traceparent headers) and sends a span into it
    intruder = otlp_span(root.trace_id, "intruder", parent=root.span_id, start_ns=root.start_time_unix_nano + 5,
                         duration_ns=1, attributes=trace_fields(client_request_id="hijacked", state="ERROR",
                                                                tags={"owner": "a", "injected": "yes"}))  # fmt: skip
    response = post_otlp(a, otlp_request([intruder]))
    assert response.status_code in (200, 403, 404), response.text
    assert b.get(f"/api/traces/{trace_id}").json()["info"] == before["info"], "A's key changed B's trace"


def test_spans_sent_with_one_projects_key_never_appear_in_another_projects_trace(a, b):
    trace_id, root, before = _b_trace_and_its_root(b)
    intruder = otlp_span(root.trace_id, "intruder", parent=root.span_id, start_ns=root.start_time_unix_nano + 5,
                         duration_ns=1, attributes={"note": "from project a"})  # fmt: skip
    response = post_otlp(a, otlp_request([intruder]))
    assert response.status_code in (200, 403, 404), response.text
    assert b.get(f"/api/traces/{trace_id}").json()["data"]["spans"] == before["data"]["spans"], \
        "A's span shows up in B's trace"
