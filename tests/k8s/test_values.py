"""`mlplat k8s values`: the official Dagster chart's values (and one user-deployments release
per code location), validated against the chart's own schemas with their Kubernetes `$ref`s
resolved offline."""

from __future__ import annotations

import base64
import os
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import dagster as dg
import pytest
import yaml
from typer.testing import CliRunner

from platform_assets.cli.main import app
from platform_assets.composition.locations import tenant_location
from platform_assets.k8s.defs_configmaps import (
    CHECKSUM_ANNOTATION,
    CONFIGMAP_BYTES,
    DEFS_MOUNT,
    VOLUME,
    configmap_key,
    folder_configmap,
    location_configmaps,
)
from platform_assets.k8s.render import helm_template, tenant_chart_values
from platform_assets.k8s.schemas import check_chart_values, check_manifest
from platform_assets.k8s.values import (
    chart_version,
    dagster_values,
    user_deployment,
    user_deployments_values,
)
from platform_assets.tenancy.catalog import CODE_MANIFEST, defs_root, load_all, load_tenant
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


# Tenant YAML reaches each location as ConfigMaps of tenant folders, never in the image.


def defs_sources(deployment) -> dict[str, list[dict]]:
    """ConfigMap name -> its items, from the location's defs volume."""
    [volume] = [v for v in deployment["volumes"] if v["name"] == VOLUME]
    return {s["configMap"]["name"]: s["configMap"]["items"] for s in volume["projected"]["sources"]}


def test_each_tenant_location_mounts_only_its_own_tenants_configmap():
    for loc in code_locations()[1:]:
        [deployment] = user_deployments_values(loc, TENANTS)["deployments"]
        sources = defs_sources(deployment)
        assert list(sources) == [f"mlplat-defs-{loc.name}"]
        [items] = sources.values()
        assert {i["path"].split("/")[0] for i in items} == {loc.name}
        assert {"name": VOLUME, "mountPath": DEFS_MOUNT, "readOnly": True} in deployment[
            "volumeMounts"
        ]
        assert {"name": "MLPLAT_DEFS_ROOT", "value": DEFS_MOUNT} in deployment["env"]
        assert set(deployment["annotations"]) == {CHECKSUM_ANNOTATION}


def test_the_platform_location_mounts_every_tenants_configmap_without_a_checksum():
    [deployment] = user_deployments_values(code_locations()[0], TENANTS)["deployments"]
    assert list(defs_sources(deployment)) == [f"mlplat-defs-{t}" for t in sorted(TENANTS)]
    # ConfigMap volumes update in place: a tenant's edit must not roll the platform.
    assert deployment["annotations"] == {}


def test_configmap_keys_are_valid_and_one_to_one():
    paths = [
        "tenant/defs.yaml",
        "features/driver_stats/defs.yaml",
        "features/driver--stats/defs.yaml",
        "features/driver-2fstats/defs.yaml",
        "models/a b/défs.yaml",
        "models/a_b/defs.yaml",
    ]
    keys = [configmap_key(p) for p in paths]
    assert keys[:2] == ["tenant--defs.yaml", "features--driver_stats--defs.yaml"]
    assert len(set(keys)) == len(paths)
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", k) for k in keys)


def reconstruct(configmap: dict, items: list[dict], into: Path) -> None:
    """Write a ConfigMap's keys where its volume items put them, as the kubelet does, into a
    kubelet-like layout: the files in a timestamped folder behind `..data`."""
    files = into / "..2026_01_01_00_00_00.000000000"
    for item in items:
        target = files / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if item["key"] in (configmap.get("data") or {}):
            target.write_bytes(configmap["data"][item["key"]].encode())
        else:
            target.write_bytes(base64.b64decode(configmap["binaryData"][item["key"]]))
    (into / "..data").symlink_to(files.name)
    for top in {item["path"].split("/")[0] for item in items}:
        (into / top).symlink_to(f"..data/{top}")


def catalog_specs(catalog):
    return (catalog.tenant, catalog.sources, catalog.feature_sets, catalog.models)


@pytest.fixture
def odd_defs(tmp_path, monkeypatch):
    """A copy of the demo defs root whose ridehail folder has a file in every way text can be
    odd (tabs, CRLF, trailing spaces, non-ASCII) and a folder name no ConfigMap key can hold."""
    root = tmp_path / "defs"
    shutil.copytree(load_all()["ridehail"].folder.parent, root)
    model = root / "ridehail/models/driver_churn/defs.yaml"
    moved = root / "ridehail/models/driver churn (v2)/defs.yaml"
    moved.parent.mkdir()
    model.rename(moved)
    model.parent.rmdir()
    moved.write_bytes(moved.read_bytes() + "# tab\there, CRLF\r\n# ünï 😀 trailing   \n".encode())
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(root))
    return root


def test_tenant_configmap_round_trips_the_folder_byte_for_byte(helm, odd_defs, tmp_path):
    """Through our chart (`helm template`) and back through the volume's items: the same
    bytes at the same paths, and the same catalog as loading the folder itself."""
    [loc] = [loc for loc in code_locations(odd_defs) if loc.name == "ridehail"]
    spec = load_all(odd_defs)["ridehail"].tenant
    [configmap] = [
        m
        for m in helm_template(tenant_chart_values("ridehail", spec))
        if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "mlplat-defs-ridehail"
    ]
    assert check_manifest(configmap, "configmap.yaml") == []
    [deployment] = user_deployments_values(loc, TENANTS)["deployments"]
    mount = tmp_path / "mount"
    mount.mkdir()
    reconstruct(configmap, defs_sources(deployment)["mlplat-defs-ridehail"], mount)
    folder = odd_defs / "ridehail"
    # Every file but the team's sources (its trainer image holds them; its manifest is here).
    expected = {
        rel: p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file()
        for rel in [p.relative_to(folder)]
        if rel.parts[0] != "code" or rel.parts[1:] in [(name,) for name in CODE_MANIFEST]
    }
    got = mount / "ridehail"
    assert {p.relative_to(got): p.read_bytes() for p in got.rglob("*") if p.is_file()} == expected
    # What a code location reads with MLPLAT_DEFS_ROOT at the mount: the same catalog.
    load_tenant.cache_clear()
    from_repo = catalog_specs(load_all(odd_defs)["ridehail"])
    os.environ["MLPLAT_DEFS_ROOT"] = str(mount)  # restored by the fixture's monkeypatch
    assert defs_root() == mount / "..data"
    assert catalog_specs(load_all()["ridehail"]) == from_repo


def checksums(root: Path) -> dict[str, str]:
    load_tenant.cache_clear()  # the same paths, new content
    return {
        loc.name: user_deployment(loc, TENANTS)["annotations"].get(CHECKSUM_ANNOTATION, "")
        for loc in code_locations(root)
    }


def test_changing_one_tenants_file_changes_only_its_checksum(odd_defs):
    before = checksums(odd_defs)
    platform_volume = defs_sources(user_deployment(code_locations(odd_defs)[0], TENANTS))
    model = odd_defs / "payments/models/fraud_detector/defs.yaml"
    model.write_text(model.read_text().replace("description: ", "description: Edited. ", 1))
    after = checksums(odd_defs)
    assert {name for name in before if before[name] != after[name]} == {"payments"}
    assert after["platform"] == before["platform"] == ""
    # A content change leaves the platform's values as they were: it is not rolled.
    assert defs_sources(user_deployment(code_locations(odd_defs)[0], TENANTS)) == platform_volume


@pytest.mark.parametrize("command", [["k8s", "values", "--out", "values"], ["validate"]])
def test_a_tenant_folder_over_a_configmaps_size_is_refused_naming_it(
    odd_defs, tmp_path, monkeypatch, command
):
    # Each file within the 256 KiB a team file may have; together over the 1 MiB.
    files = sorted((odd_defs / "growth").rglob("defs.yaml"))
    for path in files:
        path.write_text(path.read_text() + f"# {'x' * (CONFIGMAP_BYTES // (len(files) - 1))}\n")
    load_tenant.cache_clear()
    monkeypatch.chdir(tmp_path)  # `values` writes its folder here
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1
    assert f"error: {odd_defs / 'growth'}: <folder>: the tenant folder holds " in result.output
    assert "more than the 1048576 (1 MiB) one Kubernetes ConfigMap can carry" in result.output
    assert "Traceback" not in result.output


def test_a_location_reading_a_shared_feature_set_gets_only_the_shared_files(odd_defs, monkeypatch):
    """growth's model reads payments' shared `merchant_risk`: growth's location gets payments'
    Tenant and that feature set (what `shared_tenant` and `shared_feature_set` read), nothing
    else of payments', and its checksum covers them."""
    model = odd_defs / "growth/models/subscription_churn/defs.yaml"
    model.write_text(
        model.read_text()
        .replace('"channel_quality:*"]', '"channel_quality:*", "payments/merchant_risk:*"]')
        .replace("[user_id, channel_id]", "[user_id, channel_id, merchant_id]")
    )
    labels = odd_defs / "growth/sources/subscription_labels/defs.yaml"
    labels.write_text(
        labels.read_text().replace("{user_id: string,", "{merchant_id: string, user_id: string,")
    )
    load_tenant.cache_clear()
    [loc] = [loc for loc in code_locations(odd_defs) if loc.name == "growth"]
    maps = {m.name: m for m in location_configmaps(loc)}
    assert set(maps) == {"mlplat-defs-growth", "mlplat-defs-payments-shared-growth"}
    assert set(maps["mlplat-defs-payments-shared-growth"].files) == {
        "tenant/defs.yaml",
        "features/merchant_risk/defs.yaml",
    }
    before = checksums(odd_defs)["growth"]
    shared = odd_defs / "payments/features/merchant_risk/defs.yaml"
    shared.write_text(shared.read_text() + "# edited\n")
    assert checksums(odd_defs)["growth"] != before
    # growth's location builds from what its pods mount: its folder and payments' two files.
    mount = odd_defs.parent / "growth-mount"
    for m in location_configmaps(loc):
        for path, content in m.files.items():
            (mount / m.tenant / path).parent.mkdir(parents=True, exist_ok=True)
            (mount / m.tenant / path).write_bytes(content)
    load_tenant.cache_clear()
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(mount))
    keys = tenant_location(loc).resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey(["payments", "features", "merchant_risk"]) in keys


def test_a_tenants_configmap_carries_its_code_manifest_and_its_location_loads_from_it(tmp_path):
    """Of ridehail's code/ the ConfigMap holds pyproject.toml and uv.lock (what names its
    trainer image), never a source file; the tenant's catalog loads from exactly those files,
    as its code location on the cluster does."""
    folder = defs_root() / "ridehail"
    files = folder_configmap(folder).files
    code = sorted(path for path in files if path.startswith("code/"))
    assert code == ["code/pyproject.toml", "code/uv.lock"]
    mounted = tmp_path / "ridehail"
    for path, content in files.items():
        (mounted / path).parent.mkdir(parents=True, exist_ok=True)
        (mounted / path).write_bytes(content)
    load_tenant.cache_clear()
    try:
        catalog = load_tenant(mounted)
    finally:
        load_tenant.cache_clear()
    assert catalog.models["driver_churn_lgbm"].trainer is not None
