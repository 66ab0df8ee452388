"""The store's type path, the feature_store.yaml that selects it, its input error, and the names
the other modules share (internal column names)."""

from __future__ import annotations

from pathlib import Path

STORE_TYPE = "platform_assets.features.offline_store.AsofOfflineStore"
DEFAULT_ENTITY_TIMESTAMP = "event_timestamp"


# Internal column names; the double underscore prefix keeps them clear of user columns.
_ROW = "__asof_row"
_TS = "__asof_ts"
_SRC_ROW = "__asof_src_row"
_KEY = "__asof_key"
_VIS = "__asof_visible"


class OfflineStoreInputError(ValueError):
    """Bad input to the offline store: a missing column, file or wrongly typed timestamp."""


def feature_store_yaml(project: str, repo_dir: Path, registry: Path, online_db: Path) -> str:
    """Return feature_store.yaml text for a local repo that uses this offline store.

    Relative registry and online-store paths are taken relative to `repo_dir`, as Feast reads
    them, and written as absolute paths so the file means the same wherever it is read from.
    """

    def absolute(path: Path) -> str:
        return (Path(repo_dir) / path).resolve().as_posix()

    return (
        f"project: {project}\n"
        "provider: local\n"
        f"registry: {absolute(registry)}\n"
        "online_store:\n"
        "  type: sqlite\n"
        f"  path: {absolute(online_db)}\n"
        "offline_store:\n"
        f"  type: {STORE_TYPE}\n"
        # Materialize through pull_latest_from_table_or_query: Feast's own de-duplication of
        # pull_all's rows uses an unstable sort, so ties would not go to the last source row.
        "materialization:\n"
        "  pull_latest_features: true\n"
        "entity_key_serialization_version: 3\n"
        # The store reads any entity time zone itself; Feast's own coercion would copy the
        # entity frame and turn its timestamp columns into UTC, changing entity columns.
        "coerce_tz_aware: false\n"
    )
