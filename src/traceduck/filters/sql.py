"""SQL generation: a filter's syntax tree in, a boolean SQL fragment and its parameters out.

The fragment is meant for ``SELECT ... FROM traces t WHERE <fragment>``. No text taken from
the filter ever reaches the SQL string: every value and every key travels as a ``?``
parameter, and the only SQL text is the fixed text written in this module.

``SqlGenerator`` holds what any SQL engine shares (boolean structure, comparisons, the
semi-joins on spans and assessments) and leaves what differs between engines (map access, UUID
casts, JSON extraction, regular expressions) to small hook methods; ``DuckDBGenerator`` fills
them in for DuckDB, and another dialect is a subclass that overrides only what differs.

Two rules make the SQL both right and fast. Positive predicates stay plain
(``t.session_id = ?``) so that DuckDB can push them into the scan. ``NOT x`` is emitted as
``NOT COALESCE((x), FALSE)``, the exact complement of ``x`` even where ``x`` is NULL because a
key is missing; inside AND and OR a NULL already acts as false.
"""

from __future__ import annotations

from .ast import And, Comparison, Field, Node, Not, Or
from .fields import LIST_OPS, NULL_OPS, PATTERN_OPS, allowed_ops, allowed_value_types

ParamList = list[object]


class SqlGenerator:
    """Compiles filter nodes to SQL; subclasses supply the dialect hooks at the bottom."""

    TRACE_ALIAS = "t"
    ATTRIBUTE_COLUMNS: dict[str, str] = {
        "timestamp_ms": "request_time",
        "execution_time_ms": "execution_duration",
        "end_time_ms": "end_time",
        "status": "state",
        "name": "name",
        "client_request_id": "client_request_id",
        "request_preview": "request_preview",
        "response_preview": "response_preview",
    }
    # Tags copied into their own columns on write; searching the column is what keeps user and
    # session look-ups fast on large stores.
    MIRRORED_TAG_COLUMNS: dict[str, str] = {
        "trace.user": "trace_user",
        "trace.session": "session_id",
        "trace.environment": "environment",
    }
    SPAN_COLUMNS: dict[str, str] = {"name": "name", "type": "span_type", "status": "status"}

    def __init__(self, since_ms: int | None = None) -> None:
        #: The statement only looks at traces that started at or after this time (a probe of
        #: recent traces, see ``store/query.py``): assessment subqueries then read only theirs.
        self.since_ms = since_ms

    def generate(self, node: Node) -> tuple[str, ParamList]:
        """The SQL boolean expression for ``node`` and its parameters, in placeholder order."""
        params: ParamList = []
        return self.node_sql(node, params), params

    # -- boolean structure ---------------------------------------------------------------

    def node_sql(self, node: Node, params: ParamList) -> str:
        """Dispatch on the node type."""
        if isinstance(node, Comparison):
            return self.comparison_sql(node, params)
        if isinstance(node, And):
            return self.and_sql(node, params)
        if isinstance(node, Or):
            return self.or_sql(node, params)
        if isinstance(node, Not):
            return self.not_sql(node, params)
        raise TypeError(f"not a filter node: {node!r}")

    def and_sql(self, node: And, params: ParamList) -> str:
        return "(" + " AND ".join(self.node_sql(item, params) for item in node.items) + ")"

    def or_sql(self, node: Or, params: ParamList) -> str:
        return "(" + " OR ".join(self.node_sql(item, params) for item in node.items) + ")"

    def not_sql(self, node: Not, params: ParamList) -> str:
        return f"NOT COALESCE(({self.node_sql(node.item, params)}), FALSE)"

    # -- comparisons by field kind -------------------------------------------------------

    def comparison_sql(self, node: Comparison, params: ParamList) -> str:
        """Check that the comparison fits its field, then dispatch on the field kind."""
        self.check(node)
        kind = node.field.kind
        if kind == "attribute":
            return self.attribute_sql(node, params)
        if kind == "tag":
            return self.keyed_sql(node, f"{self.TRACE_ALIAS}.tags", params)
        if kind == "metadata":
            return self.keyed_sql(node, f"{self.TRACE_ALIAS}.metadata", params)
        if kind in ("feedback", "expectation"):
            return self.assessment_sql(node, params)
        return self.span_sql(node, params)

    @staticmethod
    def check(node: Comparison) -> None:
        """Raise ValueError for a hand-built comparison the parser would have refused."""
        fld = node.field
        if node.op not in allowed_ops(fld.kind, fld.name):
            raise ValueError(f"comparator {node.op} does not fit {fld}")
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        allowed = allowed_value_types(fld.kind, fld.name, node.op)
        types = {"str" if isinstance(v, str) else "num" for v in values if v is not None}
        if not types <= allowed or len(types) > 1:
            raise ValueError(f"value {node.value!r} does not fit {fld} {node.op}")

    def attribute_sql(self, node: Comparison, params: ParamList) -> str:
        name = node.field.name
        if name == "trace_id":
            return self.trace_id_sql(node, params)
        assert name is not None
        column = f"{self.TRACE_ALIAS}.{self.ATTRIBUTE_COLUMNS[name]}"
        return self.compare(column, node.op, node.value, params)

    def trace_id_sql(self, node: Comparison, params: ParamList) -> str:
        """Trace ids are UUIDs: exact comparisons cast the parameter, patterns see 32 hex digits.

        An id that is not a UUID casts to NULL and so equals no trace; ``!=`` and ``NOT IN`` are
        written so that such an id is different from every trace.
        """
        column = f"{self.TRACE_ALIAS}.trace_id"
        op, value = node.op, node.value
        if op in PATTERN_OPS:
            return self.compare(self.uuid_hex(column), op, value, params)
        if op in LIST_OPS:
            assert isinstance(value, tuple)
            params.extend(self.trace_id_param(str(v)) for v in value)
            members = f"{column} IN ({', '.join(self.uuid_param() for _ in value)})"
            return members if op == "IN" else f"NOT COALESCE({members}, FALSE)"
        params.append(self.trace_id_param(str(value)))
        if op == "=":
            return f"{column} = {self.uuid_param()}"
        return f"{column} IS DISTINCT FROM {self.uuid_param()}"

    @staticmethod
    def trace_id_param(value: str) -> str:
        """The id as the UUID cast reads it: spaces and MLflow's ``tr-`` prefix dropped."""
        value = value.strip()
        return value[3:] if value.startswith("tr-") else value

    def keyed_sql(self, node: Comparison, map_column: str, params: ParamList) -> str:
        """Tags and metadata: a missing key is NULL, so ``!=`` and ``NOT IN`` skip it."""
        key = node.field.key
        assert key is not None
        mirrored = self.MIRRORED_TAG_COLUMNS.get(key) if node.field.kind == "tag" else None
        if node.op in NULL_OPS:
            params.append(key)
            present = self.map_contains(map_column)
            if mirrored:
                present = f"({self.TRACE_ALIAS}.{mirrored} IS NOT NULL OR {present})"
            return present if node.op == "IS NOT NULL" else f"NOT COALESCE({present}, FALSE)"
        if mirrored:
            expr = f"{self.TRACE_ALIAS}.{mirrored}"
        else:
            params.append(key)
            expr = self.map_value(map_column)
        return self.compare(expr, node.op, node.value, params)

    def assessment_sql(self, node: Comparison, params: ParamList) -> str:
        """Feedback and expectations: only the latest valid assessment of the name counts."""
        params.extend([node.field.kind, node.field.key])
        where = "kind = ? AND name = ? AND valid AND trace_id IS NOT NULL"
        if self.since_ms is not None:  # every assessment of each trace in the window: "latest" is exact
            params.append(self.since_ms)
            where += " AND trace_id IN (SELECT trace_id FROM traces WHERE request_time >= ?)"
        t = self.TRACE_ALIAS
        same_trace = f"a.trace_id = {t}.trace_id AND a.project = {t}.project"
        if node.op in NULL_OPS:
            negate = "NOT EXISTS" if node.op == "IS NULL" else "EXISTS"
            return f"{negate} (SELECT 1 FROM assessments a WHERE {where} AND {same_trace})"
        latest = (
            "SELECT trace_id, project, value_str, value_num, row_number() OVER "
            "(PARTITION BY trace_id, project ORDER BY create_time DESC, assessment_id DESC) AS rn "
            f"FROM assessments WHERE {where}"
        )
        column = "a.value_num" if _is_numeric(node.value) else "a.value_str"
        condition = self.compare(column, node.op, node.value, params)
        return f"EXISTS (SELECT 1 FROM ({latest}) AS a WHERE a.rn = 1 AND {same_trace} AND {condition})"

    def span_sql(self, node: Comparison, params: ParamList) -> str:
        """Span fields: a trace matches when any of its spans does."""
        name = node.field.name
        if name == "attributes":
            assert node.field.key is not None
            params.append(self.json_pointer(node.field.key))
            expr = self.json_text("s.attributes")
            if _is_numeric(node.value):
                expr = self.to_double(expr)
        else:
            assert name is not None
            expr = f"s.{self.SPAN_COLUMNS[name]}"
        condition = self.compare(expr, node.op, node.value, params)
        t = self.TRACE_ALIAS
        return (
            f"EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = {t}.trace_id"
            f" AND s.project = {t}.project AND {condition})"
        )

    def compare(self, expr: str, op: str, value: object, params: ParamList) -> str:
        """``expr op value`` for every comparator but the NULL tests, the value as parameters."""
        if op in LIST_OPS:
            assert isinstance(value, tuple)
            params.extend(value)
            return f"{expr} {op} ({', '.join('?' for _ in value)})"
        params.append(value)
        if op == "RLIKE":
            return self.regex_match(expr, "?")
        if op == "ILIKE":
            return self.ilike(expr, "?")
        return f"{expr} {op} ?"

    # -- values for ordering (used by order.py) ------------------------------------------

    def value_expr(self, fld: Field, params: ParamList) -> str:
        """The SQL value of a trace attribute, tag or metadata key, as ORDER BY sorts it."""
        if fld.kind == "attribute":
            assert fld.name is not None
            if fld.name == "trace_id":
                return f"{self.TRACE_ALIAS}.trace_id"
            return f"{self.TRACE_ALIAS}.{self.ATTRIBUTE_COLUMNS[fld.name]}"
        if fld.kind in ("tag", "metadata"):
            assert fld.key is not None
            mirrored = self.MIRRORED_TAG_COLUMNS.get(fld.key) if fld.kind == "tag" else None
            if mirrored:
                return f"{self.TRACE_ALIAS}.{mirrored}"
            params.append(fld.key)
            return self.map_value(
                f"{self.TRACE_ALIAS}.{'tags' if fld.kind == 'tag' else 'metadata'}"
            )
        raise ValueError(f"cannot order by {fld}")

    # -- dialect hooks -------------------------------------------------------------------

    def map_value(self, map_column: str) -> str:
        """The value under the key parameter ``?`` of a string map column, NULL when missing."""
        raise NotImplementedError

    def map_contains(self, map_column: str) -> str:
        """Whether the map holds the key parameter ``?`` (even with a NULL value)."""
        raise NotImplementedError

    def uuid_param(self) -> str:
        """A string parameter read as a UUID; NULL when it is not one."""
        raise NotImplementedError

    def uuid_hex(self, expr: str) -> str:
        """A UUID as its 32 lower-case hex digits, without dashes."""
        raise NotImplementedError

    def json_pointer(self, key: str) -> str:
        """The parameter naming one top-level key of a JSON object (RFC 6901 pointer)."""
        return "/" + key.replace("~", "~0").replace("/", "~1")

    def json_text(self, json_expr: str) -> str:
        """The text of the member named by the pointer parameter ``?``; NULL if absent or bad."""
        raise NotImplementedError

    def to_double(self, expr: str) -> str:
        """``expr`` as a double, NULL when it does not read as a number."""
        raise NotImplementedError

    def regex_match(self, expr: str, pattern: str) -> str:
        """True when the regular expression matches anywhere in ``expr``."""
        raise NotImplementedError

    def ilike(self, expr: str, pattern: str) -> str:
        """Case-insensitive LIKE; ANSI SQL has none, so lower both sides."""
        return f"lower({expr}) LIKE lower({pattern})"


class DuckDBGenerator(SqlGenerator):
    """The DuckDB 2 dialect: MAP subscripts, TRY_CAST, JSON pointers and RE2 regexes."""

    def map_value(self, map_column: str) -> str:
        return f"{map_column}[?]"

    def map_contains(self, map_column: str) -> str:
        return f"map_contains({map_column}, ?)"

    def uuid_param(self) -> str:
        return "TRY_CAST(? AS UUID)"

    def uuid_hex(self, expr: str) -> str:
        return f"replace(CAST({expr} AS VARCHAR), '-', '')"

    def json_text(self, json_expr: str) -> str:
        return f"json_extract_string(TRY_CAST({json_expr} AS JSON), ?)"

    def to_double(self, expr: str) -> str:
        return f"TRY_CAST({expr} AS DOUBLE)"

    def regex_match(self, expr: str, pattern: str) -> str:
        return f"regexp_matches({expr}, {pattern})"

    def ilike(self, expr: str, pattern: str) -> str:
        return f"{expr} ILIKE {pattern}"


def _is_numeric(value: object) -> bool:
    first = value[0] if isinstance(value, tuple) and value else value
    return isinstance(first, (int, float)) and not isinstance(first, bool)


def compile_filter(
    node: Node | None, generator: SqlGenerator | None = None
) -> tuple[str, ParamList]:
    """Compile a parsed filter to ``(sql_fragment, params)``, DuckDB unless told otherwise.

    ``None`` (no filter) compiles to ``('TRUE', [])``.
    """
    if node is None:
        return "TRUE", []
    return (generator or DuckDBGenerator()).generate(node)


__all__ = ["DuckDBGenerator", "SqlGenerator", "compile_filter"]
