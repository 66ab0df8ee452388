"""The exporter against a real instance: runs of a real tenant's assets (one failing its blocking
check), the cost ledger, a request log in the agreed format, scraped over HTTP."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa
import pytest
from dagster._core.test_utils import create_run_for_test
from prometheus_client.parser import text_string_to_metric_families

from platform_assets.composition.locations import tenant_assets
from platform_assets.cost.ledger import month_to_date
from platform_assets.observability import series as S
from platform_assets.observability.exporter import PlatformState, Tenants, serve
from platform_assets.services.stack import free_port
from platform_assets.tenancy.limits import limits_for
from tests.observability.conftest import LABELS, TRIPS, materialize
from tests.platform_sandbox import launch_from

pytestmark = pytest.mark.materialize


def _requests(rows: list[tuple[str, int, str | None, float, list[float | None]]]) -> pa.Table:
    """Request-log rows in the agreed shape: one per entity, one for a request that failed."""
    now = datetime.now(UTC)
    out: dict[str, list] = {
        k: []
        for k in (
            "request_id",
            "ts",
            "tenant",
            "model",
            "model_version",
            "status",
            "error",
            "latency_ms",
            "prediction",
            "features_as_of",
            "driver_id",
            "trips_7d",
        )
    }
    for request_id, status, error, latency, predictions in rows:
        for i, prediction in enumerate(predictions):
            out["request_id"].append(request_id)
            out["ts"].append(now)
            out["tenant"].append("ridehail")
            out["model"].append("driver_churn")
            out["model_version"].append(None if error else 3)
            out["status"].append(status)
            out["error"].append(error)
            out["latency_ms"].append(latency)
            out["prediction"].append(prediction)
            out["features_as_of"].append(None if error else now - timedelta(hours=1))
            out["driver_id"].append(f"d{i}")
            out["trips_7d"].append(None if error else float(i))
    schema = pa.schema(
        [
            ("request_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("tenant", pa.string()),
            ("model", pa.string()),
            ("model_version", pa.int64()),
            ("status", pa.int32()),
            ("error", pa.string()),
            ("latency_ms", pa.float64()),
            ("prediction", pa.float64()),
            ("features_as_of", pa.timestamp("us", tz="UTC")),
            ("driver_id", pa.string()),
            ("trips_7d", pa.float64()),
        ]
    )
    return pa.Table.from_pydict(out, schema=schema)


def _scrape(port: int) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one scrape over HTTP."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert "tenant" in sample.labels, f"{sample.name} has no tenant label"
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _value(samples, name: str, **labels) -> float:
    """The sum over the samples of `name` whose labels include `labels`."""
    matching = [
        v
        for key, v in samples.get(name, {}).items()
        if all(dict(key).get(k) == val for k, val in labels.items())
    ]
    assert matching, f"no {name} sample with {labels} in {samples.get(name)}"
    return sum(matching)


def test_scrape_shows_runs_steps_checks_freshness_cost_and_serving(ridehail, instance):
    root, defs = ridehail
    lake = defs.resources["lake"]
    # A run from before the exporter started: counted from the history (runs and checks).
    assert materialize(defs, instance, LABELS)
    now = time.time()
    state = PlatformState(
        instance, Tenants.load(tenant_assets, root), lake, lake_interval=0, clock=lambda: now
    )
    server, thread = serve(state, "127.0.0.1", free_port())
    assert materialize(defs, instance, LABELS)
    assert not materialize(defs, instance, TRIPS)  # its expectations check fails
    lake.append(
        "ridehail",
        "serving",
        "driver_churn",
        _requests(
            [
                ("r1", 200, None, 12.0, [0.1, 0.7, 0.2]),
                ("r2", 404, "unknown entity driver_id='zz'", 3.0, [None]),
                ("r3", 200, None, 40.0, [0.9]),
            ]
        ),
    )
    try:
        port = server.server_port
        first = _scrape(port)

        # Runs by tenant, job and outcome; the failed run's step and checks.
        runs = S.RUNS.samples[0]
        assert _value(first, runs, tenant="ridehail", outcome="success") == 2
        assert _value(first, runs, tenant="ridehail", outcome="failure") == 1
        # Steps and checks count from the exporter's start: the two runs since.
        assert _value(first, S.STEP_FAILURES.samples[0], tenant="ridehail") == 1
        assert _value(first, "mlplat_step_duration_seconds_count", tenant="ridehail") == 1
        assert _value(first, "mlplat_run_queue_wait_seconds_count", tenant="ridehail") == 3
        assert _value(first, "mlplat_run_duration_seconds_count", tenant="ridehail") == 3
        checks = S.CHECKS.samples[0]
        trips = TRIPS.to_user_string()
        assert _value(first, checks, asset=trips, check="expectations", passed="false") == 1
        assert _value(first, checks, asset=trips, check="schema", passed="true") == 1
        # Two checks on the labels, evaluated in the run before the exporter and the one after.
        assert _value(first, checks, asset=LABELS.to_user_string(), passed="true") == 4
        assert _value(first, "mlplat_runs_in_progress", tenant="ridehail") == 0

        # Freshness against the policy Dagster has on the asset (2 h fail, 1 h warn).
        labels = LABELS.to_user_string()
        assert _value(first, S.FRESHNESS_FAIL.name, asset=labels) == 7200
        assert _value(first, S.FRESHNESS_WARN.name, asset=labels) == 3600
        assert 0 <= _value(first, S.FRESHNESS_LAG.name, asset=labels) < 600
        assert _value(first, S.FRESHNESS_FAIL.name, asset=trips) == 7200
        assert trips not in str(first.get(S.FRESHNESS_LAG.name))  # never materialized
        feature = "ridehail/features/driver_stats"  # the demo's feature-view SLO, 26 h
        assert _value(first, S.FRESHNESS_FAIL.name, asset=feature) == 26 * 3600
        assert _value(first, S.SLO_TARGET.name, tenant="ridehail", slo="run_success") == 0.95

        # Cost against the ledger and the platform's budget.
        month = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
        spent = month_to_date(instance, "ridehail", month)
        assert spent > 0
        assert _value(first, S.COST_MTD.name, tenant="ridehail") == pytest.approx(spent)
        budget = limits_for("ridehail").budget.monthly_usd
        assert _value(first, S.BUDGET.name, tenant="ridehail") == budget
        moment = datetime.fromtimestamp(now, UTC)
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        elapsed = (moment - start) / ((start + timedelta(days=32)).replace(day=1) - start)
        burn = _value(first, S.BURN_RATE.name, tenant="ridehail")
        assert burn == pytest.approx(spent / budget / elapsed)

        # Serving, from the request log: requests (not rows), errors, entities, latency.
        model = {"tenant": "ridehail", "model": "driver_churn"}
        requests = S.SERVING_REQUESTS.samples[0]
        assert _value(first, requests, status="200", **model) == 2
        assert _value(first, requests, status="404", **model) == 1
        assert _value(first, S.SERVING_ERRORS.samples[0], **model) == 1
        assert _value(first, S.SERVING_PREDICTIONS.samples[0], **model) == 4
        assert _value(first, "mlplat_serving_request_latency_seconds_count", **model) == 3
        assert _value(first, "mlplat_serving_request_latency_seconds_sum", **model) == (
            pytest.approx(0.055)
        )
        le_10ms = _value(first, "mlplat_serving_request_latency_seconds_bucket", le="0.01", **model)
        assert le_10ms == 1

        # The next scrape reads only what is new: one more run, one more batch.
        assert materialize(defs, instance, LABELS)
        lake.append(
            "ridehail",
            "serving",
            "driver_churn",
            _requests([(uuid.uuid4().hex, 500, "model failed to load", 8.0, [None])]),
        )
        second = _scrape(port)
        assert _value(second, runs, tenant="ridehail", outcome="success") == 3
        assert _value(second, runs, tenant="ridehail", outcome="failure") == 1
        assert _value(second, checks, asset=labels, passed="true") == 6
        assert _value(second, requests, status="200", **model) == 2
        assert _value(second, requests, status="500", **model) == 1
        assert _value(second, S.SERVING_ERRORS.samples[0], **model) == 2
        assert _value(second, S.COST_MTD.name, tenant="ridehail") == pytest.approx(
            month_to_date(instance, "ridehail", month)
        )
        assert _value(second, S.COST_MTD.name, tenant="ridehail") > spent
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_a_changed_tenant_folder_is_read_again_without_a_restart(monkeypatch, instance):
    """A tenant's SLO edited, and a new tenant added, while the exporter runs."""
    import shutil

    from prometheus_client import generate_latest

    from platform_assets.observability.exporter import registry_for
    from tests.platform_sandbox import DEMO_DEFS, sandbox

    def scrape(registry) -> dict[str, dict[tuple, float]]:
        samples: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[key] = sample.value
        return samples

    now = [time.time()]
    with sandbox(monkeypatch) as (root, _):
        state = PlatformState(
            instance, Tenants.load(tenant_assets, root), tenants_interval=30, clock=lambda: now[0]
        )
        registry = registry_for(state)
        target = S.SLO_TARGET.name
        assert _value(scrape(registry), target, tenant="ridehail", slo="run_success") == 0.95
        tenant = root / "ridehail" / "tenant" / "defs.yaml"
        tenant.write_text(tenant.read_text().replace("target: 0.95", "target: 0.99"))
        shutil.copytree(DEMO_DEFS / "payments", root / "payments")
        # Looked at again only once the interval has passed.
        assert _value(scrape(registry), target, tenant="ridehail", slo="run_success") == 0.95
        now[0] += 31
        samples = scrape(registry)
        assert _value(samples, target, tenant="ridehail", slo="run_success") == 0.99
        assert _value(samples, target, tenant="payments", slo="run_success") > 0
        assert state.tenants.names == ["payments", "ridehail"]


def test_free_form_tags_never_become_label_values(ridehail, instance):
    """A 10,000-character tenant tag and 300 distinct tenant tags and job names: every label
    value is a tenant, job or asset the platform defines, or `other`/`unknown`, counted."""
    from prometheus_client import generate_latest

    from platform_assets.observability.exporter import registry_for

    root, defs = ridehail
    huge = "x" * 10_000
    # ridehail's location launches a run claiming the huge tenant: its step refuses; the run
    # counts for ridehail, the location's tenant.
    run = launch_from(
        "ridehail", [defs.get_assets_def(LABELS)], instance, defs.resources, {"tenant": huge}
    )
    assert run.status == dg.DagsterRunStatus.FAILURE
    # Runs no location launched (a process holding the instance), with free-form tags and job
    # names, one also forging Dagster's location tag.
    for i in range(300):
        tags = {"tenant": f"tenant-{i}-{uuid.uuid4().hex}", "dagster/code_location": huge}
        create_run_for_test(
            instance,
            job_name=f"job_{i}_{uuid.uuid4().hex}",
            status=dg.DagsterRunStatus.SUCCESS,
            tags=tags if i == 0 else {"tenant": tags["tenant"]},
        )
    state = PlatformState(instance, Tenants.load(tenant_assets, root))
    text = generate_latest(registry_for(state)).decode()
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                values.setdefault(label, set()).add(value)
    assert values["tenant"] <= {"ridehail", "platform", "unknown", "other"}
    assert values["job"] <= {"__ASSET_JOB", "ridehail_pipeline", "other"}
    assert max(len(v) for vs in values.values() for v in vs) < 100
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    runs = S.RUNS.samples[0]
    failed = (("job", "__ASSET_JOB"), ("outcome", "failure"), ("tenant", "ridehail"))
    assert samples[(runs, failed)] == 1
    unknown = (("job", "other"), ("outcome", "success"), ("tenant", "unknown"))
    assert samples[(runs, unknown)] == 299
    # The forged location tag names no tenant folder: `other`.
    assert samples[(runs, (("job", "other"), ("outcome", "success"), ("tenant", "other")))] == 1
    folded = S.FOLDED_LABELS.samples[0]
    assert samples[(folded, (("label", "tenant"), ("tenant", "platform")))] == 300
    assert samples[(folded, (("label", "job"), ("tenant", "platform")))] == 300


def _check_counts(samples) -> dict[tuple[str, ...], float]:
    """{(tenant, asset, check, severity, passed): value} of the check series in a scrape."""
    out = {}
    for key, value in samples.get(S.CHECKS.samples[0], {}).items():
        labels = dict(key)
        out[tuple(labels[n] for n in ("tenant", "asset", "check", "severity", "passed"))] = value
    return out


def _check_evaluations_are_exported(defs: dg.Definitions, instance) -> None:
    """Checks evaluated before the exporter started are counted from its history; later ones
    once each, on whatever storage `instance` has."""
    labels, trips = LABELS.to_user_string(), TRIPS.to_user_string()
    assert materialize(defs, instance, LABELS)
    assert not materialize(defs, instance, TRIPS)  # its expectations fail (a row out of range)
    server, thread = serve(
        PlatformState(instance, Tenants.load(tenant_assets), lake_interval=3600),
        "127.0.0.1",
        free_port(),
    )
    try:
        first = _check_counts(_scrape(server.server_port))
        assert first == {
            ("ridehail", labels, "expectations", "ERROR", "true"): 1,
            ("ridehail", labels, "schema", "ERROR", "true"): 1,
            ("ridehail", trips, "expectations", "ERROR", "false"): 1,
            ("ridehail", trips, "schema", "ERROR", "true"): 1,
        }
        # Evaluated while the exporter runs: counted once, however often it is scraped.
        assert materialize(defs, instance, LABELS)
        second = _check_counts(_scrape(server.server_port))
        assert _check_counts(_scrape(server.server_port)) == second
        assert second == {
            **first,
            ("ridehail", labels, "expectations", "ERROR", "true"): 2,
            ("ridehail", labels, "schema", "ERROR", "true"): 2,
        }
    finally:
        server.shutdown()
        thread.join(timeout=10)
    # An exporter whose history starts after those evaluations counts only the later ones.
    later = time.time() + 3600
    state = PlatformState(
        instance, Tenants.load(tenant_assets), history_days=0, clock=lambda: later
    )
    state.refresh()
    assert state.checks == {}
    assert materialize(defs, instance, LABELS)
    state.refresh()
    assert dict(state.checks) == {
        ("ridehail", labels, "expectations", "ERROR", "true"): 1,
        ("ridehail", labels, "schema", "ERROR", "true"): 1,
    }


def test_check_evaluations_from_before_the_exporter_are_scraped(ridehail, instance):
    _check_evaluations_are_exported(ridehail[1], instance)


@pytest.fixture
def postgres_instance(platform_home, postgres_url) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on a new Postgres database (dropped after), as `services` runs it."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"mlplat_exporter_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    # dagster-postgres binds a NOTIFY parameter, which only psycopg2 accepts (as services runs it).
    url = make_url(postgres_url).set(database=name, drivername="postgresql+psycopg2")
    url = url.render_as_string(hide_password=False)
    home = platform_home / "pg_dagster_home"
    home.mkdir()
    try:
        with dg.instance_for_test(
            overrides={"storage": {"postgres": {"postgres_url": url}}},
            temp_dir=str(home),
        ) as instance:
            yield instance
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.services
def test_check_evaluations_are_scraped_on_postgres(ridehail, postgres_instance):
    _check_evaluations_are_exported(ridehail[1], postgres_instance)


def test_a_check_in_progress_at_a_scrape_is_counted_when_it_completes(ridehail, instance):
    """A check planned in a run that is still going when the exporter reads: its execution row
    is completed in place later, under the id already read, and counted then, once."""
    import threading

    key = dg.AssetKey(["ridehail", "sources", "slow"])
    check = dg.AssetCheckKey(key, "slow_check")
    started, release = threading.Event(), threading.Event()

    @dg.asset(key=key, check_specs=[dg.AssetCheckSpec("slow_check", asset=key)])
    def slow():
        started.set()
        assert release.wait(60)
        yield dg.Output(1)
        yield dg.AssetCheckResult(check_name="slow_check", passed=False)

    tenants = Tenants.load(tenant_assets)
    tenants.checks[check] = "ridehail"
    state = PlatformState(instance, tenants)
    state.refresh()
    done: list[bool] = []
    run = threading.Thread(
        target=lambda: done.append(dg.materialize([slow], instance=instance).success)
    )
    run.start()
    try:
        assert started.wait(60)
        state.refresh()
        assert state.check_reads[check].waiting
        assert not any(labels[2] == "slow_check" for labels in state.checks)
    finally:
        release.set()
        run.join(60)
    assert done == [True]
    state.refresh()
    state.refresh()
    assert state.checks[("ridehail", "ridehail/sources/slow", "slow_check", "ERROR", "false")] == 1
    assert not state.check_reads[check].waiting
