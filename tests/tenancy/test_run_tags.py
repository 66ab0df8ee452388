"""Every run carries the `tenant` tag, whatever launched it, and no run spans tenants."""

from __future__ import annotations

import sys

import dagster as dg
import pytest
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.run_coordinator import SubmitRunContext

from platform_assets.composition.locations import location_definitions
from platform_assets.cost.assets import tenant_cost_asset
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.pricing import PricingResource
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.isolation import IsolationError
from platform_assets.tenancy.locations import MODULE
from platform_assets.tenancy.runs import attributed_tenant, run_location, run_tenant
from tests.platform_sandbox import location_origin

DAY = "2026-11-03"


@pytest.fixture
def resources(platform_home):
    return {"lake": LakeResource(root=str(platform_home / "lake")), "pricing": PricingResource()}


@pytest.fixture
def cost_assets():
    return {name: tenant_cost_asset(cat.tenant) for name, cat in load_all().items()}


def _tags(instance, run_id: str) -> dict[str, str]:
    return dict(instance.get_run_by_id(run_id).tags)


def test_materialize_without_tags_gets_the_tenant_tag(instance, resources, cost_assets):
    result = dg.materialize(
        [cost_assets["ridehail"]], resources=resources, instance=instance, partition_key=DAY
    )
    assert _tags(instance, result.run_id)["tenant"] == "ridehail"


def test_one_run_never_spans_tenants(instance, resources, cost_assets):
    result = dg.materialize(
        [cost_assets["ridehail"], cost_assets["payments"]],
        resources=resources,
        instance=instance,
        partition_key=DAY,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "one run never spans tenants" in failure.step_failure_data.error.cause.message
    assert _tags(instance, result.run_id)["tenant"] in {"ridehail", "payments"}


def test_run_tagged_for_another_tenant_is_refused(instance, resources, cost_assets):
    result = dg.materialize(
        [cost_assets["payments"]],
        resources=resources,
        instance=instance,
        partition_key=DAY,
        tags={"tenant": "ridehail"},
        raise_on_error=False,
    )
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "is tenant 'ridehail''s; a step of tenant 'payments'" in (
        failure.step_failure_data.error.cause.message
    )


def test_pipeline_job_execute_carries_the_tenant_tag(platform_home):
    defs = location_definitions("growth")
    job = defs.resolve_job_def("growth_pipeline")
    # `dagster job execute`, the UI's launchpad and job backfills start runs with these tags.
    assert job.run_tags["tenant"] == "growth"


def test_automation_requests_carry_the_tenant_tag():
    """The YAML's schedules are automation conditions: every run they start is the sensor's."""
    repo = location_definitions("payments").get_repository_def()
    assert not repo.schedule_defs
    assert repo.get_sensor_def("payments_automation").run_tags == {"tenant": "payments"}


def test_asset_run_without_tags_belongs_to_the_tenant_it_materializes(instance):
    """What the coordinator in dagster.yaml tags UI launches and backfills with before they
    queue (under the daemon: tests/test_daemon.py)."""
    job = location_definitions("ridehail").resolve_implicit_global_asset_job_def()
    key = dg.AssetKey(["ridehail", "cost"])
    run = instance.create_run_for_job(job, asset_selection=frozenset({key}))
    assert "tenant" not in run.tags
    assert run_tenant(run) == "ridehail"


def test_governance_run_is_tagged_with_its_model_tenant():
    config = {"ops": {"roll_back": {"config": {"registered_model": "payments.fraud_detector"}}}}
    run = dg.DagsterRun(job_name="rollback_model", run_id="r1", run_config=config)
    assert run_tenant(run) == "payments"


def test_run_spanning_tenants_is_refused_before_it_queues():
    spanning = dg.DagsterRun(
        job_name="__ASSET_JOB",
        run_id="r2",
        asset_selection=frozenset(
            {dg.AssetKey(["ridehail", "cost"]), dg.AssetKey(["payments", "cost"])}
        ),
    )
    with pytest.raises(IsolationError, match="selects assets of tenants payments, ridehail"):
        run_tenant(spanning)


def test_a_run_claiming_a_tenant_its_location_does_not_load_is_refused_before_it_queues(
    instance,
):
    """The tag is the launcher's claim; the location is Dagster's record. A mismatch is refused
    before the run takes a slot of ridehail's run quota or is checked against its budget."""
    job = location_definitions("growth").resolve_job_def("growth_pipeline")
    run = instance.create_run_for_job(
        job,
        remote_job_origin=location_origin("growth", job.name),
        tags={"tenant": "ridehail"},
    )
    assert attributed_tenant(run) == "growth"
    with pytest.raises(IsolationError) as refused:
        run_tenant(run)
    assert str(refused.value) == (
        f"run {run.run_id} of growth_pipeline is tagged tenant 'ridehail' but was launched "
        "from code location 'growth', which runs only tenant(s) growth: a run counts for the "
        "tenant whose code location launched it"
    )


def test_a_run_is_attributed_to_the_location_dagster_recorded_never_to_its_tags():
    # `dagster job execute -m platform_assets.locations -a payments` records the code it loaded.
    pointer = ModuleCodePointer(MODULE, "payments", working_directory=None)
    executed = dg.DagsterRun(
        job_name="payments_pipeline",
        run_id="r3",
        tags={"tenant": "ridehail", "dagster/code_location": "ridehail"},
        job_code_origin=JobPythonOrigin(
            "payments_pipeline", RepositoryPythonOrigin(sys.executable, pointer)
        ),
    )
    assert run_location(executed) == "payments"
    assert attributed_tenant(executed) == "payments"
    # A run executed in a process holding the instance: no location launched it.
    in_process = dg.DagsterRun(job_name="__ASSET_JOB", run_id="r4", tags=executed.tags)
    assert run_location(in_process) is None
    assert attributed_tenant(in_process) is None


@pytest.fixture
def coordinated(platform_home):
    """An instance whose run coordinator is the platform's (Helm values: BudgetRunCoordinator)."""
    with dg.instance_for_test(
        temp_dir=str(platform_home / "dagster_home"),
        overrides={
            "run_coordinator": {
                "module": "platform_assets.cost.coordinator",
                "class": "BudgetRunCoordinator",
            }
        },
    ) as inst:
        yield inst


def _submit_pipeline(instance, tags: dict[str, str]) -> dg.DagsterRun:
    """What the UI's launchpad or a GraphQL `launchRun` hands the coordinator."""
    job = location_definitions("growth").resolve_job_def("growth_pipeline")
    run = instance.create_run_for_job(
        job, remote_job_origin=location_origin("growth", job.name), tags=tags
    )
    return instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))


@pytest.mark.parametrize(
    "tags",
    [
        {"dagster-k8s/config": '{"container_config": {"command": ["/bin/sh", "-c", "id"]}}'},
        {"dagster-k8s/resource_requirements": '{"requests": {"cpu": "64"}}'},
    ],
)
def test_a_run_tagged_with_pod_configuration_is_refused_before_it_queues(coordinated, tags):
    """dagster-k8s merges such run tags into the run worker's pod (`include_run_tags=True`)."""
    [tag] = tags
    run = _submit_pipeline(coordinated, {"tenant": "growth", **tags})
    assert run.status == dg.DagsterRunStatus.FAILURE
    assert not coordinated.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    [failure] = [
        e
        for e in coordinated.all_logs(run.run_id)
        if e.dagster_event_type == dg.DagsterEventType.RUN_FAILURE
    ]
    assert (
        f"run {run.run_id} of growth_pipeline carries run tag(s) {tag}: pods are the platform's "
        "template, and no run may add pod configuration; launch it without dagster-k8s/* tags"
    ) in failure.message


def test_a_run_without_pod_configuration_tags_queues(coordinated):
    run = _submit_pipeline(coordinated, {"tenant": "growth", "team/purpose": "backfill"})
    assert run.status == dg.DagsterRunStatus.QUEUED
