"""The pod policies as Gatekeeper ConstraintTemplates and Constraints: the same Rego files,
unchanged, enforced at admission in every tenant namespace."""

from __future__ import annotations

from typing import Any

from platform_assets.k8s.policy import policy_names, policy_root
from platform_assets.k8s.render import pod_parameters
from platform_assets.tenancy.specs import TenantSpec

TARGET = "admission.k8s.gatekeeper.sh"


def constraint_kind(policy: str) -> str:
    return "Mlplat" + "".join(part.capitalize() for part in policy.split("_"))


def gatekeeper_manifests(tenants: dict[str, TenantSpec]) -> list[dict[str, Any]]:
    """A ConstraintTemplate and a Constraint per pod policy (Gatekeeper 3.15+: OPA understands
    `import rego.v1`). Constraints match Pods, Jobs and KServe InferenceServices (the champions'
    manifests a GitOps repository applies) in namespaces labelled mlplat/tenant."""
    root = policy_root()
    libs = [p.read_text() for p in sorted((root / "lib").glob("*.rego"))]
    parameters = pod_parameters(tenants)
    manifests: list[dict[str, Any]] = []
    for name in policy_names("pods"):
        kind = constraint_kind(name)
        manifests.append(
            {
                "apiVersion": "templates.gatekeeper.sh/v1",
                "kind": "ConstraintTemplate",
                "metadata": {"name": kind.lower()},
                "spec": {
                    "crd": {
                        "spec": {
                            "names": {"kind": kind},
                            "validation": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    },
                    "targets": [
                        {
                            "target": TARGET,
                            "rego": (root / "pods" / f"{name}.rego").read_text(),
                            "libs": libs,
                        }
                    ],
                },
            }
        )
        manifests.append(
            {
                "apiVersion": "constraints.gatekeeper.sh/v1beta1",
                "kind": kind,
                "metadata": {"name": f"mlplat-{name.replace('_', '-')}"},
                "spec": {
                    "enforcementAction": "deny",
                    "match": {
                        "kinds": [
                            {"apiGroups": [""], "kinds": ["Pod"]},
                            {"apiGroups": ["batch"], "kinds": ["Job"]},
                            {"apiGroups": ["serving.kserve.io"], "kinds": ["InferenceService"]},
                        ],
                        "namespaceSelector": {
                            "matchExpressions": [{"key": "mlplat/tenant", "operator": "Exists"}]
                        },
                    },
                    "parameters": parameters,
                },
            }
        )
    return manifests
