"""The YAML vocabulary teams write: one pydantic model per component type, validated at load.

These models hold no Dagster logic, so the CLI and the cost/governance code can read team YAML
without building definitions. The component classes in `platform_assets.components` extend them.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zoneinfo
from functools import cache
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Full matches only (`re.fullmatch`): `$` would accept a trailing newline.
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
# Column, feature, entity and join-key names end up quoted inside the platform's own SQL and as
# Feast field names: plain identifiers only, so no name can close a quote or add a clause.
IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Owners appear in Dagster and in the generated .github/CODEOWNERS: a team or an e-mail, nothing
# that could add a line or a pattern.
OWNER_RE = re.compile(r"team:[a-z0-9][a-z0-9_-]{0,62}|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]+")
# A Kubernetes namespace (RFC 1123 label).
NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# Names the platform itself uses: `platform` (its asset keys and code location), `default`
# (Dagster's default group), `ml`, `dagster` and `mlplat` (the platform's and Dagster's own
# tag, label and location namespaces). A tenant named like one would be mistaken for it.
RESERVED_TENANT_NAMES = frozenset({"platform", "default", "ml", "dagster", "mlplat"})
# Where limits live; named in the error a tenant gets for setting one in its YAML.
LIMITS_FILE = "platform_assets/limits/limits.yaml"
PLATFORM_OWNED = ("budget", "max_concurrent_runs", "caps", "gpu_allowed", "override")
# Tenant YAML fields that are gone, and what a tenant uses instead (named in the error).
REMOVED_POD_FIELDS = {
    "k8s": (
        "ask for `resources` (cpu, memory_gib, gpu) and, where the platform allows it, "
        f"`resources.accelerator` and `resources.node_pool` from the catalog in {LIMITS_FILE}"
    ),
    "service_account": (
        "steps always run as the platform's `<tenant>-runner` account; remove the field"
    ),
}
ASSET_TYPES = (
    "source",
    "feature_view",
    "online_features",
    "training_set",
    "model",
    "evaluation_report",
    "predictions",
    "drift",
    "cost",
)
# Asset types only the platform's own location has (tenants' assets never carry them).
PLATFORM_ASSET_TYPES = ("slo_report",)
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
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lower-case letters, digits and underscores, "
            "starting with a letter (at most 63 characters)"
        )
    return value


def check_identifier(value: str) -> str:
    if not IDENTIFIER_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid column name: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    return value


def check_owner(value: str) -> str:
    if not OWNER_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an owner: use 'team:<name>' or an e-mail address")
    return value


# The platform's own identities (its sensors, reconciler, migrations) and tags: no person and
# no caller may be one (governance/identity.py), so no tenant YAML may give one a role.
RESERVED_IDENTITY_PREFIX = "mlplat/"


def identity_key(name: str) -> str:
    """An identity as the platform compares it: NFKC-normalised and case-folded, so a
    look-alike (`MLPlat／x`, with a full-width slash) is the identity it looks like."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


def is_reserved_identity(name: str) -> bool:
    return identity_key(name).startswith(RESERVED_IDENTITY_PREFIX)


def check_identity(value: str) -> str:
    if not re.fullmatch(r"[^\s]{1,254}", value):
        raise ValueError(f"{value!r} is not an identity: one word as the SSO proxy reports it")
    if is_reserved_identity(value):
        raise ValueError(
            f"{value!r} is a reserved platform identity ({RESERVED_IDENTITY_PREFIX}...): only "
            "people hold a tenant's roles"
        )
    return value


def check_k8s_name(value: str) -> str:
    if not NAMESPACE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a Kubernetes name (RFC 1123 label)")
    return value


def check_namespace(value: str) -> str:
    check_k8s_name(value)
    if value in ("default", "dagster") or value.startswith("kube-"):
        raise ValueError(f"namespace {value!r} belongs to the cluster or the platform")
    return value


def check_identifier_keys(value: dict) -> dict:
    """Dict keys as identifiers (Dagster's YAML schema needs plain `str` keys in annotations)."""
    for key in value:
        check_identifier(key)
    return value


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(value: str) -> str:
    """An IANA time zone name from the tz database, nothing that only looks like a path."""
    if value not in _time_zones():
        raise ValueError(
            f"{value!r} is not an IANA time zone name (e.g. 'UTC', 'Europe/Berlin', "
            "'America/New_York')"
        )
    return value


def check_cron(value: str) -> str:
    """A cron Dagster itself can run: the same parser `on_cron` and schedules use."""
    if len(value) > 100 or not is_valid_cron_string(value):
        raise ValueError(
            f"{value!r} is not a cron Dagster can run: five fields (minute hour day-of-month "
            "month day-of-week), e.g. '0 3 * * *' for 03:00 every day or '0 4 * * 1' for 04:00 "
            "on Mondays"
        )
    return value


def _exactly(kind: type, words: str):
    """Strict types as a validator: pydantic's `strict` cannot apply to the `T | str` union
    Dagster's component schema derives from each field."""

    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise ValueError(f"must be {words}, not {value!r}")
        return value

    return BeforeValidator(check)


StrictInt = Annotated[int, _exactly(int, "an integer")]
StrictBool = Annotated[bool, _exactly(bool, "true or false")]
Name = Annotated[str, AfterValidator(check_name)]
Identifier = Annotated[str, AfterValidator(check_identifier)]
Owner = Annotated[str, AfterValidator(check_owner)]
# An identity as the SSO proxy reports it: one token, no whitespace or control characters.
Identity = Annotated[str, AfterValidator(check_identity)]
Timezone = Annotated[str, AfterValidator(check_timezone)]
Cron = Annotated[str, AfterValidator(check_cron)]
Text = Annotated[str, StringConstraints(max_length=4000)]
# Every number in team YAML is finite (no .inf or .nan) and bounded; integers are strict (no
# 1.0, "1" or true where a count is meant).
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e9, le=1e9)]
# A span of time in hours, up to a year (retrain cooldowns and the platform's bounds on them).
Hours = Annotated[float, Field(ge=0, le=8760, allow_inf_nan=False)]


class Expectation(dg.Model, dg.Resolvable):
    """One Great Expectations expectation; `kwargs` are the GX class's fields."""

    type: ExpectationType
    kwargs: Annotated[dict[str, Any], AfterValidator(check_identifier_keys)] = Field(
        default_factory=dict
    )
    blocking: StrictBool = Field(
        default=True,
        description="A failed blocking expectation stops downstream assets.",
    )


class ComputeResources(dg.Model, dg.Resolvable):
    """What a step requests; the Kubernetes executor requests the same and cost bills on it."""

    cpu: float = Field(
        default=1.0, gt=0, le=1024, allow_inf_nan=False, description="vCPU requested per step"
    )
    memory_gib: float = Field(
        default=2.0, gt=0, le=16384, allow_inf_nan=False, description="GiB requested per step"
    )
    gpu: StrictInt = Field(default=0, ge=0, le=64, description="GPUs requested per step")


class StepResources(ComputeResources):
    """What a tenant's YAML asks for per step: amounts within its caps and, where limits.yaml
    allows the tenant, an accelerator class and a node pool from the platform's catalog there.
    The platform renders the pod from these; nothing else about the pod is the tenant's."""

    accelerator: Name | None = Field(
        default=None,
        description="Accelerator class (limits.yaml `catalog.accelerators`) the GPUs are of",
    )
    node_pool: Name | None = Field(
        default=None, description="Node pool (limits.yaml `catalog.node_pools`) steps run on"
    )

    @model_validator(mode="after")
    def _gpus_of_a_class(self) -> StepResources:
        if self.gpu and self.accelerator is None:
            raise ValueError(
                f"gpu: {self.gpu} GPUs need an accelerator class: set `accelerator` to one "
                f"limits.yaml's `catalog.accelerators` lists and allows the tenant"
            )
        if self.accelerator is not None and not self.gpu:
            raise ValueError(f"accelerator {self.accelerator!r} needs `gpu` of at least 1")
        return self


class Budget(dg.Model, dg.Resolvable):
    """A tenant's monthly budget; set by the platform in limits.yaml, never in tenant YAML."""

    monthly_usd: float = Field(
        gt=0, le=1e9, allow_inf_nan=False, description="Monthly compute budget in USD"
    )
    warn_at: float = Field(
        default=0.8, gt=0, le=1, allow_inf_nan=False, description="Fraction that raises a warning"
    )
    override: StrictBool = Field(
        default=False, description="Keep launching runs after the budget is spent"
    )


class Roles(dg.Model, dg.Resolvable):
    """People (identities as the SSO proxy reports them) per role within one tenant."""

    viewer: list[Identity] = Field(default_factory=list)
    approver: list[Identity] = Field(default_factory=list)
    admin: list[Identity] = Field(default_factory=list)


class Share(dg.Model, dg.Resolvable):
    """A feature set this tenant lets other tenants read."""

    feature_set: Name
    tenants: list[Name] = Field(min_length=1)


def check_tenant_name(value: str) -> str:
    if value in RESERVED_TENANT_NAMES:
        raise ValueError(
            f"tenant name {value!r} is reserved by the platform "
            f"(reserved: {', '.join(sorted(RESERVED_TENANT_NAMES))})"
        )
    return value


# Asset types a freshness SLO may name: the ones a pipeline refreshes on a cadence.
FRESHNESS_ASSET_TYPES = ("source", "feature_view", "training_set", "model")
# Dagster's freshness policies cannot be shorter than a minute; a year is the most that means
# anything for a platform that keeps 90 days of run history.
HOURS = {"ge": 1 / 60, "le": 8760, "allow_inf_nan": False}
# Attainment targets: 0 would promise nothing and 1 leaves no error budget at all.
TARGET = {"gt": 0, "lt": 1, "allow_inf_nan": False}


class RunSuccessSlo(dg.Model, dg.Resolvable):
    """The share of the tenant's finished runs that succeed, over a rolling window."""

    target: float = Field(default=0.95, **TARGET, description="e.g. 0.95: 5% may fail")
    window_days: float = Field(default=28, ge=1 / 24, le=90, allow_inf_nan=False)


class FreshnessSlo(dg.Model, dg.Resolvable):
    """How stale an asset of one type may get (its Dagster `FreshnessPolicy`), and the share of
    the window it must be within that."""

    fail_after_hours: float = Field(
        **HOURS, description="Failing once the last materialization is older than this"
    )
    warn_after_hours: float | None = Field(
        default=None, **HOURS, description="Warning once older than this (below fail_after)"
    )
    target: float = Field(default=0.99, **TARGET, description="Share of the window fresh")
    window_days: float = Field(default=28, ge=1 / 24, le=90, allow_inf_nan=False)

    @model_validator(mode="after")
    def _warn_before_fail(self) -> FreshnessSlo:
        if self.warn_after_hours is not None and self.warn_after_hours >= self.fail_after_hours:
            raise ValueError(
                f"warn_after_hours ({self.warn_after_hours:g}) must be below fail_after_hours "
                f"({self.fail_after_hours:g})"
            )
        return self


def check_freshness_types(value: dict) -> dict:
    """Keys as asset types (Dagster's YAML schema needs plain `str` keys, not a Literal)."""
    for key in value:
        if key not in FRESHNESS_ASSET_TYPES:
            raise ValueError(
                f"{key!r} is not an asset type with a freshness SLO: use one of "
                f"{', '.join(FRESHNESS_ASSET_TYPES)}"
            )
    return value


def schedule_or_freshness(freshness: FreshnessSlo | None, info: ValidationInfo) -> Any:
    """One trigger per asset: a schedule rebuilds it at its cron's ticks, a freshness target
    when it turns stale; both at once would rebuild it on either."""
    if freshness is not None and info.data.get("schedule") is not None:
        raise ValueError(
            "set `schedule` or `freshness`, not both: a schedule rebuilds it at each tick of "
            "its cron, a freshness target when it turns stale"
        )
    return freshness


def schedule_field(what: str) -> Any:
    return Field(
        default=None,
        description=f"Cron in the tenant's `timezone`: its sources refresh at each tick and {what}"
        " is rebuilt then if its data changed",
    )


def freshness_field(what: str) -> Any:
    return Field(
        default=None,
        description=f"How stale {what} may get: its Dagster freshness policy (instead of the "
        "tenant's `slos.freshness` for its type); its sources refresh when it turns stale",
    )


class Slos(dg.Model, dg.Resolvable):
    """A tenant's service level objectives: run success and, per asset type, freshness."""

    run_success: RunSuccessSlo = Field(default_factory=RunSuccessSlo)
    freshness: Annotated[dict[str, FreshnessSlo], AfterValidator(check_freshness_types)] = Field(
        default_factory=dict,
        description="Asset type (source, feature_view, training_set, model) -> its freshness",
    )


class TenantSpec(dg.Model, dg.Resolvable):
    """A team on the platform: who owns it, who approves, where it runs, what it requests.

    Budgets, run quotas, resource caps and GPU permission are the platform's
    (platform_assets/limits/limits.yaml, read by `platform_assets.tenancy.limits`).
    """

    name: Annotated[Name, AfterValidator(check_tenant_name)] = Field(
        description="Tenant id; the first part of every asset key it owns"
    )
    description: Text
    owners: list[Owner] = Field(min_length=1)
    roles: Roles = Field(default_factory=Roles)
    namespace: Annotated[str, AfterValidator(check_namespace)] = Field(
        description="Kubernetes namespace its steps run in"
    )
    resources: StepResources = Field(
        default_factory=StepResources,
        description="Requested per step; the platform caps it (limits.yaml)",
    )
    shares: list[Share] = Field(default_factory=list)
    slos: Slos = Field(default_factory=Slos, description="Service level objectives")
    timezone: Timezone = Field(
        default="UTC",
        description="IANA time zone the `schedule` crons of its feature sets and models are in",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_platform_limits(cls, data: Any) -> Any:
        owned = [k for k in PLATFORM_OWNED if isinstance(data, dict) and k in data]
        if owned:
            raise ValueError(
                f"{', '.join(owned)}: platform-owned, set in {LIMITS_FILE} by the platform team "
                "(a tenant's YAML may not set its budget, override, run quota, caps or GPUs)"
            )
        return data

    @model_validator(mode="before")
    @classmethod
    def _no_pod_configuration(cls, data: Any) -> Any:
        """Fields tenant YAML once had: the platform renders every pod from its own template
        and runs it as the tenant's runner account."""
        for key, use in REMOVED_POD_FIELDS.items():
            if isinstance(data, dict) and key in data:
                raise ValueError(f"{key}: tenant YAML carries no pod configuration; {use}")
        return data

    @property
    def runner_service_account(self) -> str:
        """Always the platform's `<tenant>-runner` (Kubernetes names cannot contain `_`, tenant
        names cannot contain `-`: one-to-one)."""
        return f"{self.name.replace('_', '-')}-runner"

    @property
    def serving_service_account(self) -> str:
        """What the tenant's champions serve as (KServe's predictor pods): no role at all, and
        where the platform attaches the credentials the storage initializer reads models with."""
        return f"{self.name.replace('_', '-')}-serving"


class SourceSpec(dg.Model, dg.Resolvable):
    """Raw data a tenant brings in: a built-in generated dataset or a parquet/CSV file."""

    name: Name
    description: Text
    generator: str | None = Field(
        default=None, description="Built-in deterministic dataset, e.g. 'ridehail.trips'"
    )
    path: str | None = Field(
        default=None,
        description="A parquet or CSV file, relative to the tenant's inbox <lake>/<tenant>/inbox/",
    )
    on_new_file: bool = Field(
        default=False,
        description="Run the tenant's pipeline from this source whenever a new version of its "
        "file lands complete in the inbox",
    )
    timestamp_column: Identifier
    columns: Annotated[dict[str, ColumnType], AfterValidator(check_identifier_keys)] = Field(
        min_length=1, description="Declared columns and types"
    )
    expectations: list[Expectation] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _inside_inbox(cls, path: str | None) -> str | None:
        """Lexically inside the inbox; the step opens it following no symlink."""
        if path is None:
            return None
        if (
            PurePosixPath(path).is_absolute()
            or any(part in ("", ".", "..") for part in path.split("/"))
            or any(c in path for c in ":\\~\0\n")
        ):
            raise ValueError(
                f"{path!r} must be a relative path inside the tenant's inbox "
                "(<lake>/<tenant>/inbox/): no absolute paths, URIs, '..' or '~'"
            )
        if not path.endswith((".parquet", ".csv")):
            raise ValueError(f"{path!r} must be a .parquet or .csv file")
        return path

    @field_validator("on_new_file")
    @classmethod
    def _watches_a_file(cls, on_new_file: bool, info: ValidationInfo) -> bool:
        if on_new_file and info.data.get("generator") is not None:
            raise ValueError(
                "a source with a generator has no file to watch: on_new_file needs `path`, a "
                "file in the tenant's inbox"
            )
        return on_new_file

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
    name: Name
    join_key: Identifier
    description: Text = ""


class FeatureSetSpec(dg.Model, dg.Resolvable):
    """A feature view: DuckDB SQL over the tenant's sources, served through Feast."""

    name: Name
    description: Text
    entity: Entity
    sources: list[Name] = Field(min_length=1, description="Source names the SQL reads as tables")
    sql: Annotated[str, StringConstraints(max_length=65536)] = Field(
        description="One DuckDB SELECT over the declared sources, which are tables named after "
        "them; it runs sandboxed (no files, network, extensions or settings)"
    )
    timestamp_field: Identifier = "event_timestamp"
    created_timestamp_field: Identifier | None = "created_timestamp"
    ttl_days: float = Field(
        default=0, ge=0, le=36500, allow_inf_nan=False, description="0 means no lower bound"
    )
    features: Annotated[dict[str, FeatureType], AfterValidator(check_identifier_keys)] = Field(
        min_length=1
    )
    expectations: list[Expectation] = Field(default_factory=list)
    schedule: Cron | None = schedule_field("the feature view")
    freshness: FreshnessSlo | None = freshness_field("the feature view")

    _one_trigger = field_validator("freshness")(schedule_or_freshness)

    @property
    def timestamp_feature(self) -> str:
        """The feature that carries each row's event time into training sets (leakage check)."""
        return f"{self.name}_ts"


class Labels(dg.Model, dg.Resolvable):
    source: Name
    entity_columns: list[Identifier] = Field(min_length=1)
    timestamp_column: Identifier
    label_column: Identifier


class Split(dg.Model, dg.Resolvable):
    test_fraction: float = Field(default=0.25, gt=0, lt=1, allow_inf_nan=False)


class Evaluation(dg.Model, dg.Resolvable):
    primary_metric: Literal["roc_auc", "average_precision", "f1", "accuracy", "log_loss"] = (
        "roc_auc"
    )
    thresholds: Annotated[dict[str, Finite], AfterValidator(check_identifier_keys)] = Field(
        default_factory=dict, description="Metric name -> minimum (log_loss: maximum)"
    )


class Approvals(dg.Model, dg.Resolvable):
    """Approvals an environment needs: how many, from which roles."""

    count: StrictInt = Field(default=0, ge=0, le=100)
    roles: list[Literal["approver", "admin"]] = Field(default_factory=lambda: ["approver"])


class Environments(dg.Model, dg.Resolvable):
    staging: Approvals = Field(default_factory=Approvals)
    production: Approvals = Field(default_factory=lambda: Approvals(count=1))


# The blocking checks a promotion can require to have passed (governance/evidence.py).
RequiredCheck = Literal["feature_views", "training_set", "leakage"]


class PromotionPolicy(dg.Model, dg.Resolvable):
    min_improvement: float = Field(
        default=0.0,
        ge=0,
        le=1e6,
        allow_inf_nan=False,
        description="Primary metric gain over the champion needed to promote",
    )
    required_checks: list[RequiredCheck] = Field(
        default_factory=lambda: ["feature_views", "training_set", "leakage"]
    )
    environments: Environments = Field(default_factory=Environments)


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    check_identifier_keys(params)
    for key, value in params.items():
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (value is None or isinstance(value, bool | int | float | str)) or not finite:
            raise ValueError(f"params.{key}: {value!r} must be a finite number, string or bool")
    return params


Algorithm = Literal[
    "logistic_regression", "gradient_boosting", "random_forest", "xgboost", "lightgbm"
]
Severity = Literal["warn", "block"]

# `package.module:function` inside the tenant's `code/` project: dotted identifiers, no
# relative imports, no attribute paths after the function.
ENTRYPOINT_RE = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
)
TrainerFlavor = Literal["xgboost", "lightgbm", "sklearn", "onnx"]


class TrainerSpec(dg.Model, dg.Resolvable):
    """The team's own training function, in the tenant's `code/` project (docs/trainers.md).

    It runs in a sandbox (a pod on Kubernetes), never in a platform process, and returns a
    model the platform loads from the flavor's safe format and evaluates itself."""

    entrypoint: str = Field(
        max_length=200, description="`package.module:function` inside the tenant's code/"
    )
    flavor: TrainerFlavor = Field(description="What the function returns, saved in its safe format")
    params: Annotated[dict[str, Any], AfterValidator(check_params)] = Field(
        default_factory=dict, max_length=64, description="Passed to the function as given"
    )

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, entrypoint: str) -> str:
        if not ENTRYPOINT_RE.fullmatch(entrypoint):
            raise ValueError(
                f"{entrypoint!r} must look like 'package.module:function' (a module inside the "
                "tenant's code/ folder and a function in it)"
            )
        return entrypoint


def _number(value: Any) -> Any:
    """An int or float as written, never a bool or a string that looks like one."""
    if type(value) not in (int, float):
        raise ValueError(f"must be a number, not {value!r}")
    return value


Number = Annotated[float, BeforeValidator(_number)]
Fraction = Annotated[Number, Field(gt=0, le=1, allow_inf_nan=False)]
Penalty = Annotated[Number, Field(ge=0, le=1e4, allow_inf_nan=False)]
Rounds = Annotated[StrictInt, Field(ge=1, le=5000, description="Boosting rounds (trees)")]


class XGBoostParams(dg.Model):
    """The hyperparameters a YAML-only `xgboost` model may set, and their ranges. The platform
    fixes the rest (binary logistic objective, `hist` trees, one thread, seed 0) so the same
    training set always gives the same model."""

    n_estimators: Rounds = 100
    max_depth: StrictInt = Field(default=6, ge=1, le=16)
    learning_rate: Fraction = 0.3
    subsample: Fraction = 1.0
    colsample_bytree: Fraction = 1.0
    min_child_weight: Penalty = 1.0
    reg_lambda: Penalty = 1.0
    reg_alpha: Penalty = 0.0


class LightGBMParams(dg.Model):
    """The hyperparameters a YAML-only `lightgbm` model may set, and their ranges. The platform
    fixes the rest (binary objective, one thread, deterministic row-wise histograms, seed 0)."""

    n_estimators: Rounds = 100
    num_leaves: StrictInt = Field(default=31, ge=2, le=4096)
    max_depth: StrictInt = Field(default=-1, ge=-1, le=64, description="-1 or 0: no limit")
    learning_rate: Fraction = 0.1
    min_child_samples: StrictInt = Field(default=20, ge=1, le=100000)
    colsample_bytree: Fraction = 1.0
    reg_lambda: Penalty = 0.0
    reg_alpha: Penalty = 0.0


# Algorithms whose params are an allow-list with ranges, checked when the YAML loads.
BOUNDED_PARAMS: dict[str, type[dg.Model]] = {"xgboost": XGBoostParams, "lightgbm": LightGBMParams}


def bounded_params(algorithm: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of a bounded algorithm: the YAML's, checked, over the defaults.
    Errors name the parameter, the algorithm and what it allows."""
    schema = BOUNDED_PARAMS[algorithm]
    try:
        return schema.model_validate(params).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ValueError(
                f"{key!r} is not a parameter of the built-in {algorithm}: it takes "
                f"{', '.join(schema.model_fields)}"
            ) from None
        reason = err["msg"].removeprefix("Value error, ")
        raise ValueError(
            f"{key}: {err['input']!r} is refused by the built-in {algorithm}: {reason}"
        ) from None


class DriftThresholds(dg.Model, dg.Resolvable):
    """Beyond these a drift check fails (docs/monitoring.md says what each one measures)."""

    psi: float = Field(
        default=0.2,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="Population stability index above which a feature or the score drifted",
    )
    ks: float = Field(
        default=0.1,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Kolmogorov-Smirnov statistic (largest CDF gap) above which it drifted",
    )
    missing: float = Field(
        default=0.05,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Rise of a feature's share of missing values over the training set's",
    )


class DriftSeverity(dg.Model, dg.Resolvable):
    """What a failed statistic does: `warn` shows it, `block` fails the check as an error
    that stops whatever depends on the drift asset."""

    psi: Severity = "warn"
    ks: Severity = "warn"
    missing: Severity = "warn"
    prediction: Severity = "warn"


class Monitoring(dg.Model, dg.Resolvable):
    """How the model's drift asset compares recent features and scores with its training set."""

    window_days: float = Field(
        default=7,
        gt=0,
        le=365,
        allow_inf_nan=False,
        description="Request-log rows from the last this many days are the recent data",
    )
    min_rows: StrictInt = Field(
        default=100,
        ge=1,
        le=10**9,
        description="Fewer logged rows in the window than this: the batch scores stand in",
    )
    bins: StrictInt = Field(
        default=10, ge=2, le=100, description="Quantile bins of the training set for PSI"
    )
    thresholds: DriftThresholds = Field(default_factory=DriftThresholds)
    severity: DriftSeverity = Field(default_factory=DriftSeverity)
    retrain_on_drift: StrictBool = Field(
        default=False,
        description="A failed drift check retrains on data the champion has not seen",
    )
    retrain_cooldown_hours: Hours = Field(
        default=24,
        description="No drift retrain within this many hours of the last one; bounded by the "
        f"platform ({LIMITS_FILE}: retrain)",
    )


class ModelSpec(dg.Model, dg.Resolvable):
    """A model: its FeatureService, labels, algorithm and how it is judged and promoted."""

    name: Name
    description: Text
    version: StrictInt = Field(default=1, ge=1, le=100000, description="FeatureService version")
    features: list[str] = Field(
        min_length=1, description="'<feature_set>:<feature>' or '<feature_set>:*'"
    )
    labels: Labels
    algorithm: Algorithm | None = Field(
        default=None, description="A built-in algorithm; or `trainer`, the team's own code"
    )
    params: Annotated[dict[str, Any], AfterValidator(check_params)] = Field(
        default_factory=dict,
        description="Estimator hyperparameters (scalars); for xgboost and lightgbm an allow-list "
        "with ranges (XGBoostParams, LightGBMParams)",
    )
    trainer: TrainerSpec | None = Field(
        default=None, description="The team's own training code, instead of `algorithm`"
    )
    split: Split = Field(default_factory=Split)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    expectations: list[Expectation] = Field(
        default_factory=list, description="Expectations on the training set"
    )
    resources: StepResources | None = None
    monitoring: Monitoring = Field(default_factory=Monitoring)
    schedule: Cron | None = schedule_field("the model")
    freshness: FreshnessSlo | None = freshness_field("the model")

    _one_trigger = field_validator("freshness")(schedule_or_freshness)

    @field_validator("params")
    @classmethod
    def _bounded_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        algorithm = info.data.get("algorithm")
        if algorithm in BOUNDED_PARAMS:
            bounded_params(algorithm, params)
        return params

    @model_validator(mode="after")
    def _algorithm_or_trainer(self) -> ModelSpec:
        if (self.algorithm is None) == (self.trainer is None):
            raise ValueError(
                "set exactly one of `algorithm` (a built-in) and `trainer` (the team's own code "
                "in code/)"
            )
        if self.trainer is not None and self.params:
            raise ValueError("`params` belong to `algorithm`; a trainer's go in `trainer.params`")
        return self

    @property
    def trained_by(self) -> str:
        """What trains it, in words: the algorithm, or the trainer's entrypoint and flavor."""
        if self.trainer is not None:
            return f"{self.trainer.entrypoint} ({self.trainer.flavor}, the team's own code)"
        return str(self.algorithm)

    @field_validator("features")
    @classmethod
    def _feature_refs(cls, refs: list[str]) -> list[str]:
        for i, ref in enumerate(refs):
            set_ref, _, feature = ref.partition(":")
            owner, _, name = set_ref.rpartition("/")
            if not (
                ref.count(":") == 1
                and NAME_RE.fullmatch(name)
                and (not owner or NAME_RE.fullmatch(owner))
                and (feature == "*" or IDENTIFIER_RE.fullmatch(feature))
            ):
                raise ValueError(
                    f"features[{i}] {ref!r} must look like '<feature_set>:<feature>', "
                    "'<feature_set>:*' or '<tenant>/<feature_set>:<feature>'"
                )
        return refs

    @property
    def feature_service(self) -> str:
        return f"{self.name}_v{self.version}"

    def feature_sets(self) -> list[str]:
        return list(dict.fromkeys(ref.split(":")[0] for ref in self.features))
