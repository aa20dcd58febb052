"""Property tests: the parser never fails in an unplanned way, printing round-trips, SQL runs."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traceduck.errors import InvalidFilterError
from traceduck.filters import (
    And,
    Comparison,
    Field,
    Not,
    Or,
    compile_filter,
    parse_filter,
    to_filter_string,
)
from traceduck.filters.fields import KEY_ALIASES, NUMERIC_ATTRIBUTES, STRING_ATTRIBUTES, allowed_ops
from traceduck.store.schema import migrate

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- random text never escapes as anything but InvalidFilterError -----------------------------

FRAGMENTS = [
    "tags",
    "tag",
    "metadata",
    "feedback",
    "expectation",
    "span",
    "trace",
    "attributes",
    "status",
    "name",
    "timestamp_ms",
    "trace_id",
    "attributes",
    "type",
    "env",
    "`k`",
    '"k"',
    "'v'",
    '"v"',
    "''",
    "5",
    "-1.5e3",
    ".",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ILIKE",
    "RLIKE",
    "IS",
    "NULL",
    "(",
    ")",
    ",",
    "`",
    "'",
    '"',
    "\\",
    "true",
]


def _accepts_or_rejects_cleanly(text: str) -> None:
    try:
        node = parse_filter(text)
    except InvalidFilterError as exc:
        assert 0 <= exc.position <= len(text)
        return
    if node is not None:
        assert parse_filter(to_filter_string(node)) == node


@FUZZ
@given(st.text(max_size=60))
def test_random_text_parses_or_raises_invalid_filter_error(text):
    _accepts_or_rejects_cleanly(text)


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12), st.sampled_from([" ", ""]))
def test_random_token_soup_parses_or_raises_invalid_filter_error(fragments, joiner):
    _accepts_or_rejects_cleanly(joiner.join(fragments))


@FUZZ
@given(st.text(alphabet="()N OT", max_size=400))
def test_deep_or_unbalanced_nesting_raises_invalid_filter_error(text):
    _accepts_or_rejects_cleanly(text + "status = 'OK'")


# -- random syntax trees round-trip through the printer ----------------------------------------

text_values = st.text(max_size=8)
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
regexes = st.sampled_from(["^a", "b$", "x|y", "[0-9]+", "\\d+", "(?i)abc", "", "a.c", "\\.json$"])
keys = st.text(min_size=1, max_size=8).filter(lambda k: k not in KEY_ALIASES)


def _fields() -> st.SearchStrategy[Field]:
    return st.one_of(
        st.sampled_from(sorted(NUMERIC_ATTRIBUTES | STRING_ATTRIBUTES)).map(
            lambda n: Field("attribute", n)
        ),
        st.builds(
            Field, st.sampled_from(["tag", "metadata", "feedback", "expectation"]), st.none(), keys
        ),
        st.sampled_from(["name", "type", "status"]).map(lambda n: Field("span", n)),
        keys.map(lambda k: Field("span", "attributes", k)),
    )


def _value_for(fld: Field, op: str, draw) -> object:
    numeric_field = fld.kind == "attribute" and fld.name in NUMERIC_ATTRIBUTES
    either = fld.kind in ("feedback", "expectation") or fld.name == "attributes"
    if op in ("IS NULL", "IS NOT NULL"):
        return None
    if op == "RLIKE":
        return draw(regexes)
    if op in ("LIKE", "ILIKE"):
        return draw(text_values)
    if op in ("<", "<=", ">", ">="):
        return draw(numbers)
    use_numbers = numeric_field or (either and draw(st.booleans()))
    scalar = numbers if use_numbers else text_values
    if op in ("IN", "NOT IN"):
        return tuple(draw(st.lists(scalar, min_size=1, max_size=3)))
    return draw(scalar)


@st.composite
def comparisons(draw) -> Comparison:
    fld = draw(_fields())
    op = draw(st.sampled_from(allowed_ops(fld.kind, fld.name)))
    return Comparison(fld, op, _value_for(fld, op, draw))


def _depth(node) -> int:
    if isinstance(node, Comparison):
        return 0
    if isinstance(node, Not):
        return 1 + _depth(node.item)
    return 1 + max(_depth(item) for item in node.items)


nodes = st.recursive(
    comparisons(),
    lambda children: st.one_of(
        children.map(Not),
        st.lists(children, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(children, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=8,
).filter(lambda node: _depth(node) <= 40)


@FUZZ
@given(nodes)
def test_printed_tree_parses_back_to_an_equal_tree(node):
    assert parse_filter(to_filter_string(node)) == node


@FUZZ
@given(nodes, st.data())
def test_mutated_valid_filters_parse_or_raise_invalid_filter_error(node, data):
    text = to_filter_string(node)
    at = data.draw(st.integers(min_value=0, max_value=len(text)))
    mutation = data.draw(st.sampled_from(["delete", "insert", "truncate"]))
    if mutation == "delete":
        text = text[:at] + text[at + 1 :]
    elif mutation == "insert":
        text = text[:at] + data.draw(st.sampled_from(list("'\"`().,= !<>-e5AN"))) + text[at:]
    else:
        text = text[:at]
    _accepts_or_rejects_cleanly(text)


# -- SQL generated for random trees runs ------------------------------------------------------


@pytest.fixture(scope="module")
def con():
    connection = duckdb.connect(":memory:")
    migrate(connection)
    connection.execute(
        "INSERT INTO traces (trace_id, project, name, state, request_time, tags, metadata, "
        "stored_at) VALUES ('00000000-0000-0000-0000-000000000001', 'p', 'n', 'OK', 1, "
        "MAP {'a': 'b'}, MAP {}, 0)"
    )
    connection.execute(
        "INSERT INTO spans (trace_id, span_id, project, name, start_time_ns, status, attributes) "
        "VALUES ('00000000-0000-0000-0000-000000000001', 's', 'p', 'n', 0, 'OK', '{\"a\": 1}')"
    )
    connection.execute(
        "INSERT INTO assessments (assessment_id, trace_id, project, target_kind, target, kind, "
        "name, value_str, value_num, source_type, valid, create_time, last_update_time) VALUES "
        "('x', '00000000-0000-0000-0000-000000000001', 'p', 'trace', 't', 'feedback', 'a', '1', 1, "
        "'HUMAN', true, 1, 1)"
    )
    yield connection
    connection.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=nodes)
def test_generated_sql_runs_and_not_is_the_complement(con, node):
    sql, params = compile_filter(node)
    assert sql.count("?") == len(params)
    matched = con.execute(f"SELECT count(*) FROM traces t WHERE {sql}", params).fetchall()[0][0]
    negated, negated_params = compile_filter(Not(node))
    unmatched = con.execute(
        f"SELECT count(*) FROM traces t WHERE {negated}", negated_params
    ).fetchall()[0][0]
    assert matched + unmatched == 1
