"""Platform admins file validation and the deployment wiring of the governance commands."""

from __future__ import annotations

import dagster as dg
import pytest

from platform_assets.governance import service
from platform_assets.governance.rbac import platform_admins
from platform_assets.tenancy.catalog import PlatformConfigError


def test_shipped_platform_admins_file_is_valid():
    assert platform_admins() == ["ada@platform.example"]


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("admins: []\n", "admins", "List should have at least 1 item"),
        ("{}\n", "admins", "Field required"),
        ("admins: ['ada @platform']\n", "admins", "admins[0] 'ada @platform' is not an identity"),
        ("admins: [ada@x]\nextra: 1\n", "extra", "Extra inputs are not permitted"),
    ],
)
def test_bad_platform_admins_file_fails_naming_file_field_and_reason(tmp_path, text, field, reason):
    path = tmp_path / "platform_admins.yaml"
    path.write_text(text)
    with pytest.raises(PlatformConfigError) as exc:
        platform_admins(path)
    assert str(exc.value).startswith(f"{path}: {field}")
    assert reason in str(exc.value)


def test_cli_governance_uses_the_deployment_db_mlflow_instance_and_deploy_dir(platform_home):
    gov = service.deployment_governance()
    data = platform_home / "data"
    assert gov.store.url == f"sqlite:///{data / 'platform.db'}"
    assert gov.deploy_dir == data / "deploy"
    assert gov.mlflow.tracking_uri == f"sqlite:///{data / 'mlflow' / 'mlflow.db'}"
    key = dg.AssetKey(["payments", "models", "fraud_detector"])
    gov.emit(dg.AssetObservation(asset_key=key, metadata={"event": "promote:champion"}))
    assert gov.instance.get_latest_materialization_event(key) is None
    records = gov.instance.fetch_observations(key, limit=1).records
    assert records[0].asset_observation.metadata["event"].value == "promote:champion"
    gov.instance.dispose()
    gov.store.dispose()
