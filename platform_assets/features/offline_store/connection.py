"""The per-process DuckDB database the store's queries share, one connection per retrieval."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
from feast.repo_config import RepoConfig


@contextmanager
def _connect(config: RepoConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh DuckDB connection (own registrations and temp tables) to a per-process database.

    Reusing the in-memory database saves starting and tearing one down per retrieval; it is
    keyed by process id because a DuckDB handle must not cross a fork.
    """
    store_config = config.offline_store
    threads = getattr(store_config, "threads", None)
    memory_limit = getattr(store_config, "memory_limit", None)
    key = (os.getpid(), threads, memory_limit)
    with _DATABASES_LOCK:
        database = _DATABASES.get(key)
        if database is None:
            settings: dict[str, Any] = {}
            if threads:
                settings["threads"] = int(threads)
            if memory_limit:
                settings["memory_limit"] = memory_limit
            database = _DATABASES[key] = duckdb.connect(config=settings)
        con = database.cursor()
    try:
        yield con
    finally:
        con.close()


_DATABASES: dict[tuple[int, int | None, str | None], duckdb.DuckDBPyConnection] = {}
_DATABASES_LOCK = threading.Lock()
