"""Checks on everything rendered for Kubernetes: the Dagster chart's own values schemas (from
where the user has the chart, their remote Kubernetes `$ref`s resolved offline), the Kubernetes
OpenAPI schemas (strict, oldest and newest version we support) and what those schemas cannot
say (names, quantities, restart policy, references between fields)."""

from __future__ import annotations

import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from platform_assets.env import repo_root
from platform_assets.k8s.helm import ChartNotPulled, ToolMissing, pull_chart, repository_chart
from platform_assets.k8s.values import chart_version

# 1.25: Pod Security Admission (the Namespace labels) is GA; 1.37: the newest kubernetes-validate
# ships. Both are checked, strictly (no unknown fields).
SUPPORTED_KUBERNETES = ("1.25", "1.37")
REMOTE_DEFINITIONS = re.compile(r"^https://kubernetesjsonschema\.dev/v[\d.]+/_definitions\.json$")
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# Kinds whose names must be DNS-1123 labels (the rest: subdomains).
LABEL_NAMED = {"Namespace", "Service", "Job"}


CHART_ENV = "MLPLAT_DAGSTER_CHART"
# `helm repo add` name and chart: Dagster's published repository, for the hint.
ADD_REPO_HINT = "helm repo add dagster https://dagster-io.github.io/helm"
# A chart reference helm pulls (`repo/chart`, or a URL), as opposed to a local path.
CHART_REFERENCE = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+|(https?|oci)://.+)$")


class ChartSchemasMissing(LookupError):
    """The chart the user named has no values schemas where they said."""


@dataclass(frozen=True)
class ChartSchemas:
    """The Dagster chart's values schemas, with where they came from; `files` empty when none
    were found (`source` then says why, and the chart-schema check is skipped)."""

    source: str
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.files)

    @property
    def skipped(self) -> str:
        """The line saying which check was skipped and how to run it."""
        return (
            "skipped: the Dagster chart's values-schema check of the Helm values ("
            f"{self.source}); point --dagster-chart or {CHART_ENV} at the chart (a folder, a "
            f"packaged .tgz or `repo/chart`), or `{ADD_REPO_HINT}`"
        )


def schemas_in(folder: Path, source: str) -> ChartSchemas | None:
    """The schemas in a folder: the chart's own layout (`values.schema.json`, and its subchart's
    in `charts/dagster-user-deployments/`) or the flat one of `shared/dagster-helm`."""
    layouts = (
        {"dagster-user-deployments": "charts/dagster-user-deployments/values.schema.json"},
        {"dagster-user-deployments": "dagster-user-deployments.values.schema.json"},
    )
    for layout in layouts:
        files = {"dagster": folder / "values.schema.json"}
        files |= {chart: folder / path for chart, path in layout.items()}
        if all(path.is_file() for path in files.values()):
            return ChartSchemas(source, files)
    return None


def _named_chart(chart: str, into: Path) -> ChartSchemas:
    """The chart the user named: a folder, a packaged `.tgz`, or a reference helm pulls."""
    version = chart_version()
    path = Path(chart).expanduser()
    if path.is_dir():
        found = schemas_in(path, f"chart folder {path}")
    elif path.is_file() or not CHART_REFERENCE.match(chart):
        if not path.is_file():
            raise ChartSchemasMissing(f"the Dagster chart {chart!r}: no such folder or file")
        found = schemas_in(_unpacked(path, into), f"packaged chart {path}")
    else:
        try:
            folder = pull_chart(chart, version, into)
        except (ChartNotPulled, ToolMissing) as exc:
            raise ChartSchemasMissing(f"the Dagster chart {chart!r}: {exc}") from exc
        found = schemas_in(folder, f"chart {chart} {version}, pulled by helm")
    if found is None:
        raise ChartSchemasMissing(
            f"the Dagster chart {chart!r} has no values.schema.json with "
            "charts/dagster-user-deployments/values.schema.json beside it"
        )
    return found


def _unpacked(package: Path, into: Path) -> Path:
    """A packaged chart (`helm package`'s .tgz: one folder, the chart) unpacked into `into`."""
    try:
        with tarfile.open(package) as archive:
            archive.extractall(into, filter="data")  # no links or paths out of `into`
    except (tarfile.TarError, OSError) as exc:
        raise ChartSchemasMissing(f"the Dagster chart {str(package)!r}: {exc}") from exc
    folders = [p for p in into.iterdir() if p.is_dir()]
    return folders[0] if len(folders) == 1 else into


def _repository_chart(into: Path) -> ChartSchemas:
    version = chart_version()
    try:
        reference = repository_chart("dagster", version)
        folder = pull_chart(reference, version, into)
    except (ChartNotPulled, ToolMissing) as exc:
        return ChartSchemas(f"none found: not beside the repository, and {exc}")
    found = schemas_in(folder, f"chart {reference} {version}, pulled by helm")
    return found or ChartSchemas(f"chart {reference} {version} has no values schemas")


@contextmanager
def dagster_chart_schemas(chart: str | None = None) -> Iterator[ChartSchemas]:
    """The Dagster chart's values schemas, from where the user has the chart: `chart` (or
    MLPLAT_DAGSTER_CHART), else `shared/dagster-helm` beside the repository (CI's layout), else
    the `dagster` chart at our Dagster version in a chart repository the user added. A chart
    helm pulls lives in a temporary folder for the duration of the `with`."""
    chart = chart or os.environ.get(CHART_ENV)
    with tempfile.TemporaryDirectory(prefix="dagster-chart-") as tmp:
        if chart:
            yield _named_chart(chart, Path(tmp))
            return
        for parent in repo_root().parents:
            beside = parent / "shared" / "dagster-helm"
            found = schemas_in(beside, f"{beside}") if beside.is_dir() else None
            if found:
                yield found
                return
        yield _repository_chart(Path(tmp))


def _kubernetes_definitions() -> dict[str, Any]:
    """The Kubernetes definitions the chart's schemas point at, from kubernetes-validate (the
    oldest version we support, not strict: the chart's remote schemas are not strict)."""
    from importlib.resources import files

    folder = f"v{SUPPORTED_KUBERNETES[0]}.0-local"
    path = files("kubernetes_validate") / "kubernetes-json-schema" / folder / "_definitions.json"
    defs = json.loads(path.read_text())["$defs"]
    # The chart points at `#/definitions/...` (kubernetesjsonschema.dev's layout); the
    # definitions point at each other as `#/$defs/...`: one document answers both.
    return {"definitions": defs, "$defs": defs}


@cache
def _chart_validator(schema_file: Path):
    import jsonschema
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT7

    schema = json.loads(schema_file.read_text())
    definitions = Resource.from_contents(_kubernetes_definitions(), default_specification=DRAFT7)

    def retrieve(uri: str):
        if REMOTE_DEFINITIONS.match(uri):
            return definitions
        raise NoSuchResource(ref=uri)  # never the network

    registry = Registry(retrieve=retrieve)
    return jsonschema.Draft7Validator(schema, registry=registry)


def _merged_with_chart_defaults(error) -> bool:
    """A `required` error on a map Helm merges with the chart's own values.yaml (which fills
    it in); lists replace the chart's wholesale, so anything inside a list must be complete."""
    return error.validator == "required" and not any(isinstance(p, int) for p in error.path)


def _real_errors(errors) -> list:
    real = []
    for error in errors:
        if _merged_with_chart_defaults(error):
            continue
        if error.validator in ("anyOf", "oneOf") and error.context:
            # Valid against one branch up to what the chart's defaults fill in: fine.
            branches: dict[int, list] = {}
            for sub in error.context:
                branches.setdefault(sub.schema_path[0], []).append(sub)
            if any(not _real_errors(subs) for subs in branches.values()):
                continue
        real.append(error)
    return real


def check_chart_values(
    values: dict[str, Any], chart: str, where: str, schemas: ChartSchemas
) -> list[str]:
    """Errors of a values file against the chart's schema (`chart`: `dagster` or
    `dagster-user-deployments`), as `helm install` would see them after merging it over the
    chart's defaults."""
    from jsonschema.exceptions import best_match

    # An `anyOf` error says little; its most relevant branch's error names the field.
    errors = [
        best_match([e])
        for e in _real_errors(_chart_validator(schemas.files[chart]).iter_errors(values))
    ]
    return [
        f"{where}: chart {chart} schema: {'.'.join(map(str, e.absolute_path)) or '<root>'}: "
        f"{e.message}"
        for e in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))
    ]


def check_openapi(manifest: dict[str, Any], where: str) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    problems = []
    for version in SUPPORTED_KUBERNETES:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "<root>"
            problems.append(f"{where}: Kubernetes {version} schema: {path}: {exc.message}")
        except SchemaNotFoundError as exc:
            problems.append(f"{where}: Kubernetes {version}: {exc.message}")
    return problems


def _pod_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    kind, spec = manifest.get("kind"), manifest.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return (spec.get("template") or {}).get("spec")
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get(
            "spec"
        )
    return None


def _label_problems(labels: dict[str, str], what: str) -> list[str]:
    problems = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not (len(prefix) <= 253 and SUBDOMAIN.match(prefix))) or not (
            len(name) <= 63 and LABEL_NAME.match(name)
        ):
            problems.append(f"{what} label key {key!r} is not a valid label key")
        if not (isinstance(value, str) and len(value) <= 63 and LABEL_VALUE.match(value)):
            problems.append(f"{what} label {key}={value!r} is not a valid label value")
    return problems


def _quantity_problems(amounts: dict[str, Any], what: str) -> list[str]:
    return [
        f"{what} {name}={value!r} is not a Kubernetes quantity"
        for name, value in (amounts or {}).items()
        if not QUANTITY.match(str(value))
    ]


def parse_quantity(value: str) -> float:
    from kubernetes.utils.quantity import parse_quantity as parse

    return float(parse(value))


def check_semantics(manifest: dict[str, Any], where: str) -> list[str]:
    """What the OpenAPI schemas cannot say."""
    problems: list[str] = []
    kind = manifest.get("kind", "?")
    meta = manifest.get("metadata") or {}
    name = meta.get("name", "")
    pattern, limit = (LABEL, 63) if kind in LABEL_NAMED else (SUBDOMAIN, 253)
    if not (len(name) <= limit and pattern.match(name)):
        kind_of = "label" if limit == 63 else "subdomain"
        problems.append(f"{kind} name {name!r} is not a DNS-1123 {kind_of}")
    namespace = meta.get("namespace")
    if namespace is not None and not (len(namespace) <= 63 and LABEL.match(namespace)):
        problems.append(f"namespace {namespace!r} is not a DNS-1123 label")
    problems += _label_problems(meta.get("labels") or {}, kind)
    if kind == "ResourceQuota":
        problems += _quantity_problems(manifest["spec"].get("hard"), "ResourceQuota hard")
    if kind == "LimitRange":
        for item in manifest["spec"].get("limits", []):
            for field in ("default", "defaultRequest", "max", "min"):
                problems += _quantity_problems(item.get(field), f"LimitRange {field}")
    pod = _pod_spec(manifest)
    if pod is not None:
        problems += _pod_problems(manifest, pod)
    return [f"{where}: {p}" for p in problems]


def _pod_problems(manifest: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    problems = []
    kind = manifest["kind"]
    template = (manifest.get("spec") or {}).get("template") or {}
    problems += _label_problems((template.get("metadata") or {}).get("labels") or {}, "pod")
    restart = pod.get("restartPolicy")
    if kind in ("Job", "CronJob") and restart not in ("Never", "OnFailure"):
        problems.append(f"a {kind}'s pods need restartPolicy Never or OnFailure, not {restart!r}")
    volumes = [v["name"] for v in pod.get("volumes") or []]
    for duplicate in sorted({v for v in volumes if volumes.count(v) > 1}):
        problems.append(f"volume {duplicate!r} is defined more than once")
    account = pod.get("serviceAccountName")
    if account is not None and not (len(account) <= 253 and SUBDOMAIN.match(account)):
        problems.append(f"serviceAccountName {account!r} is not a DNS-1123 subdomain")
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    names = [c.get("name", "") for c in containers]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"container name {duplicate!r} is used more than once")
    for c in containers:
        cname = c.get("name", "")
        if not (len(cname) <= 63 and LABEL.match(cname)):
            problems.append(f"container name {cname!r} is not a DNS-1123 label")
        resources = c.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        bad = _quantity_problems(requests, f"container {cname!r} request")
        bad += _quantity_problems(limits, f"container {cname!r} limit")
        problems += bad
        if not bad:
            for resource, amount in requests.items():
                if resource in limits and parse_quantity(amount) > parse_quantity(limits[resource]):
                    problems.append(
                        f"container {cname!r} requests more {resource} ({amount}) than its "
                        f"limit ({limits[resource]})"
                    )
        for mount in c.get("volumeMounts") or []:
            if mount.get("name") not in volumes:
                problems.append(
                    f"container {cname!r} mounts volume {mount.get('name')!r}, "
                    "which the pod does not define"
                )
        for env in c.get("env") or []:
            if not ENV_NAME.match(env.get("name", "")):
                problems.append(f"container {cname!r} env name {env.get('name')!r} is invalid")
    return problems


def check_manifest(manifest: dict[str, Any], where: str) -> list[str]:
    """Every schema and semantic problem of one manifest, each naming `where`."""
    return check_openapi(manifest, where) + check_semantics(manifest, where)
