"""What a champion deploys as: a KServe InferenceService manifest for GitOps, checked against
KServe's schema and the pod policies before the champion moves."""

import json
import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from platform_assets.env import deployment
from platform_assets.k8s.config import quantity
from platform_assets.k8s.policy import PolicySet
from platform_assets.k8s.render import pod_parameters
from platform_assets.k8s.steps import container_security_context, label_value
from platform_assets.tenancy.limits import effective_resources
from platform_assets.tenancy.locations import location_of
from platform_assets.tenancy.specs import TenantSpec

if TYPE_CHECKING:  # pandas loads in the steps, not with the code location
    from platform_assets.k8s.policy import PolicySet

SCHEMA = Path(__file__).with_name("schemas") / "inferenceservice_v1beta1.json"
# The regopy interpreter takes its input and then answers a query: one evaluation at a time.
_POLICY_LOCK = threading.Lock()


@cache
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@cache
def _pod_policies() -> "PolicySet":
    """The pod policies, loaded once per process, not on every champion change."""
    return PolicySet("pods")


def manifest_name(manifest: dict[str, Any]) -> str:
    meta = manifest.get("metadata", {})
    return f"InferenceService {meta.get('namespace', '?')}/{meta.get('name', '?')}"


def validate_inferenceservice(manifest: dict[str, Any], tenant: TenantSpec) -> None:
    """Raise ValueError naming the first field that breaks the InferenceService schema, else
    every pod policy the predictor's pods would break (the same Rego Gatekeeper enforces)."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.path) or "<root>"
        raise ValueError(f"InferenceService invalid at {where}: {err.message}")
    # render.py imports nothing of governance, and only here: no cycle, no k8s code at import.

    # The policies read only the parameters of the tenant the pod is labelled for (and the
    # platform's registries), so this tenant's are the platform's whole verdict; a manifest
    # labelled for another tenant is refused as one the platform does not know.
    review = {"review": {"object": manifest}, "parameters": pod_parameters({tenant.name: tenant})}
    with _POLICY_LOCK:
        violations = _pod_policies().evaluate(review, manifest_name(manifest))
    if violations:
        raise ValueError("; ".join(str(v) for v in violations))


def model_storage_uri(download_uri: str) -> tuple[str, str]:
    """Where KServe's storage initializer fetches the model version from, and why it cannot
    (empty when it can). Through the tracking server's artifact proxy MLflow names artifacts
    `mlflow-artifacts:/<path>`; the object is `<MLPLAT_MLFLOW_ARTIFACTS>/<path>` in the bucket the
    server writes to (`--artifacts-destination`). In services and k8s it must be `s3://...`."""
    import os
    from urllib.parse import urlparse

    uri = download_uri
    if download_uri.startswith("mlflow-artifacts:"):
        root = os.environ.get("MLPLAT_MLFLOW_ARTIFACTS", "")
        if not root:
            raise ValueError(
                f"spec.predictor.model.storageUri: MLflow gives {download_uri}, a path behind "
                "its artifact proxy; set MLPLAT_MLFLOW_ARTIFACTS to the bucket it writes to "
                "(its --artifacts-destination, s3://...)"
            )
        uri = f"{root.rstrip('/')}/{urlparse(download_uri).path.lstrip('/')}"
    if uri.startswith("s3://"):
        return uri, ""
    why = (
        f"{uri} is not in object storage: KServe's storage initializer fetches s3:// URIs, so "
        "this manifest is not deployable"
    )
    if deployment() != "local":
        raise ValueError(f"spec.predictor.model.storageUri: {why}")
    return uri, why


def render_inferenceservice(
    tenant: TenantSpec, registered: str, version: int, storage_uri: str
) -> dict[str, Any]:
    """The champion's InferenceService, schema-valid and passing every pod policy, or a
    ValueError saying why not."""
    model = registered.partition(".")[2]
    storage_uri, not_deployable = model_storage_uri(storage_uri)
    res = effective_resources(tenant.name, tenant.resources)
    amounts = {"cpu": quantity(res.cpu), "memory": quantity(res.memory_gib, "Gi")}
    manifest = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": f"{tenant.name}-{model}".replace("_", "-"),
            "namespace": tenant.namespace,
            # KServe copies these onto the predictor's pods: what the cost tool attributes
            # serving spend by (pods/cost_labels). The code location as step pods carry it.
            "labels": {
                "mlplat/tenant": label_value(tenant.name),
                "mlplat/code-location": label_value(location_of(tenant.name)),
                "mlplat/model": label_value(model),
            },
            "annotations": {
                "mlplat/registered-model": registered,
                "mlplat/model-version": str(version),
                "mlplat/alias": "champion",
                # Locally the model is on this machine's disk: say so rather than claim a
                # manifest a cluster could run.
                **({"mlplat/not-deployable": not_deployable} if not_deployable else {}),
            },
        },
        "spec": {
            "predictor": {
                "serviceAccountName": tenant.serving_service_account,
                # A model server talks to no Kubernetes API (pods/service_account_token).
                "automountServiceAccountToken": False,
                "minReplicas": 1,
                "maxReplicas": 3,
                # No UID: the serving runtime's image (MLServer) names its own non-root user.
                "securityContext": {
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                # The root filesystem is read-only; the server writes temporary files here.
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "model": {
                    # MLflow models are served by MLServer's mlflow runtime (KServe v2 protocol).
                    "modelFormat": {"name": "mlflow"},
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                    # Limits equal requests, as for steps: billed on what it reserves.
                    "resources": {"requests": dict(amounts), "limits": dict(amounts)},
                    "securityContext": container_security_context(),
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                },
            }
        },
    }
    validate_inferenceservice(manifest, tenant)
    return manifest


def write_manifest(tenant: TenantSpec, registered: str, manifest: dict, root: Path) -> Path:
    """Write an already validated manifest, atomically (a reader never sees half a file)."""
    import os

    import yaml

    path = root / tenant.name / f"{registered.partition('.')[2]}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(manifest, sort_keys=False))
    os.replace(tmp, path)
    return path
