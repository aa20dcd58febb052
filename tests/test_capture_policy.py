"""Opt-in capture per facet: what a disabled facet covers never reaches the DuckDB file.

Each test records one trace that carries every facet, each marked with a string of its own, then
reads the file directly (every value of every table) to prove what was and was not stored.
"""

from __future__ import annotations

import duckdb
import pytest

import traceduck as td
from traceduck.governance.policy import (
    CONTEXT_FACETS,
    FACETS,
    CapturePolicy,
    ProjectSettings,
    facet_of,
    parse_retention,
    parse_size,
)

#: A string per facet, found in the file only when the facet is captured (token usage and
#: latency are numbers: TOKENS and LATENCY_MS).
MARKS = {facet: f"MARK-{facet.replace('.', '-').upper()}-7f3a" for facet in FACETS
         if facet not in ("token_usage", "latency")}
TOKENS = 987_654
LATENCY_MS = 4321.5
HOUR_NS = 3600 * 10**9


def record_every_facet() -> str:
    """One trace carrying every facet; returns its id."""
    ids: list[str] = []

    @td.trace(span_type="CHAIN")
    def handle(question: str) -> str:
        ids.append(td.get_current_trace_id())
        td.update_current_trace(
            user=MARKS["user_identity"],
            metadata={"app_note": MARKS["custom_metadata"], **{c: MARKS[c] for c in CONTEXT_FACETS}},
            tags={"team": MARKS["custom_metadata"]},
        )
        with td.start_span("llm", span_type="LLM", attributes={
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": TOKENS,
            "gen_ai.usage.output_tokens": 12, "traceduck.llm.latency_ms": LATENCY_MS,
            "enduser.id": MARKS["user_identity"], "custom.attribute": MARKS["custom_metadata"],
        }) as span:  # fmt: skip
            span.set_inputs({"messages": [{"role": "user", "content": question}]})
            span.set_outputs({"choices": [{"message": {"content": MARKS["response"]}}],
                              "usage": {"prompt_tokens": TOKENS}})  # fmt: skip
        return f"answer {MARKS['response']}"

    handle(f"question {MARKS['prompt']}")
    assert td.flush()
    return ids[0]


def file_contents(path: str) -> str:
    """Every value of every table of the DuckDB file, read directly (traceduck shut down first)."""
    td.shutdown()
    con = duckdb.connect(path, read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
                                            " AND table_name NOT IN ('audit_log', 'projects')").fetchall()]  # fmt: skip
        return "\n".join(repr(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)
    finally:
        con.close()


def rows(path: str, sql: str) -> list[tuple]:
    con = duckdb.connect(path, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_local_store_captures_every_facet_by_default(store_path, provider):
    td.configure(store_path, tracer_provider=provider)
    record_every_facet()
    text = file_contents(store_path)
    for facet, mark in MARKS.items():
        assert mark in text, f"{facet} was not stored"
    assert str(TOKENS) in text and str(LATENCY_MS) in text
    assert rows(store_path, "SELECT count(*) FROM traces WHERE end_time IS NOT NULL") == [(1,)]


@pytest.mark.parametrize("facet", list(MARKS))
def test_a_disabled_facet_never_reaches_the_file(store_path, provider, facet):
    td.configure(store_path, tracer_provider=provider, capture=[f for f in FACETS if f != facet])
    record_every_facet()
    text = file_contents(store_path)
    assert MARKS[facet] not in text, f"{facet} reached the file although it is not captured"
    for other, mark in MARKS.items():
        if other != facet:
            assert mark in text, f"{other} is captured but was not stored"


def test_without_token_usage_no_token_count_or_cost_is_stored(store_path, provider):
    td.configure(store_path, tracer_provider=provider, capture=[f for f in FACETS if f != "token_usage"])
    record_every_facet()
    text = file_contents(store_path)
    assert str(TOKENS) not in text and "gen_ai.usage" not in text
    assert rows(store_path, "SELECT model, input_tokens, output_tokens FROM llm_calls") == [("gpt-4o", None, None)]
    assert MARKS["prompt"] in text and MARKS["response"] in text


def test_without_latency_times_are_kept_to_the_hour_with_no_durations(store_path, provider):
    td.configure(store_path, tracer_provider=provider, capture=[f for f in FACETS if f != "latency"])
    trace_id = record_every_facet()
    text = file_contents(store_path)
    assert str(LATENCY_MS) not in text and "latency_ms" not in text
    spans = rows(store_path, "SELECT start_time_ns, end_time_ns FROM spans")
    assert spans and all(start % HOUR_NS == 0 and end is None for start, end in spans)
    traces = rows(store_path, "SELECT request_time, execution_duration, end_time FROM traces")
    assert traces == [(spans[0][0] // 10**6, None, None)]
    assert rows(store_path, "SELECT latency_ms FROM llm_calls") == [(None,)]
    assert td.get_trace(trace_id, store=store_path) is not None  # still found, ordered by its hour


def test_capturing_nothing_stores_nothing_and_counts_the_spans(store_path, provider):
    td.configure(store_path, tracer_provider=provider, capture="none")
    record_every_facet()
    assert td.stats()["uncaptured_spans"] == 2 and td.stats()["written_spans"] == 0
    assert rows(store_path, "SELECT (SELECT count(*) FROM traces) + (SELECT count(*) FROM spans)") == [(0,)]


def test_a_policy_change_applies_to_new_data_only(store_path, provider):
    td.configure(store_path, tracer_provider=provider, capture="all")
    before = record_every_facet()
    td.configure(store_path, tracer_provider=provider, capture="response,latency")
    record_every_facet()
    old = td.get_trace(before, store=store_path)
    assert MARKS["prompt"] in old.info.request_preview, "the change reached data stored before it"
    previews = rows(store_path, "SELECT request_preview FROM traces ORDER BY stored_at")
    assert previews[1] == (None,)


def test_configure_records_policy_changes_in_the_audit_log(store_path, provider):
    td.configure(store_path, tracer_provider=provider, capture="prompt,response", pii="detect")
    td.configure(store_path, tracer_provider=provider)  # nothing given: the stored settings stay
    assert td.get_project_settings("default", store=store_path) == ProjectSettings(
        CapturePolicy(frozenset({"prompt", "response"})), pii="detect")
    events = td.audit_events(store=store_path)
    assert [(e.action, e.actor) for e in events] == [("capture_policy.changed", "sdk"), ("pii_mode.changed", "sdk")]
    assert events[0].before["capture"]["latency"] is True and events[0].after["capture"]["latency"] is False
    assert events[1].before == {"pii": "off", "configured": False} and events[1].after == {"pii": "detect"}


def test_settings_belong_to_the_configured_project(store_path, provider):
    td.configure(store_path, tracer_provider=provider, project="chat-app", capture="none")
    with td.start_span("work"):
        pass
    assert td.flush()
    assert td.get_project_settings("chat-app", store=store_path).captures_nothing
    assert td.get_project_settings("default", store=store_path) is None


def test_the_cli_sets_and_shows_a_project(store_path):
    from _collector import traceduck_cli  # noqa: PLC0415

    out = traceduck_cli("project", "set", "chat", "--store", store_path, "--capture", "prompt,context",
                        "--pii", "redact", "--retention", "90d", "--max-size", "500MB").stdout  # fmt: skip
    assert "capture    prompt,context.user_group" in out
    shown = traceduck_cli("project", "show", "chat", "--store", store_path).stdout
    assert "pii        redact" in shown and "retention  90d" in shown and "max size   500MB" in shown
    assert [e.actor.startswith("cli:") for e in td.audit_events(store=store_path)] == [True, True, True]


# -- the values ---------------------------------------------------------------------------------


def test_capture_values_in_their_cli_forms():
    assert CapturePolicy.parse("all").captures_all and CapturePolicy.parse("none").facets == frozenset()
    assert CapturePolicy.parse("inputs, outputs,tokens").facets == {"prompt", "response", "token_usage"}
    assert CapturePolicy.parse("context").facets == set(CONTEXT_FACETS)
    assert CapturePolicy.parse("code_owner").facets == {"context.code_owner"}
    assert CapturePolicy.parse({"prompt": True, "response": False}).facets == {"prompt"}
    with pytest.raises(ValueError, match="unknown capture facet"):
        CapturePolicy.parse("prompt,passwords")


def test_size_and_retention_values():
    assert parse_size("500MB") == 500_000_000 and parse_size("1GiB") == 2**30 and parse_size("none") is None
    assert [parse_retention(v) for v in ("30d", "90", 120, "none")] == [30, 90, 120, None]
    for bad in ("45d", "forever"):
        with pytest.raises(ValueError, match="30d, 90d, 120d, none"):
            parse_retention(bad)
    with pytest.raises(ValueError):
        parse_size("lots")


def test_which_facet_a_key_belongs_to():
    assert facet_of("trace.user") == facet_of("enduser.id") == facet_of("user.email") == "user_identity"
    assert facet_of("gen_ai.usage.input_tokens") == facet_of("traceduck.llm.cost_usd") == "token_usage"
    assert facet_of("traceduck.llm.time_to_first_token_ms") == facet_of("http.server.duration") == "latency"
    assert facet_of("gen_ai.input.messages") == "prompt" and facet_of("gen_ai.output.messages") == "response"
    assert facet_of("context.routing") == "context.routing"
    assert facet_of("app_version") == facet_of("my.attribute") == "custom_metadata"
    assert facet_of("gen_ai.request.model") is None and facet_of("trace.session") is None
