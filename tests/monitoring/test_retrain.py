"""Retraining on drift, one rule per test through `build_sensor_context`, on a real payments
pipeline whose champion drifts (retrain_state.py): a failed drift check retrains only on data
the champion has not seen, once per data, at most once per cooldown, judged from the platform's
own records. The same rules under the real daemon: test_retrain_daemon.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
import pytest

from platform_assets.models import manifest as manifests
from platform_assets.monitoring.sensors import (
    DATA_TAG,
    INTERVAL_ENV,
    MODEL_TAG,
    REASON_TAG,
    fingerprint,
    lineage,
    retrain_sensor,
    tenant_retrain_sensors,
    watch,
)
from platform_assets.resources.lake import LakeResource
from platform_assets.tenancy import catalog as catalogs
from platform_assets.tenancy.catalog import TenantCatalog, load_all
from tests.dagster_dev import Dev
from tests.monitoring.retrain_state import (
    MODEL,
    champion_with_drift,
    edit_payments,
    retrain_runs,
)
from tests.platform_sandbox import DEMO_DEFS, location_origin

pytestmark = pytest.mark.materialize

SENSOR = "payments_drift_retrain"
TRAINING_SET = dg.AssetKey(["payments", "training_sets", "fraud_detector"])
SOURCES = ("transactions", "fraud_labels")


@dataclass
class Payments:
    defs: dg.Definitions
    catalog: TenantCatalog
    instance: dg.DagsterInstance
    lake: LakeResource
    drifted: list[str]  # the champion's failed drift checks
    training_set: str  # the champion's training-set version

    def tick(self, sensor: dg.SensorDefinition | None = None):
        """One evaluation of the retrain sensor (the location's, or `sensor`)."""
        sensor = sensor or self.defs.resolve_sensor_def(SENSOR)
        with dg.build_sensor_context(
            instance=self.instance,
            repository_def=self.defs.get_repository_def(),
            resources={"lake": self.lake},
        ) as context:
            return sensor(context)

    def with_cooldown(self, hours: float) -> dg.SensorDefinition:
        """The location's sensor with the model's cooldown at `hours` (0 stands for a cooldown
        that has passed)."""
        spec = self.catalog.models["fraud_detector"]
        monitoring = spec.monitoring.model_copy(update={"retrain_cooldown_hours": hours})
        spec = spec.model_copy(update={"monitoring": monitoring})
        return retrain_sensor(self.catalog.tenant, [watch(self.catalog, spec)])

    def new_snapshot(self, source: str) -> str:
        """New content of `source` committed to the lake, as a delivery and its source step
        would: its newest 1% of rows left out. Returns the new version."""
        table = self.lake.read("payments", "sources", source)
        return self.lake.write(
            "payments", "sources", source, table.slice(0, table.num_rows * 99 // 100)
        ).version

    def launch(self, request: dg.RunRequest, location: str | None = "payments") -> dg.DagsterRun:
        """Create the run as the daemon does for `request` from code location `location`
        (None: created in a Python process, as `materialize()` does), without executing it."""
        job = self.defs.resolve_job_def("payments_pipeline")
        return self.instance.create_run_for_job(
            job,
            remote_job_origin=location_origin(location, job.name) if location else None,
            tags={**request.tags, "dagster/run_key": request.run_key},
            asset_selection=frozenset(request.asset_selection),
        )

    def current(self) -> dict[tuple[str, str, str], str]:
        return {("payments", "sources", s): self.version(s) for s in SOURCES}

    def version(self, source: str) -> str:
        return self.lake.current("payments", "sources", source).version


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Payments]:
    # The deployment `dagster dev` would serve, used in this process only: no daemon here.
    dev = Dev(tmp_path_factory.mktemp("retrain"), tenants=("payments",))
    edit_payments(dev.defs)
    with dev.in_process("payments") as defs, dev.instance() as instance:
        drifted = champion_with_drift(defs, instance)
        assert drifted, "the demo data drifts: a drift check of the champion fails"
        ts = instance.get_latest_materialization_event(TRAINING_SET).asset_materialization
        yield Payments(
            defs,
            catalogs.load_tenant(dev.defs / "payments"),
            instance,
            defs.resources["lake"],
            drifted,
            ts.metadata["data_version"].value,
        )


@pytest.fixture
def payments(world: Payments) -> Iterator[Payments]:
    """The world as the module built it, again after each test: the sources' pointers back at
    the champion's snapshots, no retrain runs."""
    pointers = [world.lake.current("payments", "sources", s) for s in SOURCES]
    yield world
    for snapshot in pointers:
        world.lake.commit(snapshot)
    for run in retrain_runs(world.instance):
        world.instance.delete_run(run.run_id)


def test_drift_on_the_data_the_champion_was_trained_on_retrains_nothing(payments):
    skip = payments.tick()
    assert isinstance(skip, dg.SkipReason)
    assert skip.skip_message == (
        f"{MODEL}: drift checks failed, but there is no data v1 has not seen: v1's training set "
        f"@{payments.training_set} read every snapshot its lineage holds now; retraining would "
        "learn nothing"
    )


def test_a_new_source_snapshot_requests_the_lineage_once_tagged(payments):
    seen = payments.version("transactions")
    new = payments.new_snapshot("transactions")
    (request,) = payments.tick()
    assert request.job_name is None  # the sensor's own job: the tenant pipeline
    assert payments.defs.resolve_sensor_def(SENSOR).job_name == "payments_pipeline"
    selected = {k.to_user_string() for k in request.asset_selection}
    assert {
        "payments/sources/fraud_labels",
        "payments/sources/transactions",
        "payments/features/card_activity",
        "payments/features/merchant_risk",
        "payments/training_sets/fraud_detector",
        "payments/models/fraud_detector",
        "payments/evaluation_reports/fraud_detector",
    } <= selected
    assert not any("/drift/" in k or "/predictions/" in k or "/cost" in k for k in selected)
    data = fingerprint(payments.current())
    assert request.tags["tenant"] == "payments"
    assert request.tags[MODEL_TAG] == MODEL and request.tags[DATA_TAG] == data
    assert request.run_key == f"fraud_detector:drift:{data}:1"
    first = sorted(payments.drifted)[0].removeprefix("drift_")
    assert request.tags[REASON_TAG].startswith(
        f"drift of {MODEL} with new data (payments/sources/transactions@{new} (it read "
        f"@{seen})): {first}: "
    )

    # Launched, the same data is never requested again: a fresh context, no cursor, decides so
    # from the instance's runs.
    run = payments.launch(request)
    skip = payments.tick()
    assert isinstance(skip, dg.SkipReason)
    assert skip.skip_message.startswith(
        f"{MODEL}: already retrained on this data (snapshots {data}): run {run.run_id} "
        "(not_started), launched "
    )
    payments.instance.report_run_failed(payments.instance.get_run_by_id(run.run_id))
    # A failed retrain learned nothing: with no cooldown it is tried again on the same data.
    (again,) = payments.tick(payments.with_cooldown(0))
    assert again.tags[DATA_TAG] == data and again.run_key == f"fraud_detector:drift:{data}:2"


def test_new_labels_are_unseen_data_too(payments):
    seen = payments.version("fraud_labels")
    new = payments.new_snapshot("fraud_labels")
    (request,) = payments.tick()
    assert request.tags[REASON_TAG].startswith(
        f"drift of {MODEL} with new data (payments/sources/fraud_labels@{new} (it read @{seen})): "
    )


def test_the_cooldown_holds_new_data_until_it_has_passed(payments):
    payments.new_snapshot("transactions")
    (request,) = payments.tick()
    run = payments.launch(request)
    launched = payments.instance.get_run_record_by_id(run.run_id).create_timestamp
    payments.new_snapshot("transactions")  # newer again, before the cooldown ends
    skip = payments.tick()
    when = "%Y-%m-%d %H:%M:%S UTC"
    assert skip.skip_message == (
        f"{MODEL}: new data, but within its retrain cooldown (24 h) of run {run.run_id} launched "
        f"{launched:{when}}; next retrain at {launched + timedelta(hours=24):{when}} or later"
    )
    (after,) = payments.tick(payments.with_cooldown(0))  # as once the cooldown has passed
    assert after.tags[DATA_TAG] == fingerprint(payments.current()) != request.tags[DATA_TAG]


def test_only_runs_launched_by_the_tenants_own_location_count(payments):
    """The tags are a launcher's to choose: a run of another location (from its UI, say) or of
    no location claiming this model and data neither dedups nor starts a cooldown."""
    payments.new_snapshot("transactions")
    (request,) = payments.tick()
    payments.launch(request, location="growth")
    payments.launch(request, location=None)
    (still,) = payments.tick()
    assert still.run_key == request.run_key


def test_the_manifest_records_the_sources_each_own_view_was_computed_from(payments):
    manifest = manifests.load(payments.lake, "payments", "fraud_detector", payments.training_set)
    assert manifest["format"] == 2
    transactions = {
        "tenant": "payments",
        "kind": "sources",
        "name": "transactions",
        "version": payments.version("transactions"),
    }
    for view in manifest["feature_views"]:
        assert view["sources"] == [transactions], view["name"]


def test_a_format_1_manifest_names_no_view_sources_so_they_count_as_unseen(payments):
    """A champion trained before views recorded their sources: its training set read them, but
    nothing says at which version, so a retrain runs once on the data as it is now."""
    fs, base = payments.lake.filesystem()
    path = f"{base}/payments/training_sets/fraud_detector/{payments.training_set}.json"
    with fs.open_input_stream(path) as f:
        original = f.read()
    old = json.loads(original)
    old["format"] = 1
    for view in old["feature_views"]:
        del view["sources"]
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(old).encode())
    try:
        (request,) = payments.tick()
    finally:
        with fs.open_output_stream(path) as f:
            f.write(original)
    assert request.tags[REASON_TAG].startswith(
        f"drift of {MODEL} with new data (payments/sources/transactions@"
        f"{payments.version('transactions')} (not on its record)): "
    )


def test_a_shared_views_lineage_is_its_owners_table():
    """A growth model reading payments' shared merchant_risk: what it can learn anew from is
    that table (growth's pipeline never reads payments' sources), beside its own sources."""
    tenants = load_all(DEMO_DEFS)
    growth = tenants["growth"]
    (spec,) = growth.models.values()
    resolved = {
        "user_engagement": ("growth", growth.feature_sets["user_engagement"]),
        "payments/merchant_risk": ("payments", tenants["payments"].feature_sets["merchant_risk"]),
    }
    assert lineage("growth", spec, resolved) == [
        (manifests.LABELS, "growth", "sources", spec.labels.source),
        ("user_engagement", "growth", "sources", "events"),
        ("merchant_risk", "payments", "features", "merchant_risk"),
    ]


def test_the_interval_is_read_when_the_location_builds(monkeypatch):
    catalog = load_all(DEMO_DEFS)["payments"]
    monkeypatch.setenv(INTERVAL_ENV, "7")
    (sensor,) = tenant_retrain_sensors(catalog)
    assert sensor.minimum_interval_seconds == 7
    monkeypatch.setenv(INTERVAL_ENV, "0.5")
    with pytest.raises(ValueError) as exc:
        tenant_retrain_sensors(catalog)
    assert str(exc.value) == (
        f"{INTERVAL_ENV}='0.5': the drift-retrain sensor's interval is a whole number of "
        "seconds, at least 1"
    )
    monkeypatch.delenv(INTERVAL_ENV)
    (sensor,) = tenant_retrain_sensors(catalog)
    assert sensor.minimum_interval_seconds == 300
