"""order_by parsing, ORDER BY SQL, and keyset paging that visits every trace exactly once."""

from __future__ import annotations

import random
import uuid

import duckdb
import pytest

from traceduck.errors import InvalidFilterError
from traceduck.filters import (
    Field,
    OrderTerm,
    compile_filter,
    order_by_sql,
    order_key_sql,
    parse_filter,
    parse_order_by,
    seek_predicate,
)
from traceduck.store.schema import migrate

TRACE_ID = Field("attribute", "trace_id")
TIMESTAMP = Field("attribute", "timestamp_ms")


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("order_by", [None, []])
def test_default_order_is_newest_first_then_trace_id(order_by):
    assert parse_order_by(order_by) == [OrderTerm(TIMESTAMP, False), OrderTerm(TRACE_ID, False)]


def test_direction_defaults_to_ascending_as_in_mlflow():
    assert parse_order_by(["status"]) == [
        OrderTerm(Field("attribute", "status"), True),
        OrderTerm(TRACE_ID, True),
    ]


@pytest.mark.parametrize("direction", ["desc", "DESC", "Desc", "dEsC"])
def test_direction_is_case_insensitive(direction):
    assert parse_order_by([f"timestamp_ms {direction}"])[0] == OrderTerm(TIMESTAMP, False)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("timestamp_ms", TIMESTAMP),
        ("timestamp", TIMESTAMP),
        ("attributes.timestamp_ms", TIMESTAMP),
        ("attribute.timestamp", TIMESTAMP),
        ("trace.timestamp_ms", TIMESTAMP),
        ("execution_time_ms", Field("attribute", "execution_time_ms")),
        ("execution_time", Field("attribute", "execution_time_ms")),
        ("end_time_ms", Field("attribute", "end_time_ms")),
        ("status", Field("attribute", "status")),
        ("name", Field("attribute", "name")),
        ("client_request_id", Field("attribute", "client_request_id")),
        ("tags.env", Field("tag", key="env")),
        ("tags.`mlflow.traceName`", Field("tag", key="mlflow.traceName")),
        ('tag."my key"', Field("tag", key="my key")),
        ("tags.`user.id`", Field("tag", key="trace.user")),
        ("metadata.`mlflow.trace.session`", Field("metadata", key="trace.session")),
        ("request_metadata.region", Field("metadata", key="region")),
    ],
)
def test_orderable_fields(entry, field):
    assert parse_order_by([f"{entry} DESC"])[0] == OrderTerm(field, False)


@pytest.mark.parametrize("entry", ["trace_id ASC", "request_id ASC"])
def test_trace_id_is_not_appended_twice(entry):
    assert parse_order_by([entry, "status DESC"]) == [
        OrderTerm(TRACE_ID, True),
        OrderTerm(Field("attribute", "status"), False),
    ]


def test_tie_breaker_follows_the_first_direction():
    terms = parse_order_by(["tags.env DESC", "timestamp_ms ASC"])
    assert terms[-1] == OrderTerm(TRACE_ID, False)


def test_extra_whitespace_is_accepted():
    # MLflow's own test_correct_sorting uses entries like "tags.tag1    DESC".
    assert parse_order_by(["  tags.tag1    DESC  "])[0] == OrderTerm(
        Field("tag", key="tag1"), False
    )


ORDER_ERRORS = [
    # (order_by, index of the bad entry, position in it, words in the message)
    (["foo"], 0, 0, "unknown trace attribute"),
    (["timestamp_ms DESC", "status DECS"], 1, 7, "expected ASC or DESC"),
    (["timestamp_ms ACS"], 0, 13, "expected ASC or DESC"),
    (["timestamp_ms DESC extra"], 0, 18, "after the direction"),
    (["timestamp_ms ASC,"], 0, 16, "after the direction"),
    (["span.name"], 0, 0, "cannot order by"),
    (["feedback.score DESC"], 0, 0, "cannot order by"),
    (["status", "request_preview"], 1, 0, "cannot order by"),
    (["trace.bogus"], 0, 6, "unknown trace attribute"),
    ([""], 0, 0, "blank"),
    (["   "], 0, 3, "blank"),
    (["tags."], 0, 5, "missing key"),
    (["tags"], 0, 4, "missing key"),
    (["`tags.x"], 0, 0, "unterminated"),
    (["bogus.x DESC"], 0, 0, "unknown prefix"),
    (["timestamp_ms = 5"], 0, 13, "expected ASC or DESC"),
]


@pytest.mark.parametrize(("order_by", "index", "position", "words"), ORDER_ERRORS)
def test_bad_order_by_entry_names_the_entry_and_position(order_by, index, position, words):
    with pytest.raises(InvalidFilterError) as info:
        parse_order_by(order_by)
    assert info.value.message.startswith(f"order_by[{index}]: ")
    assert words in info.value.message
    assert info.value.position == position
    assert info.value.text == order_by[index]


def test_non_string_entry_is_a_type_error():
    with pytest.raises(TypeError):
        parse_order_by([3])  # type: ignore[list-item]


# -- SQL ---------------------------------------------------------------------------------------


def test_default_order_by_sql():
    assert order_by_sql(parse_order_by(None)) == (
        "t.request_time DESC NULLS LAST, t.trace_id DESC NULLS LAST",
        [],
    )


def test_tag_keys_are_parameters_in_order_by_sql():
    sql, params = order_by_sql(parse_order_by(["tags.`a'b` ASC", "tags.`trace.user` DESC"]))
    assert (
        sql == "t.tags[?] ASC NULLS LAST, t.trace_user DESC NULLS LAST, t.trace_id ASC NULLS LAST"
    )
    assert params == ["a'b"]


def test_order_key_sql_selects_the_trace_id_as_hex():
    exprs, params = order_key_sql(parse_order_by(["metadata.m"]))
    assert exprs == ["t.metadata[?]", "replace(CAST(t.trace_id AS VARCHAR), '-', '')"]
    assert params == ["m"]


def test_seek_predicate_needs_one_value_per_term():
    with pytest.raises(ValueError):
        seek_predicate(parse_order_by(None), [1])


def test_seek_predicate_after_all_null_keys_is_false_only_when_nothing_can_follow():
    terms = [OrderTerm(Field("tag", key="k"), True)]
    assert seek_predicate(terms, [None]) == ("FALSE", [])


# -- keyset paging -----------------------------------------------------------------------------

N_TRACES = 500
PAGE = 37


@pytest.fixture(scope="module")
def store():
    rng = random.Random(20240601)
    con = duckdb.connect(":memory:")
    migrate(con)
    rows = []
    for _ in range(N_TRACES):
        trace_id = str(uuid.UUID(int=rng.getrandbits(128)))
        tags_keys, tags_values = [], []
        choice = rng.choice(["a", "b", "c", None, "missing"])
        if choice != "missing":
            tags_keys.append("grp")
            tags_values.append(choice)
        if rng.random() < 0.5:
            tags_keys.append("trace.user")
            tags_values.append(rng.choice(["u1", "u2"]))
        meta_value = rng.choice(["x", "y", None])
        rows.append(
            [
                trace_id,
                rng.choice(["alpha", "beta", None]),
                rng.choice(["OK", "ERROR"]),
                rng.randrange(8),  # many duplicate timestamps
                rng.choice([None, 5, 10, 15]),
                tags_values[tags_keys.index("trace.user")] if "trace.user" in tags_keys else None,
                tags_keys,
                tags_values,
                ["m"] if meta_value is not None else [],
                [meta_value] if meta_value is not None else [],
            ]
        )
    con.executemany(
        "INSERT INTO traces (trace_id, project, name, state, request_time, execution_duration, "
        "trace_user, tags, metadata, stored_at) "
        "VALUES (?, 'p', ?, ?, ?, ?, ?, MAP(?::VARCHAR[], ?::VARCHAR[]), "
        "MAP(?::VARCHAR[], ?::VARCHAR[]), 0)",
        rows,
    )
    yield con
    con.close()


def _full_order(con, terms, where: str, where_params: list) -> list[str]:
    order, order_params = order_by_sql(terms)
    sql = f"SELECT CAST(t.trace_id AS VARCHAR) FROM traces t WHERE {where} ORDER BY {order}"
    return [row[0] for row in con.execute(sql, where_params + order_params).fetchall()]


def _paged_order(con, terms, where: str, where_params: list) -> list[str]:
    keys, key_params = order_key_sql(terms)
    order, order_params = order_by_sql(terms)
    seen: list[str] = []
    last = None
    while True:
        seek, seek_params = ("TRUE", []) if last is None else seek_predicate(terms, last)
        sql = (
            f"SELECT CAST(t.trace_id AS VARCHAR), {', '.join(keys)} FROM traces t "
            f"WHERE ({where}) AND {seek} ORDER BY {order} LIMIT {PAGE}"
        )
        page = con.execute(sql, key_params + where_params + seek_params + order_params).fetchall()
        seen.extend(row[0] for row in page)
        if len(page) < PAGE:
            return seen
        last = list(page[-1][1:])


ORDERINGS = [
    None,
    ["timestamp_ms ASC"],
    ["tags.grp ASC", "timestamp_ms DESC"],
    ["tags.grp DESC", "execution_time_ms ASC"],
    ["name DESC", "tags.grp ASC", "timestamp_ms ASC"],
    ["execution_time_ms DESC", "status ASC"],
    ["metadata.m DESC", "tags.`trace.user` ASC"],
    ["trace_id DESC"],
    ["status", "trace_id ASC", "timestamp_ms DESC"],
]


@pytest.mark.parametrize("order_by", ORDERINGS, ids=lambda o: repr(o))
def test_keyset_pages_visit_every_trace_once_in_full_order(store, order_by):
    terms = parse_order_by(order_by)
    full = _full_order(store, terms, "TRUE", [])
    paged = _paged_order(store, terms, "TRUE", [])
    assert len(full) == N_TRACES
    assert len(set(paged)) == len(paged)
    assert paged == full


@pytest.mark.parametrize("order_by", [["tags.grp DESC", "timestamp_ms ASC"], None])
def test_keyset_pages_combine_with_a_filter(store, order_by):
    terms = parse_order_by(order_by)
    where, params = compile_filter(parse_filter("timestamp_ms >= 2 AND NOT tags.grp = 'a'"))
    full = _full_order(store, terms, where, params)
    assert 0 < len(full) < N_TRACES
    assert _paged_order(store, terms, where, params) == full


def test_nulls_sort_last_in_both_directions(store):
    for direction in ("ASC", "DESC"):
        terms = parse_order_by([f"tags.grp {direction}"])
        keys, key_params = order_key_sql(terms)
        order, order_params = order_by_sql(terms)
        values = [
            row[0]
            for row in store.execute(
                f"SELECT {keys[0]} FROM traces t ORDER BY {order}", key_params + order_params
            ).fetchall()
        ]
        first_null = values.index(None)
        assert all(v is None for v in values[first_null:])
        assert all(v is not None for v in values[:first_null])
