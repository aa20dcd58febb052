"""Parser tests: what each filter means (as an AST) and where each malformed one fails."""

from __future__ import annotations

import pytest

from traceduck.errors import InvalidFilterError
from traceduck.filters import And, Comparison, Field, Not, Or, parse_filter, to_filter_string
from traceduck.filters.parser import MAX_DEPTH


def attr(name: str) -> Field:
    return Field("attribute", name)


def tag(key: str) -> Field:
    return Field("tag", key=key)


def meta(key: str) -> Field:
    return Field("metadata", key=key)


def feedback(key: str) -> Field:
    return Field("feedback", key=key)


def expectation(key: str) -> Field:
    return Field("expectation", key=key)


def span(name: str, key: str | None = None) -> Field:
    return Field("span", name, key)


def cmp(fld: Field, op: str, value=None) -> Comparison:
    return Comparison(fld, op, value)


# -- every comparator on every field kind ---------------------------------------------------

NUMERIC_ATTRIBUTE_CASES = [
    (f"{name} {op} 5", cmp(attr(canonical), op, 5))
    for name, canonical in [
        ("timestamp_ms", "timestamp_ms"),
        ("execution_time_ms", "execution_time_ms"),
        ("end_time_ms", "end_time_ms"),
    ]
    for op in ["=", "!=", "<", "<=", ">", ">="]
]

STRING_ATTRIBUTE_CASES = [
    (f"{name} {op} 'v'", cmp(attr(name), op, "v"))
    for name in [
        "status",
        "name",
        "trace_id",
        "client_request_id",
        "request_preview",
        "response_preview",
    ]
    for op in ["=", "!=", "LIKE", "ILIKE", "RLIKE"]
] + [
    (f"{name} {op} ('a', 'b')", cmp(attr(name), op, ("a", "b")))
    for name in [
        "status",
        "name",
        "trace_id",
        "client_request_id",
        "request_preview",
        "response_preview",
    ]
    for op in ["IN", "NOT IN"]
]

KEYED_CASES = (
    [
        (f"{prefix}.k {op} 'v'", cmp(fld, op, "v"))
        for prefix, fld in [("tags", tag("k")), ("metadata", meta("k"))]
        for op in ["=", "!=", "LIKE", "ILIKE", "RLIKE"]
    ]
    + [
        (f"{prefix}.k {op} ('a', 'b')", cmp(fld, op, ("a", "b")))
        for prefix, fld in [("tags", tag("k")), ("metadata", meta("k"))]
        for op in ["IN", "NOT IN"]
    ]
    + [
        (f"{prefix}.k {op}", cmp(fld, op))
        for prefix, fld in [("tags", tag("k")), ("metadata", meta("k"))]
        for op in ["IS NULL", "IS NOT NULL"]
    ]
)

ASSESSMENT_CASES = (
    [
        (f"{prefix}.k {op} 0.5", cmp(fld, op, 0.5))
        for prefix, fld in [("feedback", feedback("k")), ("expectation", expectation("k"))]
        for op in ["=", "!=", "<", "<=", ">", ">="]
    ]
    + [
        (f"{prefix}.k {op} 'v'", cmp(fld, op, "v"))
        for prefix, fld in [("feedback", feedback("k")), ("expectation", expectation("k"))]
        for op in ["=", "!=", "LIKE", "ILIKE", "RLIKE"]
    ]
    + [
        (f"{prefix}.k {op} ('a', 'b')", cmp(fld, op, ("a", "b")))
        for prefix, fld in [("feedback", feedback("k")), ("expectation", expectation("k"))]
        for op in ["IN", "NOT IN"]
    ]
    + [
        (f"{prefix}.k {op}", cmp(fld, op))
        for prefix, fld in [("feedback", feedback("k")), ("expectation", expectation("k"))]
        for op in ["IS NULL", "IS NOT NULL"]
    ]
)

SPAN_CASES = (
    [
        (f"span.{name} {op} 'v'", cmp(span(name), op, "v"))
        for name in ["name", "type", "status"]
        for op in ["=", "!=", "LIKE", "ILIKE", "RLIKE"]
    ]
    + [
        (f"span.{name} {op} ('a', 'b')", cmp(span(name), op, ("a", "b")))
        for name in ["name", "type", "status"]
        for op in ["IN", "NOT IN"]
    ]
    + [
        (f"span.attributes.k {op} 'v'", cmp(span("attributes", "k"), op, "v"))
        for op in ["=", "!=", "LIKE", "ILIKE", "RLIKE"]
    ]
    + [
        (f"span.attributes.k {op} 2", cmp(span("attributes", "k"), op, 2))
        for op in ["=", "!=", "<", "<=", ">", ">="]
    ]
    + [
        ("span.attributes.k IN ('a', 'b')", cmp(span("attributes", "k"), "IN", ("a", "b"))),
        ("span.attributes.k NOT IN (1, 2)", cmp(span("attributes", "k"), "NOT IN", (1, 2))),
    ]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    NUMERIC_ATTRIBUTE_CASES + STRING_ATTRIBUTE_CASES + KEYED_CASES + ASSESSMENT_CASES + SPAN_CASES,
)
def test_every_comparator_on_every_field_kind(text, expected):
    assert parse_filter(text) == expected


# -- prefixes, aliases and MLflow-compatible field names --------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("attributes.status = 'OK'", cmp(attr("status"), "=", "OK")),
        ("attribute.status = 'OK'", cmp(attr("status"), "=", "OK")),
        ("trace.status = 'OK'", cmp(attr("status"), "=", "OK")),
        ("status = 'OK'", cmp(attr("status"), "=", "OK")),
        ("state = 'OK'", cmp(attr("status"), "=", "OK")),
        ("timestamp > 1", cmp(attr("timestamp_ms"), ">", 1)),
        ("execution_time > 1", cmp(attr("execution_time_ms"), ">", 1)),
        ("end_time > 1", cmp(attr("end_time_ms"), ">", 1)),
        ("request_id = 'x'", cmp(attr("trace_id"), "=", "x")),
        ("tag.k = 'v'", cmp(tag("k"), "=", "v")),
        ("request_metadata.k = 'v'", cmp(meta("k"), "=", "v")),
        ("span.attribute.k = 'v'", cmp(span("attributes", "k"), "=", "v")),
        # MLflow's SearchTraceUtils maps run_id to the metadata key mlflow.sourceRun.
        ("trace.run_id = 'r1'", cmp(meta("mlflow.sourceRun"), "=", "r1")),
    ],
)
def test_prefix_and_attribute_aliases_resolve_to_canonical_fields(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("mlflow.trace.user", "trace.user"),
        ("user.id", "trace.user"),
        ("enduser.id", "trace.user"),
        ("mlflow.trace.session", "trace.session"),
        ("session.id", "trace.session"),
        ("gen_ai.conversation.id", "trace.session"),
        ("trace.user", "trace.user"),
        ("other.key", "other.key"),
    ],
)
@pytest.mark.parametrize("prefix, make", [("tags", tag), ("metadata", meta)])
def test_identity_key_aliases_apply_to_tags_and_metadata(key, canonical, prefix, make):
    assert parse_filter(f"{prefix}.`{key}` = 'x'") == cmp(make(canonical), "=", "x")


def test_identity_key_aliases_do_not_apply_to_span_attributes():
    assert parse_filter("span.attributes.`user.id` = 'x'") == cmp(
        span("attributes", "user.id"), "=", "x"
    )


def test_unquoted_dotted_keys_keep_their_dots():
    # MLflow splits the identifier at the first '.', so the rest is the key.
    assert parse_filter("tags.mlflow.traceName = 'x'") == cmp(tag("mlflow.traceName"), "=", "x")
    assert parse_filter("span.attributes.gen_ai.request.model = 'x'") == cmp(
        span("attributes", "gen_ai.request.model"), "=", "x"
    )


# -- quoting and escaping --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tags.`trace.user` = 'x'", cmp(tag("trace.user"), "=", "x")),
        ("tags.\"my key\" = 'x'", cmp(tag("my key"), "=", "x")),
        ("`tags`.env = 'x'", cmp(tag("env"), "=", "x")),
        ("tags.`a``b` = 'x'", cmp(tag("a`b"), "=", "x")),
        ("tags.`a\\b` = 'x'", cmp(tag("a\\b"), "=", "x")),
        ('tags."a""b" = \'x\'', cmp(tag('a"b'), "=", "x")),
        ("tags.`and` = 'x'", cmp(tag("and"), "=", "x")),
        ("tags.and = 'x'", cmp(tag("and"), "=", "x")),
        ("`status` = 'x'", cmp(attr("status"), "=", "x")),
        ("tags.`with space` = 'x'", cmp(tag("with space"), "=", "x")),
    ],
)
def test_quoted_keys(text, expected):
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("'it''s'", "it's"),
        ("'it\\'s'", "it's"),
        ('"say ""hi"""', 'say "hi"'),
        ('"say \\"hi\\""', 'say "hi"'),
        ("'back\\\\slash'", "back\\slash"),
        ("'^v[0-9]+\\.[0-9]+'", "^v[0-9]+\\.[0-9]+"),
        ('"L\'Hosp"', "L'Hosp"),
        ("''", ""),
        ("'a\nb'", "a\nb"),
    ],
)
def test_string_escapes(literal, value):
    assert parse_filter(f"tags.k = {literal}") == cmp(tag("k"), "=", value)


def test_double_quoted_token_is_a_key_after_a_dot_and_a_string_after_a_comparator():
    assert parse_filter('tags."a b" = "a b"') == cmp(tag("a b"), "=", "a b")


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("-1", -1),
        ("+2.5", 2.5),
        ("1e3", 1000.0),
        ("1.5E-2", 0.015),
        (".5", 0.5),
        ("5.", 5.0),
        ("0", 0),
    ],
)
def test_number_formats(literal, value):
    node = parse_filter(f"timestamp_ms > {literal}")
    assert node == cmp(attr("timestamp_ms"), ">", value)
    assert type(node.value) is type(value)


def test_in_list_accepts_a_trailing_comma():
    assert parse_filter("tags.k IN ('a', 'b',)") == cmp(tag("k"), "IN", ("a", "b"))


def test_in_list_of_one_value():
    assert parse_filter("status IN ('OK')") == cmp(attr("status"), "IN", ("OK",))


def test_bare_true_and_false_compare_assessments_as_strings():
    assert parse_filter("feedback.is_correct = true") == cmp(feedback("is_correct"), "=", "true")
    assert parse_filter("feedback.is_correct != FALSE") == cmp(
        feedback("is_correct"), "!=", "false"
    )


def test_whitespace_is_optional_around_comparators():
    assert parse_filter("timestamp_ms>=100") == cmp(attr("timestamp_ms"), ">=", 100)
    assert parse_filter("tags.k!='v'") == cmp(tag("k"), "!=", "v")


# -- case rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "tags.k like 'v' and not status in ('OK') or tags.j is not null",
        "tags.k LIKE 'v' AND NOT status IN ('OK') OR tags.j IS NOT NULL",
        "tags.k Like 'v' And Not status In ('OK') Or tags.j Is Not Null",
    ],
)
def test_keywords_are_case_insensitive(text):
    expected = Or(
        (
            And((cmp(tag("k"), "LIKE", "v"), Not(cmp(attr("status"), "IN", ("OK",))))),
            cmp(tag("j"), "IS NOT NULL"),
        )
    )
    assert parse_filter(text) == expected


def test_keys_are_case_sensitive():
    assert parse_filter("tags.Env = 'x'") != parse_filter("tags.env = 'x'")


@pytest.mark.parametrize(
    "text", ["Tags.env = 'x'", "TRACE.status = 'x'", "Status = 'x'", "trace.STATUS = 'x'"]
)
def test_prefixes_and_attribute_names_are_case_sensitive(text):
    with pytest.raises(InvalidFilterError):
        parse_filter(text)


# -- boolean structure and precedence --------------------------------------------------------

A = cmp(tag("a"), "=", "1")
B = cmp(tag("b"), "=", "2")
C = cmp(tag("c"), "=", "3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tags.a = '1' OR tags.b = '2' AND tags.c = '3'", Or((A, And((B, C))))),
        ("tags.a = '1' AND tags.b = '2' OR tags.c = '3'", Or((And((A, B)), C))),
        ("(tags.a = '1' OR tags.b = '2') AND tags.c = '3'", And((Or((A, B)), C))),
        ("NOT tags.a = '1' AND tags.b = '2'", And((Not(A), B))),
        ("NOT (tags.a = '1' AND tags.b = '2')", Not(And((A, B)))),
        ("NOT NOT tags.a = '1'", Not(Not(A))),
        ("tags.a = '1' AND tags.b = '2' AND tags.c = '3'", And((A, B, C))),
        ("tags.a = '1' AND (tags.b = '2' AND tags.c = '3')", And((A, And((B, C))))),
        ("((tags.a = '1'))", A),
        ("tags.a = '1' OR NOT tags.b = '2' AND tags.c = '3'", Or((A, And((Not(B), C))))),
    ],
)
def test_precedence_is_not_then_and_then_or(text, expected):
    assert parse_filter(text) == expected


def test_empty_and_none_mean_no_filter():
    assert parse_filter("") is None
    assert parse_filter(None) is None


def test_non_string_filter_is_a_type_error():
    with pytest.raises(TypeError):
        parse_filter(42)  # type: ignore[arg-type]


def test_positions_are_kept_but_ignored_by_equality():
    node = parse_filter("status = 'OK' AND  tags.k = 'v'")
    assert isinstance(node, And)
    assert [item.field.pos for item in node.items] == [0, 19]
    assert node == parse_filter("status='OK' AND tags.k='v'")


def test_nesting_up_to_the_limit_parses():
    text = "(" * MAX_DEPTH + "status = 'OK'" + ")" * MAX_DEPTH
    assert parse_filter(text) == cmp(attr("status"), "=", "OK")


# -- examples from MLflow's documentation and tests ------------------------------------------

# docs/docs/genai/tracing/search-traces.mdx in mlflow/mlflow (3.x), "Example Queries"; the
# Databricks "Search traces programmatically" quick reference; and MLflow's
# tests/utils/test_search_utils.py (test_trace_search_filter_with_feedback / _with_span).
MLFLOW_EXAMPLES = [
    "trace.name = 'predict'",
    "trace.name LIKE '%inference%'",
    "trace.name ILIKE '%PREDICT%'",
    "trace.name RLIKE '^(predict|inference)_[0-9]+'",
    "trace.status = 'OK'",
    'trace.status = "OK"',
    "trace.status != 'OK'",
    "trace.execution_time_ms > 1000",
    "trace.execution_time_ms >= 200 AND trace.execution_time_ms <= 800",
    "trace.timestamp_ms > 1749006880539",
    "trace.end_time_ms > 1762408895531",
    "trace.client_request_id = 'abc'",
    "trace.run_id = 'run_id_123456'",
    "tag.model_name = 'gpt-4'",
    "tag.model_name LIKE 'gpt-%'",
    "tag.environment ILIKE '%prod%'",
    "tag.version RLIKE '^v[0-9]+\\.[0-9]+'",
    'metadata.user_id LIKE "user%"',
    "span.name = 'llm_call'",
    "span.name LIKE '%embedding%'",
    "span.type = 'LLM'",
    'span.type RLIKE "^LLM"',
    "span.type IN ('LLM', 'CHAIN')",
    "span.type NOT IN ('UNKNOWN')",
    "span.attributes.model_version LIKE '%v2%'",
    "span.attributes.temperature LIKE '%0.7%'",
    "span.attributes.model_version ILIKE '%V2%'",
    "feedback.rating = 'positive'",
    "feedback.user_comment LIKE '%helpful%'",
    "feedback.is_correct = true",
    "feedback.score = 0.95",
    "feedback.score >= 0.7",
    "feedback.category IN ('good', 'excellent')",
    "feedback.category NOT IN ('bad', 'poor')",
    "expectation.accuracy = 'high'",
    "expectation.label ILIKE '%success%'",
    "attributes.status = 'OK' AND tags.environment = 'production'",
    "tags.`mlflow.traceName` = 'my_function'",
    "metadata.`mlflow.user` = 'alice@company.com'",
    "metadata.`mlflow.trace.session` = 'session_abc'",
    "tags.version IS NULL",
    "tags.version IS NOT NULL",
    "`tags`.source_name = 'a notebook'",
    'tags."t.a.g" = "a"',
    "timestamp_ms > 1 and status = 'OK'",
    """
        span.name LIKE '%llm%'
        AND feedback.rating = 'positive'
        AND trace.execution_time_ms < 1000
    """,
]


@pytest.mark.parametrize("text", MLFLOW_EXAMPLES)
def test_mlflow_examples_parse(text):
    node = parse_filter(text)
    assert node is not None
    assert parse_filter(to_filter_string(node)) == node


def test_mlflow_session_metadata_example_means_the_canonical_session_key():
    node = parse_filter("metadata.`mlflow.trace.session` = 'session_abc'")
    assert node == cmp(meta("trace.session"), "=", "session_abc")


def test_mlflow_multiline_and_filter_builds_one_and_node():
    node = parse_filter(MLFLOW_EXAMPLES[-1])
    assert node == And(
        (
            cmp(span("name"), "LIKE", "%llm%"),
            cmp(feedback("rating"), "=", "positive"),
            cmp(attr("execution_time_ms"), "<", 1000),
        )
    )


# -- printing ---------------------------------------------------------------------------------


def test_printer_quotes_every_key_and_escapes_strings():
    node = And((cmp(tag("a`b"), "=", "it's \\ok"), Not(Or((A, B)))))
    assert (
        to_filter_string(node)
        == "tags.`a``b` = 'it''s \\\\ok' AND NOT (tags.`a` = '1' OR tags.`b` = '2')"
    )
    assert parse_filter(to_filter_string(node)) == node


# -- malformed filters and the exact position of the error -------------------------------------

MALFORMED = [
    # (filter, position, words the message must contain)
    ("foo.bar = 'x'", 0, "unknown prefix"),
    ("Tags.env = 'x'", 0, "unknown prefix"),
    ("status = 'OK' AND bogus.x = 'y'", 18, "unknown prefix"),
    ("nonsense = 'x'", 0, "unknown trace attribute"),
    ("Status = 'OK'", 0, "unknown trace attribute"),
    ("trace.bogus = 1", 6, "unknown trace attribute"),
    ("span.foo = 'x'", 5, "unknown span field"),
    ("tags = 'x'", 5, "missing key"),
    ("tags. = 'x'", 6, "missing key"),
    ("tags.'k' = 'x'", 5, "missing key"),
    ("span.attributes = 'x'", 16, "missing key"),
    ("tags.`` = 'x'", 5, "empty key"),
    ("status > 'OK'", 7, "comparator >"),
    ("timestamp_ms LIKE 5", 13, "comparator LIKE"),
    ("tags.env < 'a'", 9, "comparator <"),
    ("span.name >= 'a'", 10, "comparator >="),
    ("status IS NULL", 7, "comparator IS NULL"),
    ("span.type IS NOT NULL", 10, "comparator IS NOT NULL"),
    ("timestamp_ms = '5'", 15, "expected a number"),
    ("execution_time_ms > 'abc'", 20, "expected a number"),
    ("feedback.score > 'high'", 17, "expected a number"),
    ("status = 5", 9, "quoted string"),
    ("tags.env = 1", 11, "quoted string"),
    ("tags.env IN ('a', 1)", 18, "quoted string"),
    ("feedback.category IN ('a', 1)", 27, "mixes strings and numbers"),
    ("feedback.flag > true", 16, "true and false"),
    ("tags.env = 'abc", 11, "unterminated string"),
    ('tags.env = "abc', 11, "unterminated string"),
    ("tags.`env = 'x'", 5, "unterminated backtick"),
    ("`status = 'x'", 0, "unterminated backtick"),
    ("tags.env 'x'", 9, "missing comparator"),
    ("tags.env", 8, "missing comparator"),
    ("tags.env IS 'a'", 12, "expected NULL"),
    ("tags.env NOT LIKE 'a'", 13, "expected IN after NOT"),
    ("status <> 'OK'", 7, "'<>'"),
    ("tags.env =", 10, "missing value"),
    ("tags.env = AND status = 'OK'", 11, "missing value"),
    ("status == 'OK'", 8, "missing value"),
    ("tags.env = prod", 11, "quote strings"),
    ("tags.env = `prod`", 11, "backticks quote keys"),
    ("status = 'OK' name = 'x'", 14, "missing AND or OR"),
    ("status = 'OK' NOT name = 'x'", 14, "missing AND or OR"),
    ("status = 'OK' AND AND name = 'x'", 18, "AND right after AND"),
    ("status = 'OK' OR AND name = 'x'", 17, "AND right after OR"),
    ("AND status = 'OK'", 0, "cannot start with AND"),
    ("  OR status = 'OK'", 2, "cannot start with OR"),
    ("status = 'OK' AND", 17, "dangling AND"),
    ("status = 'OK' OR ", 17, "dangling OR"),
    ("NOT", 3, "dangling NOT"),
    ("()", 1, "empty parentheses"),
    ("status = 'OK' AND ( )", 20, "empty parentheses"),
    ("(status = 'OK'", 14, "missing ')'"),
    ("((status = 'OK')", 16, "missing ')'"),
    ("status = 'OK')", 13, "unbalanced ')'"),
    ("status = 'OK' AND (name = 'x' OR)", 32, "unexpected ')'"),
    ("tags.env IN ()", 13, "empty IN list"),
    ("tags.env NOT IN ( )", 18, "empty NOT IN list"),
    ("tags.env IN 'a'", 12, "expected '('"),
    ("tags.env IN ('a' 'b')", 17, "expected ','"),
    ("tags.env IN ('a',", 17, "missing ')'"),
    ("status = 'OK' 'x'", 14, "unexpected string"),
    ("status = 'OK' ,", 14, "unexpected ','"),
    ("status = 'OK' #", 14, "unexpected character"),
    ("tags.env = 'a'; DROP TABLE traces", 14, "unexpected character"),
    ("tags.a-b = 'x'", 6, "unexpected character"),
    ("   ", 3, "blank"),
    ("\n\t", 2, "blank"),
    ("tags.env RLIKE '(unclosed'", 15, "invalid regular expression"),
    ("tags.env RLIKE '(?=lookahead)'", 15, "invalid regular expression"),
    ("tags.1abc = 'x'", 5, "must start with a letter"),
    ("timestamp_ms > 12abc", 15, "invalid number"),
    ("timestamp_ms > 1.2.3", 15, "invalid number"),
    ("timestamp_ms > 99999999999999999999", 15, "out of range"),
    ("timestamp_ms > 1e999", 15, "out of range"),
    ("span.name.x = 'a'", 9, "takes no key"),
    ("tags.`a`.b = 'x'", 8, "after a quoted key"),
    ("tags.a.`b` = 'x'", 7, "quote the whole key"),
    ("tags .env = 'x'", 4, "space before"),
    ("tags. env = 'x'", 5, "space after"),
    ("1 = 1", 0, "expected a condition"),
    ("'OK' = status", 0, "expected a condition"),
    ("(" * (MAX_DEPTH + 1) + "status = 'OK'" + ")" * (MAX_DEPTH + 1), MAX_DEPTH, "levels deep"),
    ("NOT " * (MAX_DEPTH + 1) + "status = 'OK'", 4 * MAX_DEPTH, "levels deep"),
]


@pytest.mark.parametrize(("text", "position", "words"), MALFORMED)
def test_malformed_filter_error_position(text, position, words):
    with pytest.raises(InvalidFilterError) as info:
        parse_filter(text)
    assert info.value.position == position, str(info.value)
    assert words in info.value.message
    assert info.value.text == text


def test_invalid_filter_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse_filter("status >")


def test_error_message_cuts_very_long_names():
    with pytest.raises(InvalidFilterError) as info:
        parse_filter("x" * 500 + " = 'a'")
    assert len(info.value.message) < 400
