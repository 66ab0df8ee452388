"""`mlplat k8s values`: the official Dagster chart's values (and one user-deployments release
per code location), validated against the chart's own schemas with their Kubernetes `$ref`s
resolved offline."""

from __future__ import annotations

from importlib.metadata import version

import yaml
from typer.testing import CliRunner

from platform_assets.cli.main import app
from platform_assets.k8s.schemas import check_chart_values
from platform_assets.k8s.values import chart_version, dagster_values, user_deployments_values
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.limits import limits_for
from platform_assets.tenancy.locations import code_locations

TENANTS = {name: c.tenant for name, c in load_all().items()}


def test_values_command_writes_values_that_pass_the_charts_schemas(chart_schemas, tmp_path):
    result = CliRunner().invoke(app, ["k8s", "values", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"chart schemas: {chart_schemas.source}\n" in result.output
    assert "ok: values for chart dagster 1.13.27 and 4 locations" in result.output
    assert result.output.rstrip().endswith("every one checked")
    values = yaml.safe_load((tmp_path / "dagster.values.yaml").read_text())
    assert check_chart_values(values, "dagster", "v", chart_schemas) == []
    for loc in code_locations():
        ud = yaml.safe_load((tmp_path / "user-deployments" / f"{loc.name}.yaml").read_text())
        assert check_chart_values(ud, "dagster-user-deployments", loc.name, chart_schemas) == []


def test_chart_version_is_our_dagster_version():
    assert chart_version() == version("dagster") == "1.13.27"


def test_dagster_values_carry_the_platform_setup():
    values = dagster_values(TENANTS, code_locations())
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in values["postgresql"]  # by secret, never inline
    assert values["global"]["postgresqlSecretName"] == "dagster-postgresql-secret"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    daemon = values["dagsterDaemon"]
    assert daemon["runMonitoring"]["enabled"] is True
    # The platform's coordinator (tenant tag, budget refusal), not the plain queued one.
    coordinator = daemon["runCoordinator"]["config"]["customRunCoordinator"]
    assert (coordinator["module"], coordinator["class"]) == (
        "platform_assets.cost.coordinator",
        "BudgetRunCoordinator",
    )
    queue = coordinator["config"]
    per_tenant = {
        lim["value"]: lim["limit"]
        for lim in queue["tag_concurrency_limits"]
        if isinstance(lim["value"], str)
    }
    assert per_tenant == {t: limits_for(t).max_concurrent_runs for t in TENANTS}
    servers = values["dagsterWebserver"]["workspace"]["servers"]
    assert {s["name"]: s["host"] for s in servers} == {
        "platform": "platform.mlplat",
        **{t: f"{t}.{spec.namespace}" for t, spec in TENANTS.items()},
    }


def test_one_user_deployment_per_location_in_its_tenants_namespace():
    for loc in code_locations()[1:]:
        spec = TENANTS[loc.name]
        ud = user_deployments_values(loc, TENANTS)
        assert ud["serviceAccount"] == {
            "create": False,
            "name": spec.runner_service_account,
            "annotations": {},
        }
        [deployment] = ud["deployments"]
        assert deployment["dagsterApiGrpcArgs"] == [
            "--module-name",
            "platform_assets.locations",
            "--attribute",
            loc.name,
            "--location-name",
            loc.name,
        ]
        assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
        assert deployment["image"]["repository"].startswith("registry.mlplat.example/")


def test_bad_values_fail_naming_the_field(chart_schemas):
    values = dagster_values(TENANTS, code_locations())
    values["dagsterDaemon"]["runCoordinator"]["type"] = "FifoRunCoordinator"
    [problem] = check_chart_values(values, "dagster", "dagster.values.yaml", chart_schemas)
    assert problem == (
        "dagster.values.yaml: chart dagster schema: dagsterDaemon.runCoordinator.type: "
        "'FifoRunCoordinator' is not one of ['QueuedRunCoordinator', 'CustomRunCoordinator']"
    )


def test_kubernetes_definitions_behind_remote_refs_are_checked(chart_schemas):
    """`podSecurityContext` is a `$ref` to kubernetesjsonschema.dev: resolved offline from
    kubernetes-validate's definitions, so a wrong type inside it is caught."""
    values = dagster_values(TENANTS, code_locations())
    values["dagsterWebserver"]["podSecurityContext"]["runAsUser"] = "root"
    [problem] = check_chart_values(values, "dagster", "v.yaml", chart_schemas)
    assert "dagsterWebserver.podSecurityContext.runAsUser: 'root' is not of type" in problem


def test_a_user_deployment_missing_a_required_field_fails(chart_schemas):
    """Lists replace the chart's defaults whole, so entries must be complete."""
    ud = user_deployments_values(code_locations()[1], TENANTS)
    del ud["deployments"][0]["port"]
    [problem] = check_chart_values(ud, "dagster-user-deployments", "ud.yaml", chart_schemas)
    assert problem == (
        "ud.yaml: chart dagster-user-deployments schema: deployments.0: 'port' is a required "
        "property"
    )


def test_the_charts_run_coordinator_loads_as_the_budget_coordinator():
    """What the chart renders into dagster.yaml (`run_coordinator: {module, class, config}`)
    builds the platform's coordinator with the tenants' limits."""
    from dagster._core.test_utils import instance_for_test

    from platform_assets.cost.coordinator import BudgetRunCoordinator

    custom = dagster_values(TENANTS, code_locations())["dagsterDaemon"]["runCoordinator"]
    with instance_for_test(
        overrides={"run_coordinator": custom["config"]["customRunCoordinator"]}
    ) as instance:
        assert isinstance(instance.run_coordinator, BudgetRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == sum(limits_for(t).max_concurrent_runs for t in TENANTS)
