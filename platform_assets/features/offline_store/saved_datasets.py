"""Where a persisted retrieval may be written: only somewhere free, or over a saved dataset
this store wrote, recognised by the marker in its parquet metadata."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from feast.errors import FeastError, SavedDatasetLocationAlreadyExists

from platform_assets.features.offline_store.config import OfflineStoreInputError

# Saved datasets this store writes carry this key in the parquet key-value metadata; a
# directory destination holds one file of that name.
SAVED_DATASET_KEY = b"mlplat.saved_dataset"
SAVED_DATASET_FILE = "data.parquet"


class SavedDatasetDestinationNotOurs(SavedDatasetLocationAlreadyExists, OfflineStoreInputError):
    """A saved-dataset destination exists and holds something this store did not write."""

    def __init__(self, location: str, reason: str) -> None:
        FeastError.__init__(
            self,
            f"saved dataset destination {location!r} exists and is not a saved dataset written "
            f"by AsofOfflineStore ({reason}); it was left untouched (allow_overwrite replaces "
            "only saved datasets this store wrote)",
        )


def _is_ours(fs: pafs.FileSystem, path: str) -> bool:
    try:
        metadata = pq.read_schema(path, filesystem=fs).metadata or {}
    except (OSError, pa.ArrowException):
        return False
    return SAVED_DATASET_KEY in metadata


def _destination_state(fs: pafs.FileSystem, path: str, is_dir: bool) -> str:
    """'free', 'ours', or why the destination holds something else."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return "free"
    if info.type == pafs.FileType.File:
        if is_dir:
            return "a file where the directory destination should be"
        return "ours" if _is_ours(fs, path) else "a parquet file without the saved-dataset marker"
    if not is_dir:
        return "a directory where the file destination should be"
    entries = sorted(e.base_name for e in fs.get_file_info(pafs.FileSelector(path)))
    if not entries:
        return "free"
    if entries == [SAVED_DATASET_FILE] and _is_ours(fs, f"{path}/{SAVED_DATASET_FILE}"):
        return "ours"
    return f"a directory holding {entries[:5]}{' ...' if len(entries) > 5 else ''}"
