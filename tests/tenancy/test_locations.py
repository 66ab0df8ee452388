"""One code location per tenant plus `platform`: what each holds, and what a bad folder breaks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from platform_assets.composition.locations import (
    platform_location,
    tenant_location,
)
from platform_assets.tenancy.catalog import PlatformConfigError
from platform_assets.tenancy.locations import (
    WORKSPACE_FILE,
    CodeLocation,
    code_locations,
    location_named,
    render_workspace,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO_DEFS = ROOT / "platform_assets" / "defs"
SOURCE = "platform_assets.sources.component.Source"
MODEL = "platform_assets.models.component.Model"


@pytest.fixture
def defs_root(tmp_path, monkeypatch, platform_home) -> Path:
    """A copy of the demo tenant folders, used as the defs root."""
    root = tmp_path / "defs"
    shutil.copytree(DEMO_DEFS, root)
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(root))
    return root


def _write(path: Path, type_name: str, attributes: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"type": type_name, "attributes": attributes}, sort_keys=False))
    return path


def _keys(defs: dg.Definitions) -> dict[str, bool]:
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).is_materializable for k in graph.get_all_asset_keys()}


def test_committed_workspace_lists_every_location():
    assert WORKSPACE_FILE.read_text() == render_workspace(DEMO_DEFS), (
        "workspace.yaml is out of date: run `mlplat workspace write`"
    )
    entries = yaml.safe_load(WORKSPACE_FILE.read_text())["load_from"]
    assert [e["python_module"]["location_name"] for e in entries] == [
        "platform",
        "growth",
        "payments",
        "ridehail",
    ]
    assert {e["python_module"]["module_name"] for e in entries} == {"platform_assets.locations"}


def test_workspace_check_command_fails_on_drift(defs_root):
    (defs_root / "newteam").mkdir()
    shutil.copytree(defs_root / "growth" / "tenant", defs_root / "newteam" / "tenant")
    out = subprocess.run(
        [str(Path(sys.executable).with_name("mlplat")), "workspace", "write", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 1
    assert "workspace.yaml is out of date: run `mlplat workspace write`" in out.stderr
    assert "location_name: newteam" in render_workspace(defs_root)


def test_platform_first_then_one_location_per_tenant():
    locations = code_locations(DEMO_DEFS)
    assert locations == [
        CodeLocation("platform", ()),
        CodeLocation("growth", ("growth",)),
        CodeLocation("payments", ("payments",)),
        CodeLocation("ridehail", ("ridehail",)),
    ]
    assert (locations[1].module, locations[1].attribute) == ("platform_assets.locations", "growth")


def test_platform_groups_tenants_into_one_location(tmp_path):
    groups = tmp_path / "locations.yaml"
    groups.write_text("groups:\n  consumer: [growth, ridehail]\n")
    assert code_locations(DEMO_DEFS, groups) == [
        CodeLocation("platform", ()),
        CodeLocation("consumer", ("growth", "ridehail")),
        CodeLocation("payments", ("payments",)),
    ]


def test_location_named_answers_as_the_full_list_does(tmp_path):
    """A code server asks for its own location without listing every tenant folder; the
    answer must be the one `code_locations` gives, with and without groups."""
    groups = tmp_path / "locations.yaml"
    groups.write_text("groups:\n  consumer: [growth, ridehail]\n")
    for groups_file in (tmp_path / "none.yaml", groups):
        for location in code_locations(DEMO_DEFS, groups_file):
            assert location_named(location.name, DEMO_DEFS, groups_file) == location
    with pytest.raises(PlatformConfigError, match="code location 'ridehail' has no tenant"):
        location_named("ridehail", DEMO_DEFS, groups)  # grouped: it has no location of its own
    groups.write_text("groups:\n  consumer: [growth, ridehial]\n")
    with pytest.raises(PlatformConfigError) as err:
        location_named("payments", DEMO_DEFS, groups)
    assert str(err.value).startswith(f"{groups}: groups.consumer: no tenant folder for 'ridehial'")


def test_a_group_name_that_is_no_valid_name_is_refused(tmp_path):
    groups = tmp_path / "locations.yaml"
    groups.write_text('groups:\n  "small teams": [growth, ridehail]\n')
    with pytest.raises(PlatformConfigError) as err:
        code_locations(DEMO_DEFS, groups)
    assert str(err.value) == (
        f"{groups}: groups.small teams: 'small teams' is not a valid name: use lower-case "
        "letters, digits and underscores, starting with a letter (at most 63 characters)"
    )


def test_group_naming_a_missing_tenant_is_refused(tmp_path):
    groups = tmp_path / "locations.yaml"
    groups.write_text("groups:\n  consumer: [growth, ridehial]\n")
    with pytest.raises(PlatformConfigError) as err:
        code_locations(DEMO_DEFS, groups)
    assert str(err.value).startswith(f"{groups}: groups.consumer: no tenant folder for 'ridehial'")


def test_tenant_in_two_groups_is_refused(tmp_path):
    groups = tmp_path / "locations.yaml"
    groups.write_text("groups:\n  a: [growth]\n  b: [growth, payments]\n")
    with pytest.raises(PlatformConfigError, match="groups.b: tenant 'growth' is already in group"):
        code_locations(DEMO_DEFS, groups)


def test_grouped_location_has_a_pipeline_and_automation_per_tenant(defs_root, tmp_path):
    defs = tenant_location(CodeLocation("consumer", ("growth", "ridehail")), defs_root)
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {"growth_pipeline", "ridehail_pipeline"}
    assert {s.name for s in repo.sensor_defs} == {"growth_automation", "ridehail_automation"}
    assert {k.split("/")[0] for k in _keys(defs)} == {"growth", "ridehail"}


def test_tenant_location_holds_only_its_own_tenant(defs_root):
    defs = tenant_location(location_named("ridehail"))
    repo = defs.get_repository_def()
    assert {k.split("/")[0] for k in _keys(defs)} == {"ridehail"}
    jobs = {j.name: j for j in repo.get_all_jobs() if not j.name.startswith("__")}
    assert set(jobs) == {"ridehail_pipeline"}
    assert jobs["ridehail_pipeline"].tags["tenant"] == "ridehail"
    assert not repo.schedule_defs  # its YAML's schedules are automation conditions
    (automation,) = repo.sensor_defs
    assert automation.name == "ridehail_automation"
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert automation.run_tags == {"tenant": "ridehail"}


def test_a_tenant_location_parses_no_tenant_it_does_not_read(defs_root):
    (defs_root / "payments" / "tenant" / "defs.yaml").write_text("type: [unclosed\n")
    assert "ridehail/models/driver_churn" in _keys(tenant_location(location_named("ridehail")))


def _read_merchant_risk(defs_root: Path) -> None:
    """growth gets a model that reads payments' shared merchant_risk."""
    growth = defs_root / "growth"
    _write(
        growth / "sources" / "merchant_labels" / "defs.yaml",
        SOURCE,
        {
            "name": "merchant_labels",
            "description": "Which merchants a subscriber churned after.",
            "path": "merchant_labels.parquet",
            "timestamp_column": "label_ts",
            "columns": {"merchant_id": "string", "label_ts": "timestamp", "churned": "int64"},
        },
    )
    _write(
        growth / "models" / "merchant_churn" / "defs.yaml",
        MODEL,
        {
            "name": "merchant_churn",
            "description": "Churn after a merchant's risk.",
            "features": ["payments/merchant_risk:*"],
            "labels": {
                "source": "merchant_labels",
                "entity_columns": ["merchant_id"],
                "timestamp_column": "label_ts",
                "label_column": "churned",
            },
            "algorithm": "logistic_regression",
            "evaluation": {"thresholds": {"roc_auc": 0.6}},
        },
    )


def test_shared_view_crosses_locations_as_an_external_asset(defs_root):
    """growth reads payments' shared merchant_risk: growth's location shows it (lineage), only
    payments' location materializes it."""
    _read_merchant_risk(defs_root)
    growth_defs = tenant_location(location_named("growth"))
    keys = _keys(growth_defs)
    assert keys["payments/features/merchant_risk"] is False  # external: payments materializes it
    assert keys["growth/training_sets/merchant_churn"] is True
    graph = growth_defs.resolve_asset_graph()
    parents = graph.get(dg.AssetKey(["growth", "training_sets", "merchant_churn"])).parent_keys
    assert dg.AssetKey(["payments", "features", "merchant_risk"]) in parents
    assert _keys(tenant_location(location_named("payments")))["payments/features/merchant_risk"]


def test_a_reader_of_a_shared_view_parses_only_what_is_shared(defs_root):
    """A broken file in payments' folder fails payments' location, not the locations of the
    tenants that read its shared views; a broken shared view or Tenant fails them too, naming
    payments' file."""
    _read_merchant_risk(defs_root)
    payments = defs_root / "payments"
    (payments / "models" / "fraud_detector" / "defs.yaml").write_text("type: [unclosed\n")
    assert "growth/training_sets/merchant_churn" in _keys(tenant_location(location_named("growth")))
    with pytest.raises(PlatformConfigError):
        tenant_location(location_named("payments"))
    for broken in ("features/merchant_risk/defs.yaml", "tenant/defs.yaml"):
        (payments / broken).write_text("type: [unclosed\n")
        with pytest.raises(PlatformConfigError) as err:
            tenant_location(location_named("growth"))
        assert str(err.value).startswith(f"{(payments / broken).resolve()}: <yaml>:")


def test_broken_tenant_fails_only_its_own_location(defs_root):
    bad = defs_root / "payments" / "models" / "fraud_detector" / "defs.yaml"
    bad.write_text(bad.read_text().replace("algorithm:", "algorithmz:"))
    with pytest.raises(PlatformConfigError) as err:
        tenant_location(location_named("payments"))
    assert str(err.value).startswith(
        f"{bad.resolve()}: attributes.algorithmz: Extra inputs are not permitted"
    )
    assert "ridehail/models/driver_churn" in _keys(tenant_location(location_named("ridehail")))
    keys = _keys(platform_location())  # the platform parses no tenant's YAML
    assert {"platform/cost/showback", "payments/cost", "ridehail/cost"} <= set(keys)
    # Budgets are the platform's (limits.yaml), so its budget sensor checks every tenant, the
    # broken one included, without parsing any tenant folder.
    from platform_assets.cost.sensors import budget_sensor

    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance) as ctx:
        skip = budget_sensor(ctx)
    assert skip.skip_message == "every tenant is within its budget"


def test_a_folder_named_as_no_tenant_is_skipped_by_the_platform_location(defs_root, caplog):
    """`defs/a b/tenant` once failed the platform location ("a b_cost" is not a valid name),
    and with it every tenant's sensors, showback, SLO report and governance jobs."""
    bad = defs_root / "a b"
    shutil.copytree(defs_root / "growth", bad)
    problem = (
        "'a b' is not a valid name: use lower-case letters, digits and underscores, starting "
        "with a letter (at most 63 characters)"
    )
    with caplog.at_level("WARNING"):
        defs = platform_location()
    keys = _keys(defs)
    assert {"platform/cost/showback", "platform/slo/report", "growth/cost", "ridehail/cost"} <= (
        set(keys)
    )
    assert not [k for k in keys if k.startswith("a b")]
    assert {s.name for s in defs.sensors or []} >= {"budget_sensor", "promotion_sensor"}
    assert defs.metadata["platform/skipped_folders"].data == {str(bad): problem}
    assert f"platform location: skipped {bad}, which names no tenant: {problem}" in caplog.text
    # The workspace lists no location for it; asked for by name, it says why.
    assert "a b" not in {loc.name for loc in code_locations()}
    with pytest.raises(PlatformConfigError) as err:
        location_named("a b")
    assert str(err.value) == (
        f"{defs_root / 'a b'}: <folder>: the folder name is not a tenant name ({problem}); a "
        "tenant folder is named as its tenant: rename it"
    )


def test_renamed_tenant_folder_names_the_missing_folder(defs_root):
    assert "ridehail/sources/trips" in _keys(tenant_location(location_named("ridehail")))
    (defs_root / "ridehail").rename(defs_root / "rides")
    with pytest.raises(PlatformConfigError) as err:
        location_named("ridehail")
    message = str(err.value)
    assert f"code location 'ridehail' has no tenant folder {defs_root.resolve() / 'ridehail'}" in (
        message
    )
    assert "(tenant folders: growth, payments, rides)" in message
    assert "`mlplat workspace write`" in message


def test_loading_a_location_emits_no_warnings_and_imports_no_heavy_library():
    """Every warning is an error while each location loads, in a fresh interpreter."""
    code = (
        "import warnings, json\n"
        "import dagster\n"  # import-time warnings of libraries are not the location's
        "warnings.simplefilter('error')\n"
        "import platform_assets.locations as L\n"
        "for name in ('platform', 'growth', 'payments', 'ridehail'):\n"
        "    getattr(L, name).get_repository_def()\n"
        "import sys\n"
        "heavy = ('mlflow', 'feast', 'great_expectations', 'sklearn', 'duckdb', 'pandas')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []  # and no heavy library


def test_governance_of_one_tenant_survives_another_broken_tenant(defs_root):
    """The platform's promotion sensor and jobs act on one model; another tenant's broken
    folder must not stop them."""
    from platform_assets.governance.workflow import Governance

    bad = defs_root / "payments" / "tenant" / "defs.yaml"
    bad.write_text("type: [unclosed\n")
    gov = Governance(store=None, mlflow=None, admins=[])  # lookups only: no database needed
    catalog, spec = gov.locate("ridehail.driver_churn")
    assert (catalog.tenant.name, spec.name) == ("ridehail", "driver_churn")
    assert sorted(gov.catalogs) == ["growth", "ridehail"]
    with pytest.raises(PlatformConfigError) as err:
        gov.locate("payments.fraud_detector")
    assert str(err.value).startswith(f"{bad.resolve()}: <yaml>:")


def test_empty_tenant_folder_fails_only_its_own_location(defs_root):
    (defs_root / "newteam").mkdir()
    with pytest.raises(PlatformConfigError) as err:
        tenant_location(location_named("newteam"))
    assert str(err.value) == (
        f"{(defs_root / 'newteam').resolve()}: <folder>: the tenant folder is empty: it needs "
        "tenant/defs.yaml declaring its Tenant"
    )
    assert "newteam/cost" in _keys(platform_location())
    assert "growth/models/subscription_churn" in _keys(tenant_location(location_named("growth")))


def test_the_locations_module_answers_attribute_lookups_of_unknown_names():
    """pickle's `whichmodule` asks every module in sys.modules for a function's name (scipy's
    ufuncs have no `__module__`): an unknown name is a missing attribute, which pickling a
    step's objects in a code server's process must be able to skip."""
    import pickle

    import scipy.special

    import platform_assets.locations as locations

    assert not hasattr(locations, "agm")
    assert pickle.loads(pickle.dumps(scipy.special.agm)) is scipy.special.agm
