"""Private spill folders for the platform's DuckDB databases, instead of DuckDB's shared default.

DuckDB spills to `<cwd>/.tmp` unless told otherwise: one folder for every DuckDB process started
in the same directory, and a connection may always read its own temp folder, even with external
access disabled (issue #21: feature SQL read another process's 172 MB spill file with
`read_blob('.tmp/*.tmp')`). So every platform database spills into a folder of its own: a fresh
name, created 0700 (`tempfile.mkdtemp`), removed when the database is done with it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "mlplat-duckdb-"


@contextmanager
def private_temp_dir(purpose: str) -> Iterator[Path]:
    """A new folder only this process's user can open, removed with everything in it after the
    block."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{purpose}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def process_temp_dir(purpose: str) -> Path:
    """A private folder for a database that lives as long as this process; removed at its exit
    (only by the process that made it: a forked child inherits the exit hook, not the folder)."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{purpose}-"))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            # Nobody is left to report a failure to at exit; the folder is private either way.
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path
