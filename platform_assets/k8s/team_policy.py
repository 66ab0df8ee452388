"""The team-spec policies (`policies/specs/`) over every tenant's YAML, as `mlplat validate` and
`mlplat policy check` run them: caps, GPUs, accelerator classes and node pools, owners,
descriptions, Kubernetes names."""

from __future__ import annotations

from typing import Any

from platform_assets.k8s.config import RESERVED_NAMESPACES, k8s_name, platform
from platform_assets.k8s.policy import PolicySet, Violation
from platform_assets.tenancy.catalog import TenantCatalog
from platform_assets.tenancy.limits import catalog as placement_catalog
from platform_assets.tenancy.limits import limits_for


def spec_document(catalog: TenantCatalog, catalogs: dict[str, TenantCatalog]) -> dict[str, Any]:
    """What the spec policies see of one tenant: its YAML, its limits and its neighbours."""
    tenant = catalog.tenant
    tenant_file = str(catalog.file_of("tenant", tenant.name))
    requests = [
        {"what": f"tenant '{tenant.name}'", "file": tenant_file, "resources": tenant.resources}
    ]
    requests += [
        {
            "what": f"model '{m.name}'",
            "file": str(catalog.file_of("model", m.name)),
            "resources": m.resources,
        }
        for m in catalog.models.values()
        if m.resources is not None
    ]
    objects = [{"kind": "tenant", "name": tenant.name, "description": tenant.description}]
    files = {("tenant", tenant.name): tenant_file}
    for kind, specs in (
        ("source", catalog.sources),
        ("feature_set", catalog.feature_sets),
        ("model", catalog.models),
    ):
        for name, spec in specs.items():
            objects.append({"kind": kind, "name": name, "description": spec.description})
            files[(kind, name)] = str(catalog.file_of(kind, name))
    return {
        "file": tenant_file,
        "tenant": {
            "name": tenant.name,
            "k8s_name": k8s_name(tenant.name),
            "owners": tenant.owners,
            "namespace": tenant.namespace,
        },
        "limits": limits_for(tenant.name).model_dump(),
        "catalog": {
            "accelerators": sorted(placement_catalog().accelerators),
            "node_pools": sorted(placement_catalog().node_pools),
        },
        "requests": [{**r, "resources": r["resources"].model_dump()} for r in requests],
        "objects": [{**o, "file": files[(o["kind"], o["name"])]} for o in objects],
        "platform": {"reserved_namespaces": sorted(RESERVED_NAMESPACES | {platform().namespace})},
        "other_tenants_namespaces": {
            name: other.tenant.namespace for name, other in catalogs.items() if name != tenant.name
        },
    }


def check_team_specs(catalogs: dict[str, TenantCatalog]) -> list[Violation]:
    policies = PolicySet("specs")
    return [
        violation
        for catalog in catalogs.values()
        for violation in policies.evaluate(
            spec_document(catalog, catalogs), str(catalog.file_of("tenant", catalog.tenant.name))
        )
    ]
