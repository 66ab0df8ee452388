"""The YAML vocabulary teams write: one pydantic model per component type, validated at load.

These models hold no Dagster logic, so the CLI and the cost/governance code can read team YAML
without building definitions. The component classes in `platform_assets.components` extend them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import AfterValidator, Field, field_validator, model_validator

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ASSET_TYPES = ("source", "feature_view", "training_set", "model", "evaluation_report", "cost")
ROLES = ("viewer", "approver", "admin")

# The Great Expectations expectations teams may declare. A closed set so a typo fails at load,
# not in the middle of a run; each maps to the GX 1.x class of the CamelCase name.
ExpectationType = Literal[
    "expect_column_to_exist",
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_unique",
    "expect_compound_columns_to_be_unique",
    "expect_column_values_to_match_regex",
    "expect_column_mean_to_be_between",
    "expect_column_min_to_be_between",
    "expect_column_max_to_be_between",
    "expect_column_proportion_of_unique_values_to_be_between",
    "expect_table_row_count_to_be_between",
    "expect_table_columns_to_match_set",
]

ColumnType = Literal["string", "int64", "float64", "bool", "timestamp"]
FeatureType = Literal["int64", "float64", "string", "bool"]


def check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lower-case letters, digits and underscores, "
            "starting with a letter (at most 63 characters)"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]


class Expectation(dg.Model, dg.Resolvable):
    """One Great Expectations expectation; `kwargs` are the GX class's fields."""

    type: ExpectationType
    kwargs: dict[str, Any] = Field(default_factory=dict)
    blocking: bool = Field(
        default=True, description="A failed blocking expectation stops downstream assets."
    )


class ComputeResources(dg.Model, dg.Resolvable):
    """What a step requests; the Kubernetes executor requests the same and cost bills on it."""

    cpu: float = Field(default=1.0, gt=0, description="vCPU requested per step")
    memory_gib: float = Field(default=2.0, gt=0, description="GiB of memory requested per step")
    gpu: int = Field(default=0, ge=0, description="GPUs requested per step")


class Budget(dg.Model, dg.Resolvable):
    monthly_usd: float = Field(gt=0, description="Monthly compute budget in USD")
    warn_at: float = Field(default=0.8, gt=0, le=1, description="Fraction that raises a warning")
    override: bool = Field(
        default=False, description="Keep launching runs after the budget is spent"
    )


class Roles(dg.Model, dg.Resolvable):
    """People (identities as the SSO proxy reports them) per role within one tenant."""

    viewer: list[str] = Field(default_factory=list)
    approver: list[str] = Field(default_factory=list)
    admin: list[str] = Field(default_factory=list)


class Share(dg.Model, dg.Resolvable):
    """A feature set this tenant lets other tenants read."""

    feature_set: str
    tenants: list[str] = Field(min_length=1)


class PodOverrides(dg.Model, dg.Resolvable):
    """Extra Kubernetes settings merged into the tenant's step pods (dagster-k8s config keys);
    the platform's pod policies (policies/) decide what is allowed."""

    pod_spec_config: dict[str, Any] = Field(default_factory=dict)
    container_config: dict[str, Any] = Field(default_factory=dict)


class TenantSpec(dg.Model, dg.Resolvable):
    """A team on the platform: who owns it, who approves, what it may spend, where it runs."""

    name: Name = Field(description="Tenant id; the first part of every asset key it owns")
    description: str
    owners: list[str] = Field(min_length=1)
    roles: Roles = Field(default_factory=Roles)
    budget: Budget
    namespace: str = Field(description="Kubernetes namespace its steps run in")
    service_account: str | None = Field(
        default=None, description="Kubernetes service account; defaults to '<tenant>-runner'"
    )
    k8s: PodOverrides = Field(default_factory=PodOverrides)
    resources: ComputeResources = Field(default_factory=ComputeResources)
    max_concurrent_runs: int = Field(default=4, ge=1)
    shares: list[Share] = Field(default_factory=list)

    @property
    def runner_service_account(self) -> str:
        # Kubernetes names cannot contain `_` (tenant names cannot contain `-`: one-to-one).
        return self.service_account or f"{self.name.replace('_', '-')}-runner"


class SourceSpec(dg.Model, dg.Resolvable):
    """Raw data a tenant brings in: a built-in generated dataset or a parquet/CSV file."""

    name: Name
    description: str
    generator: str | None = Field(
        default=None, description="Built-in deterministic dataset, e.g. 'ridehail.trips'"
    )
    path: str | None = Field(default=None, description="A parquet or CSV file or URI to snapshot")
    timestamp_column: str
    columns: dict[str, ColumnType] = Field(min_length=1, description="Declared columns and types")
    expectations: list[Expectation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_origin(self) -> SourceSpec:
        if (self.generator is None) == (self.path is None):
            raise ValueError("set exactly one of 'generator' or 'path'")
        if self.timestamp_column not in self.columns:
            raise ValueError(
                f"timestamp_column {self.timestamp_column!r} is not one of the declared columns"
            )
        return self


class Entity(dg.Model, dg.Resolvable):
    name: str
    join_key: str
    description: str = ""


class FeatureSetSpec(dg.Model, dg.Resolvable):
    """A feature view: DuckDB SQL over the tenant's sources, served through Feast."""

    name: Name
    description: str
    entity: Entity
    sources: list[str] = Field(min_length=1, description="Source names the SQL reads as tables")
    sql: str = Field(description="DuckDB SQL; sources are tables named after them")
    timestamp_field: str = "event_timestamp"
    created_timestamp_field: str | None = "created_timestamp"
    ttl_days: float = Field(default=0, ge=0, description="0 means no lower bound")
    features: dict[str, FeatureType] = Field(min_length=1)
    expectations: list[Expectation] = Field(default_factory=list)

    @property
    def timestamp_feature(self) -> str:
        """The feature that carries each row's event time into training sets (leakage check)."""
        return f"{self.name}_ts"


class Labels(dg.Model, dg.Resolvable):
    source: str
    entity_columns: list[str] = Field(min_length=1)
    timestamp_column: str
    label_column: str


class Split(dg.Model, dg.Resolvable):
    test_fraction: float = Field(default=0.25, gt=0, lt=1)


class Evaluation(dg.Model, dg.Resolvable):
    primary_metric: Literal["roc_auc", "average_precision", "f1", "accuracy", "log_loss"] = (
        "roc_auc"
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="Metric name -> minimum (log_loss: maximum)"
    )


class Approvals(dg.Model, dg.Resolvable):
    """Approvals an environment needs: how many, from which roles."""

    count: int = Field(default=0, ge=0)
    roles: list[Literal["approver", "admin"]] = Field(default_factory=lambda: ["approver"])


class Environments(dg.Model, dg.Resolvable):
    staging: Approvals = Field(default_factory=Approvals)
    production: Approvals = Field(default_factory=lambda: Approvals(count=1))


class PromotionPolicy(dg.Model, dg.Resolvable):
    min_improvement: float = Field(
        default=0.0, ge=0, description="Primary metric gain over the champion needed to promote"
    )
    required_checks: list[Literal["feature_views", "training_set", "leakage"]] = Field(
        default_factory=lambda: ["feature_views", "training_set", "leakage"]
    )
    environments: Environments = Field(default_factory=Environments)


Algorithm = Literal["logistic_regression", "gradient_boosting", "random_forest"]


class ModelSpec(dg.Model, dg.Resolvable):
    """A model: its FeatureService, labels, algorithm and how it is judged and promoted."""

    name: Name
    description: str
    version: int = Field(default=1, ge=1, description="FeatureService version: <name>_v<version>")
    features: list[str] = Field(
        min_length=1, description="'<feature_set>:<feature>' or '<feature_set>:*'"
    )
    labels: Labels
    algorithm: Algorithm
    params: dict[str, Any] = Field(default_factory=dict)
    split: Split = Field(default_factory=Split)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    expectations: list[Expectation] = Field(
        default_factory=list, description="Expectations on the training set"
    )
    resources: ComputeResources | None = None

    @field_validator("features")
    @classmethod
    def _feature_refs(cls, refs: list[str]) -> list[str]:
        for i, ref in enumerate(refs):
            if ref.count(":") != 1 or not all(ref.split(":")):
                raise ValueError(f"features[{i}] {ref!r} must look like '<feature_set>:<feature>'")
        return refs

    @property
    def feature_service(self) -> str:
        return f"{self.name}_v{self.version}"

    def feature_sets(self) -> list[str]:
        return list(dict.fromkeys(ref.split(":")[0] for ref in self.features))
