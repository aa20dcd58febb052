"""Write a batch of raw spans into DuckDB: spans and trace rows in one transaction.

The per-span work happens in DuckDB (GIL released, vectorised): parsing the attributes,
extracting inputs, outputs and trace fields, merging metadata, auto-tags and previews. Two
exceptions are done in Python: the trace rows of a small batch of plain traces (see
:mod:`.plain_rows`: cheaper than planning the SQL statement), and traces that must be merged with
something already known (see :mod:`traceduck.trace_rows`).
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from ..raw_spans import RawSpans
from ..roots import PREVIEW_CHARS
from ..trace_rows import TRACE_COLUMNS, TraceRow
from . import plain_rows
from .assessments import JOIN_PENDING_SQL
from .recent import RecentSpans


#: Trace fields waiting for a root span that has not been stored yet.
MAX_PENDING_PATCHES = 10_000


def _attr(key: str) -> str:
    """Text of span attribute ``key`` from the attributes JSON (a constant of ours, never input)."""
    return "json_extract_string(attributes, '$.\"" + key + "\"')"


def _json_map(expr: str, value_type: str) -> str:
    return f"TRY_CAST(TRY_CAST({expr} AS JSON) AS MAP(VARCHAR, {value_type}))"


def _string_forms(map_sql: str) -> str:
    """MAP(VARCHAR, JSON) -> MAP(VARCHAR, VARCHAR) of each value's string form (see metadata.py)."""
    return (
        f"map_from_entries(list_transform(map_entries({map_sql}), lambda e: {{'key': e.key, 'value': "
        "CASE json_type(e.value) WHEN 'OBJECT' THEN coalesce(json_extract_string(e.value, '$.url'),"
        " json_extract_string(e.value, '$.value'))"
        # numbers as the direct JSON -> VARCHAR cast of the fast path renders them
        " WHEN 'DOUBLE' THEN CAST(CAST(e.value AS DOUBLE) AS VARCHAR)"
        " ELSE json_extract_string(e.value, '$') END}))"
    )


def _entries(*pairs: tuple[str, str]) -> str:
    """A MAP(VARCHAR, JSON) of the pairs whose value is not NULL."""
    items = ", ".join(f"{{'key': '{key}', 'value': to_json({value})}}" for key, value in pairs)
    return f"map_from_entries(list_filter([{items}], lambda e: e.value IS NOT NULL))"


def _preview(column: str) -> str:
    return (
        f"CASE WHEN length({column}) > {PREVIEW_CHARS} THEN left({column}, {PREVIEW_CHARS - 3}) || '...'"
        f" ELSE {column} END"
    )


_EMPTY_JSON_MAP = "MAP {}::MAP(VARCHAR, JSON)"
_EMPTY_TEXT_MAP = "MAP {}::MAP(VARCHAR, VARCHAR)"

_SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "project", "name", "span_type", "kind",
    "start_time_ns", "end_time_ns", "status", "status_message", "attributes", "inputs",
    "outputs", "events",
)  # fmt: skip
_SPANS_SELECT = (
    "SELECT CAST(trace_id AS UUID) AS trace_id, span_id, parent_span_id,"
    " coalesce(project, $default_project) AS project, name, span_type, kind, start_time_ns,"
    " end_time_ns, status, status_message, attributes, inputs, outputs, events FROM _td_raw"
)

def implicit_metadata(resource_json: str, defaults: str | None) -> str | None:
    """JSON of the metadata a root gets without the application setting it: the OTel Resource's
    environment, service name and version, then the configure() defaults."""
    try:
        resource = json.loads(resource_json) if resource_json else {}
    except ValueError:
        resource = {}
    found: dict[str, Any] = {}
    environment = resource.get("deployment.environment.name", resource.get("deployment.environment"))
    if environment is not None:
        found["trace.environment"] = str(environment)
    service = resource.get("service.name")
    if service and not str(service).startswith("unknown_service"):
        found["service.name"] = str(service)
    if resource.get("service.version") is not None:
        found["service.version"] = str(resource["service.version"])
    if defaults:
        try:
            parsed = json.loads(defaults)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            found.update(parsed)
    return json.dumps(found) if found else None


def _implicit_table(raw: RawSpans) -> pa.Table:
    """One row per distinct (resource, defaults) of the batch's roots: computed once, not per span."""
    keys = sorted(raw.index.root_sources, key=lambda p: (p[0], p[1] or ""))
    implicit = [implicit_metadata(raw.resources[k[0]] if k[0] < len(raw.resources) else "", k[1]) for k in keys]
    return pa.table({
        "idx": pa.array([k[0] for k in keys], pa.int32()),
        "default_metadata": pa.array([k[1] for k in keys], pa.string()),
        "implicit": pa.array(implicit, pa.string()),
        "simple": pa.array([_is_flat(text) for text in implicit], pa.bool_()),
    })  # fmt: skip


def _is_flat(metadata_json: str | None) -> bool:
    """Implicit metadata the fast path of :data:`_TRACE_ROWS_SQL` merges exactly: no nulls, no
    typed or other nested values."""
    if metadata_json is None:
        return True
    return all(isinstance(v, (str, int, float, bool)) for v in json.loads(metadata_json).values())


# OTel identity attributes (enduser.id, session.id, ...) on a root, for the few roots that have any.
_IDENTITY = _entries(
    ("trace.user", f"coalesce({_attr('enduser.id')}, {_attr('user.id')}, {_attr('mlflow.trace.user')})"),
    ("trace.session", f"coalesce({_attr('gen_ai.conversation.id')}, {_attr('session.id')},"
                      f" {_attr('mlflow.trace.session')})"),
)
#: The OTel identity attribute keys, as they appear in a span's attributes JSON.
_IDENTITY_PATTERN = r'"(enduser\.id|user\.id|session\.id|gen_ai\.conversation\.id|mlflow\.trace\.(user|session))"'
_HAS_IDENTITY = f"regexp_matches(attributes, '{_IDENTITY_PATTERN}')"

#: The trace fields the statement reads, parsed once per row into the list ``f``.
_FIELD_PATHS = ("$.state", "$.client_request_id", "$.request_preview", "$.response_preview", "$.metadata", "$.tags")


def _field(path: str) -> str:
    """The element of ``f`` holding trace field ``path`` (JSON)."""
    return f"f[{_FIELD_PATHS.index(path) + 1}]"


#: Trace fields that the fast path below computes exactly as the general one: no JSON ``null``
#: (a merge patch would delete the key; looked for in the text, where a false alarm only costs
#: the general path) and no object among the metadata values (typed values need their string
#: forms; a merge patch would merge objects). (A key repeated within one JSON object, which no
#: SDK sends, is an error to the general path and the last one wins here.)
_SIMPLE_FIELDS = (
    "(f IS NOT NULL AND NOT contains(trace_fields, 'null')"
    f" AND NOT coalesce(list_contains(json_type({_field('$.metadata')}, '$.*'), 'OBJECT'), false))"
)


def _object(expr: str) -> str:
    """``expr`` (JSON) if it is an object, else ``{}``."""
    return f"CASE WHEN json_type({expr}) = 'OBJECT' THEN {expr} ELSE '{{}}'::JSON END"


def _trace_rows_sql() -> str:
    """One trace row (or patch) per span that is a local root or carries trace fields.

    Built in steps materialised one after another: DuckDB would otherwise inline each step's
    expressions into every use and parse the same JSON many times over. The first step parses
    each row's trace fields once (all six paths in one call) and keeps only what the next steps
    read (previews, not the whole inputs and outputs). Most traces take the fast path, merging
    metadata and tags as JSON (merge patch) and casting each to a MAP once: building a MAP costs
    DuckDB ~2.5 µs a row (it checks the keys), ``map_concat`` more, so the general path (typed
    values, nulls, nested values, OTel identity attributes) is only taken by the rows that need
    it: ``CASE`` evaluates a branch only for the rows that take it.
    """
    paths = ", ".join(f"'{path}'" for path in _FIELD_PATHS)
    metadata, tags = _field("$.metadata"), _field("$.tags")
    state = f"{_field('$.state')} ->> '$'"
    return f"""
WITH base AS MATERIALIZED (
    SELECT *, coalesce((trace_fields IS NULL OR {_SIMPLE_FIELDS}) AND coalesce(simple, true)
                       AND identity IS NULL, false) AS fast
    FROM (
        SELECT r.trace_id, r.seq, r.project, r.is_root, r.name, r.status, r.start_time_ns, r.end_time_ns,
               r.span_id, r.trace_fields, i.implicit, i.simple,
               CASE WHEN r.is_root THEN {_preview('r.inputs')} END AS input_preview,
               CASE WHEN r.is_root THEN {_preview('r.outputs')} END AS output_preview,
               CASE WHEN r.is_root AND r.attributes IS NOT NULL AND {_HAS_IDENTITY} THEN {_IDENTITY} END AS identity,
               json_extract(TRY_CAST(r.trace_fields AS JSON), [{paths}]) AS f
        FROM _td_raw r
        LEFT JOIN _td_impl i
          ON r.is_root AND i.idx = r.resource
         AND i.default_metadata IS NOT DISTINCT FROM r.default_metadata
        WHERE r.is_root OR r.trace_fields IS NOT NULL
    )
), fields AS MATERIALIZED (
    SELECT * EXCLUDE (trace_fields, implicit, simple, identity),
        CASE WHEN fast THEN json_merge_patch(coalesce(TRY_CAST(implicit AS JSON), '{{}}'::JSON), {_object(metadata)})
        ELSE to_json(map_concat(
            coalesce({_json_map('implicit', 'JSON')}, {_EMPTY_JSON_MAP}),
            identity,
            coalesce(TRY_CAST({metadata} AS MAP(VARCHAR, JSON)), {_EMPTY_JSON_MAP})
        )) END AS meta_json
    FROM base
), texts AS MATERIALIZED (
    SELECT *,
        -- typed values ({{"type": ...}}) need their string forms; plain scalars cast directly
        CASE WHEN NOT fast AND contains(CAST(meta_json AS VARCHAR), '"type":')
             THEN {_string_forms('CAST(meta_json AS MAP(VARCHAR, JSON))')}
             ELSE TRY_CAST(meta_json AS MAP(VARCHAR, VARCHAR)) END AS meta_text
    FROM fields
), tagged AS MATERIALIZED (
    SELECT *,
        CASE WHEN fast THEN TRY_CAST(json_merge_patch(meta_json, {_object(tags)}) AS MAP(VARCHAR, VARCHAR))
        ELSE map_concat(meta_text, coalesce(TRY_CAST({tags} AS MAP(VARCHAR, VARCHAR)), {_EMPTY_TEXT_MAP})) END AS tags
    FROM texts
)
SELECT
    trace_id AS hex_id, seq, coalesce(project, $default_project) AS project,
    CASE WHEN is_root THEN name END AS name,
    CASE WHEN is_root THEN coalesce({state}, CASE WHEN status = 'ERROR' THEN 'ERROR' ELSE 'OK' END)
         ELSE {state} END AS state,
    CASE WHEN is_root THEN start_time_ns // 1000000 END AS request_time,
    CASE WHEN is_root THEN end_time_ns // 1000000 - start_time_ns // 1000000 END AS execution_duration,
    CASE WHEN is_root THEN end_time_ns // 1000000 END AS end_time,
    {_field('$.client_request_id')} ->> '$' AS client_request_id,
    tags['trace.user'] AS trace_user,
    tags['trace.session'] AS session_id,
    tags['trace.environment'] AS environment,
    coalesce({_field('$.request_preview')} ->> '$', input_preview) AS request_preview,
    coalesce({_field('$.response_preview')} ->> '$', output_preview) AS response_preview,
    tags,
    meta_text AS metadata,
    CAST(meta_json AS VARCHAR) AS metadata_json,
    CASE WHEN is_root THEN span_id END AS root_span_id,
    $stored_at AS stored_at
FROM tagged
"""


_TRACE_ROWS_SQL = _trace_rows_sql()

_IDENTITY_KEYS = re.compile(_IDENTITY_PATTERN)


#: Most traces in a batch whose rows are built in Python. Python saves the planning of the SQL
#: statement (~13 ms, the cost of ~1,500 plain traces in Python); beyond that DuckDB builds rows
#: about as fast, on several threads, and without holding the GIL (measured in bench/search.py's
#: bulk load of 125,000-trace batches: 24.6 s with Python rows, 14 s without).
PLAIN_ROWS_MAX_TRACES = 2000


def _plain_rows(raw: RawSpans, implicit: pa.Table, stored_at: int) -> pa.Table | None:
    """The batch's trace rows built in Python when every trace is plain (see plain_rows) and the
    batch is small (see PLAIN_ROWS_MAX_TRACES)."""
    if len(raw.root_ids) > PLAIN_ROWS_MAX_TRACES or not all(implicit.column("simple").to_pylist()):
        return None
    by_pair = dict(zip(zip(implicit.column("idx").to_pylist(), implicit.column("default_metadata").to_pylist()),
                       implicit.column("implicit").to_pylist()))  # fmt: skip
    return plain_rows.plain_trace_rows(raw, by_pair, stored_at, _IDENTITY_KEYS)


#: LLM response ids (``gen_ai.response.id``) so feedback can name a trace by them.
_RESPONSES_SQL = (
    "INSERT INTO llm_responses (response_id, trace_id, span_id, project)"
    " SELECT response_id, CAST(trace_id AS UUID), span_id, coalesce(project, $default_project) FROM ("
    "  SELECT *, " + _attr("gen_ai.response.id") + " AS response_id FROM _td_raw"
    "  WHERE attributes IS NOT NULL AND contains(attributes, 'gen_ai.response.id'))"
    " WHERE response_id IS NOT NULL"
)

#: One row per LLM call (a span with ``gen_ai.request.model`` or ``gen_ai.usage.*`` attributes):
#: model, tokens (GenAI names, older ``prompt/completion_tokens`` accepted), cost, latency. A span
#: of other instrumentation has no ``traceduck.llm.latency_ms``: its duration is used instead.
#: The span attributes an LLM call's row reads, parsed once per span into the list ``a``.
_LLM_ATTRIBUTES = (
    "gen_ai.request.model", "gen_ai.response.model", "gen_ai.response.id", "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
    "traceduck.llm.cost_usd", "traceduck.llm.usage_estimated", "traceduck.llm.latency_ms",
)  # fmt: skip


def _llm(key: str) -> str:
    """The element of ``a`` holding span attribute ``key`` (text)."""
    return f"a[{_LLM_ATTRIBUTES.index(key) + 1}]"


_LLM_CALLS_SELECT = (
    "SELECT CAST(trace_id AS UUID) AS trace_id, span_id, coalesce(project, $default_project) AS project,"
    " model, response_id, input_tokens, output_tokens, cost_usd, usage_estimated,"
    " coalesce(latency_ms, CASE WHEN NOT ours THEN (end_time_ns - start_time_ns) / 1e6 END) AS latency_ms,"
    " start_time_ns FROM ("
    f"  SELECT *, coalesce({_llm('gen_ai.request.model')}, {_llm('gen_ai.response.model')}) AS model,"
    f" {_llm('gen_ai.response.id')} AS response_id,"
    f"   TRY_CAST(coalesce({_llm('gen_ai.usage.input_tokens')}, {_llm('gen_ai.usage.prompt_tokens')}) AS BIGINT)"
    " AS input_tokens,"
    f"   TRY_CAST(coalesce({_llm('gen_ai.usage.output_tokens')}, {_llm('gen_ai.usage.completion_tokens')}) AS BIGINT)"
    " AS output_tokens,"
    f"   TRY_CAST({_llm('traceduck.llm.cost_usd')} AS DOUBLE) AS cost_usd,"
    f"   coalesce(TRY_CAST({_llm('traceduck.llm.usage_estimated')} AS BOOLEAN), false) AS usage_estimated,"
    f"   TRY_CAST({_llm('traceduck.llm.latency_ms')} AS DOUBLE) AS latency_ms"
    "  FROM ("
    "   SELECT trace_id, span_id, project, start_time_ns, end_time_ns,"
    "    contains(attributes, '\"traceduck.llm.') AS ours,"
    "    json_extract_string(attributes, [" + ", ".join(f"'$.\"{key}\"'" for key in _LLM_ATTRIBUTES) + "]) AS a"
    "   FROM _td_raw WHERE attributes IS NOT NULL"
    "    AND (contains(attributes, 'gen_ai.request.model') OR contains(attributes, 'gen_ai.usage.'))))"
    " WHERE model IS NOT NULL OR input_tokens IS NOT NULL OR output_tokens IS NOT NULL"
)
_LLM_CALLS_COLUMNS = (
    "trace_id, span_id, project, model, response_id, input_tokens, output_tokens, cost_usd,"
    " usage_estimated, latency_ms, start_time_ns"
)


def _llm_calls_sql(dedupe: bool) -> str:
    """Insert the batch's LLM calls; with ``dedupe`` skip calls already stored (redelivered spans)."""
    if not dedupe:
        return f"INSERT INTO llm_calls ({_LLM_CALLS_COLUMNS}) {_LLM_CALLS_SELECT}"
    return (
        f"INSERT INTO llm_calls ({_LLM_CALLS_COLUMNS}) SELECT * FROM ({_LLM_CALLS_SELECT}) b"
        " QUALIFY row_number() OVER (PARTITION BY b.project, b.trace_id, b.span_id) = 1"
        " AND NOT EXISTS (SELECT 1 FROM llm_calls c WHERE c.trace_id = b.trace_id AND c.span_id = b.span_id"
        " AND c.project = b.project)"
    )


_INSERT_COLUMNS = ", ".join(TRACE_COLUMNS)
_PLAIN_SELECT = ", ".join("CAST(trace_id AS UUID)" if c == "trace_id" else c for c in TRACE_COLUMNS)
_ROW_SELECT = ", ".join("CAST(hex_id AS UUID)" if c == "trace_id" else c for c in TRACE_COLUMNS)
_ROW_FIELDS = ", ".join("hex_id AS trace_id" if c == "trace_id" else c for c in TRACE_COLUMNS)


@dataclass
class WriteStats:
    spans: int = 0
    traces: int = 0
    merged: int = 0
    duplicate_spans: int = 0
    #: Left out because their project captures nothing (see governance/apply.py).
    uncaptured_spans: int = 0


class PendingPatches:
    """Trace fields whose trace has no row yet; merged in when the root arrives."""

    def __init__(self, limit: int = MAX_PENDING_PATCHES) -> None:
        self.limit = limit
        self._items: OrderedDict[tuple[str, str], TraceRow] = OrderedDict()

    def add(self, row: TraceRow) -> None:
        key = (row.trace_id, row.project)
        existing = self._items.get(key)
        if existing is not None:
            existing.merge(row)
            return
        self._items[key] = row
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def take(self, key: tuple[str, str]) -> TraceRow | None:
        """The patch for (trace id, project), removed."""
        return self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


def _register_pairs(con: duckdb.DuckDBPyConnection, name: str, pairs: list[tuple[str, str]]) -> None:
    """Register (trace id, project) pairs as a table with columns ``id`` and ``project``."""
    con.register(name, pa.table({"id": pa.array([p[0] for p in pairs], pa.string()),
                                 "project": pa.array([p[1] for p in pairs], pa.string())}))  # fmt: skip


def _insert_spans(con: duckdb.DuckDBPyConnection, raw: RawSpans, params: dict, dedupe: bool) -> int:
    if not dedupe:
        con.execute(_spans_insert_sql(False), params)
        return len(raw)
    low, high = raw.start_range()
    before = con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
    con.execute(_spans_insert_sql(True), {**params, "low": low, "high": high})
    return con.execute("SELECT count(*) FROM spans").fetchall()[0][0] - before


def _spans_insert_sql(dedupe: bool) -> str:
    """Insert the batch's spans; with ``dedupe`` skip spans already stored (redelivered batches).

    A redelivered span has the same start time, so the check looks only at stored spans that
    started within the batch's range (``$low``..``$high``), which zone maps make cheap.
    """
    columns = ", ".join(_SPAN_COLUMNS)
    if not dedupe:
        return f"INSERT INTO spans ({columns}) {_SPANS_SELECT}"
    return (
        f"INSERT INTO spans ({columns}) SELECT * FROM ({_SPANS_SELECT}) b"
        " QUALIFY row_number() OVER (PARTITION BY b.trace_id, b.span_id, b.project) = 1"
        " AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.start_time_ns BETWEEN $low AND $high"
        " AND s.trace_id = b.trace_id AND s.span_id = b.span_id AND s.project = b.project)"
    )


def _known_conflicts(raw: RawSpans, pending: PendingPatches) -> set[tuple[str, str]]:
    """Traces of the batch that need a merge, as far as Python knows without asking the store."""
    conflicts = set(raw.patch_ids)
    seen: set[tuple[str, str]] = set()
    for key in raw.root_ids:
        if key in seen or key in pending:
            conflicts.add(key)
        seen.add(key)
    return conflicts


#: How long before the first root of a batch of parentless roots another root of one of their
#: traces may have started and still be merged (clock skew between hosts; as the reader's span
#: window). Rows that started earlier are not looked at: zone maps then skip old row groups.
EXISTING_ROOTS_BEFORE_MS = 60 * 60 * 1000


def _existing(con: duckdb.DuckDBPyConnection, raw: RawSpans) -> set[tuple[str, str]]:
    """Roots of the batch whose (trace id, project) already has a stored trace row.

    A parentless root started before every other span of its trace, so only rows that started
    after it (less the clock skew) can be its trace's. A root with a remote parent may belong to
    a trace stored at any time before: then every row is looked at.
    """
    roots = list(set(raw.root_ids))
    if not roots:
        return set()
    _td_roots = pa.table({"id": pa.array([k[0] for k in roots], pa.string()),  # noqa: F841
                          "project": pa.array([k[1] for k in roots], pa.string())})  # fmt: skip
    since = ""
    if not raw.has_remote_roots:
        first = raw.index.first_root_start // 1_000_000
        since = f" AND t.request_time >= {int(first) - EXISTING_ROOTS_BEFORE_MS}"
    rows = con.execute(
        "SELECT r.id, r.project FROM _td_roots r WHERE EXISTS (SELECT 1 FROM traces t"
        f" WHERE t.trace_id = CAST(r.id AS UUID) AND t.project = r.project{since})"
    ).fetchall()
    return {(r[0], r[1]) for r in rows}


_IN_CONFLICTS = (
    "EXISTS (SELECT 1 FROM _td_conflicts c WHERE c.id = {id} AND c.project = {project})"
)


def _merge_conflicts(con: duckdb.DuckDBPyConnection, conflicts: set[tuple[str, str]],
                     pending: PendingPatches, params: dict, stats: WriteStats) -> None:
    keys = sorted(conflicts)
    names = TRACE_COLUMNS
    stored = _IN_CONFLICTS.format(id="replace(CAST(traces.trace_id AS VARCHAR), '-', '')", project="traces.project")
    _register_pairs(con, "_td_conflicts", keys)
    try:
        existing = con.execute(
            f"SELECT replace(CAST(trace_id AS VARCHAR), '-', '') AS trace_id, {', '.join(TRACE_COLUMNS[1:])}"
            f" FROM traces WHERE {stored}"
        ).fetchall()
        incoming = con.execute(
            f"SELECT {_ROW_FIELDS} FROM ({_TRACE_ROWS_SQL}) r"
            f" WHERE {_IN_CONFLICTS.format(id='r.hex_id', project='r.project')} ORDER BY seq",
            params,
        ).fetchall()
        if existing:
            con.execute(f"DELETE FROM traces WHERE {stored}")
    finally:
        con.unregister("_td_conflicts")
    merged: dict[tuple[str, str], TraceRow] = {}

    def fold(row: TraceRow) -> None:
        key = (row.trace_id, row.project)
        if key in merged:
            merged[key].merge(row)
        else:
            merged[key] = row

    for values in existing:
        fold(TraceRow.from_values(dict(zip(names, values))))
    for key in keys:
        patch = pending.take(key)
        if patch is not None:
            fold(patch)
    for values in incoming:
        fold(TraceRow.from_values(dict(zip(names, values))))
    complete = [row for row in merged.values() if row.is_complete]
    for row in merged.values():
        if not row.is_complete:
            pending.add(row)
    if complete:
        placeholders = ", ".join(
            "CAST(? AS UUID)" if c == "trace_id"
            else "MAP(CAST(? AS VARCHAR[]), CAST(? AS VARCHAR[]))" if c in ("tags", "metadata")
            else "?"
            for c in TRACE_COLUMNS
        )  # fmt: skip
        rows = []
        for row in complete:
            values: list[Any] = []
            for name, value in zip(TRACE_COLUMNS, row.values(params["stored_at"])):
                if name in ("tags", "metadata"):
                    values += [[k for k, _ in value], [v for _, v in value]]
                else:
                    values.append(value)
            rows.append(values)
        con.executemany(f"INSERT INTO traces ({_INSERT_COLUMNS}) VALUES ({placeholders})", rows)
    stats.merged += len(complete)


def _has_pending(con: duckdb.DuckDBPyConnection) -> bool:
    """Some assessment waits for its trace (a few spans of the assessments' ``trace_id`` column
    to read, most skipped by their statistics; joining them costs a batch far more)."""
    return bool(con.execute("SELECT 1 FROM assessments WHERE trace_id IS NULL LIMIT 1").fetchall())


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _script(sql: str, params: dict[str, Any]) -> str:
    """Inline our own constant parameters (ints, and a project name quoted) into ``sql``."""
    for name, value in params.items():
        sql = sql.replace(f"${name}", str(value) if isinstance(value, int) else _literal(value))
    return sql


def write_batch(
    con: duckdb.DuckDBPyConnection,
    raw: RawSpans,
    pending: PendingPatches,
    dedupe_spans: bool = False,
    recent: RecentSpans | None = None,
) -> WriteStats:
    """Write ``raw`` in one transaction; the caller holds ``con`` for the whole call.

    The common batch (new traces only) is ONE call into DuckDB: every call releases and re-takes
    the GIL, and re-taking it waits behind every busy application thread.
    """
    stats = WriteStats()
    params = {"stored_at": int(time.time() * 1000), "default_project": raw.default_project}
    _td_raw = raw.to_arrow()  # noqa: F841  (read by DuckDB's replacement scan, by name)
    _td_impl = _implicit_table(raw)  # noqa: F841
    conflicts = _known_conflicts(raw, pending)
    look_up_roots = dedupe_spans
    if dedupe_spans and recent is not None:
        new_spans, new_roots = recent.check(con, raw)  # what is known without asking the store
        dedupe_spans, look_up_roots = not new_spans, not new_roots
    if raw.has_remote_roots or look_up_roots:
        conflicts |= _existing(con, raw)  # one more call: which roots' traces are already stored
    if not conflicts:
        low, high = raw.start_range() if len(raw) else (0, 0)
        _td_rows = _plain_rows(raw, _td_impl, params["stored_at"])  # noqa: F841
        if _td_rows is not None:  # every trace plain: its rows built in Python (see plain_rows)
            traces_sql = f"INSERT INTO traces ({_INSERT_COLUMNS}) SELECT {_PLAIN_SELECT} FROM _td_rows"
        else:
            traces_sql = f"INSERT INTO traces ({_INSERT_COLUMNS}) SELECT {_ROW_SELECT} FROM ({_TRACE_ROWS_SQL})"
        statements = [
            _spans_insert_sql(dedupe_spans),
            traces_sql,
            *((_RESPONSES_SQL, _llm_calls_sql(dedupe_spans)) if raw.index.has_llm_calls else ()),
            *((JOIN_PENDING_SQL,) if _has_pending(con) else ()),
        ]
        script = "BEGIN TRANSACTION; " + "; ".join(statements) + "; COMMIT"
        try:
            if dedupe_spans:
                before = con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
            con.execute(_script(script, {**params, "low": low, "high": high}))
            stats.spans = (con.execute("SELECT count(*) FROM spans").fetchall()[0][0] - before
                           if dedupe_spans else len(raw))  # fmt: skip
        except BaseException:
            _rollback(con)
            raise
        stats.duplicate_spans = len(raw) - stats.spans
        stats.traces = len(raw.root_ids)
        return stats
    con.register("_td_raw", _td_raw)
    con.register("_td_impl", _td_impl)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            stats.spans = _insert_spans(con, raw, {"default_project": raw.default_project}, dedupe_spans)
            stats.duplicate_spans = len(raw) - stats.spans
            where = ""
            if conflicts:
                _register_pairs(con, "_td_skip", sorted(conflicts))
                where = (" r WHERE NOT EXISTS (SELECT 1 FROM _td_skip k WHERE k.id = r.hex_id"
                         " AND k.project = r.project) AND r.root_span_id IS NOT NULL")  # fmt: skip
            try:
                con.execute(
                    f"INSERT INTO traces ({_INSERT_COLUMNS}) SELECT {_ROW_SELECT} FROM ({_TRACE_ROWS_SQL}){where}",
                    params,
                )
            finally:
                if conflicts:
                    con.unregister("_td_skip")
            stats.traces = len(set(raw.root_ids) - conflicts)
            if conflicts:
                _merge_conflicts(con, conflicts, pending, params, stats)
            if raw.index.has_llm_calls:
                con.execute(_RESPONSES_SQL, {"default_project": raw.default_project})
                con.execute(_llm_calls_sql(dedupe_spans), {"default_project": raw.default_project})
            if _has_pending(con):
                con.execute(_script(JOIN_PENDING_SQL, params))
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
    finally:
        con.unregister("_td_raw")
        con.unregister("_td_impl")
    return stats


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # the failed statement already ended the transaction
