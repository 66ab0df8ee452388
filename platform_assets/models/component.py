"""The `Model` component: training set -> model -> evaluation report for one team model."""

import dagster as dg

from platform_assets.cost.metering import meter
from platform_assets.features.feast_objects import apply_current
from platform_assets.features.inputs import recorded_inputs
from platform_assets.k8s.steps import k8s_placement, k8s_trainer_placement
from platform_assets.models import manifest as manifests
from platform_assets.models.flavors import (
    effective_params,
    fit,
    load_verified,
    log_model,
    record_logged,
)
from platform_assets.models.trainers.run import (
    accept,
    run_trainer,
    trainer_job,
    trainer_metadata,
)
from platform_assets.models.training import (
    failed_thresholds,
    feature_columns,
    metrics,
    plots,
    png_markdown,
)
from platform_assets.quality.checks import expectation_check, leakage_check
from platform_assets.resources.feature_store import FeastResource
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.mlflow import MlflowResource
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.assets import (
    GATED,
    Placement,
    TeamComponent,
    asset_kwargs,
    expectations_check,
    team_asset,
)
from platform_assets.tenancy.automation import scheduled_condition
from platform_assets.tenancy.catalog import (
    TenantCatalog,
    check_model_refs,
)
from platform_assets.tenancy.specs import ModelSpec

# Dagster's kind (the icon in the UI) of what trains each algorithm or trainer flavor.
TRAINED_BY = {"xgboost": "xgboost", "lightgbm": "lightgbm", "onnx": "onnx"}


def trained_kind(spec: ModelSpec) -> str:
    what = spec.trainer.flavor if spec.trainer is not None else str(spec.algorithm)
    return TRAINED_BY.get(what, "scikitlearn")


# Steps that talk to the MLflow tracking server outlive a short outage of it: each attempt fails
# with MLflow's error naming the server, is billed, and the step is tried again.
TRACKING_RETRY = dg.RetryPolicy(max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL)


def register_version(
    mlflow: MlflowResource, registered: str, model_id: str, run_id: str, tags: dict[str, str]
) -> int:
    """Register logged model `model_id` of MLflow run `run_id` as a new, tagged version of
    `registered`, as the platform's governance identity (the step's own MLflow credential;
    tenants may only READ registered models). An earlier attempt of this run may have
    registered a version and failed before returning: that version is deleted first, so a retry
    leaves no orphan. (`mlflow.register_model` would also tag the tenant's logged model, which
    only the tenant may edit.)"""
    from mlflow.exceptions import MlflowException

    client = mlflow.client()
    for stale in client.search_model_versions(f"name = '{registered}' and run_id = '{run_id}'"):
        client.delete_model_version(registered, stale.version)
    try:
        client.create_registered_model(registered)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        registered, f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id
    )
    return int(version.version)


def model_assets(
    catalog: TenantCatalog, spec: ModelSpec, placement: Placement | None = None
) -> list[dg.AssetsDefinition]:
    """Training set, model and evaluation report of one model (its batch scores and drift are
    monitoring's, its champion-alias check governance's)."""
    tenant = catalog.tenant
    resolved = check_model_refs(catalog, spec)
    requested = spec.resources or tenant.resources
    source = catalog.file_of("model", spec.name)
    labels = spec.labels
    registered = f"{tenant.name}.{spec.name}"
    policy = {
        "registered_model": registered,
        "primary_metric": spec.evaluation.primary_metric,
        "thresholds": spec.evaluation.thresholds,
        "promotion": spec.promotion.model_dump(mode="json"),
    }

    ts_kwargs = asset_kwargs(
        tenant,
        "training_set",
        ["training_sets", spec.name],
        f"Point-in-time training set of {spec.name}: {labels.source} joined with "
        f"FeatureService {spec.feature_service}.",
        {"feast", "parquet"},
        requested,
        source=source,
        metadata={
            "feature_service": spec.feature_service,
            "features": dg.MetadataValue.json(spec.features),
        },
        placement=placement,
    )
    ts_key = ts_kwargs["key"]
    feature_keys = [dg.AssetKey([owner, "features", fs.name]) for owner, fs in resolved.values()]

    @team_asset(
        **ts_kwargs,
        deps=[*feature_keys, dg.AssetKey([tenant.name, "sources", labels.source])],
        check_specs=[
            expectations_check(ts_key),
            dg.AssetCheckSpec(
                "leakage",
                asset=ts_key,
                blocking=True,
                description="No feature timestamp is later than its label",
            ),
        ],
        # A scheduled model's schedule holds its training set, the first asset only it has.
        automation_condition=scheduled_condition(catalog, spec),
    )
    def training_set(lake: LakeResource, feast: FeastResource, pricing: PricingResource):
        with meter(tenant.name, requested, pricing.catalog()) as usage:
            store = feast.store(tenant.name)
            # Each view reads the snapshot its feature asset committed last.
            service, read = apply_current(
                lake, store, tenant.name, tenant.owners[0], spec, resolved
            )
            labels_snapshot = lake.current(tenant.name, "sources", labels.source)
            raw = lake.read(
                tenant.name, "sources", labels.source, labels_snapshot.version
            ).to_pandas()
            entity_df, unlabeled = manifests.label_frame(raw, labels)
            df = manifests.assemble(store, entity_df, service, spec.split.test_fraction)
            import pyarrow as pa

            table = pa.Table.from_pandas(df, preserve_index=False)
            snapshot = lake.write(tenant.name, "training_sets", spec.name, table)
            manifest = manifests.build(
                tenant=tenant.name,
                model=spec.name,
                labels=labels,
                test_fraction=spec.split.test_fraction,
                service=service,
                # As registered (with the entity columns Feast infers on apply).
                views=[(o, e, store.get_feature_view(v.name), t) for o, e, v, t in read],
                label_source_version=labels_snapshot.version,
                entity_df=entity_df,
                training_set=table,
                training_set_version=snapshot.version,
                # What the tenant's own tables were computed from; a shared view's table is its
                # owner's, and its version is what this training set saw of it.
                view_sources={
                    v.name: inputs
                    for o, _, v, t in read
                    if o == tenant.name
                    and (inputs := recorded_inputs(lake, o, v.name, t)) is not None
                },
            )
            manifest_uri = manifests.save(lake, snapshot, manifest)
            ts_cols = [f"{fs.name}_ts" for _, fs in resolved.values()]
            checks = [
                expectation_check(df, spec.expectations, f"{tenant.name}_{spec.name}_ts"),
                leakage_check(df, "event_timestamp", ts_cols),
            ]
        features = [c for c in df.columns if c not in entity_df.columns and c != "split"]
        yield dg.MaterializeResult(
            data_version=dg.DataVersion(snapshot.version),
            metadata={
                "dagster/row_count": len(df),
                "uri": snapshot.uri,
                "data_version": snapshot.version,
                # What it was built from, to rebuild it exactly: `mlplat training-set reproduce`.
                "manifest": dg.MetadataValue.json(manifests.for_display(manifest)),
                "manifest_uri": manifest_uri,
                "unlabeled_rows_dropped": unlabeled,
                "label_rate": round(float(df[labels.label_column].mean()), 4),
                "train_rows": int((df["split"] == "train").sum()),
                "test_rows": int((df["split"] == "test").sum()),
                "feature_null_fraction": dg.MetadataValue.json(
                    {c: round(float(df[c].isna().mean()), 4) for c in features}
                ),
                **usage.metadata(pricing.catalog()),
            },
            check_results=checks,
        )

    trainer = spec.trainer
    model_kwargs = asset_kwargs(
        tenant,
        "model",
        ["models", spec.name],
        f"{spec.description} ({spec.trained_by}; registered in MLflow as {registered}).",
        {trained_kind(spec), "mlflow"},
        requested,
        source=source,
        metadata={
            **(
                {"algorithm": spec.algorithm, "params": dg.MetadataValue.json(spec.params)}
                if trainer is None
                else {
                    "trainer": trainer.entrypoint,
                    "flavor": trainer.flavor,
                    "params": dg.MetadataValue.json(trainer.params),
                }
            ),
            "registered_model": registered,
        },
        freshness=spec.freshness,
        # On Kubernetes a trainer's model step launches the trainer's pod: its own pod mounts
        # its account's token for that (and nothing else does).
        placement=k8s_trainer_placement if trainer and placement is k8s_placement else placement,
    )
    model_key = model_kwargs["key"]

    @team_asset(
        **model_kwargs,
        deps=[ts_key],
        automation_condition=GATED,
        retry_policy=TRACKING_RETRY,
    )
    def model(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        mlflow: MlflowResource,
        pricing: PricingResource,
    ):
        import mlflow as mlflow_lib

        with meter(tenant.name, requested, pricing.catalog()) as usage:
            version = lake.current(tenant.name, "training_sets", spec.name).version
            df = lake.read(tenant.name, "training_sets", spec.name, version).to_pandas()
            train = df[df["split"] == "train"]
            cols = feature_columns(df, labels.entity_columns, labels.label_column)
            # Features are doubles: any of them is missing when no row falls within the TTL,
            # and MLflow's signature would reject NaN in a column it saw as integer.
            X = train[cols].astype("float64")
            y = train[labels.label_column].astype(int).to_numpy()
            if trainer is None:
                trained = fit(str(spec.algorithm), spec.params, X, y)
                logged = {
                    "algorithm": str(spec.algorithm),
                    **effective_params(str(spec.algorithm), spec.params),
                }
                ran: dict[str, dg.RawMetadataValue] = {}
            else:
                # The team's code, in its sandbox or pod, sees this split and nothing else.
                job = trainer_job(catalog, spec, requested, tuple(cols))
                split = train[[*cols, labels.label_column]]
                output = run_trainer(context, job, split, usage, lake, tenant.namespace)
                trained = accept(output, job, X)
                logged = {"trainer": trainer.entrypoint, "flavor": trainer.flavor, **trainer.params}
                ran = trainer_metadata(output)
            train_metrics = metrics(y, trained.predict_proba(X)[:, 1])
            tags = {
                "dagster_run_id": context.run_id,
                "asset_key": model_key.to_user_string(),
                "tenant": tenant.name,
                "training_set_version": version,
                "feature_service": spec.feature_service,
            }
            # Trained and logged as the tenant's MLflow user; registered below by the platform.
            with mlflow.run(
                context, f"{tenant.name}/{spec.name}", {"tenant": tenant.name}, tenant.name
            ):
                mlflow_lib.log_params({**logged, "features": ",".join(cols)})
                mlflow_lib.log_metrics({f"train_{k}": v for k, v in train_metrics.items()})
                # In the flavor's safe format: skops, XGBoost JSON or LightGBM text. Every
                # loader reads it by the model file it holds (models/flavors.py).
                info = log_model(trained, X)
            run_id = info.run_id
            # Hashed before it is registered, and recorded in this materialization: the
            # platform's own record, which promotion carries into the champion's evidence and
            # every loader verifies against. The MLflow tag is for people, never read back.
            digest = record_logged(mlflow, info.model_id, trained, X, f"{registered} ({run_id})")
            tags["artifact_sha256"] = digest
            mv = register_version(mlflow, registered, info.model_id, run_id, tags)
        return dg.MaterializeResult(
            metadata={
                "registered_model": registered,
                "model_version": int(mv),
                "model_uri": f"models:/{registered}/{mv}",
                "mlflow_run_id": run_id,
                "artifact_sha256": digest,
                "training_set_version": version,
                "train_rows": len(train),
                "features": dg.MetadataValue.json(cols),
                "train_metrics": dg.MetadataValue.json(
                    {k: round(v, 4) for k, v in train_metrics.items()}
                ),
                **ran,
                **usage.metadata(pricing.catalog()),
            },
        )

    eval_kwargs = asset_kwargs(
        tenant,
        "evaluation_report",
        ["evaluation_reports", spec.name],
        f"Held-out evaluation of {registered} against its thresholds and promotion policy.",
        {"scikitlearn", "mlflow"},
        requested,
        source=source,
        metadata={"policy": dg.MetadataValue.json(policy)},
        placement=placement,
    )

    @team_asset(
        **eval_kwargs,
        deps=[model_key, ts_key],
        automation_condition=GATED,
        retry_policy=TRACKING_RETRY,
    )
    def evaluation_report(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        mlflow: MlflowResource,
        pricing: PricingResource,
    ):
        import matplotlib.pyplot as plt
        import mlflow as mlflow_lib

        with meter(tenant.name, requested, pricing.catalog()) as usage:
            event = context.instance.get_latest_materialization_event(model_key)
            if event is None or event.asset_materialization is None:
                raise RuntimeError(f"{model_key.to_user_string()} has not been materialized")
            if not event.run_id:
                # A runless event (the UI's "report event") could name any version and hash.
                raise RuntimeError(
                    f"the latest materialization of {model_key.to_user_string()} was reported "
                    "outside a run; only the model step's own materialization names what to "
                    "evaluate (materialize the model)"
                )
            md = event.asset_materialization.metadata
            mv = int(md["model_version"].value)
            client = mlflow.client()  # also points the mlflow module at our registry
            recorded = md["artifact_sha256"].value if "artifact_sha256" in md else None
            pipeline = load_verified(mlflow, registered, mv, recorded)
            # Held out from the very snapshot the model was trained on.
            model_version = client.get_model_version(registered, str(mv))
            trained_on = model_version.tags.get("training_set_version")
            df = lake.read(tenant.name, "training_sets", spec.name, trained_on).to_pandas()
            test = df[df["split"] == "test"]
            cols = feature_columns(df, labels.entity_columns, labels.label_column)
            y = test[labels.label_column].astype(int).to_numpy()
            proba = pipeline.predict_proba(test[cols].astype("float64"))[:, 1]
            values = metrics(y, proba)
            failed = failed_thresholds(values, spec.evaluation.thresholds)
            figures = plots(y, proba, spec.name)
            source_run = model_version.run_id
            with mlflow.run(
                context, f"{tenant.name}/{spec.name}", {"tenant": tenant.name}, tenant.name
            ):
                mlflow_lib.log_metrics({f"test_{k}": v for k, v in values.items()})
                for name, fig in figures.items():
                    mlflow_lib.log_figure(fig, f"evaluation/{name}.png")
            for k, v in values.items():
                client.set_model_version_tag(registered, str(mv), f"eval_{k}", f"{v:.6f}")
            client.set_model_version_tag(
                registered, str(mv), "passes_thresholds", str(not failed).lower()
            )
            images = {f"plot_{n}": dg.MetadataValue.md(png_markdown(f)) for n, f in figures.items()}
            plt.close("all")
        return dg.MaterializeResult(
            metadata={
                "registered_model": registered,
                "model_version": mv,
                # The Dagster run that trained this version: how the promotion evidence finds
                # the model's materialization, its launcher and its training set.
                "model_run_id": event.run_id,
                "training_run_id": source_run,
                "primary_metric": spec.evaluation.primary_metric,
                "primary_value": round(values[spec.evaluation.primary_metric], 6),
                "metrics": dg.MetadataValue.json({k: round(v, 6) for k, v in values.items()}),
                "thresholds": dg.MetadataValue.json(spec.evaluation.thresholds),
                "passes_thresholds": not failed,
                "failed_thresholds": dg.MetadataValue.json(failed),
                "test_rows": len(test),
                **images,
                **usage.metadata(pricing.catalog()),
            },
        )

    return [training_set, model, evaluation_report]


class Model(TeamComponent, ModelSpec):
    """A model of one tenant, as three assets:

    - `<tenant>/training_sets/<name>`: point-in-time join of the labels with the model's Feast
      FeatureService; blocking checks `expectations` and `leakage`.
    - `<tenant>/models/<name>`: trained with scikit-learn, XGBoost or LightGBM, logged to
      MLflow in the flavor's safe format (skops, XGBoost JSON, LightGBM text), registered as
      `<tenant>.<name>` with the Dagster run id, asset key, tenant and data version as tags.
    - `<tenant>/evaluation_reports/<name>`: held-out metrics against thresholds, with ROC,
      precision-recall and calibration plots.
    """
