"""Team folders hold data, not code, and their YAML is read strictly (issue #10, items 4-6).

One test per attack from the issue: each is refused with the file, the field (or line) and the
reason, by the catalog the code location builds from and by `mlplat validate`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from platform_assets.cli import main as cli
from platform_assets.composition.locations import all_locations, tenant_location
from platform_assets.sources.component import load_source
from platform_assets.tenancy.catalog import (
    PlatformConfigError,
    check_model_refs,
    load_all,
    load_tenant,
)
from platform_assets.tenancy.isolation import IsolationError
from platform_assets.tenancy.limits import LIMITS_ENV, LIMITS_PATH, grant, read_limits
from platform_assets.tenancy.locations import location_named
from platform_assets.tenancy.specs import LIMITS_FILE
from platform_assets.tenancy.strict_yaml import MAX_FILE_BYTES
from tests.platform_sandbox import write_component

DEMO_DEFS = Path(__file__).resolve().parents[2] / "platform_assets" / "defs"
TENANT_FILE = Path("ridehail/tenant/defs.yaml")
FEATURE_FILE = Path("ridehail/features/driver_stats/defs.yaml")
MODEL_FILE = Path("ridehail/models/driver_churn/defs.yaml")
SOURCE_FILE = Path("ridehail/sources/trips/defs.yaml")


def refused(root: Path) -> str:
    """The catalog's refusal; the code location and `mlplat validate` give the same one."""
    with pytest.raises(PlatformConfigError) as excinfo:
        for catalog in load_all(root).values():
            for model in catalog.models.values():
                check_model_refs(catalog, model)
    message = str(excinfo.value)
    with pytest.raises(PlatformConfigError) as location:
        all_locations()
    assert str(location.value) == message
    result = CliRunner().invoke(cli.app, ["validate"])
    assert result.exit_code == 1
    assert f"error: {message}" in result.output
    return message


def edit(path: Path, **attributes) -> None:
    doc = yaml.safe_load(path.read_text())
    doc["attributes"].update(attributes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(autouse=True)
def _fresh_catalog():
    load_tenant.cache_clear()
    yield
    load_tenant.cache_clear()


def test_copied_demo_tenants_are_valid(root):
    assert set(load_all(root)) == {"ridehail", "payments", "growth"}
    assert CliRunner().invoke(cli.app, ["validate"]).output.strip() == "ok: 3 tenants valid"


# Folders hold data, not code


def test_a_python_file_is_refused(root):
    path = root / "ridehail" / "adhoc" / "assets.py"
    path.parent.mkdir()
    path.write_text("import dagster as dg\n\n@dg.asset(key=['payments', 'sources', 'x'])\n")
    message = refused(root)
    assert message == (
        f"{path}: <file>: Python files are not allowed in a tenant folder outside its code/ "
        "project: team code runs only as a model's trainer, from code/ (docs/trainers.md)"
    )


def test_a_foreign_component_type_is_refused(root):
    path = root / "ridehail" / "dbt" / "defs.yaml"
    path.parent.mkdir()
    path.write_text("type: dagster_dbt.DbtProjectComponent\nattributes: {project: ../../x}\n")
    message = refused(root)
    assert message.startswith(
        f"{path}: type: 'dagster_dbt.DbtProjectComponent' is not a platform component type"
    )


def test_a_template_is_refused_and_never_rendered(root, monkeypatch):
    monkeypatch.setenv("MLPLAT_DB_URL", "postgresql://admin:s3cret@db/platform")
    edit(root / TENANT_FILE, description="{{ env.MLPLAT_DB_URL }}")
    message = refused(root)
    assert message.startswith(
        f"{root / TENANT_FILE}: attributes.description: templates ({{{{ ... }}}}, {{% ... %}}) "
        "are not allowed in team YAML"
    )
    assert "s3cret" not in message


@pytest.mark.parametrize("key", ["post_processing", "requirements"])
def test_other_component_keys_are_refused(root, key):
    path = root / SOURCE_FILE
    doc = yaml.safe_load(path.read_text())
    doc[key] = {"assets": [{"target": "*", "attributes": {"tags": {"cost_center": "x"}}}]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert refused(root).startswith(
        f"{path}: {key}: only `type` and `attributes` are allowed in team YAML"
    )


def test_a_symlinked_duplicate_file_is_refused(root):
    link = root / "ridehail" / "features" / "driver_stats_copy" / "defs.yaml"
    link.parent.mkdir()
    link.symlink_to(root / FEATURE_FILE)
    assert refused(root) == (
        f"{link}: <file>: symlinks are not allowed in a tenant folder (copy the file instead)"
    )


def test_a_symlinked_folder_is_refused(root):
    link = root / "ridehail" / "features" / "card_activity"
    link.symlink_to(root / "payments" / "features" / "card_activity")
    assert refused(root).startswith(f"{link}: <file>: symlinks are not allowed")


def test_a_symlinked_tenant_folder_is_refused(root):
    (root / "ridehail2").symlink_to(root / "ridehail")
    assert refused(root).startswith(f"{root / 'ridehail2'}: <file>: the defs root")


def test_a_file_at_the_defs_root_is_refused(root):
    (root / "extra.py").write_text("import os\n")
    assert "holds only tenant folders (no files, no links)" in refused(root)


def test_another_file_in_a_tenant_folder_is_refused(root):
    path = root / "ridehail" / "notes.yaml"
    path.write_text("a: 1\n")
    assert refused(root) == f"{path}: <file>: only defs.yaml files are allowed in a tenant folder"


def test_an_empty_tenant_folder_is_refused(root):
    (root / "newteam").mkdir()
    assert refused(root) == (
        f"{root / 'newteam'}: <folder>: the tenant folder is empty: it needs tenant/defs.yaml "
        "declaring its Tenant"
    )


def test_an_empty_file_is_refused(root):
    (root / SOURCE_FILE).write_text("# nothing yet\n")
    assert (
        refused(root)
        == f"{root / SOURCE_FILE}: <file>: the file is empty: it must declare a component"
    )


# Strict YAML


def test_billion_laughs_is_refused_before_it_expands(root):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    (root / SOURCE_FILE).write_text("\n".join(lines) + "\n")
    assert refused(root) == (
        f"{root / SOURCE_FILE}: line 1: YAML anchors and aliases (&name, *name) are not allowed "
        "in team YAML; write the value out"
    )


def test_an_alias_is_refused(root):
    path = root / TENANT_FILE
    text = path.read_text().replace("owners: [", "owners: &people [")
    path.write_text(text + "  roles: {admin: *people}\n")
    assert "YAML anchors and aliases (&name, *name) are not allowed" in refused(root)


def test_non_utf8_bytes_are_refused_naming_the_file(root):
    path = root / TENANT_FILE
    path.write_bytes(path.read_bytes().replace(b"Ride-hailing", b"Ride-h\xe4iling"))
    message = refused(root)
    assert message.startswith(f"{path}: line 4: not UTF-8: byte 0xe4 at offset")


def test_duplicate_keys_are_refused_naming_key_and_line(root):
    path = root / TENANT_FILE
    text = path.read_text()
    path.write_text(text + "  namespace: tenant-payments\n")
    first = 1 + next(i for i, line in enumerate(text.splitlines()) if "namespace:" in line)
    last = len(text.splitlines()) + 1
    assert refused(root) == (
        f"{path}: line {last}: duplicate key 'namespace' (first set on line {first})"
    )


def test_a_file_over_the_size_cap_is_refused(root):
    path = root / FEATURE_FILE
    path.write_text(path.read_text() + "#" * MAX_FILE_BYTES + "\n")
    assert refused(root).startswith(f"{path}: <file>: ")
    assert "bytes is over the 256 KiB limit per file" in refused(root)


def test_more_than_one_document_is_refused(root):
    path = root / SOURCE_FILE
    path.write_text(path.read_text() + "---\n" + path.read_text())
    assert "expected a single document in the stream" in refused(root)


def test_a_name_with_a_trailing_newline_is_refused(root):
    edit(root / FEATURE_FILE, name="driver_stats\n")
    assert refused(root) == (
        f"{root / FEATURE_FILE}: attributes.name: 'driver_stats\\n' is not a valid name: use "
        "lower-case letters, digits and underscores, starting with a letter (at most 63 "
        "characters)"
    )


@pytest.mark.parametrize(
    ("file", "old", "new", "field"),
    [
        (FEATURE_FILE, "ttl_days: 7", "ttl_days: .inf", "attributes.ttl_days: inf"),
        (
            TENANT_FILE,
            "resources: {cpu: 1,",
            "resources: {cpu: .inf,",
            "attributes.resources.cpu: inf",
        ),
        (
            MODEL_FILE,
            "algorithm: gradient_boosting",
            "algorithm: gradient_boosting\n  split: {test_fraction: .nan}",
            "attributes.split.test_fraction: nan",
        ),
    ],
    ids=["ttl_days", "cpu", "test_fraction"],
)
def test_non_finite_numbers_are_refused(root, file, old, new, field):
    path = root / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    assert refused(root) == f"{path}: {field} is not a finite number"


def test_a_template_hidden_in_binary_is_refused_by_its_tag(root):
    path = root / FEATURE_FILE
    text = path.read_text()
    line = 1 + next(i for i, row in enumerate(text.splitlines()) if "description:" in row)
    hidden = "e3sgZW52KCdEQUdTVEVSX1BHX1BBU1NXT1JEJykgfX0="  # {{ env('DAGSTER_PG_PASSWORD') }}
    path.write_text(
        "\n".join(
            f"  description: !!binary {hidden}" if i == line else row
            for i, row in enumerate(text.splitlines(), 1)
        )
        + "\n"
    )
    assert refused(root) == (
        f"{path}: line {line}: the YAML tag '!!binary' is not allowed in team YAML: only the "
        "core schema's (!!str, !!int, !!float, !!bool, !!null, !!map, !!seq)"
    )


@pytest.mark.parametrize(
    ("old", "new", "tag"),
    [
        ("version: 1", "version: !custom 1", "!custom"),
        ("version: 1", "version: !!python/object:os.system 1", "!!python/object:os.system"),
        ("version: 1", "version: ! 1", "!"),
        ("type: ", "%TAG !! tag:example.com,2000:\n---\ntype: ", "tag:example.com,2000:str"),
    ],
    ids=["local", "python", "non-specific", "renamed-core"],
)
def test_a_tag_outside_the_core_schema_is_refused(root, old, new, tag):
    path = root / MODEL_FILE
    text = path.read_text().replace(old, new, 1)
    if "%TAG" in new:
        text = text.replace("version: 1", "version: !!str 1")
    path.write_text(text)
    line = 1 + next(i for i, row in enumerate(text.splitlines()) if "version:" in row)
    assert refused(root) == (
        f"{path}: line {line}: the YAML tag {tag!r} is not allowed in team YAML: only the core "
        "schema's (!!str, !!int, !!float, !!bool, !!null, !!map, !!seq)"
    )


def test_a_core_tag_on_a_value_it_cannot_hold_names_the_line(root):
    path = root / MODEL_FILE
    path.write_text(path.read_text().replace("version: 1", "version: !!int one"))
    assert refused(root) == f"{path}: line 5: 'one' is not a valid int"


def test_an_oversized_integer_names_file_and_field(root):
    path = root / MODEL_FILE
    path.write_text(path.read_text().replace("version: 1", "version: " + "9" * 250_000))
    assert refused(root) == (
        f"{path}: attributes.version: an integer of 250000 digits (line 5) is too large: at "
        "most 4300 digits"
    )


def test_a_float_where_an_integer_is_meant_is_refused(root):
    edit(root / MODEL_FILE, version=2.0)
    assert refused(root) == f"{root / MODEL_FILE}: attributes.version: must be an integer, not 2.0"


def test_a_number_out_of_bounds_is_refused(root):
    path = root / TENANT_FILE
    path.write_text(path.read_text().replace("cpu: 1,", "cpu: 1e12,"))
    assert refused(root) == (
        f"{path}: attributes.resources.cpu: Input should be less than or equal to 1024"
    )


@pytest.mark.parametrize(
    ("column", "where"),
    [
        ('x" from trips; --', "attributes.features"),
        ("trips_7d\n", "attributes.features"),
    ],
)
def test_a_feature_name_that_could_break_the_platforms_sql_is_refused(root, column, where):
    path = root / FEATURE_FILE
    edit(path, features={column: "int64"})
    assert refused(root).startswith(f"{path}: {where}: {column!r} is not a valid column name")


def test_a_join_key_that_is_not_an_identifier_is_refused(root):
    edit(root / FEATURE_FILE, entity={"name": "driver", "join_key": "driver_id, 1 as x"})
    assert "attributes.entity.join_key: 'driver_id, 1 as x' is not a valid column name" in (
        refused(root)
    )


# Sources read only the tenant's own inbox


@pytest.mark.parametrize(
    "path",
    [
        "../../payments/sources/transactions.parquet",
        "/data/payments/transactions.parquet",
        "s3://other-bucket/transactions.parquet",
        "~/transactions.parquet",
        "./trips.parquet",
    ],
    ids=["dotdot", "absolute", "uri", "home", "dot"],
)
def test_a_source_path_outside_the_inbox_is_refused(root, path):
    file = root / SOURCE_FILE
    doc = yaml.safe_load(file.read_text())
    del doc["attributes"]["generator"]
    doc["attributes"]["path"] = path
    file.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert refused(root) == (
        f"{file}: attributes.path: {path!r} must be a relative path inside the tenant's inbox "
        "(<lake>/<tenant>/inbox/): no absolute paths, URIs, '..' or '~'"
    )


def test_on_new_file_on_a_generated_source_is_refused(root):
    edit(root / SOURCE_FILE, on_new_file=True)  # trips is generated: no file to watch
    assert refused(root) == (
        f"{root / SOURCE_FILE}: attributes.on_new_file: a source with a generator has no file "
        "to watch: on_new_file needs `path`, a file in the tenant's inbox"
    )


def _file_source(path: str):
    """ridehail's `trips` Source, reading `path` in its inbox."""
    trips = load_all(DEMO_DEFS)["ridehail"].sources["trips"]
    return trips.model_copy(update={"generator": None, "path": path})


@pytest.mark.parametrize(
    ("link", "to", "path"),
    [
        ("ridehail/inbox/trips.parquet", "payments/inbox/transactions.parquet", "trips.parquet"),
        ("ridehail/inbox", "payments/inbox", "transactions.parquet"),
        ("ridehail", "payments", "transactions.parquet"),
        ("ridehail/inbox/drop", "payments/inbox", "drop/transactions.parquet"),
    ],
    ids=["file", "inbox", "tenant", "folder-in-inbox"],
)
def test_a_symlink_in_the_inbox_cannot_reach_another_tenant(tmp_path, link, to, path):
    lake = tmp_path / "lake"
    payments = lake / "payments" / "inbox" / "transactions.parquet"
    payments.parent.mkdir(parents=True)
    pd.DataFrame({"amount": [9.99]}).to_parquet(payments)
    (lake / link).parent.mkdir(parents=True, exist_ok=True)
    (lake / link).symlink_to(lake / to)
    spec = _file_source(path)
    with pytest.raises(IsolationError) as excinfo:
        load_source(str(lake), "ridehail", spec)
    assert str(excinfo.value) == (
        f"source ridehail/trips: {lake / link} is a symlink: the platform follows no link in "
        "tenant 'ridehail''s inbox (it could lead into another tenant's files); copy the file "
        "there instead"
    )
    # The same file copied into ridehail's own inbox is read.
    (lake / link).unlink()
    own = lake / "ridehail" / "inbox" / path
    own.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(payments, own)
    assert load_source(str(lake), "ridehail", spec).to_dict("list") == {"amount": [9.99]}


def test_a_hard_link_to_another_tenants_file_is_refused(tmp_path):
    lake = tmp_path / "lake"
    payments = lake / "payments" / "inbox" / "transactions.parquet"
    payments.parent.mkdir(parents=True)
    pd.DataFrame({"amount": [9.99]}).to_parquet(payments)
    (lake / "ridehail" / "inbox").mkdir(parents=True)
    os.link(payments, lake / "ridehail" / "inbox" / "trips.parquet")
    with pytest.raises(IsolationError) as excinfo:
        load_source(str(lake), "ridehail", _file_source("trips.parquet"))
    assert str(excinfo.value) == (
        "source ridehail/trips: 'trips.parquet' has 2 hard links: the platform reads only files "
        "with one name, so none can be another tenant's file linked into this inbox; copy the "
        "file there instead"
    )


def test_a_fifo_in_the_inbox_is_refused_without_hanging(tmp_path):
    inbox = tmp_path / "lake" / "ridehail" / "inbox"
    inbox.mkdir(parents=True)
    os.mkfifo(inbox / "trips.csv")
    spec = _file_source("trips.csv")
    with pytest.raises(IsolationError) as excinfo:
        load_source(str(tmp_path / "lake"), "ridehail", spec)
    assert str(excinfo.value) == (
        "source ridehail/trips: 'trips.csv' is not a regular file in tenant 'ridehail''s inbox"
    )


# Tenants and what the platform owns


def test_a_defs_root_that_is_not_a_folder_is_refused_naming_it(tmp_path, monkeypatch):
    missing = tmp_path / "defs"  # e.g. an image started without the tenants' ConfigMaps
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(missing))
    assert refused(missing) == (
        f"{missing}: <folder>: the defs root (MLPLAT_DEFS_ROOT, or the package's defs/) is not a "
        "folder: on Kubernetes, the tenants' ConfigMaps are mounted there"
    )


def test_a_tenant_named_platform_is_refused(root):
    path = root / TENANT_FILE
    path.write_text(path.read_text().replace("name: ridehail", "name: platform"))
    assert refused(root) == (
        f"{path}: attributes.name: tenant name 'platform' is reserved by the platform "
        "(reserved: dagster, default, ml, mlplat, platform)"
    )


@pytest.mark.parametrize(
    ("folder", "problem"),
    [
        (
            "a b",
            "'a b' is not a valid name: use lower-case letters, digits and underscores, "
            "starting with a letter (at most 63 characters)",
        ),
        (
            "platform",
            "tenant name 'platform' is reserved by the platform "
            "(reserved: dagster, default, ml, mlplat, platform)",
        ),
    ],
    ids=["space", "reserved"],
)
def test_a_folder_named_as_no_tenant_is_refused_naming_it(root, folder, problem):
    shutil.copytree(root / "growth", root / folder)
    assert refused(root) == (
        f"{root / folder}: <folder>: the folder name is not a tenant name ({problem}); a tenant "
        "folder is named as its tenant: rename it"
    )


def test_a_share_to_a_tenant_that_does_not_exist_is_refused(root):
    path = root / "payments" / "tenant" / "defs.yaml"
    path.write_text(path.read_text().replace("tenants: [growth]", "tenants: [growth, partners]"))
    assert refused(root) == (
        f"{path}: attributes.shares[0].tenants[1]: tenant 'partners' does not exist (tenants: "
        "growth, payments, ridehail): a share names only existing tenants, or a tenant created "
        "later under that name would inherit it"
    )


@pytest.mark.parametrize(
    "identity", ["mlplat/promotion_sensor", "MLPlat/reconciler", "mlplat\uff0fsensor"]
)
def test_a_role_for_a_reserved_platform_identity_is_refused(root, identity):
    path = root / TENANT_FILE
    path.write_text(path.read_text().replace("admin: [alice@", f"admin: [{identity}, alice@"))
    assert refused(root) == (
        f"{path}: attributes.roles.admin.0: {identity!r} is a reserved platform identity "
        "(mlplat/...): only people hold a tenant's roles"
    )


@pytest.mark.parametrize(
    ("field", "person", "theirs"),
    [
        ("roles.approver", "Paul@Payments.example", "roles.approver[0]"),
        ("owners", "priya@payments.example", "owners[1]"),
        ("owners", "team:payments-risk", "owners[0]"),
    ],
    ids=["role", "owner", "team"],
)
def test_naming_another_tenants_person_is_refused(root, field, person, theirs):
    path = root / TENANT_FILE
    doc = yaml.safe_load(path.read_text())
    holder = doc["attributes"]
    *parents, last = field.split(".")
    for key in parents:
        holder = holder[key]
    holder[last].insert(0, person)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert refused(root) == (
        f"{path}: attributes.{field}[0]: {person!r} is a person of tenant 'payments' "
        f"(attributes.{theirs} in {(root / 'payments' / 'tenant' / 'defs.yaml').resolve()}): a "
        "tenant names only its own people"
    )


@pytest.mark.parametrize(
    "line", ["budget: {monthly_usd: 400, override: true}", "budget: {monthly_usd: .inf}"]
)
def test_a_budget_in_tenant_yaml_is_refused_as_platform_owned(root, line):
    path = root / TENANT_FILE
    path.write_text(path.read_text() + f"  {line}\n")
    message = refused(root)
    if ".inf" in line:  # caught as a non-finite number before the spec sees it
        assert message == f"{path}: attributes.budget.monthly_usd: inf is not a finite number"
    else:
        assert message == (
            f"{path}: attributes: budget: platform-owned, set in "
            "platform_assets/limits/limits.yaml by the platform team (a tenant's YAML may not "
            "set its budget, override, run quota, caps or GPUs)"
        )


def test_a_run_quota_in_tenant_yaml_is_refused_as_platform_owned(root):
    path = root / TENANT_FILE
    path.write_text(path.read_text() + "  max_concurrent_runs: 1000\n")
    assert refused(root).startswith(
        f"{path}: attributes: max_concurrent_runs: platform-owned, set in "
        "platform_assets/limits/limits.yaml"
    )


def test_two_tenants_in_one_namespace_are_refused(root):
    path = root / TENANT_FILE
    path.write_text(path.read_text().replace("tenant-ridehail", "tenant-payments"))
    message = (
        f"{path.resolve()}: attributes.namespace: namespace 'tenant-payments' is not tenant "
        "'ridehail''s: the platform assigns it 'tenant-ridehail' (tenant-<name>, or its "
        "`namespace` in platform_assets/limits/limits.yaml), so no two tenants run in one namespace"
    )
    assert refused(root) == message
    # Refused by ridehail's own location too, which reads no other tenant's folder.
    with pytest.raises(PlatformConfigError) as err:
        tenant_location(location_named("ridehail"))
    assert str(err.value) == message


def test_a_namespace_the_platform_assigns_in_limits_yaml(root, tmp_path, monkeypatch):
    limits = tmp_path / "limits.yaml"
    base = (Path(__file__).resolve().parents[2] / LIMITS_FILE).read_text()
    limits.write_text(_assign(base, {"growth": "marketing"}))
    monkeypatch.setenv("MLPLAT_LIMITS", str(limits))
    path = root / "growth" / "tenant" / "defs.yaml"
    path.write_text(path.read_text().replace("tenant-growth", "marketing"))
    assert load_tenant(root.resolve() / "growth").tenant.namespace == "marketing"


def _assign(limits_yaml: str, namespaces: dict[str, str]) -> str:
    """limits.yaml with these tenants' entries assigning these namespaces."""
    for tenant, namespace in namespaces.items():
        limits_yaml = limits_yaml.replace(
            f"  {tenant}:\n", f"  {tenant}:\n    namespace: {namespace}\n"
        )
    return limits_yaml


@pytest.mark.parametrize(
    ("namespaces", "field", "reason"),
    [
        (
            {"growth": "tenant-payments"},
            "tenants.growth.namespace",
            "'tenant-payments': `tenant-<name>` is the default namespace of the tenant of that "
            "name; an assigned namespace must not look like another tenant's default",
        ),
        (
            {"payments": "shared", "growth": "shared"},
            "tenants.growth.namespace",
            "'shared' is already assigned to tenant 'payments'",
        ),
    ],
)
def test_limits_yaml_cannot_assign_one_namespace_twice(tmp_path, namespaces, field, reason):
    limits = tmp_path / "limits.yaml"
    base = (Path(__file__).resolve().parents[2] / LIMITS_FILE).read_text()
    limits.write_text(_assign(base, namespaces))
    with pytest.raises(PlatformConfigError) as err:
        read_limits(limits)
    assert str(err.value) == f"{limits}: {field}: {reason}"


def test_a_model_reading_a_view_that_was_unshared_is_refused(root):
    # growth reads payments/merchant_risk, which payments shares with it in its YAML ...
    labels = root / "growth" / "sources" / "merchant_labels"
    write_component(
        labels,
        "platform_assets.sources.component.Source",
        {
            "name": "merchant_labels",
            "description": "Merchants growth partners with.",
            "path": "merchant_labels.parquet",
            "timestamp_column": "label_ts",
            "columns": {"merchant_id": "string", "label_ts": "timestamp", "churned": "int64"},
        },
    )
    model = write_component(
        root / "growth" / "models" / "partner_churn",
        "platform_assets.models.component.Model",
        {
            "name": "partner_churn",
            "description": "Which partner merchants leave.",
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
    assert CliRunner().invoke(cli.app, ["validate"]).exit_code == 0
    # ... until payments stops sharing it.
    path = root / "payments" / "tenant" / "defs.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["attributes"].pop("shares")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    load_tenant.cache_clear()
    assert refused(root) == (
        f"{model}: attributes.features[0]: tenant 'growth' may not read 'payments''s asset "
        "'payments/features/merchant_risk': 'payments' does not share it with 'growth'"
    )


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        (
            "select * from read_parquet('{lake}/payments/sources/transactions.parquet')",
            "the SQL may read only its declared sources as tables",
        ),
        ("select * from read_text('/etc/passwd')", 'Cannot access file "/etc/passwd"'),
        ("select * from read_text('/proc/self/environ')", "/proc/self/environ"),
        ("copy trips to '{lake}/payments/features/card_activity.parquet'", "COPY statements"),
        ("attach '{lake}/platform.db' as p", "ATTACH statements are not allowed"),
        ("set enable_external_access = true", "SET statements are not allowed"),
        ("install httpfs", "LOAD statements are not allowed"),
        ("select 1; select 2", "exactly one SELECT statement (found 2)"),
    ],
    ids=["other-tenant", "passwd", "environ", "copy", "attach", "set", "install", "two"],
)
def test_validate_dry_runs_feature_sql_in_the_sandbox(root, tmp_path, sql, reason):
    edit(root / FEATURE_FILE, sql=sql.format(lake=tmp_path / "lake"))
    result = CliRunner().invoke(cli.app, ["validate"])
    assert result.exit_code == 1
    assert (
        f"error: {root / FEATURE_FILE}: attributes.sql: feature set 'ridehail/driver_stats': "
    ) in result.output
    assert reason in result.output


@pytest.mark.parametrize(
    "spin",
    [
        "(select count(*) from range(1e11::bigint))",
        "(with recursive r(n) as (select 1 union all select n + 1 from r) select count(*) from r)",
    ],
    ids=["range", "recursive"],
)
def test_validate_gives_up_on_feature_sql_that_never_ends(root, tmp_path, monkeypatch, spin):
    """Over empty tables too: `mlplat validate` stops at limits.yaml's `sql.dry_run_timeout_s`
    and names the feature set, instead of hanging (issue #21)."""
    limits = yaml.safe_load(LIMITS_PATH.read_text())
    limits["defaults"]["sql"]["dry_run_timeout_s"] = 1
    path = tmp_path / "limits.yaml"
    path.write_text(yaml.safe_dump(limits))
    monkeypatch.setenv(LIMITS_ENV, str(path))
    edit(
        root / FEATURE_FILE,
        sql=(
            "select driver_id, event_ts as event_timestamp, ingested_at as created_timestamp, "
            "1 as trips_7d, 1.0 as avg_rating_7d, 0.0 as cancel_rate_7d from trips "
            f"union all select null, null, null, n, null, null from {spin} as s(n) where n < 0"
        ),
    )
    started = time.monotonic()
    result = CliRunner().invoke(cli.app, ["validate"])
    assert time.monotonic() - started < 30
    assert result.exit_code == 1
    assert (
        f"error: {root / FEATURE_FILE}: attributes.sql: feature set 'ridehail/driver_stats': the "
        "SQL ran past the platform's 1 s limit for `mlplat validate` over empty tables "
        "(limits.yaml sql.dry_run_timeout_s) and was stopped"
    ) in result.output


def test_validate_refuses_a_request_above_the_caps_that_the_platform_still_caps(root):
    """`mlplat validate` refuses an over-cap request by the team-spec policy (issue #13: file
    and policy named); at run time the platform still caps it rather than trusting the request."""
    path = root / TENANT_FILE
    path.write_text(path.read_text().replace("cpu: 1,", "cpu: 32,"))
    result = CliRunner().invoke(cli.app, ["validate"])
    assert result.exit_code == 1
    assert (
        f"error: {path}: policy specs/resources_within_caps: tenant 'ridehail' asks for "
        "32 vCPU per step; tenant 'ridehail' may have at most 4"
    ) in result.output
    assert (
        f"warning: {path}: attributes.resources: requested resources capped by the platform's "
        "limits.yaml: cpu 32 capped to 4"
    ) in result.output
    # the location still builds, and a step of the tenant's default request gets the capped grant
    assets = {
        key.to_user_string(): a
        for a in all_locations().assets
        if isinstance(a, dg.AssetsDefinition)
        for key in a.keys
    }
    features = assets["ridehail/features/driver_stats"]
    assert features.specs_by_key[features.key].metadata["resources/capped"] == (
        "requested resources capped by the platform's limits.yaml: cpu 32 capped to 4"
    )
    requested = load_tenant(root / "ridehail").tenant.resources
    assert requested.cpu == 32
    assert grant("ridehail", requested)[0].cpu == 4


def test_a_cluster_namespace_is_refused(root):
    path = root / TENANT_FILE
    path.write_text(path.read_text().replace("tenant-ridehail", "kube-system"))
    assert refused(root) == (
        f"{path}: attributes.namespace: namespace 'kube-system' belongs to the cluster or the "
        "platform"
    )
