"""Each component type loads from YAML, and a bad team file fails naming file, field and reason."""

from __future__ import annotations

import pytest
import yaml

from platform_assets.composition.locations import all_locations, tenant_location
from platform_assets.tenancy.catalog import (
    PlatformConfigError,
    check_model_refs,
    load_all,
    load_tenant,
)
from platform_assets.tenancy.limits import LIMITS_ENV, LIMITS_PATH, read_limits
from platform_assets.tenancy.locations import location_named
from tests.platform_sandbox import error_chain, sandbox, write_component

MODEL = "platform_assets.models.component.Model"
SOURCE = "platform_assets.sources.component.Source"


def _model_attrs(**overrides):
    attrs = {
        "name": "driver_retention",
        "description": "Second model of the ride-hailing team.",
        "features": ["driver_stats:trips_7d", "driver_stats:avg_rating_7d"],
        "labels": {
            "source": "driver_churn_labels",
            "entity_columns": ["driver_id"],
            "timestamp_column": "label_ts",
            "label_column": "churned",
        },
        "algorithm": "logistic_regression",
        "evaluation": {"thresholds": {"roc_auc": 0.6}},
    }
    attrs.update(overrides)
    return attrs


def test_demo_tenants_load_with_every_component_type():
    catalogs = load_all()
    assert set(catalogs) == {"ridehail", "payments", "growth"}
    for cat in catalogs.values():
        assert cat.sources and cat.feature_sets and cat.models
        assert len({fs.entity.join_key for fs in cat.feature_sets.values()}) >= 2
        for model in cat.models.values():
            check_model_refs(cat, model)


def test_adding_a_model_is_one_new_yaml_file(monkeypatch):
    with sandbox(monkeypatch) as (root, build):
        write_component(root / "ridehail" / "models" / "driver_retention", MODEL, _model_attrs())
        keys = {s.key.to_user_string() for s in build().resolve_all_asset_specs()}
    for kind in ("training_sets", "models", "evaluation_reports"):
        assert f"ridehail/{kind}/driver_retention" in keys


def _load_error(monkeypatch, attrs) -> str:
    with sandbox(monkeypatch) as (root, build):
        write_component(root / "ridehail" / "models" / "bad", MODEL, attrs)
        with pytest.raises(Exception) as excinfo:
            build()
        # The catalog gives the same verdict without Dagster (used by `mlplat validate`).
        with pytest.raises(PlatformConfigError) as catalog_exc:
            cat = load_tenant((root / "ridehail").resolve())
            check_model_refs(cat, cat.models[attrs["name"]])
        assert "models/bad/defs.yaml" in str(catalog_exc.value)
        # The tenant's code location and `dg`'s merged one refuse the file the same way.
        with pytest.raises(PlatformConfigError) as location_exc:
            tenant_location(location_named("ridehail"))
        assert str(location_exc.value) == str(catalog_exc.value)
        with pytest.raises(PlatformConfigError) as merged_exc:
            all_locations()
        assert str(merged_exc.value) == str(catalog_exc.value)
        return error_chain(excinfo.value) + "\n" + str(catalog_exc.value)


def test_unknown_field_is_refused(monkeypatch):
    message = _load_error(monkeypatch, _model_attrs(name="bad", learning_rate=0.1))
    assert "models/bad/defs.yaml" in message
    assert "learning_rate" in message
    assert "Extra inputs are not permitted" in message


def test_wrong_type_is_refused(monkeypatch):
    message = _load_error(monkeypatch, _model_attrs(name="bad", version="latest"))
    assert "attributes.version" in message
    assert "must be an integer, not 'latest'" in message


def test_missing_required_field_is_refused(monkeypatch):
    attrs = _model_attrs(name="bad")
    del attrs["labels"]
    message = _load_error(monkeypatch, attrs)
    assert "attributes.labels" in message
    assert "Field required" in message


def test_model_pointing_at_missing_feature_view_is_refused(monkeypatch):
    message = _load_error(monkeypatch, _model_attrs(name="bad", features=["driver_statz:*"]))
    assert "attributes.features[0]" in message
    assert "feature set 'driver_statz' does not exist in tenant 'ridehail'" in message


def test_model_pointing_at_missing_feature_is_refused(monkeypatch):
    message = _load_error(monkeypatch, _model_attrs(name="bad", features=["driver_stats:nope"]))
    assert "feature 'nope' is not in feature set 'driver_stats'" in message


def test_labels_without_the_join_key_are_refused(monkeypatch):
    attrs = _model_attrs(name="bad", features=["zone_demand:*"])
    message = _load_error(monkeypatch, attrs)
    assert "attributes.labels.entity_columns" in message
    assert "joins on 'zone_id'" in message


def test_feature_set_reading_unknown_source_is_refused(monkeypatch):
    with sandbox(monkeypatch) as (root, build):
        path = root / "ridehail" / "features" / "driver_stats" / "defs.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["attributes"]["sources"] = ["tripz"]
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(Exception) as excinfo:
            build()
    message = error_chain(excinfo.value)
    assert "features/driver_stats/defs.yaml: attributes.sources[0]" in message
    assert "source 'tripz' does not exist" in message


def test_source_needs_exactly_one_origin(monkeypatch):
    with sandbox(monkeypatch) as (root, build):
        write_component(
            root / "ridehail" / "sources" / "bad",
            SOURCE,
            {
                "name": "bad",
                "description": "d",
                "timestamp_column": "ts",
                "columns": {"ts": "timestamp"},
            },
        )
        with pytest.raises(PlatformConfigError) as excinfo:
            load_tenant((root / "ridehail").resolve())
    assert "sources/bad/defs.yaml: attributes" in str(excinfo.value)
    assert "set exactly one of 'generator' or 'path'" in str(excinfo.value)


def test_tenant_name_must_match_folder(monkeypatch):
    with sandbox(monkeypatch) as (root, _):
        path = root / "ridehail" / "tenant" / "defs.yaml"
        path.write_text(path.read_text().replace("name: ridehail", "name: rideshare"))
        with pytest.raises(
            PlatformConfigError, match="'rideshare' must equal its folder 'ridehail'"
        ):
            load_tenant((root / "ridehail").resolve())


def test_unshared_cross_tenant_feature_set_is_refused(monkeypatch):
    with sandbox(monkeypatch, tenants=("ridehail", "payments")) as (root, _):
        write_component(
            root / "ridehail" / "models" / "bad",
            MODEL,
            _model_attrs(
                name="bad",
                features=["payments/card_activity:*"],
                labels={
                    "source": "driver_churn_labels",
                    "entity_columns": ["driver_id", "card_id"],
                    "timestamp_column": "label_ts",
                    "label_column": "churned",
                },
            ),
        )
        cat = load_tenant((root / "ridehail").resolve())
        with pytest.raises(PlatformConfigError) as excinfo:
            check_model_refs(cat, cat.models["bad"])
    assert (
        "tenant 'ridehail' may not read 'payments''s asset 'payments/features/card_activity'"
        in str(excinfo.value)
    )


# The platform's promotion minimums (limits.yaml `promotion_minimums`)


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        (
            {"promotion": {"environments": {"production": {"count": 0}}}},
            "attributes.promotion.environments.production.count",
            "0 approval(s) is below the platform's minimum of 1 for production "
            "(platform_assets/limits/limits.yaml: promotion_minimums.production_approvals)",
        ),
        (
            {"promotion": {"required_checks": []}},
            "attributes.promotion.required_checks",
            "must include 'leakage': the platform requires it of every promotion "
            "(platform_assets/limits/limits.yaml: promotion_minimums.required_checks)",
        ),
        (
            {"evaluation": {"thresholds": {}}},
            "attributes.evaluation.thresholds",
            "must set a threshold for the primary metric 'roc_auc': the platform promotes no "
            "model without one (platform_assets/limits/limits.yaml: "
            "promotion_minimums.primary_metric_threshold)",
        ),
    ],
    ids=["no-approval", "no-leakage-check", "no-threshold"],
)
def test_a_model_below_the_promotion_minimums_is_refused(monkeypatch, overrides, field, reason):
    message = _load_error(monkeypatch, _model_attrs(name="bad", **overrides))
    assert f"models/bad/defs.yaml: {field}: {reason}" in message


def test_the_platform_sets_the_promotion_minimums_in_limits_yaml(monkeypatch, tmp_path):
    limits = tmp_path / "limits.yaml"
    limits.write_text(
        LIMITS_PATH.read_text().replace("  staging_approvals: 0", "  staging_approvals: 1")
    )
    monkeypatch.setenv(LIMITS_ENV, str(limits))
    message = _load_error(monkeypatch, _model_attrs(name="bad"))
    assert (
        "models/bad/defs.yaml: attributes.promotion.environments.staging.count: 0 approval(s) "
        "is below the platform's minimum of 1 for staging "
        "(platform_assets/limits/limits.yaml: promotion_minimums.staging_approvals)"
    ) in message


def test_promotion_minimums_naming_an_unknown_check_are_refused(tmp_path):
    limits = tmp_path / "limits.yaml"
    limits.write_text(
        LIMITS_PATH.read_text().replace("required_checks: [leakage]", "required_checks: [vibes]")
    )
    with pytest.raises(PlatformConfigError) as err:
        read_limits(limits)
    assert str(err.value).startswith(f"{limits}: promotion_minimums.required_checks.0: Input ")


# The built-in boosters' params: an allow-list with ranges


@pytest.mark.parametrize("algorithm", ["xgboost", "lightgbm"])
def test_a_booster_param_the_platform_does_not_offer_is_refused(monkeypatch, algorithm):
    attrs = _model_attrs(name="bad", algorithm=algorithm, params={"objective": "reg:squarederror"})
    message = _load_error(monkeypatch, attrs)
    assert (
        f"models/bad/defs.yaml: attributes.params: 'objective' is not a parameter of the "
        f"built-in {algorithm}: it takes n_estimators, "
    ) in message


@pytest.mark.parametrize(
    ("algorithm", "params", "reason"),
    [
        (
            "xgboost",
            {"max_depth": 40},
            "max_depth: 40 is refused by the built-in xgboost: "
            "Input should be less than or equal to 16",
        ),
        (
            "lightgbm",
            {"num_leaves": 1},
            "num_leaves: 1 is refused by the built-in lightgbm: "
            "Input should be greater than or equal to 2",
        ),
    ],
)
def test_a_booster_param_out_of_range_is_refused(monkeypatch, algorithm, params, reason):
    message = _load_error(monkeypatch, _model_attrs(name="bad", algorithm=algorithm, params=params))
    assert f"models/bad/defs.yaml: attributes.params: {reason}" in message


def test_a_booster_with_params_in_range_loads(monkeypatch):
    with sandbox(monkeypatch) as (root, build):
        params = {"n_estimators": 50, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8}
        attrs = _model_attrs(algorithm="xgboost", params=params)
        write_component(root / "ridehail" / "models" / "driver_retention", MODEL, attrs)
        specs = {s.key.to_user_string(): s for s in build().resolve_all_asset_specs()}
    assert specs["ridehail/models/driver_retention"].kinds == {"xgboost", "mlflow"}
