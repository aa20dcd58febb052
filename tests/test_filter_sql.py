"""SQL tests: run compiled filters against a small real store and check which traces match."""

from __future__ import annotations

import duckdb
import pytest

from traceduck.filters import DuckDBGenerator, SqlGenerator, compile_filter, parse_filter
from traceduck.filters.ast import Comparison, Field
from traceduck.store.schema import migrate

IDS = {
    "T1": "00000000-0000-0000-0000-0000000000a1",
    "T2": "00000000-0000-0000-0000-0000000000b2",
    "T3": "00000000-0000-0000-0000-0000000000c3",
    "T4": "00000000-0000-0000-0000-0000000000d4",
}
NAMES = {uuid: name for name, uuid in IDS.items()}
ALL = set(IDS)

TRACES_SQL = """
INSERT INTO traces (trace_id, project, name, state, request_time, execution_duration, end_time,
                    client_request_id, trace_user, session_id, environment, request_preview,
                    response_preview, tags, metadata, stored_at) VALUES
('00000000-0000-0000-0000-0000000000a1', 'p', 'chat', 'OK', 1000, 50, 1050, 'req-1',
 'alice', 's1', 'prod', 'Hello World', 'Hi there',
 MAP {'env': 'prod', 'team': 'ml', 'trace.user': 'alice', 'trace.session': 's1',
      'trace.environment': 'prod'},
 MAP {'mlflow.sourceRun': 'run1', 'trace.user': 'alice', 'region': 'eu'}, 0),
('00000000-0000-0000-0000-0000000000b2', 'p', 'Chat', 'ERROR', 2000, 500, 2500, 'req-2',
 'bob', 's1', 'dev', 'bonjour', 'salut',
 MAP {'env': 'dev', 'flag': NULL, 'trace.user': 'bob', 'trace.session': 's1',
      'trace.environment': 'dev'},
 MAP {'region': 'us'}, 0),
('00000000-0000-0000-0000-0000000000c3', 'p', 'summarize', 'OK', 3000, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, MAP {}, NULL, 0),
('00000000-0000-0000-0000-0000000000d4', 'p', NULL, 'IN_PROGRESS', 4000, 10, 4010, 'req-4',
 NULL, NULL, 'staging', NULL, NULL, MAP {'env': 'staging', 'weird `key': 'x'}, MAP {}, 0)
"""

SPANS_SQL = """
INSERT INTO spans (trace_id, span_id, project, name, span_type, start_time_ns, status, attributes)
VALUES
('00000000-0000-0000-0000-0000000000a1', 's1', 'p', 'llm_call', 'LLM', 0, 'OK',
 '{"model": "gpt-4", "temperature": 0.7, "a/b": "slash", "n~1": "tilde"}'),
('00000000-0000-0000-0000-0000000000a1', 's2', 'p', 'retrieve', 'RETRIEVER', 0, 'OK', '{}'),
('00000000-0000-0000-0000-0000000000b2', 's3', 'p', 'llm_call', 'LLM', 0, 'ERROR',
 '{"model": "claude-3", "temperature": 0.2}'),
('00000000-0000-0000-0000-0000000000c3', 's4', 'p', 'tool', 'TOOL', 0, 'OK', NULL),
('00000000-0000-0000-0000-0000000000c3', 's5', 'p', 'tool2', 'TOOL', 0, 'OK', 'not json')
"""

T1, T2, T3, T4 = IDS["T1"], IDS["T2"], IDS["T3"], IDS["T4"]
# (assessment_id, trace_id, kind, name, value_str, value_num, valid, create_time)
ASSESSMENTS = [
    ("f1", T1, "feedback", "rating", "good", None, True, 1),
    ("f2", T1, "feedback", "rating", "bad", None, True, 2),  # the latest valid one for T1
    ("f3", T1, "feedback", "rating", "excellent", None, False, 3),  # newer but invalid
    ("f4", T2, "feedback", "rating", "good", None, True, 1),
    ("f5", T2, "feedback", "score", "0.9", 0.9, True, 1),
    ("f6", T2, "feedback", "is_correct", "true", None, True, 1),  # a boolean True
    ("f7", T3, "feedback", "score", "0.3", 0.3, True, 1),
    ("f8", T3, "feedback", "rating", "good", None, False, 1),
    ("e1", T3, "expectation", "expected", "paris", None, True, 1),
    ("a1", T4, "feedback", "rating", "meh", None, True, 5),
    ("a2", T4, "feedback", "rating", "great", None, True, 5),  # same time: higher id wins
    ("x1", None, "feedback", "rating", "good", None, True, 9),  # not on any trace
]
ASSESSMENTS_SQL = (
    "INSERT INTO assessments (assessment_id, trace_id, project, target_kind, target, kind, name, "
    "value_str, value_num, source_type, valid, create_time, last_update_time) "
    "VALUES (?, ?, 'p', 'trace', 't', ?, ?, ?, ?, 'HUMAN', ?, ?, 0)"
)


@pytest.fixture(scope="module")
def con():
    connection = duckdb.connect(":memory:")
    migrate(connection)
    connection.execute(TRACES_SQL)
    connection.execute(SPANS_SQL)
    connection.executemany(ASSESSMENTS_SQL, [list(row) for row in ASSESSMENTS])
    yield connection
    connection.close()


def search(con, text: str) -> set[str]:
    sql, params = compile_filter(parse_filter(text))
    rows = con.execute(
        f"SELECT CAST(trace_id AS VARCHAR) FROM traces t WHERE {sql}", params
    ).fetchall()
    return {NAMES[row[0]] for row in rows}


CASES = [
    # trace attributes
    ("status = 'OK'", {"T1", "T3"}),
    ("status != 'OK'", {"T2", "T4"}),
    ("state IN ('ERROR', 'IN_PROGRESS')", {"T2", "T4"}),
    ("status NOT IN ('OK')", {"T2", "T4"}),
    ("timestamp_ms > 2000", {"T3", "T4"}),
    ("timestamp_ms >= 2000", {"T2", "T3", "T4"}),
    ("timestamp_ms < 2000", {"T1"}),
    ("timestamp_ms <= 2000", {"T1", "T2"}),
    ("timestamp_ms = 3000", {"T3"}),
    ("timestamp_ms != 3000", {"T1", "T2", "T4"}),
    ("timestamp >= 1.5e3", {"T2", "T3", "T4"}),
    ("execution_time_ms > 20", {"T1", "T2"}),
    ("execution_time_ms != 50", {"T2", "T4"}),
    ("end_time_ms <= 2500", {"T1", "T2"}),
    ("name = 'chat'", {"T1"}),
    ("name != 'chat'", {"T2", "T3"}),
    ("name LIKE 'chat'", {"T1"}),
    ("name LIKE 'C%'", {"T2"}),
    ("name ILIKE 'chat'", {"T1", "T2"}),
    ("name RLIKE 'hat'", {"T1", "T2"}),
    ("name RLIKE '^s'", {"T3"}),
    ("client_request_id = 'req-2'", {"T2"}),
    ("client_request_id IN ('req-1', 'req-4')", {"T1", "T4"}),
    ("request_preview LIKE '%World%'", {"T1"}),
    ("response_preview ILIKE 'HI%'", {"T1"}),
    # trace ids
    ("trace_id = '000000000000000000000000000000B2'", {"T2"}),
    ("request_id = '00000000-0000-0000-0000-0000000000b2'", {"T2"}),
    ("trace_id = 'tr-000000000000000000000000000000b2'", {"T2"}),
    ("trace_id = 'not-an-id'", set()),
    ("trace_id != 'not-an-id'", ALL),
    ("trace_id != '000000000000000000000000000000b2'", {"T1", "T3", "T4"}),
    ("trace_id IN ('000000000000000000000000000000a1', 'garbage')", {"T1"}),
    ("trace_id NOT IN ('000000000000000000000000000000a1', 'garbage')", {"T2", "T3", "T4"}),
    ("trace_id LIKE '0000%'", ALL),
    ("trace_id LIKE '%-%'", set()),
    ("trace_id RLIKE 'b2$'", {"T2"}),
    # tags
    ("tags.env = 'prod'", {"T1"}),
    ("tags.env != 'prod'", {"T2", "T4"}),
    ("tags.env LIKE 'pro%'", {"T1"}),
    ("tags.env LIKE 'PRO%'", set()),
    ("tags.env ILIKE 'PROD'", {"T1"}),
    ("tags.env RLIKE 'ev'", {"T2"}),
    ("tags.env IN ('dev', 'staging')", {"T2", "T4"}),
    ("tags.env NOT IN ('dev')", {"T1", "T4"}),
    ("tags.env IS NULL", {"T3"}),
    ("tags.env IS NOT NULL", {"T1", "T2", "T4"}),
    ("tags.flag IS NOT NULL", {"T2"}),
    ("tags.flag IS NULL", {"T1", "T3", "T4"}),
    ("tags.flag = 'x'", set()),
    ("tags.flag != 'x'", set()),
    ("tags.`weird ``key` = 'x'", {"T4"}),
    ("tags.`trace.user` = 'alice'", {"T1"}),
    ("tags.`mlflow.trace.user` = 'bob'", {"T2"}),
    ("tags.`user.id` != 'alice'", {"T2"}),
    ("tags.`enduser.id` LIKE '%o%'", {"T2"}),
    ("tags.`trace.session` = 's1'", {"T1", "T2"}),
    ("tags.`session.id` IS NULL", {"T3", "T4"}),
    ("tags.`gen_ai.conversation.id` IS NOT NULL", {"T1", "T2"}),
    ("tags.`trace.environment` = 'dev'", {"T2"}),
    # metadata
    ("metadata.region = 'eu'", {"T1"}),
    ("metadata.region != 'eu'", {"T2"}),
    ("metadata.`mlflow.trace.user` = 'alice'", {"T1"}),
    ("run_id = 'run1'", {"T1"}),
    ("request_metadata.region IS NULL", {"T3", "T4"}),
    ("metadata.region IS NOT NULL", {"T1", "T2"}),
    ("metadata.region NOT IN ('us')", {"T1"}),
    # assessments: the latest valid one of the name counts
    ("feedback.rating = 'bad'", {"T1"}),
    ("feedback.rating = 'good'", {"T2"}),
    ("feedback.rating = 'excellent'", set()),
    ("feedback.rating != 'good'", {"T1", "T4"}),
    ("feedback.rating = 'great'", {"T4"}),
    ("feedback.rating IS NULL", {"T3"}),
    ("feedback.rating IS NOT NULL", {"T1", "T2", "T4"}),
    ("feedback.rating LIKE 'g%'", {"T2", "T4"}),
    ("feedback.rating ILIKE 'G%'", {"T2", "T4"}),
    ("feedback.rating RLIKE 'a'", {"T1", "T4"}),
    ("feedback.rating IN ('bad', 'great')", {"T1", "T4"}),
    ("feedback.rating NOT IN ('bad')", {"T2", "T4"}),
    ("feedback.score > 0.5", {"T2"}),
    ("feedback.score <= 0.5", {"T3"}),
    ("feedback.score = 0.9", {"T2"}),
    ("feedback.score = '0.9'", {"T2"}),
    ("feedback.score IN (0.3, 0.9)", {"T2", "T3"}),
    ("feedback.is_correct = true", {"T2"}),
    ("feedback.is_correct = 'true'", {"T2"}),
    ("expectation.expected = 'paris'", {"T3"}),
    ("feedback.expected IS NULL", ALL),
    ("expectation.rating IS NULL", ALL),
    # spans: a trace matches when any span does
    ("span.name = 'llm_call'", {"T1", "T2"}),
    ("span.name != 'llm_call'", {"T1", "T3"}),
    ("span.type = 'TOOL'", {"T3"}),
    ("span.status = 'ERROR'", {"T2"}),
    ("span.type IN ('LLM')", {"T1", "T2"}),
    ("span.type NOT IN ('LLM')", {"T1", "T3"}),
    ("span.name LIKE 'tool%'", {"T3"}),
    ("span.name RLIKE 'call'", {"T1", "T2"}),
    ("span.attributes.model = 'gpt-4'", {"T1"}),
    ("span.attributes.model != 'gpt-4'", {"T2"}),
    ("span.attribute.model ILIKE 'CLAUDE%'", {"T2"}),
    ("span.attributes.temperature > 0.5", {"T1"}),
    ("span.attributes.temperature < 0.5", {"T2"}),
    ("span.attributes.temperature = '0.7'", {"T1"}),
    ("span.attributes.`a/b` = 'slash'", {"T1"}),
    ("span.attributes.`n~1` = 'tilde'", {"T1"}),
    ("span.attributes.missing IN ('x')", set()),
    # boolean structure
    ("tags.env = 'prod' OR feedback.score > 0.5", {"T1", "T2"}),
    ("status = 'OK' OR status = 'ERROR' AND tags.env = 'prod'", {"T1", "T3"}),
    ("(status = 'OK' OR status = 'ERROR') AND tags.env = 'prod'", {"T1"}),
    ("NOT tags.env = 'prod'", {"T2", "T3", "T4"}),
    ("NOT tags.env != 'prod'", {"T1", "T3"}),
    ("NOT (status = 'OK' AND tags.env = 'prod')", {"T2", "T3", "T4"}),
    ("NOT NOT tags.env = 'prod'", {"T1"}),
    ("NOT feedback.rating = 'good'", {"T1", "T3", "T4"}),
    ("NOT span.name = 'llm_call'", {"T3", "T4"}),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_filter_matches_expected_traces(con, text, expected):
    assert search(con, text) == expected


@pytest.mark.parametrize("text", [text for text, _ in CASES])
def test_not_is_the_exact_complement(con, text):
    assert search(con, f"NOT ({text})") == ALL - search(con, text)


def test_no_filter_compiles_to_true():
    assert compile_filter(None) == ("TRUE", [])


def test_positive_predicates_stay_plain_for_scan_pushdown():
    assert compile_filter(parse_filter("tags.`trace.session` = 's1'")) == (
        "t.session_id = ?",
        ["s1"],
    )
    assert compile_filter(parse_filter("timestamp_ms > 5")) == ("t.request_time > ?", [5])


def test_not_is_wrapped_in_coalesce():
    sql, _ = compile_filter(parse_filter("NOT tags.env = 'x'"))
    assert sql == "NOT COALESCE((t.tags[?] = ?), FALSE)"


# -- safety: nothing from the filter is pasted into the SQL ------------------------------------

HOSTILE = ["'; DROP TABLE traces; --", "a`b", 'x") OR TRUE --', "?", "\\'", "\x00"]


@pytest.fixture()
def hostile_con():
    connection = duckdb.connect(":memory:")
    migrate(connection)
    keys = HOSTILE
    values = [f"v{i}" for i in range(len(keys))]
    connection.execute(
        "INSERT INTO traces (trace_id, project, state, request_time, tags, metadata, stored_at) "
        "VALUES ('00000000-0000-0000-0000-000000000001', 'p', 'OK', 1, MAP(?, ?), MAP(?, ?), 0)",
        [keys, values, values, keys],
    )
    yield connection
    connection.close()


def _quote_key(key: str) -> str:
    return "`" + key.replace("`", "``") + "`"


def _quote_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_keys_and_values_are_plain_data(hostile_con, index):
    key = HOSTILE[index]
    filters = [
        f"tags.{_quote_key(key)} = 'v{index}'",
        f"metadata.`v{index}` = {_quote_value(key)}",
        f"tags.{_quote_key(key)} IS NOT NULL AND metadata.`v{index}` IN ({_quote_value(key)})",
    ]
    for text in filters:
        sql, params = compile_filter(parse_filter(text))
        rows = hostile_con.execute(f"SELECT count(*) FROM traces t WHERE {sql}", params).fetchall()
        assert rows == [(1,)], text
    tables = hostile_con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'traces'"
    ).fetchall()
    assert tables == [(1,)]


MARKER_FILTERS = [
    "tags.`QQK1` = 'QQV1'",
    "metadata.QQK2 LIKE 'QQV2'",
    "feedback.QQK3 RLIKE 'QQV3'",
    "expectation.`QQK4` IN ('QQV4', 'QQV5')",
    "span.attributes.QQK6 >= 1234567",
    "span.name NOT IN ('QQV7')",
    "name ILIKE 'QQV8'",
    "trace_id IN ('QQV9')",
    "tags.`QQK10` IS NULL OR NOT metadata.`QQK11` != 'QQV12'",
    "tags.`trace.user` = 'QQV13'",
]


@pytest.mark.parametrize("text", MARKER_FILTERS)
def test_no_filter_text_appears_in_the_sql(text):
    sql, params = compile_filter(parse_filter(text))
    assert "QQ" not in sql
    assert "1234567" not in sql
    assert any("QQ" in str(p) or p == 1234567 for p in params)
    assert sql.count("?") == len(params)


# -- the generator as a base for other dialects ------------------------------------------------


def test_base_generator_leaves_dialect_hooks_to_subclasses():
    with pytest.raises(NotImplementedError):
        compile_filter(parse_filter("tags.env = 'x'"), SqlGenerator())


def test_base_generator_compiles_plain_column_comparisons():
    sql, params = compile_filter(parse_filter("status = 'OK' AND name ILIKE 'a%'"), SqlGenerator())
    assert sql == "(t.state = ? AND lower(t.name) LIKE lower(?))"
    assert params == ["OK", "a%"]


def test_a_dialect_overrides_only_what_differs():
    class TildeRegex(DuckDBGenerator):
        def regex_match(self, expr: str, pattern: str) -> str:
            return f"{expr} ~ {pattern}"

    sql, _ = compile_filter(parse_filter("name RLIKE 'a' AND tags.k = 'v'"), TildeRegex())
    assert sql == "(t.name ~ ? AND t.tags[?] = ?)"


def test_generator_rejects_a_hand_built_comparison_the_parser_would_refuse():
    bad = Comparison(Field("attribute", "timestamp_ms"), "=", "yesterday")
    with pytest.raises(ValueError):
        compile_filter(bad)
