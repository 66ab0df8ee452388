"""The Rego policies: their own `test_` rules (as `opa test` runs them) through regopy, and the
bad team YAML each spec policy refuses at `mlplat validate`, naming the file and the policy."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from platform_assets.cli.main import app
from platform_assets.k8s.policy import (
    PolicyError,
    PolicySet,
    policy_names,
    policy_root,
    run_policy_tests,
)

DEFS = Path(__file__).resolve().parents[2] / "platform_assets" / "defs"


@pytest.mark.parametrize("kind", ["pods", "specs"])
def test_every_policy_has_passing_tests(kind):
    outcomes = run_policy_tests(kind)
    for name in policy_names(kind):
        assert any(k.startswith(f"{kind}/{name}_test.") for k in outcomes), f"{name}: no tests"
    failed = [k for k, ok in outcomes.items() if not ok]
    assert not failed, failed
    assert len(outcomes) >= 2 * len(policy_names(kind))


def test_policy_tests_can_fail(tmp_path):
    root = tmp_path / "policies"
    shutil.copytree(policy_root(), root)
    test_file = root / "pods" / "no_privileged_test.rego"
    test_file.write_text(test_file.read_text().replace('"privileged": true}', '"privileged": 0}'))
    outcomes = run_policy_tests("pods", root)
    assert not outcomes["pods/no_privileged_test.test_privileged_is_refused"]


def test_rego_is_portable_to_opa_and_gatekeeper():
    """rego-cpp has no `%q`; `x != false` on a missing field differs between engines."""
    for path in policy_root().rglob("*.rego"):
        text = path.read_text()
        assert "%q" not in text, path
        assert not re.search(r"!=\s*false", text), path
        assert "import rego.v1" in text, path


def tenant_tree(tmp_path: Path, monkeypatch, edit) -> Path:
    """A copy of the demo tenants with one edit; MLPLAT_DEFS_ROOT points at it."""
    root = tmp_path / "defs"
    shutil.copytree(DEFS, root)
    edit(root)
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(root))
    return root


def edit_yaml(path: Path, change) -> None:
    doc = yaml.safe_load(path.read_text())
    change(doc["attributes"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


# Platform limits for the caps tests, explicit so they do not follow the demo limits.yaml.
TEST_LIMITS = """
platform:
  owners: [team:ml-platform]
  github_org: mlplat
defaults:
  budget: {monthly_usd: 100, warn_at: 0.8, override: false}
  max_concurrent_runs: 2
  caps: {cpu: 4, memory_gib: 16, gpu: 0}
  gpu_allowed: false
tenants:
  ridehail:
    caps: {cpu: 4, memory_gib: 2, gpu: 0}
  payments:
    caps: {cpu: 1, memory_gib: 16, gpu: 0}
"""


@pytest.fixture
def caps_limits(tmp_path, monkeypatch) -> Path:
    """MLPLAT_LIMITS at TEST_LIMITS: ridehail may have 2 GiB per step, payments 1 vCPU."""
    path = tmp_path / "limits.yaml"
    path.write_text(TEST_LIMITS)
    monkeypatch.setenv("MLPLAT_LIMITS", str(path))
    return path


def validate() -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate"])
    return result.exit_code, result.output


CHURN = "ridehail/models/driver_churn/defs.yaml"


def refused(tmp_path, monkeypatch, file: str, **update) -> str:
    """`mlplat validate` on the demo tenants with `update` in one file's attributes: it must
    fail; its output, with the file's path."""
    root = tenant_tree(
        tmp_path, monkeypatch, lambda r: edit_yaml(r / file, lambda a: a.update(update))
    )
    code, out = validate()
    assert code == 1, out
    return out.replace(str(root / file), "FILE")


def test_demo_tenants_pass_validate():
    code, out = validate()
    assert code == 0, out
    assert "ok: 3 tenants valid" in out


def test_model_asking_for_more_memory_than_its_tenant_may(tmp_path, monkeypatch, caps_limits):
    """Refused by validate (issue #13), though at run time the platform would also cap it."""
    model = "ridehail/models/driver_churn/defs.yaml"
    root = tenant_tree(
        tmp_path,
        monkeypatch,
        lambda r: edit_yaml(r / model, lambda a: a.update(resources={"cpu": 1, "memory_gib": 64})),
    )
    code, out = validate()
    assert code == 1
    assert (
        f"{root / model}: policy specs/resources_within_caps: model 'driver_churn' asks for 64 "
        "GiB of memory per step; tenant 'ridehail' may have at most 2"
    ) in out


def test_model_asking_for_more_cpu_than_its_tenant_may(tmp_path, monkeypatch, caps_limits):
    """Refused by validate (issue #13), though at run time the platform would also cap it."""
    model = "payments/models/fraud_detector/defs.yaml"
    root = tenant_tree(
        tmp_path,
        monkeypatch,
        lambda r: edit_yaml(r / model, lambda a: a.update(resources={"cpu": 16, "memory_gib": 2})),
    )
    code, out = validate()
    assert code == 1
    assert f"{root / model}: policy specs/resources_within_caps: model 'fraud_detector'" in out
    assert "16 vCPU per step; tenant 'payments' may have at most 1" in out


def test_model_asking_for_gpus_its_tenant_may_not_have(tmp_path, monkeypatch):
    model = "growth/models/subscription_churn/defs.yaml"
    root = tenant_tree(
        tmp_path,
        monkeypatch,
        lambda r: edit_yaml(
            r / model, lambda a: a.update(resources={"gpu": 1, "accelerator": "nvidia_t4"})
        ),
    )
    code, out = validate()
    assert code == 1
    assert (
        f"{root / model}: policy specs/gpu_allowed: model 'subscription_churn' asks for 1 GPUs; "
        "tenant 'growth' is not allowed GPUs"
    ) in out


def test_old_k8s_overrides_are_refused_naming_what_to_use(tmp_path, monkeypatch):
    override = {"container_config": {"command": ["/bin/sh", "-c", "id"]}}
    out = refused(tmp_path, monkeypatch, "growth/tenant/defs.yaml", k8s=override)
    assert (
        "error: FILE: attributes: k8s: tenant YAML carries no pod configuration; ask for "
        "`resources` (cpu, memory_gib, gpu) and, where the platform allows it, "
        "`resources.accelerator` and `resources.node_pool` from the catalog in "
        "platform_assets/limits/limits.yaml"
    ) in out


def test_a_tenant_chosen_service_account_is_refused(tmp_path, monkeypatch):
    out = refused(tmp_path, monkeypatch, "payments/tenant/defs.yaml", service_account="x-runner")
    assert (
        "error: FILE: attributes: service_account: tenant YAML carries no pod configuration; "
        "steps always run as the platform's `<tenant>-runner` account; remove the field"
    ) in out


def test_gpus_without_an_accelerator_class_are_refused(tmp_path, monkeypatch):
    out = refused(tmp_path, monkeypatch, CHURN, resources={"gpu": 8})
    assert (
        "error: FILE: attributes.resources: gpu: 8 GPUs need an accelerator class: set "
        "`accelerator` to one limits.yaml's `catalog.accelerators` lists and allows the tenant"
    ) in out


def test_an_accelerator_its_tenant_may_not_use(tmp_path, monkeypatch):
    """The demo limits.yaml catalogs `nvidia_t4` but allows it no tenant."""
    out = refused(tmp_path, monkeypatch, CHURN, resources={"gpu": 1, "accelerator": "nvidia_t4"})
    assert (
        "FILE: policy specs/placement: model 'driver_churn' asks for accelerator 'nvidia_t4'; "
        "tenant 'ridehail' may use only [] (limits.yaml allowed_accelerators)"
    ) in out


def test_a_node_pool_the_catalog_does_not_list(tmp_path, monkeypatch):
    out = refused(
        tmp_path, monkeypatch, "growth/tenant/defs.yaml", resources={"node_pool": "control"}
    )
    assert (
        "FILE: policy specs/placement: tenant 'growth' asks for node_pool 'control', which the "
        'platform\'s catalog does not list (limits.yaml catalog.node_pools: ["batch"])'
    ) in out


def test_namespace_that_is_not_a_kubernetes_name(tmp_path, monkeypatch):
    """The tenant spec (tenancy/specs.py) refuses it before the policy runs; the policy
    specs/kubernetes_names is tested on such input by kubernetes_names_test.rego."""
    tenant = "ridehail/tenant/defs.yaml"
    root = tenant_tree(
        tmp_path,
        monkeypatch,
        lambda r: edit_yaml(r / tenant, lambda a: a.update(namespace="Tenant_Ridehail")),
    )
    code, out = validate()
    assert code == 1
    assert (
        f"error: {root / tenant}: attributes.namespace: 'Tenant_Ridehail' is not a Kubernetes "
        "name (RFC 1123 label)"
    ) in out


def test_namespace_of_another_tenant(tmp_path, monkeypatch):
    """The catalog refuses a namespace the platform did not assign (tenancy/limits.py) before
    the policy runs; the policy specs/kubernetes_names is tested on such input by
    kubernetes_names_test.rego."""
    tenant = "growth/tenant/defs.yaml"
    root = tenant_tree(
        tmp_path,
        monkeypatch,
        lambda r: edit_yaml(r / tenant, lambda a: a.update(namespace="tenant-payments")),
    )
    code, out = validate()
    assert code == 1
    assert (
        f"error: {root / tenant}: attributes.namespace: namespace 'tenant-payments' is not "
        "tenant 'growth''s: the platform assigns it 'tenant-growth'"
    ) in out


def test_tenant_name_that_gives_no_kubernetes_name(tmp_path, monkeypatch):
    def rename(root: Path) -> None:
        (root / "growth").rename(root / "growth_")
        edit_yaml(
            root / "growth_/tenant/defs.yaml",
            lambda a: a.update(name="growth_", namespace="growth-team"),
        )
        payments = root / "payments/tenant/defs.yaml"
        payments.write_text(payments.read_text().replace("[growth]", "[growth_]"))

    root = tenant_tree(tmp_path, monkeypatch, rename)
    code, out = validate()
    assert code == 1
    # No default namespace (`tenant-growth-`): the catalog asks the platform to assign one ...
    limits = Path(__file__).resolve().parents[2] / "platform_assets/limits/limits.yaml"
    assert (
        f"error: {limits}: tenants.growth_.namespace: tenant 'growth_' gives no default "
        "namespace ('tenant-growth-' is not an RFC 1123 label): the platform must assign it one "
        "here"
    ) in out
    # ... and with one assigned, the policy still refuses the name its other objects take.
    assigned = tmp_path / "limits.yaml"
    assigned.write_text(TEST_LIMITS + "  growth_:\n    namespace: growth-team\n")
    monkeypatch.setenv("MLPLAT_LIMITS", str(assigned))
    code, out = validate()
    assert code == 1
    assert (
        f"{root / 'growth_/tenant/defs.yaml'}: policy specs/kubernetes_names: tenant name "
        "'growth_' gives Kubernetes name 'growth-', which is not a DNS-1123 label"
    ) in out


def test_tenant_names_with_underscores_map_to_kubernetes_names(tmp_path, monkeypatch):
    def rename(root: Path) -> None:
        (root / "growth").rename(root / "growth_eu")
        edit_yaml(
            root / "growth_eu/tenant/defs.yaml",
            lambda a: a.update(name="growth_eu", namespace="tenant-growth-eu"),
        )
        payments = root / "payments/tenant/defs.yaml"
        payments.write_text(payments.read_text().replace("[growth]", "[growth_eu]"))

    tenant_tree(tmp_path, monkeypatch, rename)
    code, out = validate()
    assert code == 0, out


def test_missing_description(tmp_path, monkeypatch):
    source = "ridehail/sources/trips/defs.yaml"
    root = tenant_tree(
        tmp_path, monkeypatch, lambda r: edit_yaml(r / source, lambda a: a.update(description=" "))
    )
    code, out = validate()
    assert code == 1
    assert f"{root / source}: policy specs/descriptions: source 'trips' has no description" in out


def test_owners_nobody_can_reach(tmp_path, monkeypatch):
    """The tenant spec (tenancy/specs.py) refuses it before the policy runs; the policy
    specs/owners is tested on such input by owners_test.rego."""
    tenant = "ridehail/tenant/defs.yaml"
    root = tenant_tree(
        tmp_path, monkeypatch, lambda r: edit_yaml(r / tenant, lambda a: a.update(owners=["bob"]))
    )
    code, out = validate()
    assert code == 1
    assert (
        f"error: {root / tenant}: attributes.owners.0: 'bob' is not an owner: use 'team:<name>' "
        "or an e-mail address"
    ) in out


def test_gatekeeper_templates_carry_the_same_rego_unchanged(tmp_path):
    from platform_assets.k8s.gatekeeper import TARGET, constraint_kind

    result = CliRunner().invoke(app, ["policy", "gatekeeper", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    docs = [yaml.safe_load(p.read_text()) for p in sorted(tmp_path.glob("*.yaml"))]
    templates = {
        d["spec"]["crd"]["spec"]["names"]["kind"]: d
        for d in docs
        if d["kind"] == "ConstraintTemplate"
    }
    constraints = {d["kind"]: d for d in docs if d["kind"] != "ConstraintTemplate"}
    names = policy_names("pods")
    assert set(templates) == set(constraints) == {constraint_kind(n) for n in names}
    lib = (policy_root() / "lib" / "k8s.rego").read_text()
    for name in names:
        [target] = templates[constraint_kind(name)]["spec"]["targets"]
        assert target["target"] == TARGET
        assert target["rego"] == (policy_root() / "pods" / f"{name}.rego").read_text()
        assert target["libs"] == [lib]
        assert "violation contains" in target["rego"]  # what Gatekeeper reads
        match = constraints[constraint_kind(name)]["spec"]["match"]["kinds"]
        assert {"apiGroups": ["serving.kserve.io"], "kinds": ["InferenceService"]} in match
        params = constraints[constraint_kind(name)]["spec"]["parameters"]
        assert params["tenants"]["ridehail"] == {
            "namespace": "tenant-ridehail",
            "service_account": "ridehail-runner",
            "serving_service_account": "ridehail-serving",
            "env_from": ["ridehail-services"],
            "secret_keys": {"dagster-postgresql-secret": ["postgresql-password"]},
            "tolerations": [],
            "node_labels": {},
            "priority_classes": [],
            "caps": {"cpu": "4", "memory": "16Gi"},
            "extended_resources": [],
            "containers": ["dagster", "ridehail"],
            "trainer_service_account": "ridehail-trainer",
            "trainer_image": "registry.mlplat.example/mlplat-trainer-ridehail:",
            "trainer_caps": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "512Mi"},
        }
        assert params["trainer_entrypoint"] == ["python", "/opt/mlplat/runner.py"]
        assert params["platform_pod_caps"] == {"cpu": "500m", "memory": "1Gi"}


def test_a_policy_output_that_is_not_json_is_an_error_naming_the_policy(tmp_path):
    """rego-cpp prints a literal passed to a function with its quotes unescaped in `sprintf`;
    regopy then fails to parse its own output. That is a bug in the policy, named as such."""
    root = tmp_path / "policies"
    shutil.copytree(policy_root(), root)
    (root / "pods" / "quoted.rego").write_text(
        "package k8s.pods.quoted\n\nimport rego.v1\n\n"
        'violation contains {"msg": sprintf("uses \'%v\'", [object.get({}, "a", "default")])}\n'
    )
    with pytest.raises(PolicyError, match=r"^job.yaml: policy pods/quoted gave output mlplat "):
        PolicySet("pods", root).evaluate({"review": {"object": {"kind": "Pod"}}}, "job.yaml")
