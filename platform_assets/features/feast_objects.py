"""Feast objects built from team YAML: entity, file source and view per feature set, and a
versioned FeatureService per model (`<model>_v<version>`), the contract with training."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from platform_assets.resources.feature_store import apply
from platform_assets.tenancy.specs import FeatureSetSpec, ModelSpec

if TYPE_CHECKING:  # loaded in the steps, not with the code location
    from feast import Entity, FeatureService, FeatureView


def feature_view(
    tenant: str, owner: str, spec: FeatureSetSpec, path: str, s3_endpoint: str | None = None
) -> tuple[Entity, FeatureView]:
    """`path` is the feature table's snapshot (a local path or `s3://...`); `s3_endpoint` the
    S3 endpoint to read it from when it is not AWS itself."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, Int64, String, UnixTimestamp

    tags = {"tenant": tenant, "managed_by": "mlplat"}
    entity = Entity(
        name=spec.entity.name,
        join_keys=[spec.entity.join_key],
        value_type=ValueType.STRING,
        description=spec.entity.description,
        owner=owner,
        tags=tags,
    )
    source = FileSource(
        name=f"{spec.name}_source",
        path=path,
        s3_endpoint_override=s3_endpoint,
        timestamp_field=spec.timestamp_field,
        created_timestamp_column=spec.created_timestamp_field or "",
        owner=owner,
        tags=tags,
    )
    types = {"int64": Int64, "float64": Float64, "string": String, "bool": Bool}
    schema = [Field(name=n, dtype=types[t]) for n, t in spec.features.items()]
    schema.append(Field(name=spec.timestamp_feature, dtype=UnixTimestamp))
    view = FeatureView(
        name=spec.name,
        entities=[entity],
        ttl=timedelta(days=spec.ttl_days),
        schema=schema,
        source=source,
        online=True,
        description=spec.description,
        owner=owner,
        tags=tags,
    )
    return entity, view


def feature_service(
    tenant: str, owner: str, model: ModelSpec, views: dict[str, FeatureView]
) -> FeatureService:
    """Select the model's features; every view also contributes its timestamp feature so the
    training set can prove that no feature is newer than its label."""
    from feast import FeatureService

    wanted: dict[str, list[str]] = {}
    for ref in model.features:
        set_ref, feature = ref.rsplit(":", 1)
        name = set_ref.split("/")[-1]
        wanted.setdefault(name, [])
        if feature == "*":
            wanted[name] += [f.name for f in views[name].features]
        else:
            wanted[name].append(feature)
    projections = []
    for name, features in wanted.items():
        ts = f"{name}_ts"
        selected = list(dict.fromkeys([*features, ts]))
        projections.append(views[name][selected])
    return FeatureService(
        name=model.feature_service,
        features=projections,
        description=f"Features of model {model.name} v{model.version}",
        owner=owner,
        tags={"tenant": tenant, "model": model.name, "managed_by": "mlplat"},
    )


def apply_current(lake, store, tenant: str, owner: str, model: ModelSpec, resolved: dict) -> tuple:
    """Point the model's views at the feature snapshots committed last and apply its
    FeatureService: what training and batch scoring read. `resolved` is
    `check_model_refs(...)`'s. Returns (service, [(owner, entity, view, snapshot version)])."""
    views, objects, read = {}, [], []
    for view_owner, fs in resolved.values():
        table_snapshot = lake.current(view_owner, "features", fs.name)
        entity, view = feature_view(view_owner, owner, fs, table_snapshot.uri, lake.s3_endpoint())
        views[fs.name] = view
        read.append((view_owner, entity, view, table_snapshot.version))
        if view_owner != tenant:
            objects += [entity, view]  # a shared view, read from its owner's prefix
    service = feature_service(tenant, owner, model, views)
    apply(store, [*objects, service])
    return service, read
