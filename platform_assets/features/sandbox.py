"""Team SQL runs in a locked-down DuckDB: it sees only the tables the platform registered for it,
for a limited time and memory.

The platform reads a feature set's declared sources itself (Arrow tables, read through the lake
resource under the tenant's own prefix) and registers them by name; only then is the connection
locked: no file system or network access (`read_parquet`, `read_text`, `COPY`, `ATTACH`,
`EXPORT`, secrets), no extension install or load (automatic or not), and no configuration
changes (`SET`, `RESET`, `PRAGMA`). The query must be a single SELECT; its result is read back
by the platform, which alone writes outputs.

Limits (platform-owned, `sql` in limits.yaml, see `tenancy.limits.SqlLimits`): DuckDB's
`memory_limit`, `threads` and `max_temp_directory_size` are fixed at connect time, before the
lock; the wall time of everything done in the connection, the result's fetch included, is cut
off by interrupting the connection (DuckDB has no statement timeout).

Spilling: DuckDB lets a connection read its own temp folder even with external access disabled,
and its default is `<cwd>/.tmp`, shared by every DuckDB process started there. Each sandbox gets
a private one instead (`features.spill`: unique, 0700, removed afterwards), so the only spill
files its SQL can read are its own; every other path, another sandbox's temp folder and
`<cwd>/.tmp` included, is refused. The platform's other DuckDB database, the offline store's
(`features/offline_store/connection.py`), runs no team SQL and spills into a private folder too.

Not covered by DuckDB's limits: a single scalar call runs to its end before DuckDB sees an
interrupt, and memory it allocates outside DuckDB's buffers (a constant `repeat(...)` of up to
DuckDB's 4 GiB string limit, folded while planning) is not counted by `memory_limit`. Such a
query still fails at the time limit, once the call returns; the step's own memory (the pod's
limit in Kubernetes) is the bound on what it can allocate before then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from platform_assets.features.spill import private_temp_dir
from platform_assets.tenancy.limits import SqlLimits

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
# How often an expired deadline interrupts again: an interrupt that arrives while DuckDB runs
# nothing (between the platform's calls, or while a query is still being planned) is lost.
_REINTERRUPT_S = 0.05


class SandboxError(ValueError):
    """Team SQL the sandbox refused or that DuckDB rejected; callers add whose SQL it was."""


class _Deadline:
    """Interrupts a connection from `seconds` after entry until the block ends."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float, limit: str) -> None:
        self._con, self._seconds, self._limit = con, seconds, limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sql-deadline", daemon=True)
        self._started = time.monotonic()
        self.expired = False

    def __enter__(self) -> _Deadline:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def passed(self) -> bool:
        """Whether the time is up: interrupted, or work DuckDB could not interrupt (one long
        call, or planning) ended past the deadline."""
        return self.expired or time.monotonic() - self._started > self._seconds

    def error(self) -> SandboxError:
        return SandboxError(
            f"the SQL ran past the platform's {self._seconds:g} s {self._limit} and was stopped"
        )

    def _run(self) -> None:
        if self._stop.wait(self._seconds):
            return
        self.expired = True
        while not self._stop.is_set():
            self._con.interrupt()
            self._stop.wait(_REINTERRUPT_S)


class Sandbox:
    """A locked connection (`con`) within its limits; `query` runs the team's SELECT."""

    def __init__(self, con: duckdb.DuckDBPyConnection, deadline: _Deadline) -> None:
        self.con, self._deadline = con, deadline

    def query(self, sql: str) -> duckdb.DuckDBPyRelation:
        """The relation of one team SELECT; anything but a single SELECT is refused first."""
        single_select(sql)
        relation = self.con.sql(sql)
        # Planning folds constants (a `repeat` of gigabytes) where no interrupt reaches; a query
        # that planned past its time gets no second planning by the platform's next call.
        if self._deadline.passed():
            raise self._deadline.error()
        return relation


@contextmanager
def sandbox(
    tables: Mapping[str, pa.Table], limits: SqlLimits, *, dry_run: bool = False
) -> Iterator[Sandbox]:
    """An in-memory connection holding exactly `tables`, locked and limited before any team SQL
    runs. Whatever the block does in it must end within the time limit (`dry_run`: the one for
    `mlplat validate`); DuckDB's errors leave the block as `SandboxError`s saying which rule or
    limit the SQL broke."""
    import duckdb

    with private_temp_dir("sandbox") as temp_dir:
        con = duckdb.connect(
            config={
                **_CONNECT_CONFIG,
                "temp_directory": str(temp_dir),
                "max_temp_directory_size": _mib(limits.spill_gib),
                "memory_limit": _mib(limits.memory_limit_gib),
                "threads": str(limits.threads),
            }
        )
        try:
            for name, table in tables.items():
                con.register(name, table)
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            if dry_run:
                limit = (
                    "limit for `mlplat validate` over empty tables "
                    "(limits.yaml sql.dry_run_timeout_s)"
                )
                deadline = _Deadline(con, limits.dry_run_timeout_s, limit)
            else:
                deadline = _Deadline(con, limits.timeout_s, "limit (limits.yaml sql.timeout_s)")
            try:
                with deadline:
                    yield Sandbox(con, deadline)
            except duckdb.Error as exc:
                if deadline.passed():
                    raise deadline.error() from exc
                raise _refusal(exc, limits) from exc
            if deadline.passed():
                raise deadline.error()
        finally:
            con.close()


def _mib(gib: float) -> str:
    return f"{round(gib * 1024)}MiB"


def _refusal(exc: duckdb.Error, limits: SqlLimits) -> SandboxError:
    import duckdb

    # DuckDB's own advice after its first line (SET memory_limit, threads) is not the team's to
    # take.
    first_line = str(exc).splitlines()[0]
    if isinstance(exc, duckdb.OutOfMemoryException) and "max_temp_directory_size" in str(exc):
        return SandboxError(
            f"the SQL spilled more than the platform's {limits.spill_gib:g} GiB to disk "
            f"(limits.yaml sql.spill_gib) and was stopped: {first_line}"
        )
    if isinstance(exc, duckdb.OutOfMemoryException):
        return SandboxError(
            f"the SQL needed more than the platform's {limits.memory_limit_gib:g} GiB memory "
            "limit (limits.yaml sql.memory_limit_gib, at most half the step's memory) and was "
            f"stopped: {first_line}"
        )
    if isinstance(exc, duckdb.PermissionException):
        return SandboxError(
            f"the SQL may read only its declared sources as tables; file, network, "
            f"extension and configuration access is disabled in the sandbox ({exc})"
        )
    return SandboxError(f"DuckDB rejected the SQL: {exc}")


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
