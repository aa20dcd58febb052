"""Edit stored traces: replace metadata, set/add/remove tags, on one trace or many at once.

Tags are a trace's searchable face; the identity columns (``trace_user``, ``session_id``,
``environment``) mirror the tags ``trace.user``, ``trace.session``, ``trace.environment`` and are
updated in the same statement, so a search by user always agrees with the tags.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

from ..filters import Node, compile_filter
from ..metadata import string_form

_IDENTITY_SYNC = (
    "trace_user = tags['trace.user'], session_id = tags['trace.session'],"
    " environment = tags['trace.environment']"
)


def _map_param(values: dict[str, str | None]) -> tuple[str, list[Any]]:
    """A MAP(VARCHAR, VARCHAR) built from parameters."""
    if not values:
        return "MAP {}::MAP(VARCHAR, VARCHAR)", []
    return "MAP(CAST(? AS VARCHAR[]), CAST(? AS VARCHAR[]))", [list(values), list(values.values())]


def _targets(con: duckdb.DuckDBPyConnection, trace_ids: list[str] | None, node: Node | None,
             use_filter: bool, project: str | None) -> tuple[str, list[Any]]:
    """``WHERE`` text selecting the traces to edit (alias t), and its parameters."""
    conditions: list[str] = []
    params: list[Any] = []
    if trace_ids is not None:
        con.register("_td_edit", pa.table({"id": pa.array(trace_ids, pa.string())}))
        conditions.append("t.trace_id IN (SELECT TRY_CAST(id AS UUID) FROM _td_edit)")
    if use_filter:
        where, where_params = compile_filter(node)
        conditions.append(f"({where})")
        params.extend(where_params)
    if project is not None:
        conditions.append("t.project = ?")
        params.append(project)
    return " AND ".join(conditions) or "TRUE", params


def edit_tags(
    con: duckdb.DuckDBPyConnection,
    *,
    trace_ids: list[str] | None = None,
    node: Node | None = None,
    use_filter: bool = False,
    project: str | None = None,
    replace: dict[str, str | None] | None = None,
    add: dict[str, str | None] | None = None,
    remove: list[str] | None = None,
    filter_string: str | None = None,  # the parsed ``node`` is what is used here
) -> int:
    """Change the tags of the selected traces; returns how many traces were changed."""
    expr = "t.tags"
    params: list[Any] = []
    if replace is not None:
        expr, params = _map_param(replace)
    if remove:
        expr = f"map_from_entries(list_filter(map_entries({expr}), lambda e: NOT list_contains(CAST(? AS VARCHAR[]), e.key)))"
        params = [*params, list(remove)]
    if add:
        add_sql, add_params = _map_param(add)
        expr = f"map_concat({expr}, {add_sql})"
        params = [*params, *add_params]
    where, where_params = _targets(con, trace_ids, node, use_filter, project)
    try:
        con.execute("BEGIN TRANSACTION")
        count = con.execute(f"SELECT count(*) FROM traces t WHERE {where}", where_params).fetchall()[0][0]
        if count:
            con.execute(f"UPDATE traces AS t SET tags = {expr} WHERE {where}", [*params, *where_params])
            con.execute(f"UPDATE traces AS t SET {_IDENTITY_SYNC} WHERE {where}", where_params)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        if trace_ids is not None:
            con.unregister("_td_edit")
    return int(count)


def replace_metadata(con: duckdb.DuckDBPyConnection, trace_id: str, metadata: dict[str, Any],
                     project: str | None) -> int:
    """Replace a trace's metadata wholesale; its tags are left as they are."""
    forms = {k: string_form(v) for k, v in metadata.items()}
    map_sql, map_params = _map_param(forms)
    sql = f"UPDATE traces AS t SET metadata = {map_sql}, metadata_json = ? WHERE t.trace_id = TRY_CAST(? AS UUID)"
    params: list[Any] = [*map_params, json.dumps(metadata), trace_id]
    if project is not None:
        sql += " AND t.project = ?"
        params.append(project)
    before = con.execute(
        "SELECT count(*) FROM traces t WHERE t.trace_id = TRY_CAST(? AS UUID)"
        + (" AND t.project = ?" if project is not None else ""),
        [trace_id] + ([project] if project is not None else []),
    ).fetchall()[0][0]
    if before:
        con.execute(sql, params)
    return int(before)
