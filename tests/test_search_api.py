"""search_traces / search_traces_page / count_traces / get_trace at the integration level."""

from __future__ import annotations

import random
import uuid

import pytest

import traceduck
from traceduck.raw_spans import RawSpans
from traceduck.store.duckdb_store import open_store

from conftest import stored_traces

BASE_MS = 1_700_000_000_000

DATAFRAME_COLUMNS = [
    "trace_id", "trace", "client_request_id", "state", "request_time", "execution_duration",
    "request", "response", "trace_metadata", "tags", "spans", "assessments",
]  # fmt: skip


def write_traces(path: str, starts_ms: list[int], name: str = "bulk", rng: random.Random | None = None) -> list[str]:
    """Store one root span per start time straight through the store; returns the trace ids."""
    rng = rng or random.Random(len(starts_ms))
    store = open_store(path)
    store.acquire_writer()
    try:
        raw = RawSpans()
        resource = raw.resource({"service.name": "bulk-writer"})
        ids = []
        for i, start_ms in enumerate(starts_ms):
            trace_id = uuid.UUID(int=rng.getrandbits(128)).hex
            ids.append(trace_id)
            raw.add(
                trace_id, format(rng.getrandbits(64) | 1, "016x"), None, False, name, "INTERNAL",
                start_ms * 1_000_000, (start_ms + 5) * 1_000_000, "ERROR" if i % 3 == 0 else "OK", None,
                {"traceduck.span_type": "CHAIN", "traceduck.inputs": f'{{"i":{i}}}',
                 "traceduck.trace": f'{{"tags":{{"parity":"{"even" if i % 2 == 0 else "odd"}"}}}}'},
                None, resource,
            )  # fmt: skip
        store.write(raw)
    finally:
        store.release_writer()
    return ids


def expected_order(ids: list[str], starts_ms: list[int]) -> list[str]:
    """Newest first; ties by trace id, descending (the default order)."""
    return [i for _, i in sorted(zip(starts_ms, ids), reverse=True)]


@pytest.fixture(scope="module")
def bulk(tmp_path_factory):
    """120 traces written once for the read-only tests: (path, trace ids, start times); pairs share a ms."""
    path = str(tmp_path_factory.mktemp("bulk") / "bulk.duckdb")
    starts = [BASE_MS + i // 2 for i in range(120)]
    return path, write_traces(path, starts), starts


# -- search_traces ---------------------------------------------------------------------------


@traceduck.trace
def chat(message):
    traceduck.update_current_trace(client_request_id=f"req-{message}", tags={"task": "chat"},
                                   metadata={"app_version": "1.4.2"})  # fmt: skip
    return answer(message)


@traceduck.trace
def answer(message):
    return message[::-1]


def test_search_traces_returns_a_dataframe_with_mlflow_columns(configured):
    chat("hello")
    assert traceduck.flush()
    df = traceduck.search_traces()
    assert list(df.columns) == DATAFRAME_COLUMNS
    assert len(df) == 1


def test_dataframe_row_holds_the_trace(configured):
    chat("hello")
    assert traceduck.flush()
    row = traceduck.search_traces().iloc[0]
    trace = row["trace"]
    assert isinstance(trace, traceduck.Trace)
    assert row["trace_id"] == trace.info.trace_id
    assert (row["client_request_id"], row["state"]) == ("req-hello", "OK")
    assert (row["request"], row["response"]) == ({"message": "hello"}, "olleh")
    assert row["trace_metadata"]["app_version"] == "1.4.2"
    assert row["tags"]["task"] == "chat"
    assert sorted(s["name"] for s in row["spans"]) == ["answer", "chat"]
    assert row["assessments"] == []


def test_search_traces_list_returns_trace_objects(configured):
    chat("a")
    chat("b")
    traces = stored_traces()
    assert len(traces) == 2
    assert all(isinstance(t, traceduck.Trace) for t in traces)
    assert sorted(t.info.client_request_id for t in traces) == ["req-a", "req-b"]


def test_max_results_none_returns_every_trace(bulk):
    path, ids, _ = bulk
    found = traceduck.search_traces(max_results=None, return_type="list", store=path)
    assert sorted(t.info.trace_id for t in found) == sorted(ids)


def test_max_results_limits_to_the_newest(bulk):
    path, ids, starts = bulk
    found = traceduck.search_traces(max_results=7, return_type="list", store=path)
    assert [t.info.trace_id for t in found] == expected_order(ids, starts)[:7]


def test_default_order_is_newest_first_with_ties_by_trace_id(tmp_path):
    store_path = str(tmp_path / "ties.duckdb")
    starts = [BASE_MS + 10] * 5 + [BASE_MS + 20, BASE_MS, BASE_MS + 10, BASE_MS + 30] + [BASE_MS] * 3
    ids = write_traces(store_path, starts)
    found = traceduck.search_traces(return_type="list", store=store_path, include_spans=False)
    assert [t.info.trace_id for t in found] == expected_order(ids, starts)


def test_include_spans_false_returns_traces_without_spans(configured):
    chat("hello")
    assert traceduck.flush()
    (trace,) = traceduck.search_traces(return_type="list", include_spans=False)
    assert trace.data.spans == []
    assert trace.info.client_request_id == "req-hello"


def test_include_spans_false_dataframe_has_empty_spans_and_previews(configured):
    chat("hello")
    assert traceduck.flush()
    row = traceduck.search_traces(include_spans=False).iloc[0]
    assert row["spans"] == []
    assert row["request"] == row["trace"].info.request_preview
    assert row["response"] == row["trace"].info.response_preview


def test_filter_selects_matching_traces(bulk):
    path, ids, _ = bulk
    found = traceduck.search_traces("tags.parity = 'even' AND status = 'ERROR'", max_results=None,
                                    return_type="list", store=path)  # fmt: skip
    assert sorted(t.info.trace_id for t in found) == sorted(ids[i] for i in range(0, 120, 6))


def test_get_trace_returns_the_trace_with_its_spans(configured):
    trace_ids = []

    @traceduck.trace
    def handler():
        trace_ids.append(traceduck.get_current_trace_id())
        return answer("abc")

    handler()
    assert traceduck.flush()
    trace = traceduck.get_trace(trace_ids[0])
    assert trace.info.trace_id == trace_ids[0]
    assert len(trace.data.spans) == 2


def test_get_trace_accepts_the_uuid_form_of_an_id(store_path):
    (trace_id,) = write_traces(store_path, [BASE_MS])
    assert traceduck.get_trace(str(uuid.UUID(trace_id)).upper(), store=store_path).info.trace_id == trace_id


def test_get_trace_of_an_unknown_id_returns_none(bulk):
    assert traceduck.get_trace(uuid.uuid4().hex, store=bulk[0]) is None


def test_invalid_filter_error_carries_the_position(bulk):
    text = "status = 'OK' AND bogus.field = 1"
    with pytest.raises(traceduck.InvalidFilterError) as info:
        traceduck.search_traces(text, store=bulk[0])
    assert info.value.position == text.index("bogus")


@pytest.mark.parametrize(
    "search",
    [
        lambda f, path: traceduck.search_traces_page(f, store=path),
        lambda f, path: traceduck.count_traces(f, store=path),
    ],
    ids=["search_traces_page", "count_traces"],
)
def test_invalid_filter_error_from_every_search_function(bulk, search):
    with pytest.raises(traceduck.InvalidFilterError) as info:
        search("name = 'unterminated", bulk[0])
    assert info.value.position == len("name = ")


@pytest.mark.parametrize(
    "filter_string",
    [None, "status = 'ERROR'", "tags.parity = 'odd'", f"timestamp_ms > {BASE_MS + 40}",
     "name = 'nothing-here'", "status = 'OK' OR tags.parity = 'even'"],
)  # fmt: skip
def test_count_traces_agrees_with_search_traces(bulk, filter_string):
    path = bulk[0]
    found = traceduck.search_traces(filter_string, max_results=None, return_type="list",
                                    include_spans=False, store=path)  # fmt: skip
    assert traceduck.count_traces(filter_string, store=path) == len(found)


# -- search_traces_page ----------------------------------------------------------------------


def walk(path: str, page_size: int = 100, between_pages=None, **kwargs) -> list[str]:
    seen: list[str] = []
    token = None
    while True:
        page = traceduck.search_traces_page(max_results=page_size, page_token=token, include_spans=False,
                                            store=path, **kwargs)  # fmt: skip
        assert len(page.traces) <= page_size
        seen.extend(t.info.trace_id for t in page.traces)
        token = page.next_page_token
        if token is None:
            return seen
        if between_pages is not None:
            between_pages()


def test_paging_visits_10000_traces_exactly_once_in_order(store_path):
    # Many traces share a millisecond, so ties straddle page boundaries.
    starts = [BASE_MS + i // 7 for i in range(10_000)]
    ids = write_traces(store_path, starts)
    seen = walk(store_path)
    assert len(seen) == 10_000
    assert seen == expected_order(ids, starts)


def test_paging_with_a_filter_and_order_visits_each_match_once(bulk):
    path, ids, _ = bulk
    seen = walk(path, page_size=13, filter_string="tags.parity = 'odd'", order_by=["timestamp_ms ASC"])
    assert len(seen) == len(set(seen)) == 60
    assert set(seen) == {ids[i] for i in range(1, 120, 2)}


def test_last_page_has_no_next_page_token(bulk):
    path = bulk[0]
    first = traceduck.search_traces_page(max_results=100, include_spans=False, store=path)
    last = traceduck.search_traces_page(max_results=100, page_token=first.next_page_token,
                                        include_spans=False, store=path)  # fmt: skip
    assert first.next_page_token is not None
    assert (len(last.traces), last.next_page_token) == (20, None)


def test_traces_written_between_pages_never_repeat_or_skip_older_ones(store_path):
    starts = [BASE_MS + i // 4 for i in range(300)]
    original = write_traces(store_path, starts)
    rng = random.Random(7)
    added: list[str] = []

    def write_more():
        newer = [BASE_MS + 1000 + rng.randrange(100) for _ in range(10)]  # newer than everything
        among = [rng.choice(starts) for _ in range(10)]  # same milliseconds as older traces
        added.extend(write_traces(store_path, newer + among, name="late", rng=rng))

    seen = walk(store_path, page_size=50, between_pages=write_more)
    assert len(added) > 0
    assert len(seen) == len(set(seen)), "a trace was returned twice"
    assert set(original) <= set(seen), "an older trace was skipped"


def test_page_token_of_another_filter_is_rejected(bulk):
    path = bulk[0]
    page = traceduck.search_traces_page("status = 'OK'", max_results=2, store=path)
    assert page.next_page_token is not None
    with pytest.raises(traceduck.InvalidPageTokenError):
        traceduck.search_traces_page("status = 'ERROR'", max_results=2, page_token=page.next_page_token,
                                     store=path)  # fmt: skip


def test_page_token_of_another_order_is_rejected(bulk):
    path = bulk[0]
    page = traceduck.search_traces_page(max_results=2, store=path)
    with pytest.raises(traceduck.InvalidPageTokenError):
        traceduck.search_traces_page(max_results=2, order_by=["timestamp_ms ASC"],
                                     page_token=page.next_page_token, store=path)  # fmt: skip


@pytest.mark.parametrize(
    "token",
    ["garbage", "", "!!!not base64!!!", "eyJ2IjoxfQ", "eyJ2IjoxLCJrIjpbXSwicSI6IngifQ", "a" * 10_000],
)
def test_garbage_page_token_is_rejected(bulk, token):
    with pytest.raises(traceduck.InvalidPageTokenError):
        traceduck.search_traces_page(max_results=2, page_token=token, store=bulk[0])


def test_invalid_page_token_error_is_a_value_error():
    assert issubclass(traceduck.InvalidPageTokenError, ValueError)
    assert issubclass(traceduck.InvalidPageTokenError, traceduck.TraceduckError)
