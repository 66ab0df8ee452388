"""The per-process DuckDB database the store's queries share, one connection per retrieval."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
from feast.repo_config import RepoConfig

from platform_assets.features.spill import process_temp_dir


@contextmanager
def _connect(config: RepoConfig) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh DuckDB connection (own registrations and temp tables) to a per-process database.

    Reusing the in-memory database saves starting and tearing one down per retrieval; it is
    keyed by process id because a DuckDB handle must not cross a fork. It spills into a folder
    of its own (features/spill.py), never DuckDB's default `<cwd>/.tmp` that every DuckDB
    process started there shares: its spill files hold feature rows, shared ones of other
    tenants included.
    """
    store_config = config.offline_store
    threads = getattr(store_config, "threads", None)
    memory_limit = getattr(store_config, "memory_limit", None)
    key = (os.getpid(), threads, memory_limit)
    with _DATABASES_LOCK:
        database = _DATABASES.get(key)
        if database is None:
            settings: dict[str, Any] = {"temp_directory": str(process_temp_dir("offline"))}
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
