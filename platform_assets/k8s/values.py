"""Helm values for the official Dagster chart (chart version = our Dagster version), generated
from the tenants by `mlplat k8s values`.

Two charts, as Dagster documents for separately deployed user code: the `dagster` chart (release
`dagster` in the platform namespace) runs the webserver and the daemon with the K8sRunLauncher,
the run queue and run monitoring, on an external Postgres; each code location is its own release
of the `dagster-user-deployments` chart in its namespace (the tenant's), with the tenant's service
account, so its runs and steps start there (`includeConfigInLaunchedRuns`).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from platform_assets.cost.quotas import tenant_run_limits
from platform_assets.k8s.config import PLATFORM_RUNNER, k8s_name, platform, services_secret
from platform_assets.k8s.defs_configmaps import (
    CHECKSUM_ANNOTATION,
    DEFS_MOUNT,
    defs_checksum,
    defs_volume,
    location_configmaps,
)
from platform_assets.k8s.steps import (
    container_security_context,
    pod_security_context,
    resources_block,
)
from platform_assets.tenancy.isolation import PLATFORM
from platform_assets.tenancy.locations import CodeLocation
from platform_assets.tenancy.specs import ComputeResources, TenantSpec

RELEASE = "dagster"  # the chart's fullname is then `dagster`: ConfigMap `dagster-instance`, ...
DAGSTER_HOME = "/opt/dagster/dagster_home"
GRPC_PORT = 3030
CELERY_SECRET = "dagster-celery-config-secret"  # required by the chart's schema; unused here
CODE_SERVER = ComputeResources(cpu=0.5, memory_gib=1)


def chart_version() -> str:
    """The Dagster chart is released with Dagster's own version."""
    return version("dagster")


def image() -> dict[str, Any]:
    img = platform().image
    return {"repository": img.repository, "tag": img.tag, "pullPolicy": "IfNotPresent"}


def placement(location: CodeLocation, tenants: dict[str, TenantSpec]) -> tuple[str, str, str]:
    """(namespace, service account, tenant label) a location's server, runs and steps use."""
    if location.name == PLATFORM:
        return platform().namespace, PLATFORM_RUNNER, PLATFORM
    spec = tenants[location.tenants[0]]
    return spec.namespace, spec.runner_service_account, spec.name


def user_deployment(location: CodeLocation, tenants: dict[str, TenantSpec]) -> dict[str, Any]:
    """One entry of `deployments` for the location's `dagster-user-deployments` release.

    Its definitions come from the ConfigMaps of its tenants' folders (`defs_configmaps`),
    mounted at the defs root; runs and steps inherit the mount. A tenant location carries their
    checksum as an annotation, so a change to its files rolls it (and no other); the platform
    location carries none: the kubelet updates its files in place (see docs/kubernetes.md)."""
    _, _, tenant = placement(location, tenants)
    maps = location_configmaps(location)
    defs, defs_mount = defs_volume(maps)
    annotations = {} if location.name == PLATFORM else {CHECKSUM_ANNOTATION: defs_checksum(maps)}
    return {
        "name": k8s_name(location.name),
        "image": image(),
        "dagsterApiGrpcArgs": [
            "--module-name",
            location.module,
            "--attribute",
            location.attribute,
            "--location-name",
            location.name,
        ],
        "port": GRPC_PORT,
        # Runs and steps inherit the namespace, service account, env and labels below.
        "includeConfigInLaunchedRuns": {"enabled": True},
        "env": [
            {"name": "MLPLAT_ENV", "value": "k8s"},
            {"name": "MLPLAT_DEFS_ROOT", "value": DEFS_MOUNT},
        ],
        "envSecrets": [{"name": services_secret(tenant)}],
        "labels": {"mlplat/tenant": tenant, "mlplat/code-location": location.name},
        "annotations": annotations,
        "podSecurityContext": pod_security_context(),
        "securityContext": container_security_context(),
        "resources": resources_block(CODE_SERVER),
        "volumes": [{"name": "tmp", "emptyDir": {}}, defs],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, defs_mount],
    }


def user_deployments_values(
    location: CodeLocation, tenants: dict[str, TenantSpec]
) -> dict[str, Any]:
    """Values for the location's own release of the `dagster-user-deployments` chart."""
    _, account, _ = placement(location, tenants)
    secret = platform().postgres.password_secret
    return {
        "dagsterHome": DAGSTER_HOME,
        "postgresqlSecretName": secret,
        "celeryConfigSecretName": CELERY_SECRET,
        "deployments": [user_deployment(location, tenants)],
        "imagePullSecrets": [],
        # The tenant chart (deploy/helm/mlplat-tenant) creates the account with its RBAC.
        "serviceAccount": {"create": False, "name": account, "annotations": {}},
        "global": {
            "postgresqlSecretName": secret,
            "dagsterHome": DAGSTER_HOME,
            "serviceAccountName": account,
            "celeryConfigSecretName": CELERY_SECRET,
        },
    }


def run_coordinator(tenants: dict[str, TenantSpec]) -> dict[str, Any]:
    """The daemon's run coordinator: the platform's `BudgetRunCoordinator` (a queued coordinator
    that tags each run with its tenant and refuses an over-budget tenant's run before it
    starts), through the chart's `CustomRunCoordinator`, with each tenant's platform-owned
    `max_concurrent_runs` as its tag concurrency limits (the `services` instance's queue)."""
    limits = tenant_run_limits(tenants)
    return {
        "enabled": True,
        "type": "CustomRunCoordinator",
        "config": {
            "customRunCoordinator": {
                "module": "platform_assets.cost.coordinator",
                "class": "BudgetRunCoordinator",
                "config": {
                    "max_concurrent_runs": limits["max_concurrent_runs"],
                    "tag_concurrency_limits": limits["tag_concurrency_limits"],
                },
            }
        },
    }


def run_launcher_config() -> dict[str, Any]:
    """`runLauncher.config.k8sRunLauncher`: run workers start where their location says."""
    run_worker = resources_block(platform().run_worker)
    return {
        "imagePullPolicy": "IfNotPresent",
        "jobNamespace": platform().namespace,
        "loadInclusterConfig": True,
        "envConfigMaps": [],
        "envSecrets": [],
        "envVars": ["MLPLAT_ENV=k8s"],
        "volumeMounts": [],
        "volumes": [],
        "failPodOnRunFailure": True,
        "resources": run_worker,
        "securityContext": container_security_context(),
        "runK8sConfig": {
            "podSpecConfig": {"securityContext": pod_security_context()},
            "podTemplateSpecMetadata": {"labels": {"app.kubernetes.io/part-of": "mlplat"}},
        },
    }


def dagster_values(tenants: dict[str, TenantSpec], locations: list[CodeLocation]) -> dict:
    """Values for the `dagster` chart: webserver, daemon, external Postgres, queue, launcher."""
    plat = platform()
    pg = plat.postgres
    servers = [
        {
            "host": f"{k8s_name(loc.name)}.{placement(loc, tenants)[0]}",
            "port": GRPC_PORT,
            "name": loc.name,
        }
        for loc in locations
    ]
    return {
        "global": {
            "postgresqlSecretName": pg.password_secret,
            "dagsterHome": DAGSTER_HOME,
            "serviceAccountName": plat.dagster_service_account,
            "celeryConfigSecretName": CELERY_SECRET,
        },
        "serviceAccount": {"create": True, "name": plat.dagster_service_account, "annotations": {}},
        "dagsterWebserver": {
            "replicaCount": 1,
            # The platform image has dagster-webserver, dagster-postgres and dagster-k8s.
            "image": image(),
            "workspace": {"enabled": True, "servers": servers},
            "podSecurityContext": pod_security_context(),
            "securityContext": container_security_context(),
            "resources": resources_block(ComputeResources(cpu=1, memory_gib=2)),
            "enableReadOnly": False,
        },
        # Each location is its own release in its own namespace (user_deployments_values).
        "dagster-user-deployments": {
            "enabled": True,
            "enableSubchart": False,
            "imagePullSecrets": [],
            "deployments": [],
        },
        "postgresql": {
            "enabled": False,
            "postgresqlHost": pg.host,
            "postgresqlUsername": pg.username,
            "postgresqlDatabase": pg.database,
            "postgresqlParams": {"sslmode": "require"},
            # dagster-postgres needs psycopg2: SQLAlchemy 2.1 maps a bare `postgresql://` to
            # psycopg 3, on which the event log's `NOTIFY run_events, %s` fails.
            "postgresqlScheme": "postgresql+psycopg2",
            "service": {"port": pg.port},
        },
        # The password lives in the platform-managed Secret, never in the values.
        "generatePostgresqlPasswordSecret": False,
        "runLauncher": {
            "type": "K8sRunLauncher",
            "config": {"k8sRunLauncher": run_launcher_config()},
        },
        "dagsterDaemon": {
            "enabled": True,
            "image": image(),
            "runCoordinator": run_coordinator(tenants),
            "runMonitoring": {
                "enabled": True,
                "startTimeoutSeconds": 300,
                "cancelTimeoutSeconds": 300,
                "maxRuntimeSeconds": 21600,
                "pollIntervalSeconds": 120,
                "maxResumeRunAttempts": 0,
            },
            "podSecurityContext": pod_security_context(),
            "securityContext": container_security_context(),
            "resources": resources_block(ComputeResources(cpu=1, memory_gib=2)),
        },
        "telemetry": {"enabled": False},
    }
