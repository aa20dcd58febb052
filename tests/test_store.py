"""The DuckDB file: schema version, refusal of newer stores, documented columns, stored rows."""

from __future__ import annotations

import json
import re

import duckdb
import pytest

import traceduck
from traceduck.store.duckdb_store import open_store
from traceduck.store.schema import LATEST_VERSION

from conftest import REPO, query_file

SCHEMA_DOC = REPO / "docs" / "schema.md"


def _traced_request():
    @traceduck.trace(span_type="CHAIN")
    def request(question):
        return step(question)

    @traceduck.trace(span_type="TOOL")
    def step(question):
        return question.upper()

    return request("why?")


# -- schema version --------------------------------------------------------------------------


def test_first_configure_records_schema_version_1_and_every_later_migration(configured):
    rows = query_file(configured, "SELECT version, description, applied_at FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))
    assert all(description and applied_at is not None for _, description, applied_at in rows)


def test_reconfiguring_an_existing_store_does_not_migrate_again(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider)
    first = query_file(store_path, "SELECT version, applied_at FROM schema_version ORDER BY version")
    traceduck.configure(store_path, tracer_provider=provider)
    assert query_file(store_path, "SELECT version, applied_at FROM schema_version ORDER BY version") == first


def test_reconfiguring_an_existing_store_keeps_its_traces(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider)
    _traced_request()
    traceduck.shutdown()
    traceduck.configure(store_path, tracer_provider=provider)
    _traced_request()
    assert query_file(store_path, "SELECT count(*) FROM traces") == [(2,)]


@pytest.fixture
def newer_store(store_path) -> str:
    con = duckdb.connect(store_path)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, description VARCHAR NOT NULL,"
                " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")  # fmt: skip
    con.execute("INSERT INTO schema_version (version, description) VALUES (999, 'from the future')")
    con.close()
    return store_path


def test_configure_refuses_a_store_with_a_newer_schema(newer_store, provider):
    with pytest.raises(traceduck.TraceduckError) as info:
        traceduck.configure(newer_store, tracer_provider=provider)
    message = str(info.value)
    assert "999" in message
    assert "upgrade traceduck" in message


def test_search_refuses_a_store_with_a_newer_schema(newer_store):
    with pytest.raises(traceduck.TraceduckError, match="999"):
        traceduck.search_traces(store=newer_store)


def test_refused_store_is_left_untouched(newer_store, provider):
    with pytest.raises(traceduck.TraceduckError):
        traceduck.configure(newer_store, tracer_provider=provider)
    tables = query_file(newer_store, "SELECT table_name FROM duckdb_tables() ORDER BY table_name")
    assert tables == [("schema_version",)]


def test_refused_store_does_not_keep_the_writer_role(newer_store, provider):
    with pytest.raises(traceduck.TraceduckError):
        traceduck.configure(newer_store, tracer_provider=provider)
    assert open_store(newer_store).file.is_writer is False


# -- docs/schema.md --------------------------------------------------------------------------


def _documented_columns() -> dict[str, dict[str, str | None]]:
    """table -> {column: documented type} from docs/schema.md.

    A table is a ``## `name` `` section whose markdown table lists ``| `col`[, `col2`] | TYPE | ...``;
    a table described in prose as ``Table `name` ... (`a`, `b`, ...)`` counts too (no types).
    """
    text = SCHEMA_DOC.read_text()
    tables: dict[str, dict[str, str | None]] = {}
    for match in re.finditer(r"Table `(\w+)`[^(]*\(((?:`\w+`(?:,\s*)?)+)\)", text):
        tables[match.group(1)] = {c: None for c in re.findall(r"`(\w+)`", match.group(2))}
    section = None
    for line in text.splitlines():
        heading = re.match(r"^##\s+`(\w+)`\s*$", line)
        if heading:
            section = heading.group(1)
            tables.setdefault(section, {})
            continue
        if line.startswith("## "):
            section = None
            continue
        if section is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`(\w+)`", cells[0])
        if not names or set(cells[0]) <= set("-: "):
            continue
        for name in names:
            tables[section][name] = cells[1] if len(cells) > 1 else None
    return tables


def _actual_columns(path: str) -> dict[str, dict[str, str]]:
    rows = query_file(
        path,
        "SELECT table_name, column_name, data_type FROM duckdb_columns()"
        " WHERE schema_name = 'main' AND NOT internal ORDER BY table_name, column_index",
    )
    tables: dict[str, dict[str, str]] = {}
    for table, column, data_type in rows:
        tables.setdefault(table, {})[column] = data_type
    return tables


def test_schema_doc_lists_every_table_of_a_fresh_store(configured):
    assert sorted(_documented_columns()) == sorted(_actual_columns(configured))


def test_schema_doc_lists_every_column_of_every_table(configured):
    actual = _actual_columns(configured)
    documented = _documented_columns()
    for table, columns in actual.items():
        assert list(documented.get(table, {})) == list(columns), f"docs/schema.md is out of step for {table}"


def test_schema_doc_gives_each_column_its_type(configured):
    actual = _actual_columns(configured)
    mismatches = [
        (table, column, doc_type, actual[table].get(column))
        for table, columns in _documented_columns().items()
        for column, doc_type in columns.items()
        if doc_type is not None and doc_type != actual.get(table, {}).get(column)
    ]
    assert mismatches == []


# -- what a trace looks like on disk ---------------------------------------------------------


def test_stored_span_rows_hold_ids_parents_types_and_json(configured):
    _traced_request()
    rows = query_file(
        configured,
        "SELECT replace(CAST(trace_id AS VARCHAR), '-', ''), span_id, parent_span_id, project, name,"
        " span_type, kind, start_time_ns <= end_time_ns, status, inputs, outputs, events"
        " FROM spans ORDER BY start_time_ns",
    )
    (trace_id, root_id, root_parent, *root), (child_trace, child_id, child_parent, *child) = rows
    assert trace_id == child_trace and re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert re.fullmatch(r"[0-9a-f]{16}", root_id) and re.fullmatch(r"[0-9a-f]{16}", child_id)
    assert (root_parent, child_parent) == (None, root_id)
    inputs, outputs, events = root[-3:]
    assert root[:-3] == ["default", "_traced_request.<locals>.request", "CHAIN", "INTERNAL", True, "UNSET"]
    assert (json.loads(inputs), json.loads(outputs), events) == ({"question": "why?"}, "WHY?", None)
    assert child[:3] == ["default", "_traced_request.<locals>.step", "TOOL"]


def test_stored_trace_row_summarises_the_root_span(configured):
    _traced_request()
    (trace,) = query_file(
        configured,
        "SELECT t.name, t.state, t.project, t.request_time = s.start_time_ns // 1000000,"
        " t.end_time = s.end_time_ns // 1000000, t.execution_duration = t.end_time - t.request_time,"
        " t.root_span_id = s.span_id, t.stored_at >= t.request_time, t.tags, t.metadata"
        " FROM traces t JOIN spans s ON s.trace_id = t.trace_id AND s.parent_span_id IS NULL",
    )
    assert trace[:3] == ("_traced_request.<locals>.request", "OK", "default")
    assert trace[3:8] == (True, True, True, True, True)


def test_trace_row_is_written_only_when_the_root_ends(configured):
    with traceduck.start_span("root"):
        with traceduck.start_span("child"):
            pass
        assert traceduck.flush()
        assert traceduck.count_traces() == 0
    assert traceduck.flush()
    assert traceduck.count_traces() == 1


def test_spans_of_other_instrumentation_have_no_span_type(configured, provider):
    with provider.get_tracer("other").start_as_current_span("raw"):
        pass
    assert query_file(configured, "SELECT name, span_type FROM spans") == [("raw", None)]


def test_error_status_and_exception_event_are_stored(configured):
    with pytest.raises(KeyError):
        with traceduck.start_span("failing"):
            raise KeyError("missing")
    rows = query_file(configured, "SELECT s.status, s.status_message, s.events, t.state"
                                  " FROM spans s JOIN traces t USING (trace_id)")  # fmt: skip
    ((status, message, events, state),) = rows
    assert (status, state) == ("ERROR", "ERROR")
    assert "missing" in message
    assert '"exception"' in events


def test_configure_project_is_stored_on_traces_and_spans(store_path, provider):
    traceduck.configure(store_path, tracer_provider=provider, project="chatbot")
    _traced_request()
    assert query_file(store_path, "SELECT DISTINCT project FROM traces") == [("chatbot",)]
    assert query_file(store_path, "SELECT DISTINCT project FROM spans") == [("chatbot",)]
