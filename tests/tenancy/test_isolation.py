"""Isolation: cross-tenant dependencies, lake prefixes, namespaces and service accounts."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from platform_assets.composition.executors import executor_for
from platform_assets.k8s.steps import k8s_placement
from platform_assets.resources.lake import LakeResource
from platform_assets.tenancy.assets import asset_kwargs, yaml_reference
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.isolation import IsolationError, check_isolation, check_write

DEMO_DEFS = Path(__file__).resolve().parents[2] / "platform_assets" / "defs"


@pytest.fixture(scope="module")
def tenants():
    return {name: cat.tenant for name, cat in load_all().items()}


def _asset(
    key: str, deps: list[str] = (), tags: dict | None = None, folder: str | None = None
) -> dg.AssetsDefinition:
    """An asset as the platform builds it from `folder`'s YAML (default: the key's tenant)."""
    folder = folder or key.split("/")[0]
    metadata = {} if folder == "platform" else yaml_reference(DEMO_DEFS / folder / "defs.yaml")

    @dg.asset(
        key=dg.AssetKey(key.split("/")),
        deps=[dg.AssetKey(d.split("/")) for d in deps],
        tags=tags or {"tenant": folder},
        metadata=metadata,
    )
    def _built() -> None:
        return None

    return _built


def _check(tenants, *assets):
    check_isolation(dg.Definitions(assets=list(assets)), tenants)


def test_own_assets_and_shared_feature_views_are_allowed(tenants):
    # payments shares merchant_risk with growth in its YAML.
    _check(
        tenants,
        _asset("payments/features/merchant_risk"),
        _asset("growth/sources/events"),
        _asset(
            "growth/training_sets/m", ["growth/sources/events", "payments/features/merchant_risk"]
        ),
        _asset("platform/cost/showback", ["growth/training_sets/m"], {"tenant": "platform"}),
    )


def test_unshared_feature_view_is_refused_naming_both_tenants(tenants):
    with pytest.raises(IsolationError) as err:
        _check(
            tenants,
            _asset("payments/features/card_activity"),
            _asset("growth/training_sets/m", ["payments/features/card_activity"]),
        )
    assert str(err.value) == (
        "tenant isolation: asset 'growth/training_sets/m' of tenant 'growth' depends on "
        "'payments/features/card_activity' of tenant 'payments', which 'payments' does not share "
        "with 'growth' (only feature views listed under its YAML's `shares` may be read)"
    )


def test_shared_view_is_not_shared_with_everyone(tenants):
    with pytest.raises(
        IsolationError,
        match="'ridehail/models/x' of tenant 'ridehail'.*"
        "'payments/features/merchant_risk' of tenant 'payments'",
    ):
        _check(
            tenants,
            _asset("payments/features/merchant_risk"),
            _asset("ridehail/models/x", ["payments/features/merchant_risk"]),
        )


def test_other_tenants_non_feature_assets_are_refused(tenants):
    with pytest.raises(
        IsolationError,
        match="'payments/sources/transactions' of tenant "
        "'payments', which 'payments' does not share with 'ridehail'",
    ):
        _check(
            tenants,
            _asset("payments/sources/transactions"),
            _asset("ridehail/features/f", ["payments/sources/transactions"]),
        )


def test_dependency_on_a_non_tenant_is_refused(tenants):
    with pytest.raises(
        IsolationError,
        match="'growth/models/m' of tenant 'growth' depends on "
        "'platform/cost/showback', which belongs to 'platform', not a tenant",
    ):
        _check(
            tenants,
            _asset("platform/cost/showback", tags={"tenant": "platform"}),
            _asset("growth/models/m", ["platform/cost/showback"]),
        )


def test_tenant_tag_must_match_the_folder(tenants):
    with pytest.raises(
        IsolationError,
        match="'growth/sources/s' is tagged tenant='payments' but belongs to 'growth'",
    ):
        _check(tenants, _asset("growth/sources/s", tags={"tenant": "payments"}))


def test_asset_is_judged_by_the_folder_it_was_built_from(tenants):
    # Built from ridehail's YAML, keyed and tagged as payments: payments' own data would pass a
    # key-prefix check; attribution by folder refuses it.
    with pytest.raises(IsolationError) as err:
        _check(
            tenants,
            _asset("payments/sources/transactions"),
            _asset(
                "payments/features/copy",
                ["payments/sources/transactions"],
                {"tenant": "payments"},
                folder="ridehail",
            ),
        )
    assert "asset 'payments/features/copy' was built from tenant 'ridehail'" in str(err.value)
    assert "its key is under 'payments'" in str(err.value)


def test_an_asset_not_built_from_a_tenant_folder_is_the_platforms(tenants):
    with pytest.raises(IsolationError, match="'growth/models/m' was not built from any tenant"):
        _check(tenants, _asset("growth/models/m", folder="platform", tags={"tenant": "growth"}))


def test_lake_refuses_writes_outside_the_tenant_prefix(tmp_path):
    lake = LakeResource(root=str(tmp_path))
    table = pa.table({"x": [1]})
    with pytest.raises(IsolationError, match="outside tenant 'payments'"):
        lake.write("payments", "..", "../growth/sources/x", table)
    snapshot = lake.write("payments", "sources", "x", table)
    assert snapshot.uri == str(tmp_path / "payments/sources/x" / f"{snapshot.version}.parquet")


@pytest.mark.parametrize(
    "target",
    [
        "s3://bucket/lake/payments/../growth/sources/x",
        "s3://bucket/lake/payments/../../lake/growth/x",
        "s3://bucket/lake/paymentsx/sources/x",
        "s3://other/lake/payments/sources/x",
        "gs://bucket/lake/payments/sources/x",
    ],
)
def test_uri_writes_outside_the_tenant_prefix_are_refused(target):
    with pytest.raises(IsolationError, match="outside tenant 'payments'"):
        check_write("s3://bucket/lake", "payments", target)
    check_write("s3://bucket/lake/", "payments", "s3://bucket/lake/payments/sources/x")


def test_a_tenant_step_cannot_write_under_another_tenant(instance, tmp_path):
    @dg.asset(key=["growth", "sources", "sneaky"])
    def sneaky(lake: LakeResource):
        lake.write("payments", "sources", "transactions", pa.table({"x": [1]}))

    result = dg.materialize(
        [sneaky],
        instance=instance,
        resources={"lake": LakeResource(root=str(tmp_path))},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "a step of tenant 'growth' may not write under tenant 'payments'" in (
        failure.step_failure_data.error.cause.message
        if failure.step_failure_data.error.cause
        else failure.step_failure_data.error.message
    )
    assert not (tmp_path / "payments").exists()


def test_tenant_steps_run_in_its_namespace_with_its_service_account(tenants):
    for name, spec in tenants.items():
        config = executor_for("k8s", spec).config_schema.resolve_config({}).value["config"]
        assert config["job_namespace"] == spec.namespace
        assert config["service_account_name"] == spec.runner_service_account == f"{name}-runner"
        assert config["labels"] == {"mlplat/tenant": name}
        assert config["env_secrets"] == [f"{name}-services"]
        kwargs = asset_kwargs(
            spec, "source", ["sources", "s"], "d", {"python"}, placement=k8s_placement
        )
        op_tags = kwargs["op_tags"]
        k8s = json.loads(op_tags["dagster-k8s/config"])
        # The service account comes with the namespace, from the executor, never from a step.
        assert "service_account_name" not in k8s["pod_spec_config"]
        assert k8s["container_config"]["resources"]["requests"]["cpu"] == f"{spec.resources.cpu:g}"
    assert len({s.namespace for s in tenants.values()}) == len(tenants)
