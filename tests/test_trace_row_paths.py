"""Trace rows built by the store's writer: the fast path (metadata and tags merged as JSON text)
and the general path (typed values, nulls, nested values, identity attributes) give the same
tags and metadata as the rules of ``traceduck.metadata`` say, whatever the mix in one batch, and
whether a plain batch's rows are built in Python or in SQL."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from traceduck import attributes as attr
from traceduck.metadata import string_form
from traceduck.raw_spans import RAW_COLUMNS, RawSpans
from traceduck.store.duckdb_store import DuckDBStore

KEYS = st.sampled_from(["a", "b", "lang", "trace.user", "trace.session", "x.y", "null", "type", "k{1}"])
PLAIN_KEYS = st.sampled_from(["a", "b", "lang", "trace.user", "trace.session", "trace.environment", "x.y", "type",
                              "k{1}", "service.name"])
SCALARS = st.one_of(
    st.text(alphabet="abc", max_size=4),
    st.text(alphabet="abc {}\"':null", max_size=8),
    st.integers(-10**6, 10**6),
    st.sampled_from([0.25, -1.5, 2.0, 1000.0]),
    st.booleans(),
)
VALUES = st.one_of(
    SCALARS,
    st.none(),
    st.builds(lambda u: {"type": "url", "url": u, "text": "link"}, st.text(alphabet="htp:/ab", max_size=8)),
    st.builds(lambda v: {"type": "string", "value": v}, st.text(alphabet="xyz", max_size=4)),
)
TAG_VALUES = st.one_of(st.text(alphabet="pqr", max_size=3), st.text(alphabet="pqr {}null", max_size=6), st.none())

TRACE = st.fixed_dictionaries({
    "metadata": st.dictionaries(KEYS, VALUES, max_size=5),
    "tags": st.one_of(st.none(), st.dictionaries(KEYS, TAG_VALUES, max_size=4)),
    "defaults": st.one_of(st.none(), st.dictionaries(KEYS, VALUES, max_size=3)),
    "identity": st.one_of(st.none(), st.text(alphabet="uv", min_size=1, max_size=3)),
})  # fmt: skip


def _expected(case: dict, resource: dict) -> tuple[dict, dict]:
    metadata: dict = {"trace.environment": resource["deployment.environment.name"],
                      "service.name": resource["service.name"]}  # fmt: skip
    metadata.update(case["defaults"] or {})
    if case["identity"] is not None:
        metadata["trace.user"] = case["identity"]
    metadata.update(case["metadata"])
    tags = {key: string_form(value) for key, value in metadata.items()}
    tags.update(case["tags"] or {})
    return metadata, tags


def _case(metadata=None, tags=None, defaults=None, identity=None) -> dict:
    return {"metadata": metadata or {}, "tags": tags or {}, "defaults": defaults, "identity": identity}


PLAIN = _case({"a": "x", "b": 2, "lang": 0.25, "x.y": True}, {"a": "t", "b": "u"}, {"a": "d", "type": "e"})


@settings(max_examples=40, deadline=None)
@given(cases=st.lists(TRACE, min_size=1, max_size=12))
@example(cases=[PLAIN, _case(), _case(tags={"a": "b"})])  # every row plain: built in Python
@example(cases=[PLAIN, _case({"a": None})])  # a null value: merged as JSON text it would vanish
@example(cases=[PLAIN, _case(tags={"a": None}), _case(defaults={"b": None}, metadata={"a": "1"})])
@example(cases=[PLAIN, _case({"a": {"type": "url", "url": "u", "text": "t"}}, {"a": "p"})])  # typed value
@example(cases=[PLAIN, _case({"a": "{x}", "b": "null"}, {"k{1}": "v"})])  # braces, null in strings
@example(cases=[{"metadata": {"a": {"type": "url", "url": "u", "text": "t"}}, "tags": None, "defaults": None,
                 "identity": None}])  # a typed value, and no tags object at all
@example(cases=[PLAIN, _case({"trace.user": "m"}, identity="u"), _case(identity="v")])  # identity attributes
@example(cases=[_case(defaults={"a": {"type": "string", "value": "s"}}), PLAIN])  # typed default
def test_stored_tags_and_metadata_follow_the_merge_rules_on_every_path(tmp_path_factory, cases):
    path = str(tmp_path_factory.mktemp("rows") / "rows.duckdb")
    store = DuckDBStore(path)
    store.acquire_writer()
    try:
        raw = RawSpans()
        resource = {"service.name": "svc", "deployment.environment.name": "prod"}
        res = raw.resource(resource)
        for i, case in enumerate(cases):  # one batch: fast and general rows side by side
            fields = {"metadata": case["metadata"]}
            if case["tags"] is not None:
                fields["tags"] = case["tags"]
            attributes = {attr.TRACE_FIELDS: json.dumps(fields)}
            if case["defaults"] is not None:
                attributes[attr.TRACE_DEFAULT_METADATA] = json.dumps(case["defaults"])
            if case["identity"] is not None:
                attributes["enduser.id"] = case["identity"]
            raw.add(f"{i + 1:032x}", f"{i + 1:016x}", None, False, "root", "INTERNAL", 10**18 + i, 10**18 + i + 5,
                    "UNSET", None, attributes, None, res)  # fmt: skip
        store.write(raw)
        for i, case in enumerate(cases):
            trace = store.get_trace(f"{i + 1:032x}")
            metadata, tags = _expected(case, resource)
            assert trace.info.metadata == metadata, case
            assert trace.info.tags == tags, case
    finally:
        store.release_writer()


TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
PLAIN_TRACE = st.fixed_dictionaries({
    "metadata": st.dictionaries(PLAIN_KEYS, SCALARS, max_size=4),
    "tags": st.one_of(st.none(), st.dictionaries(PLAIN_KEYS, st.text(alphabet="pqr {}\"é", max_size=6), max_size=3)),
    "defaults": st.one_of(st.none(), st.dictionaries(PLAIN_KEYS, SCALARS, max_size=2)),
    "fields": st.dictionaries(st.sampled_from(["state", "client_request_id", "request_preview", "response_preview"]),
                              TEXT, max_size=3),
    "status": st.sampled_from(["OK", "ERROR", "UNSET"]),
    "inputs": st.one_of(st.none(), st.builds(lambda n: '"' + "é" * n + '"', st.integers(0, 1200))),
    "ended": st.booleans(),
    "project": st.sampled_from([None, "p1"]),
})  # fmt: skip


def _stored_rows(path: str, raw: RawSpans) -> list[dict]:
    store = DuckDBStore(path)
    store.acquire_writer()
    try:
        store.write(raw)
        with store.connect() as con:
            cursor = con.execute(
                "SELECT * EXCLUDE (stored_at, tags, metadata), map_entries(tags) AS tags,"
                " map_entries(metadata) AS metadata FROM traces ORDER BY trace_id")  # fmt: skip
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        store.release_writer()


@settings(max_examples=40, deadline=None)
@given(cases=st.lists(PLAIN_TRACE, min_size=1, max_size=10))
@example(cases=[{"metadata": {"a": "x", "b": 2, "lang": 0.25, "x.y": True}, "tags": {"a": "t"}, "defaults": {"c": "d"},
                 "fields": {"state": "", "client_request_id": "r", "request_preview": ""}, "status": "ERROR",
                 "inputs": '"' + "é" * 1100 + '"', "ended": True, "project": None}])  # fmt: skip
def test_plain_traces_get_the_same_rows_from_python_as_from_sql(tmp_path_factory, cases):
    """Every column of every trace row is the same whether built in Python or in SQL."""
    # JSON null in trace fields, or its text anywhere in them: the batch is left to SQL as a whole
    assume("null" not in json.dumps([[c["metadata"], c["tags"] or {}, c["fields"]] for c in cases]))
    from traceduck.store import writer  # noqa: PLC0415

    def batch() -> RawSpans:
        raw = RawSpans("dflt")
        res = raw.resource({"service.name": "svc", "deployment.environment.name": "prod", "service.version": 3})
        for i, case in enumerate(cases):
            fields = {"metadata": case["metadata"], **case["fields"]}
            if case["tags"] is not None:
                fields["tags"] = case["tags"]
            attributes = {attr.TRACE_FIELDS: json.dumps(fields), "other": 1}
            if case["defaults"] is not None:
                attributes[attr.TRACE_DEFAULT_METADATA] = json.dumps(case["defaults"])
            raw.add(f"{i + 1:032x}", f"{i + 1:016x}", None, False, f"root-{i}", "INTERNAL", 10**18 + i * 10**6,
                    10**18 + i * 10**6 + 5 * 10**6 + 1 if case["ended"] else None, case["status"], None, attributes,
                    None, res, case["project"])  # fmt: skip
            raw.add(f"{i + 1:032x}", f"{i + 100:016x}", f"{i + 1:016x}", False, "child", "INTERNAL", 10**18 + i,
                    10**18 + i + 1, "OK", None, {}, None, res)  # fmt: skip
        return raw

    directory = tmp_path_factory.mktemp("plain")
    with_inputs = batch()  # the roots' inputs set in the rows (previews come from them)
    columns = list(RAW_COLUMNS)
    with_inputs.rows = [
        tuple(case["inputs"] if (name == "inputs" and row[columns.index("is_root")]) else value
              for name, value in zip(columns, row))
        for row, case in zip(with_inputs.rows, [c for c in cases for _ in (0, 1)])
    ]
    used = []
    real = writer._plain_rows
    sql_batch = RawSpans("dflt", with_inputs.resources)
    sql_batch.rows = list(with_inputs.rows)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer, "_plain_rows", lambda *a: used.append(real(*a)) or used[-1])
        python_rows = _stored_rows(str(directory / "python.duckdb"), with_inputs)
        assert used and used[0] is not None  # the batch did take the Python path
        patch.setattr(writer, "_plain_rows", lambda *a: None)
        sql_rows = _stored_rows(str(directory / "sql.duckdb"), sql_batch)
    assert len(python_rows) == len(cases)
    for p, s in zip(python_rows, sql_rows):  # JSON text and map entries compared without their order
        assert json.loads(p.pop("metadata_json")) == json.loads(s.pop("metadata_json"))
        for name in ("tags", "metadata"):
            assert sorted(p.pop(name), key=str) == sorted(s.pop(name), key=str), name
        assert p == s
