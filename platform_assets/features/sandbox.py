"""Team SQL runs in a locked-down DuckDB: it sees only the tables the platform registered for it.

The platform reads a feature set's declared sources itself (Arrow tables, read through the lake
resource under the tenant's own prefix) and registers them by name; only then is the connection
locked: no file system or network access (`read_parquet`, `read_text`, `COPY`, `ATTACH`,
`EXPORT`, secrets), no extension install or load (automatic or not), and no configuration
changes (`SET`, `RESET`, `PRAGMA`). The query must be a single SELECT; its result is read back
by the platform, which alone writes outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # duckdb and pyarrow load in the steps, not with the code location
    import duckdb
    import pyarrow as pa

# Settings fixed at connect time, before anything is registered or run.
_CONNECT_CONFIG = {
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
    "allow_community_extensions": "false",
    "allow_unsigned_extensions": "false",
    "allow_persistent_secrets": "false",
    # Python objects are visible only when registered, never by variable name.
    "python_enable_replacements": "false",
}


class SandboxError(ValueError):
    """Team SQL the sandbox refused or that DuckDB rejected; callers add whose SQL it was."""


def sandbox(tables: Mapping[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    """An in-memory connection holding exactly `tables`, locked before any team SQL runs."""
    import duckdb

    con = duckdb.connect(config=_CONNECT_CONFIG)
    for name, table in tables.items():
        con.register(name, table)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def single_select(sql: str) -> str:
    """The one SELECT statement in `sql`; anything else (more statements, DDL, COPY, SET,
    ATTACH, PRAGMA, ...) is refused before it runs."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SandboxError(f"DuckDB cannot parse the SQL: {exc}") from exc
    if len(statements) != 1:
        raise SandboxError(
            f"the SQL must be exactly one SELECT statement (found {len(statements)})"
        )
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise SandboxError(
            f"the SQL must be a single SELECT over the declared sources; "
            f"{kind.name} statements are not allowed (the platform writes all outputs)"
        )
    return sql


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyRelation:
    """Run one team SELECT in a sandboxed connection; refusals say what the sandbox allows."""
    import duckdb

    single_select(sql)
    try:
        return con.sql(sql)
    except duckdb.PermissionException as exc:
        raise SandboxError(
            f"the SQL may read only its declared sources as tables; file, network, "
            f"extension and configuration access is disabled in the sandbox ({exc})"
        ) from exc
    except duckdb.Error as exc:
        raise SandboxError(f"DuckDB rejected the SQL: {exc}") from exc
