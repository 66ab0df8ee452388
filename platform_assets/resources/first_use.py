"""A lock for creating a store on first use, shared by every process that may create it.

A run's steps start together as separate processes (the multiprocess executor, or one pod each),
and on a fresh deployment several of them open the same new store at once. SQL stores create
their tables by checking and then creating, which races: `table ... already exists` on SQLite,
a unique violation on Postgres. Creating under this lock makes one process create the tables
while the others wait, then find them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_key(name: str) -> int:
    """A stable signed 64-bit Postgres advisory lock key for `name`."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)


@contextmanager
def creation_lock(url: str, name: str) -> Iterator[None]:
    """Hold the lock named `name` for the database at `url` (a SQLAlchemy URL) for the block.

    SQLite: a file lock beside the database file (processes on one machine share the file).
    Postgres: a transaction-level advisory lock in that database (processes anywhere), released
    when the block ends or its connection drops, so a killed process never leaves it held.
    """
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            yield  # an in-memory database belongs to one process
            return
        from filelock import FileLock

        path = Path(parsed.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            yield
    elif backend == "postgresql":
        engine = sa.create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
                yield
        finally:
            engine.dispose()
    else:
        raise ValueError(
            f"{parsed.render_as_string(hide_password=True)}: cannot create {name} safely on "
            f"{backend!r}; use a sqlite or postgresql URL"
        )
