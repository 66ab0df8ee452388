"""The model YAML's `monitoring:` block: defaults keep existing files valid, and each bad value
fails loading naming the file, the field and the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from platform_assets.tenancy.catalog import PlatformConfigError, load_tenant
from tests.platform_sandbox import DEMO_DEFS

MODEL_FILE = Path("models") / "driver_churn" / "defs.yaml"


def load_with(tmp_path: Path, monitoring: dict):
    folder = tmp_path / "ridehail"
    shutil.copytree(DEMO_DEFS / "ridehail", folder)
    path = folder / MODEL_FILE
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["monitoring"] = monitoring
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_tenant(folder.resolve())


def test_defaults_keep_existing_yaml_valid(tmp_path):
    spec = load_with(tmp_path, {}).models["driver_churn"]
    assert spec.monitoring.window_days == 7 and spec.monitoring.retrain_on_drift is False
    assert spec.monitoring.retrain_cooldown_hours == 24
    assert spec.monitoring.severity.psi == "warn" and spec.monitoring.thresholds.ks == 0.1


def test_a_full_block_loads(tmp_path):
    monitoring = {
        "window_days": 3,
        "min_rows": 500,
        "bins": 20,
        "thresholds": {"psi": 0.25, "ks": 0.2, "missing": 0.1},
        "severity": {"psi": "block", "ks": "warn", "missing": "block", "prediction": "block"},
        "retrain_on_drift": True,
        "retrain_cooldown_hours": 6,
    }
    spec = load_with(tmp_path, monitoring).models["driver_churn"]
    assert spec.monitoring.model_dump(mode="json") == monitoring


@pytest.mark.parametrize(
    ("monitoring", "field", "reason"),
    [
        ({"window_days": 0}, "monitoring.window_days", "greater than 0"),
        ({"window_days": 400}, "monitoring.window_days", "less than or equal to 365"),
        ({"min_rows": 1.5}, "monitoring.min_rows", "must be an integer, not 1.5"),
        ({"min_rows": 0}, "monitoring.min_rows", "greater than or equal to 1"),
        ({"bins": 1}, "monitoring.bins", "greater than or equal to 2"),
        ({"bins": 101}, "monitoring.bins", "less than or equal to 100"),
        ({"thresholds": {"psi": 0}}, "monitoring.thresholds.psi", "greater than 0"),
        ({"thresholds": {"psi": 1000}}, "monitoring.thresholds.psi", "less than or equal to 100"),
        ({"thresholds": {"ks": 1.5}}, "monitoring.thresholds.ks", "less than or equal to 1"),
        (
            {"thresholds": {"missing": -0.1}},
            "monitoring.thresholds.missing",
            "greater than or equal to 0",
        ),
        ({"thresholds": {"psi": "high"}}, "monitoring.thresholds.psi", "valid number"),
        ({"severity": {"ks": "fatal"}}, "monitoring.severity.ks", "'warn' or 'block'"),
        ({"retrain_on_drift": "yes"}, "monitoring.retrain_on_drift", "must be true or false"),
        ({"windo_days": 3}, "monitoring.windo_days", "Extra inputs are not permitted"),
        (
            {"retrain_cooldown_hours": -1},
            "monitoring.retrain_cooldown_hours",
            "greater than or equal to 0",
        ),
    ],
)
def test_bad_monitoring_is_refused_naming_file_and_field(tmp_path, monitoring, field, reason):
    with pytest.raises(PlatformConfigError) as exc:
        load_with(tmp_path, monitoring)
    message = str(exc.value)
    assert "models/driver_churn/defs.yaml" in message
    assert field in message and reason in message, message


@pytest.mark.parametrize(
    ("hours", "reason"),
    [
        (
            0.5,
            "0.5 h is below the platform's bound of 1 h for tenant 'ridehail' "
            "(platform_assets/limits/limits.yaml: retrain.min_cooldown_hours)",
        ),
        (
            1000,
            "1000 h is above the platform's bound of 720 h for tenant 'ridehail' "
            "(platform_assets/limits/limits.yaml: retrain.max_cooldown_hours)",
        ),
    ],
    ids=["below", "above"],
)
def test_a_retrain_cooldown_outside_the_platforms_bounds_is_refused(tmp_path, hours, reason):
    with pytest.raises(PlatformConfigError) as exc:
        load_with(tmp_path, {"retrain_on_drift": True, "retrain_cooldown_hours": hours})
    path = (tmp_path / "ridehail" / MODEL_FILE).resolve()
    assert str(exc.value) == f"{path}: attributes.monitoring.retrain_cooldown_hours: {reason}"
