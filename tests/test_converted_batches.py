"""Batches as the writer process gets them: converted to Arrow and an index by the converter
process, read back without a Python object per span. Stored, they give the same rows as the same
batch written from its Python rows, on every path of the store's writer (SQL and Python trace
rows, merges with patches and remote roots, LLM calls, a capture policy that needs the rows)."""

from __future__ import annotations

import json

import pytest

from traceduck import attributes as attr
from traceduck.raw_spans import BatchIndex, RawSpans
from traceduck.store.converter_process import convert, read_converted
from traceduck.store.duckdb_store import DuckDBStore
from traceduck.store.writer_process import encode

from conftest import query_file

BASE_NS = 1_800_000_000_000_000_000
RESOURCE = {"service.name": "svc", "deployment.environment.name": "prod"}


def _span(raw: RawSpans, trace: int, span: int, parent: int | None, *, remote: bool = False,
          name: str = "s", attributes: dict | None = None, project: str | None = None) -> None:  # fmt: skip
    resource = raw.resource(RESOURCE)
    start = BASE_NS + trace * 1_000_000 + span
    raw.add(f"{trace:032x}", f"{span:016x}", f"{parent:016x}" if parent is not None else None, remote, name,
            "INTERNAL", start, start + 5_000_000, "OK", None, dict(attributes or {}), None, resource, project)  # fmt: skip


def _varied(first_trace: int, traces: int, plain: bool = False) -> RawSpans:
    """Roots with trace fields (plain, typed and null metadata, tags, identity attributes),
    LLM children with GenAI attributes, a root with a remote parent, a patch (trace fields on a
    child whose root is in another batch), configured default metadata, a second project.
    ``plain``: only what the store's Python trace rows take (see store/plain_rows.py)."""
    raw = RawSpans("default")
    for n in range(first_trace, first_trace + traces):
        if plain:
            _span(raw, n, 1, None, name=f"root-{n}", attributes={
                attr.INPUTS: json.dumps({"q": n}), attr.TRACE_FIELDS: json.dumps({"metadata": {"n": n}})})
            _span(raw, n, 2, 1, name="llm", attributes={"gen_ai.request.model": "m", "gen_ai.usage.input_tokens": n})
            continue
        fields: dict = {"metadata": {"trace.user": f"u{n % 7}", "n": n}, "tags": {"tier": "pro"},
                        "client_request_id": f"req-{n}"}  # fmt: skip
        if n % 5 == 1:
            fields["metadata"]["link"] = {"type": "url", "url": f"https://x/{n}", "text": "x"}
        if n % 5 == 2:
            fields["metadata"]["gone"] = None
        root_attrs = {attr.SPAN_TYPE: "CHAIN", attr.INPUTS: json.dumps({"q": n}), attr.OUTPUTS: '"ok"',
                      attr.TRACE_FIELDS: json.dumps(fields)}  # fmt: skip
        if n % 5 == 3:
            root_attrs["enduser.id"] = f"otel-{n}"
        if n % 5 == 4:
            root_attrs[attr.TRACE_DEFAULT_METADATA] = json.dumps({"team": "search"})
        _span(raw, n, 1, 99 if n % 11 == 0 else None, remote=n % 11 == 0, name=f"root-{n}",
              attributes=root_attrs, project="other" if n % 13 == 0 else None)  # fmt: skip
        _span(raw, n, 2, 1, name="llm", project="other" if n % 13 == 0 else None,
              attributes={attr.SPAN_TYPE: "LLM", "gen_ai.request.model": "gpt-4o", "gen_ai.response.id": f"r-{n}",
                          "gen_ai.usage.input_tokens": 10 + n, "gen_ai.usage.output_tokens": 3})  # fmt: skip
    if plain:
        return raw
    # a late child carrying trace fields for a trace whose root came in an earlier batch
    _span(raw, first_trace - 1 if first_trace > 1 else 10**6, 3, 1, name="late",
          attributes={attr.TRACE_FIELDS: json.dumps({"tags": {"late": "yes"}})})  # fmt: skip
    return raw


def _converted(raw: RawSpans, linger: bool = False, epoch: int = 0) -> RawSpans:
    parts, _ = convert(encode(raw, linger, epoch), epoch)
    batch = read_converted(b"".join(bytes(memoryview(p)) for p in parts))
    assert batch.error is None and batch.raw is not None
    assert (batch.linger, batch.epoch) == (linger, epoch)
    return batch.raw


def test_a_converted_batch_has_the_same_rows_index_and_table():
    raw = _varied(1, 40)
    converted = _converted(_varied(1, 40))
    assert len(converted) == len(raw) == 81
    assert converted.index == raw.index  # read from the frame, not found from rows
    assert converted._source is not None  # no rows made so far
    assert converted.to_arrow().equals(raw.to_arrow())
    assert converted.rows == raw.rows
    assert converted.index == BatchIndex.of_rows(converted.rows)
    assert (converted.default_project, converted.resources) == (raw.default_project, raw.resources)


def test_the_index_says_what_the_store_asks():
    index = _varied(1, 40).index
    assert len(index.root_ids) == 40 and index.root_ids[0] == (f"{1:032x}", "default")
    assert index.patch_ids == {(f"{10**6:032x}", "default")}
    assert index.has_remote_roots and index.has_llm_calls
    assert index.projects == {"default", "other"}
    assert index.start_range == (BASE_NS + 1_000_000 + 1, BASE_NS + 10**6 * 1_000_000 + 3)  # the late child
    assert index.first_root_start == BASE_NS + 1_000_000 + 1
    assert len(index.root_sources) == 2  # one resource, with and without configured defaults
    plain = RawSpans()
    _span(plain, 1, 1, None, attributes={"a": 1})
    assert not plain.index.has_llm_calls and not plain.index.has_remote_roots and not plain.index.patch_ids
    assert RawSpans().index.start_range is None
    with pytest.raises(ValueError, match="empty batch"):
        RawSpans().start_range()


def test_changing_a_converted_batch_makes_its_rows_first():
    converted = _converted(_varied(1, 3))
    extra = RawSpans("default", converted.resources)
    _span(extra, 500, 1, None, name="added")
    converted.add_rows(extra.rows)
    assert len(converted) == 8
    assert converted.rows[-1][5] == "added" and converted.rows[0][5] == "root-1"
    assert converted.to_arrow().num_rows == 8 and len(converted.root_ids) == 4


_TABLES = {
    "spans": "SELECT * FROM spans ORDER BY trace_id, span_id",
    "traces": "SELECT * EXCLUDE (stored_at) FROM traces ORDER BY trace_id, project",
    "llm_calls": "SELECT * FROM llm_calls ORDER BY trace_id, span_id",
    "llm_responses": "SELECT * FROM llm_responses ORDER BY response_id",
}


def _store_all(path: str, batches: list[RawSpans], settings: dict | None = None) -> tuple[dict[str, list], list]:
    store = DuckDBStore(path)
    store.acquire_writer()
    try:
        if settings:
            store.set_project_settings("other", settings, "test")
        written = [store.write(batch) for batch in batches]
    finally:
        store.release()
        store.release_writer()
    return {name: query_file(path, sql) for name, sql in _TABLES.items()}, written


@pytest.mark.parametrize(
    ("sizes", "plain", "settings", "rows_made"),
    [
        ([30], True, None, True),  # plain traces: their trace rows made in Python, from rows read off the table
        ([30], False, None, False),  # typed values, nulls, identity attributes: trace rows in SQL
        ([2100], True, None, False),  # more plain traces than PLAIN_ROWS_MAX_TRACES: SQL
        ([40, 40, 40], False, None, False),  # later batches merge patches with traces stored before
        ([60], False, {"capture": "prompt", "pii": "redact"}, True),  # a capture policy: rows made for it
    ],
)
def test_a_converted_batch_is_stored_as_its_rows_would_be(tmp_path, sizes, plain, settings, rows_made):
    first = 1
    as_rows, converted = [], []
    for size in sizes:
        as_rows.append(_varied(first, size, plain))
        converted.append(_converted(_varied(first, size, plain)))
        first += size
    expected, expected_stats = _store_all(str(tmp_path / "rows.duckdb"), as_rows, settings)
    stored, stats = _store_all(str(tmp_path / "converted.duckdb"), converted, settings)
    assert expected["spans"] and expected["traces"] and expected["llm_calls"]
    assert stats == expected_stats
    for name in _TABLES:
        assert stored[name] == expected[name], name
    # the table alone was written, no Python row per span, unless a path needed the rows
    assert [batch._source is None for batch in converted] == [rows_made] * len(sizes)


def test_a_batch_that_cannot_be_converted_is_answered_as_its_failure():
    parts, epoch = convert(b"{not json", 3)
    batch = read_converted(b"".join(bytes(memoryview(p)) for p in parts))
    assert batch.raw is None and epoch == 3 and batch.epoch == 3
    assert batch.error is not None and batch.error["type"] == "JSONDecodeError"
