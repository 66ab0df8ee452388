"""Training-set manifests: exactly what a training set was built from, and rebuilding it.

The training-set asset records a manifest beside its lake snapshot (`<version>.json`): the
FeatureService and each view with a hash of its definition (and the definition itself), the
version of every lake snapshot it read (the label source and each feature table, and for the
tenant's own views the source snapshots each table was computed from), the hash of the
entity/label frame, the content hash of the result and the versions of the store, Feast and
the engines. `reproduce` rebuilds the training set of a model version from those snapshots in a
scratch Feast repo and proves it identical by content hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platform_assets.models.training import time_split
from platform_assets.tenancy.specs import Labels

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from feast import Entity, FeatureService, FeatureStore, FeatureView

    from platform_assets.resources.lake import LakeResource
    from platform_assets.tenancy.specs import Labels

# 2: a tenant's own views record the source snapshots their tables were computed from
# (`feature_views[].sources`). Format 1 manifests lack them and stay readable.
MANIFEST_FORMAT = 2
MANIFEST_EXPORT = "json"  # the manifest is the lake export `<training set version>.json`


class ReproduceError(RuntimeError):
    """A training set cannot be rebuilt: a snapshot is gone, or the rebuild differs."""


def content_hash(table: pa.Table) -> str:
    """Hash of a table's schema and values (Arrow IPC of one chunk per column, without schema
    metadata), so equal content gives an equal hash however it was chunked or written."""
    import pyarrow as pa

    canonical = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, canonical.schema) as writer:
        writer.write_table(canonical)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


def _proto_bytes(obj: Entity | FeatureView | FeatureService) -> bytes:
    return obj.to_proto().SerializeToString(deterministic=True)


def definition_hash(obj: Entity | FeatureView | FeatureService) -> str:
    """Hash of a Feast object's definition. A view's is taken without its source's path and
    endpoint: which data it read is the snapshot version, recorded beside it."""
    spec = obj.to_proto().spec
    if "batch_source" in spec.DESCRIPTOR.fields_by_name:
        spec.batch_source.file_options.uri = ""
        spec.batch_source.file_options.s3_endpoint_override = ""
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()[:16]


def label_frame(raw: pd.DataFrame, labels: Labels) -> tuple[pd.DataFrame, int]:
    """The entity/label frame of a training set from its label source, and how many rows had
    no label (dropped)."""
    entity_df = raw[[*labels.entity_columns, labels.timestamp_column, labels.label_column]].rename(
        columns={labels.timestamp_column: "event_timestamp"}
    )
    unlabeled = int(entity_df[labels.label_column].isna().sum())
    return entity_df.dropna(subset=[labels.label_column]).reset_index(drop=True), unlabeled


def assemble(
    store: FeatureStore, entity_df: pd.DataFrame, service: FeatureService, test_fraction: float
) -> pd.DataFrame:
    """The training set: features of `service` joined point-in-time onto the entity frame,
    in event-time order, with its train/test split column."""
    df = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    df = df.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    df["split"] = time_split(df, test_fraction)
    return df


def versions() -> dict[str, str]:
    from platform_assets.features.offline_store import STORE_TYPE

    return {
        "offline_store": STORE_TYPE,
        **{p: package_version(p) for p in ("mlplat", "feast", "duckdb", "pyarrow", "pandas")},
    }


def build(
    *,
    tenant: str,
    model: str,
    labels: Labels,
    test_fraction: float,
    service: FeatureService,
    views: list[tuple[str, Entity, FeatureView, str]],
    label_source_version: str,
    entity_df: pd.DataFrame,
    training_set: pa.Table,
    training_set_version: str,
    view_sources: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The manifest of one training set. `views` holds (owner tenant, entity, view, version
    of the feature-table snapshot the view read); `view_sources` maps an own view's name to
    the source versions its table was computed from (`features.inputs`), where recorded."""
    view_sources = view_sources or {}
    import pyarrow as pa

    return {
        "format": MANIFEST_FORMAT,
        "training_set": {
            "tenant": tenant,
            "model": model,
            "version": training_set_version,
            "content_hash": content_hash(training_set),
            "rows": training_set.num_rows,
        },
        "built_at": datetime.now(UTC).isoformat(),
        "feature_service": {
            "name": service.name,
            "definition_hash": definition_hash(service),
            "proto": base64.b64encode(_proto_bytes(service)).decode(),
        },
        "feature_views": [
            {
                "name": view.name,
                "owner": owner,
                "definition_hash": definition_hash(view),
                "table": {"tenant": owner, "kind": "features", "name": view.name, "version": v},
                "proto": base64.b64encode(_proto_bytes(view)).decode(),
                "entity_proto": base64.b64encode(_proto_bytes(entity)).decode(),
                **(
                    {
                        "sources": [
                            {"tenant": owner, "kind": "sources", "name": n, "version": sv}
                            for n, sv in sorted(view_sources[view.name].items())
                        ]
                    }
                    if view.name in view_sources
                    else {}
                ),
            }
            for owner, entity, view, v in views
        ],
        "sources": [
            {
                "tenant": tenant,
                "kind": "sources",
                "name": labels.source,
                "version": label_source_version,
            }
        ],
        "entity_frame": {
            "hash": content_hash(pa.Table.from_pandas(entity_df, preserve_index=False)),
            "rows": len(entity_df),
            "labels": labels.model_dump(mode="json"),
            "test_fraction": test_fraction,
        },
        "versions": versions(),
    }


# What a snapshot was read for: the labels, or the feature view of that name.
LABELS = "labels"


def seen_snapshots(manifest: dict[str, Any]) -> dict[tuple[str, str, str, str], str]:
    """Every lake snapshot a training set was built from, directly or through a feature table,
    by what it was read for: (`LABELS` or view name, tenant, kind, name) -> version. A format 1
    manifest names no view's sources."""
    seen = {(LABELS, r["tenant"], r["kind"], r["name"]): r["version"] for r in manifest["sources"]}
    for view in manifest["feature_views"]:
        for r in [view["table"], *view.get("sources", [])]:
            seen[(view["name"], r["tenant"], r["kind"], r["name"])] = r["version"]
    return seen


def for_display(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without the serialized definitions (their hashes stay), for the UI."""
    shown = json.loads(json.dumps(manifest))
    shown["feature_service"].pop("proto", None)
    for view in shown["feature_views"]:
        view.pop("proto", None)
        view.pop("entity_proto", None)
    return shown


def save(lake: LakeResource, snapshot: Any, manifest: dict[str, Any]) -> str:
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    return lake.attach(snapshot, MANIFEST_EXPORT, data)


def load(
    lake: LakeResource, tenant: str, model: str, version: str, built_at: datetime | None = None
) -> dict[str, Any]:
    """The manifest of training-set snapshot `version` (built at `built_at`, when known, for
    telling pruning after the retention period from an early deletion); errors name it."""
    label = f"training set {tenant}/training_sets/{model}@{version}"
    _snapshot(lake, tenant, "training_sets", model, version, label, built_at)
    fs, base = lake.filesystem()
    path = f"{base}/{tenant}/training_sets/{model}/{version}.{MANIFEST_EXPORT}"
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise ReproduceError(
            f"{label} has no manifest ({path}): it was built before manifests were recorded"
        ) from None


@dataclass(frozen=True)
class Reproduced:
    content_hash: str
    rows: int
    manifest: dict[str, Any]


def _snapshot(
    lake: LakeResource,
    tenant: str,
    kind: str,
    name: str,
    version: str,
    what: str,
    built_at: datetime | None,
) -> Any:
    """The snapshot, or an error that says whether it went with the retention period or was
    deleted early."""
    try:
        return lake.snapshot(tenant, kind, name, version)
    except FileNotFoundError:
        label = f"{tenant}/{kind}/{name}@{version}"
        if built_at is None:
            raise ReproduceError(f"{what}: snapshot {label} no longer exists in the lake") from None
        retention = timedelta(days=lake.retention_days)
        if datetime.now(UTC) - built_at > retention:
            raise ReproduceError(
                f"{what} was built on {built_at:%Y-%m-%d}, more than the retention period "
                f"({lake.retention_days:g} days) ago; its snapshot {label} has been pruned, so "
                "it can no longer be reproduced"
            ) from None
        raise ReproduceError(
            f"{what}: snapshot {label} was deleted before the retention period "
            f"({lake.retention_days:g} days) ended (built on {built_at:%Y-%m-%d}); the training "
            "set cannot be reproduced without it"
        ) from None


def reproduce(lake: LakeResource, manifest: dict[str, Any]) -> Reproduced:
    """Rebuild a training set from the snapshots its manifest names, in a scratch Feast repo
    using the same offline store, and compare content hashes."""
    import pyarrow as pa
    from feast import Entity, FeatureService, FeatureStore, FeatureView
    from feast.protos.feast.core.Entity_pb2 import Entity as EntityProto
    from feast.protos.feast.core.FeatureService_pb2 import FeatureService as FeatureServiceProto
    from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto

    from platform_assets.features.offline_store import feature_store_yaml

    built = manifest["training_set"]
    what = f"training set {built['tenant']}/training_sets/{built['model']}@{built['version']}"
    built_at = datetime.fromisoformat(manifest["built_at"])
    snapshots = {}
    for read in [*manifest["sources"], *(v["table"] for v in manifest["feature_views"])]:
        args = (read["tenant"], read["kind"], read["name"], read["version"])
        snapshots[args] = _snapshot(lake, *args, what, built_at)

    frame = manifest["entity_frame"]
    labels = Labels.model_validate(frame["labels"])
    (source,) = manifest["sources"]
    raw = lake.read(source["tenant"], "sources", source["name"], source["version"]).to_pandas()
    entity_df, _ = label_frame(raw, labels)
    entity_hash = content_hash(pa.Table.from_pandas(entity_df, preserve_index=False))
    if entity_hash != frame["hash"]:
        raise ReproduceError(
            f"{what}: the entity/label frame rebuilt from snapshot {source['tenant']}/sources/"
            f"{source['name']}@{source['version']} hashes to {entity_hash}, not {frame['hash']}"
        )
    objects: list = []
    for recorded in manifest["feature_views"]:
        view = FeatureView.from_proto(
            FeatureViewProto.FromString(base64.b64decode(recorded["proto"]))
        )
        table = recorded["table"]
        snapshot = snapshots[(table["tenant"], table["kind"], table["name"], table["version"])]
        # The snapshot read then, wherever the lake is now.
        view.batch_source.file_options.uri = snapshot.uri
        entity = Entity.from_proto(
            EntityProto.FromString(base64.b64decode(recorded["entity_proto"]))
        )
        objects += [entity, view]
    service = FeatureService.from_proto(
        FeatureServiceProto.FromString(base64.b64decode(manifest["feature_service"]["proto"]))
    )
    with tempfile.TemporaryDirectory(prefix="mlplat-reproduce-") as scratch:
        root = Path(scratch)
        project = built["tenant"]
        (root / "feature_store.yaml").write_text(
            feature_store_yaml(project, root, root / "registry.db", root / "online.db")
        )
        store = FeatureStore(repo_path=str(root))
        store.apply([*objects, service])
        df = assemble(
            store, entity_df, store.get_feature_service(service.name), frame["test_fraction"]
        )
    table = pa.Table.from_pandas(df, preserve_index=False)
    rebuilt = content_hash(table)
    if rebuilt != built["content_hash"]:
        raise ReproduceError(
            f"{what}: the rebuild hashes to {rebuilt}, not the recorded {built['content_hash']} "
            f"({table.num_rows} rows rebuilt, {built['rows']} recorded)"
        )
    return Reproduced(rebuilt, table.num_rows, manifest)
