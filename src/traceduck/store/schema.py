"""The DuckDB schema of a trace store and its forward migrations.

``docs/schema.md`` explains every table and column; keep the two in step. A migration is only ever
appended: a store written by an older traceduck is brought forward when it is opened for writing,
and a store written by a newer traceduck is refused rather than misread.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from ..errors import TraceduckError


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "traces, spans and assessments",
        (
            """
            CREATE TABLE traces (
                trace_id           UUID    NOT NULL,
                project            VARCHAR NOT NULL,
                name               VARCHAR,
                state              VARCHAR NOT NULL,
                request_time       BIGINT  NOT NULL,
                execution_duration BIGINT,
                end_time           BIGINT,
                client_request_id  VARCHAR,
                trace_user         VARCHAR,
                session_id         VARCHAR,
                environment        VARCHAR,
                request_preview    VARCHAR,
                response_preview   VARCHAR,
                tags               MAP(VARCHAR, VARCHAR),
                metadata           MAP(VARCHAR, VARCHAR),
                metadata_json      VARCHAR,
                root_span_id       VARCHAR,
                stored_at          BIGINT  NOT NULL
            )
            """,
            """
            CREATE TABLE spans (
                trace_id       UUID    NOT NULL,
                span_id        VARCHAR NOT NULL,
                parent_span_id VARCHAR,
                project        VARCHAR NOT NULL,
                name           VARCHAR,
                span_type      VARCHAR,
                kind           VARCHAR,
                start_time_ns  BIGINT  NOT NULL,
                end_time_ns    BIGINT,
                status         VARCHAR NOT NULL,
                status_message VARCHAR,
                attributes     VARCHAR,
                inputs         VARCHAR,
                outputs        VARCHAR,
                events         VARCHAR
            )
            """,
            """
            CREATE TABLE assessments (
                assessment_id    VARCHAR NOT NULL,
                trace_id         UUID,
                project          VARCHAR NOT NULL,
                target_kind      VARCHAR NOT NULL,
                target           VARCHAR NOT NULL,
                span_id          VARCHAR,
                kind             VARCHAR NOT NULL,
                name             VARCHAR NOT NULL,
                value_json       VARCHAR,
                value_str        VARCHAR,
                value_num        DOUBLE,
                source_type      VARCHAR NOT NULL,
                source_id        VARCHAR,
                rationale        VARCHAR,
                metadata_json    VARCHAR,
                error_json       VARCHAR,
                valid            BOOLEAN NOT NULL,
                overrides        VARCHAR,
                create_time      BIGINT  NOT NULL,
                last_update_time BIGINT  NOT NULL
            )
            """,
            """
            CREATE TABLE llm_responses (
                response_id VARCHAR NOT NULL,
                trace_id    UUID    NOT NULL,
                span_id     VARCHAR NOT NULL,
                project     VARCHAR NOT NULL
            )
            """,
        ),
    ),
    Migration(
        2,
        "api keys and projects for the collector",
        (
            """
            CREATE TABLE api_keys (
                key_id      VARCHAR NOT NULL,
                key_hash    VARCHAR NOT NULL,
                project     VARCHAR NOT NULL,
                rights      VARCHAR NOT NULL,
                description VARCHAR,
                created_at  BIGINT  NOT NULL,
                revoked_at  BIGINT
            )
            """,
            """
            CREATE TABLE projects (
                name          VARCHAR NOT NULL,
                created_at    BIGINT  NOT NULL,
                settings_json VARCHAR
            )
            """,
        ),
    ),
    Migration(
        3,
        "llm_calls: model, tokens, cost and latency of every LLM call",
        (
            """
            CREATE TABLE llm_calls (
                trace_id        UUID    NOT NULL,
                span_id         VARCHAR NOT NULL,
                project         VARCHAR NOT NULL,
                model           VARCHAR,
                response_id     VARCHAR,
                input_tokens    BIGINT,
                output_tokens   BIGINT,
                cost_usd        DOUBLE,
                usage_estimated BOOLEAN,
                latency_ms      DOUBLE,
                start_time_ns   BIGINT  NOT NULL
            )
            """,
        ),
    ),
    Migration(
        4,
        "audit_log: append-only, hash-chained governance events",
        (
            """
            CREATE TABLE audit_log (
                seq         BIGINT  NOT NULL,
                time        BIGINT  NOT NULL,
                actor       VARCHAR NOT NULL,
                action      VARCHAR NOT NULL,
                project     VARCHAR,
                target      VARCHAR,
                before_json VARCHAR,
                after_json  VARCHAR,
                prev_hash   VARCHAR NOT NULL,
                hash        VARCHAR NOT NULL
            )
            """,
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


class SchemaVersionError(TraceduckError):
    """The store was written by a newer traceduck than this one."""


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version recorded in the store, 0 for an empty file."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' AND schema_name = 'main'"
        " AND database_name = current_database()"
    ).fetchall()[0][0]
    if not exists:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
    return int(row or 0)


def check_readable(con: duckdb.DuckDBPyConnection) -> int:
    """Raise if this traceduck cannot read the store; return its version."""
    version = current_version(con)
    if version > LATEST_VERSION:
        raise SchemaVersionError(
            f"this store has schema version {version}, newer than the {LATEST_VERSION} this "
            "traceduck knows; upgrade traceduck to read it"
        )
    return version


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the store forward to ``LATEST_VERSION``; each migration runs in its own transaction."""
    version = check_readable(con)
    if version == 0:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER NOT NULL, description VARCHAR NOT NULL,"
            " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
        )
    for migration in MIGRATIONS:
        if migration.version <= version:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in migration.statements:
                con.execute(statement)
            con.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)",
                [migration.version, migration.description],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        version = migration.version
    return version
