"""`mlplat k8s render` for the demo tenants: our chart through a real helm, the Jobs from
dagster-k8s itself, all passing the Kubernetes schemas and every pod policy; and one bad
manifest per policy and per check, refused with its message."""

from __future__ import annotations

import copy
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from platform_assets.cli.main import app
from platform_assets.k8s.config import PLATFORM_RUNNER, platform
from platform_assets.k8s.policy import PolicySet
from platform_assets.k8s.render import pod_parameters
from platform_assets.k8s.schemas import CHART_ENV, SUPPORTED_KUBERNETES, check_manifest
from platform_assets.k8s.values import chart_version
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.limits import effective_resources, limits_for

TENANTS = {name: c.tenant for name, c in load_all().items()}
KINDS = {
    "Namespace",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "ConfigMap",
}


def load(path):
    return yaml.safe_load(path.read_text())


def test_everything_rendered_passes_schemas_and_policies(rendered, chart_schemas):
    # The command exits 0 only when every file passed every check.
    files = len(list(rendered.out.rglob("*.yaml")))
    assert f"chart schemas: {chart_schemas.source}" in rendered.output
    assert f"ok: {files} files in {rendered.out}, every one checked" in rendered.output
    for name in TENANTS:
        folder = rendered.out / "tenants" / name
        kinds = {load(p)["kind"] for p in folder.glob("*.yaml")}
        assert kinds == KINDS, name


def test_one_job_per_step_of_every_tenant_job_plus_the_run_worker(rendered):
    for name, catalog in load_all().items():
        expected = {"run"}
        expected |= {f"{name}__sources__{s}" for s in catalog.sources}
        expected |= {f"{name}__features__{f}" for f in catalog.feature_sets}
        expected |= {f"{name}__online__{f}" for f in catalog.feature_sets}
        kinds = ("training_sets", "models", "evaluation_reports", "predictions", "drift")
        expected |= {f"{name}__{kind}__{m}" for kind in kinds for m in catalog.models}
        # The champion_alias check runs as its own step of the model.
        expected |= {f"{name}__models__{m}_champion_alias" for m in catalog.models}
        folder = rendered.out / "jobs" / name / f"{name}_pipeline"
        assert {p.stem for p in folder.glob("*.yaml")} == expected


def test_namespace_is_restricted_and_rbac_is_namespaced(rendered):
    ns = load(rendered.out / "tenants/ridehail/namespace-tenant-ridehail.yaml")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    role = load(rendered.out / "tenants/ridehail/role-ridehail-runner.yaml")
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "tenant-ridehail"
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert ("jobs", "create") in granted and ("pods/log", "get") in granted
    assert not any(r in ("secrets", "*") or v == "*" for r, v in granted)
    binding = load(rendered.out / "tenants/ridehail/rolebinding-ridehail-runner.yaml")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ridehail-runner", "namespace": "tenant-ridehail"}
    ]
    # The serving account exists, mounts no token and no role binds it.
    serving = load(rendered.out / "tenants/ridehail/serviceaccount-ridehail-serving.yaml")
    assert serving["automountServiceAccountToken"] is False
    subjects = [
        s["name"]
        for path in rendered.out.glob("tenants/*/rolebinding-*.yaml")
        for s in load(path)["subjects"]
    ]
    assert "ridehail-serving" not in subjects
    platform_accounts = [
        load(path)["metadata"]["name"]
        for path in (rendered.out / "platform").glob("serviceaccount-*.yaml")
    ]
    assert platform_accounts == [PLATFORM_RUNNER]  # the platform serves no model


def test_quota_and_limit_range_come_from_the_platform_limits(rendered):
    limits = limits_for("payments")
    quota = load(rendered.out / "tenants/payments/resourcequota-payments-quota.yaml")
    steps, worker = platform().steps_per_run, platform().run_worker
    runs = limits.max_concurrent_runs
    # Each step at its cap with the trainer pod a model step may launch, a run worker per run.
    expected_cpu = runs * (2 * steps * limits.caps.cpu + worker.cpu) + 0.5
    assert quota["spec"]["hard"]["requests.cpu"] == f"{round(expected_cpu * 1000)}m"
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "0"  # no GPUs for payments
    ranges = load(rendered.out / "tenants/payments/limitrange-payments-limits.yaml")
    assert ranges["spec"]["limits"][0]["max"]["memory"] == f"{limits.caps.memory_gib:g}Gi"


def test_network_policy_denies_by_default_and_allows_only_platform_services(rendered):
    folder = rendered.out / "tenants/growth"
    deny = load(folder / "networkpolicy-default-deny.yaml")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    allow = load(folder / "networkpolicy-allow-platform-services.yaml")
    ports = {p["port"] for rule in allow["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 5432, 6379, 443, platform().mlflow.port}
    assert "ingress" not in allow["spec"]


def test_step_jobs_request_their_yaml_resources_after_caps_with_cost_labels(rendered):
    catalogs = load_all()
    for name, catalog in catalogs.items():
        folder = rendered.out / "jobs" / name / f"{name}_pipeline"
        for model in catalog.models.values():
            job = load(folder / f"{name}__models__{model.name}.yaml")
            capped = effective_resources(name, model.resources or catalog.tenant.resources)
            container = job["spec"]["template"]["spec"]["containers"][0]
            assert container["resources"]["limits"]["memory"] == f"{capped.memory_gib:g}Gi"
            assert container["resources"]["requests"] == container["resources"]["limits"]
        for path in folder.glob("*.yaml"):
            job = load(path)
            pod = job["spec"]["template"]
            assert job["metadata"]["namespace"] == catalog.tenant.namespace
            assert pod["spec"]["serviceAccountName"] == catalog.tenant.runner_service_account
            labels = pod["metadata"]["labels"]
            assert labels["mlplat/tenant"] == name
            assert labels["mlplat/code-location"] == labels["dagster/code-location"] == name
            assert labels["dagster/run-id"]
            if path.stem != "run":
                assert labels["app.kubernetes.io/component"] == "step_worker"
                assert labels["mlplat/asset"].startswith(f"{name}_")


def test_jobs_read_only_secrets_and_config_maps_their_namespace_declares(rendered):
    for name in TENANTS:
        declared = load(rendered.out / f"tenants/{name}/configmap-{name}-secret-references.yaml")
        secrets = set(declared["data"])
        for path in (rendered.out / "jobs" / name).rglob("*.yaml"):
            container = load(path)["spec"]["template"]["spec"]["containers"][0]
            used = {e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e}
            used |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container["env"]
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            assert used <= secrets, path
            maps = {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e}
            # The pipeline env is ours; `<release>-<location>-user-env` is the user-deployments
            # release's own, in the same namespace.
            assert maps == {"dagster-pipeline-env", f"dagster-{name}-user-env"}, path


def test_each_namespace_holds_the_configmaps_of_the_folders_its_location_reads(rendered):
    """A tenant's namespace: its own folder's ConfigMap, which its location and its Jobs mount
    (read-only, at the defs root); the platform's: every tenant's."""
    for name in TENANTS:
        [configmap] = [
            load(p) for p in (rendered.out / "tenants" / name).glob("configmap-mlplat-defs-*")
        ]
        assert configmap["metadata"]["name"] == f"mlplat-defs-{name}"
        keys = set(configmap["data"])
        values = load(rendered.out / f"helm/user-deployments/{name}.yaml")
        pods = [values["deployments"][0]]
        pods += [
            load(path)["spec"]["template"]["spec"]
            for path in (rendered.out / "jobs" / name).rglob("*.yaml")
        ]
        for pod in pods:
            [defs] = [v for v in pod["volumes"] if v["name"] == "defs"]
            [source] = defs["projected"]["sources"]
            assert source["configMap"]["name"] == f"mlplat-defs-{name}"
            assert {i["key"] for i in source["configMap"]["items"]} == keys
        for path in (rendered.out / "jobs" / name).rglob("*.yaml"):
            [container] = load(path)["spec"]["template"]["spec"]["containers"]
            assert {"name": "defs", "mountPath": "/etc/mlplat/defs", "readOnly": True} in (
                container["volumeMounts"]
            )
    platform_maps = [load(p) for p in (rendered.out / "platform").glob("configmap-mlplat-defs-*")]
    assert sorted(m["metadata"]["name"] for m in platform_maps) == [
        f"mlplat-defs-{t}" for t in sorted(TENANTS)
    ]
    assert {m["metadata"]["namespace"] for m in platform_maps} == {platform().namespace}


@pytest.fixture(scope="module")
def step_job(rendered):
    return load(
        rendered.out / "jobs/ridehail/ridehail_pipeline/ridehail__models__driver_churn.yaml"
    )


def violations(manifest):
    review = {"review": {"object": manifest}, "parameters": pod_parameters(TENANTS)}
    return {(v.policy, v.message) for v in PolicySet("pods").evaluate(review, "job.yaml")}


def mutate(job, change):
    bad = copy.deepcopy(job)
    change(bad, bad["spec"]["template"]["spec"], bad["spec"]["template"]["spec"]["containers"][0])
    return bad


BAD_PODS = {
    "pods/requests_limits": (
        lambda j, p, c: c["resources"].pop("limits"),
        "container 'dagster' has no cpu limits",
    ),
    "pods/no_privileged": (
        lambda j, p, c: c["securityContext"].update(privileged=True),
        "container 'dagster' is privileged",
    ),
    "pods/no_host_access": (
        lambda j, p, c: p.update(hostNetwork=True),
        "pod sets hostNetwork",
    ),
    "pods/no_privilege_escalation": (
        lambda j, p, c: c["securityContext"].pop("allowPrivilegeEscalation"),
        "container 'dagster' does not set allowPrivilegeEscalation: false",
    ),
    "pods/non_root": (
        lambda j, p, c: c["securityContext"].update(runAsUser=0),
        "container 'dagster' runs as UID 0",
    ),
    "pods/read_only_root_fs": (
        lambda j, p, c: c["securityContext"].update(readOnlyRootFilesystem=False),
        "container 'dagster' does not set readOnlyRootFilesystem: true",
    ),
    "pods/tenant_placement": (
        lambda j, p, c: p.update(serviceAccountName="payments-runner"),
        "pod of tenant 'ridehail' uses service account 'payments-runner', not its own "
        "'ridehail-runner'",
    ),
    "pods/allowed_registries": (
        lambda j, p, c: c.update(image="docker.io/library/python:3.11"),
        "container 'dagster' uses image 'docker.io/library/python:3.11', not from "
        f"{json.dumps(platform().allowed_registries)}",
    ),
    "pods/restricted": (
        lambda j, p, c: c["securityContext"].update(procMount="Unmasked"),
        "container 'dagster' sets procMount 'Unmasked', not Default",
    ),
    "pods/pod_template": (
        lambda j, p, c: p.update(shareProcessNamespace=True),
        "pod sets shareProcessNamespace, which the platform's pod template does not have",
    ),
    "pods/service_account_token": (
        lambda j, p, c: p.update(automountServiceAccountToken=True),
        "pod does not set automountServiceAccountToken: false",
    ),
    "pods/scheduling": (
        lambda j, p, c: p.update(priorityClassName="system-node-critical"),
        "pod uses priority class 'system-node-critical', not one the platform allows its "
        "tenant ([])",
    ),
    "pods/secrets": (
        lambda j, p, c: c["envFrom"].append({"secretRef": {"name": "payments-services"}}),
        "container 'dagster' reads Secret 'payments-services' (envFrom), not one of its "
        'tenant\'s ["ridehail-services"]',
    ),
    "pods/entrypoint": (
        lambda j, p, c: c.update(command=["/bin/sh", "-c"], args=["id"]),
        'container \'dagster\' runs ["/bin/sh", "-c", "id"], not one of the platform\'s '
        "entry points",
    ),
    "pods/trainer_pod": (
        # A step made to pass for a trainer pod is held to the trainer template (the Dagster
        # image is not its tenant's trainer image).
        lambda j, p, c: j["spec"]["template"]["metadata"]["labels"].update(
            {"mlplat/role": "trainer"}
        ),
        f"container 'dagster' uses image '{platform().image.ref}', not its tenant's trainer "
        "image 'registry.mlplat.example/mlplat-trainer-ridehail:<env key>'",
    ),
    "pods/cost_labels": (
        lambda j, p, c: j["spec"]["template"]["metadata"]["labels"].pop("mlplat/asset"),
        "pod has no cost-attribution label 'mlplat/asset'",
    ),
}


def _second_container(job, pod, container):
    pod["containers"].append({**copy.deepcopy(container), "name": "sidecar"})


def _unconfined_by(annotation: str):
    return (
        "pods/restricted",
        lambda j, p, c: j["spec"]["template"]["metadata"].update(
            annotations={annotation: "unconfined"}
        ),
        f"pod annotation {annotation} is 'unconfined', not runtime/default",
    )


# The paths a reviewer found past the first set (one per path, beyond one per policy).
MORE_BAD_PODS = {
    "above the tenant's caps": (
        "pods/requests_limits",
        lambda j, p, c: c["resources"].update(
            requests={"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"},
            limits={"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"},
        ),
        "pod requests 512Gi of memory, more than the 16Gi it may have",
    ),
    "another vendor's GPUs": (
        "pods/requests_limits",
        lambda j, p, c: [c["resources"][k].update({"amd.com/gpu": "8"}) for k in c["resources"]],
        "container 'dagster' asks for amd.com/gpu, which is not cpu, memory or the resource of "
        "an accelerator class its tenant may use ([])",
    ),
    "limits above requests": (
        "pods/requests_limits",
        lambda j, p, c: c["resources"]["limits"].update(cpu="2"),
        "container 'dagster' requests 1 cpu but is limited to 2: limits equal requests",
    ),
    "a second container": (
        "pods/pod_template",
        _second_container,
        "pod has 2 containers; the platform's pod template has exactly one",
    ),
    "AppArmor unconfined": (
        "pods/restricted",
        lambda j, p, c: p["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
        "pod sets appArmorProfile 'Unconfined', not RuntimeDefault",
    ),
    "AppArmor annotation": _unconfined_by("container.apparmor.security.beta.kubernetes.io/dagster"),
    "seccomp annotation": _unconfined_by("seccomp.security.alpha.kubernetes.io/pod"),
    "Windows HostProcess": (
        "pods/restricted",
        lambda j, p, c: c["securityContext"].update(windowsOptions={"hostProcess": True}),
        "container 'dagster' sets windowsOptions.hostProcess",
    ),
    "no service account": (
        "pods/tenant_placement",
        lambda j, p, c: p.pop("serviceAccountName"),
        "pod of tenant 'ridehail' names no service account (Kubernetes gives it the namespace's "
        "default), not its own 'ridehail-runner'",
    ),
}


@pytest.mark.parametrize("case", sorted(MORE_BAD_PODS))
def test_more_bad_pods_fail_with_their_policys_message(step_job, case):
    policy, change, message = MORE_BAD_PODS[case]
    assert (policy, message) in violations(mutate(step_job, change))


def test_captured_step_job_passes_every_pod_policy(step_job):
    assert violations(step_job) == set()


@pytest.mark.parametrize("policy", sorted(BAD_PODS))
def test_a_bad_pod_fails_with_that_policys_message(step_job, policy):
    change, message = BAD_PODS[policy]
    assert (policy, message) in violations(mutate(step_job, change))


def test_every_pod_policy_has_a_bad_manifest_here():
    assert set(BAD_PODS) == {f"pods/{n}" for n in PolicySet("pods").names}


BAD_MANIFESTS = {
    "unknown field (strict)": (
        lambda j, p, c: c.update(cpuLimit="1"),
        "Additional properties are not allowed ('cpuLimit' was unexpected)",
    ),
    "quantity": (
        lambda j, p, c: c["resources"]["limits"].update(memory="2 GiB"),
        "container 'dagster' limit memory='2 GiB' is not a Kubernetes quantity",
    ),
    "request above limit": (
        lambda j, p, c: c["resources"]["requests"].update(cpu="4"),
        "container 'dagster' requests more cpu (4) than its limit (1)",
    ),
    "name": (
        lambda j, p, c: j["metadata"].update(name="Step_1"),
        "Job name 'Step_1' is not a DNS-1123 label",
    ),
    "restart policy": (
        lambda j, p, c: p.update(restartPolicy="Always"),
        "a Job's pods need restartPolicy Never or OnFailure, not 'Always'",
    ),
    "label value": (
        lambda j, p, c: j["metadata"]["labels"].update({"mlplat/asset": "a/b"}),
        "Job label mlplat/asset='a/b' is not a valid label value",
    ),
    "mount of a missing volume": (
        lambda j, p, c: p.update(volumes=[]),
        "container 'dagster' mounts volume 'tmp', which the pod does not define",
    ),
}


def test_captured_step_job_passes_both_kubernetes_versions(step_job):
    assert SUPPORTED_KUBERNETES == ("1.25", "1.37")
    assert check_manifest(step_job, "job.yaml") == []


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_a_bad_manifest_fails_its_check(step_job, case):
    change, message = BAD_MANIFESTS[case]
    problems = check_manifest(mutate(step_job, change), "job.yaml")
    assert any(p.startswith("job.yaml: ") and message in p for p in problems), problems
    if case == "unknown field (strict)":
        assert {p.split(":")[1].strip() for p in problems} == {
            f"Kubernetes {v} schema" for v in SUPPORTED_KUBERNETES
        }


def test_policy_check_names_the_file_and_policy_of_a_bad_spec(tmp_path, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from platform_assets.cli.main import app

    defs = tmp_path / "defs"
    shutil.copytree(load_all()["growth"].folder.parent, defs)
    tenant = defs / "growth/tenant/defs.yaml"
    text = tenant.read_text().replace(
        "resources: {cpu: 1,", "resources: {node_pool: batch, cpu: 1,"
    )
    tenant.write_text(text)
    monkeypatch.setenv("MLPLAT_DEFS_ROOT", str(defs))
    result = CliRunner().invoke(app, ["policy", "check"])
    assert result.exit_code == 1
    assert (
        f"error: {tenant}: policy specs/placement: tenant 'growth' asks for node_pool 'batch'; "
        "tenant 'growth' may use only [] (limits.yaml allowed_node_pools)"
    ) in result.output


# Where the Dagster chart comes from: a folder, a packaged chart, a chart repository the user
# added, or nowhere (then everything else still renders and the skipped check is named).

ROOT = Path(__file__).resolve().parents[2]


def chart_folder(schemas, into: Path) -> Path:
    """A chart folder in the official chart's layout, holding the schemas the suite found."""
    chart = into / "dagster"
    sub = chart / "charts" / "dagster-user-deployments"
    sub.mkdir(parents=True)
    for folder, name in ((chart, "dagster"), (sub, "dagster-user-deployments")):
        meta = {"apiVersion": "v2", "name": name, "version": chart_version()}
        (folder / "Chart.yaml").write_text(yaml.safe_dump(meta))
        (folder / "values.yaml").write_text("{}\n")
        shutil.copy(schemas.files[name], folder / "values.schema.json")
    return chart


def helm_run(helm: str, *args: str, env: dict | None = None) -> None:
    out = subprocess.run([helm, *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def helm_home(tmp_path, monkeypatch) -> dict:
    """A helm of its own: no repository the machine's user added."""
    for var, name in (
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_DATA_HOME", "data"),
        ("HELM_REPOSITORY_CONFIG", "config/repositories.yaml"),
        ("HELM_REPOSITORY_CACHE", "cache/repository"),
    ):
        monkeypatch.setenv(var, str(tmp_path / "helm" / name))
    monkeypatch.delenv(CHART_ENV, raising=False)
    return dict(os.environ)


@pytest.fixture
def chart_repository(helm, chart_schemas, helm_home, tmp_path):
    """The chart packaged, indexed and served over HTTP on loopback, added as `dagster`."""
    served = tmp_path / "served"
    served.mkdir()
    helm_run(helm, "package", str(chart_folder(chart_schemas, tmp_path)), "-d", str(served))
    helm_run(helm, "repo", "index", str(served))
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        helm_run(helm, "repo", "add", "dagster", f"http://127.0.0.1:{server.server_port}")
        yield served
    finally:
        server.shutdown()
        server.server_close()


def values_output(tmp_path, *args: str) -> str:
    result = CliRunner().invoke(app, ["k8s", "values", "--out", str(tmp_path / "v"), *args])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("every one checked"), result.output
    return result.output


def test_values_take_the_chart_from_a_folder(chart_schemas, tmp_path):
    chart = chart_folder(chart_schemas, tmp_path)
    output = values_output(tmp_path, "--dagster-chart", str(chart))
    assert f"chart schemas: chart folder {chart}\n" in output


def test_values_take_a_packaged_chart_from_the_environment(
    helm, chart_schemas, helm_home, tmp_path, monkeypatch
):
    helm_run(helm, "package", str(chart_folder(chart_schemas, tmp_path)), "-d", str(tmp_path))
    package = tmp_path / f"dagster-{chart_version()}.tgz"
    monkeypatch.setenv(CHART_ENV, str(package))
    assert f"chart schemas: packaged chart {package}\n" in values_output(tmp_path)


def test_values_pull_a_named_chart_from_an_added_repository(chart_repository, tmp_path):
    output = values_output(tmp_path, "--dagster-chart", "dagster/dagster")
    assert f"chart schemas: chart dagster/dagster {chart_version()}, pulled by helm\n" in output


@pytest.mark.parametrize(
    ("chart", "message"),
    [
        ("/no/such/chart", "the Dagster chart '/no/such/chart': no such folder or file"),
        ("{tmp}", "the Dagster chart '{tmp}' has no values.schema.json with "),
        ("nowhere/dagster", "the Dagster chart 'nowhere/dagster': `helm pull nowhere/dagster` "),
    ],
)
def test_a_chart_named_but_not_found_is_an_error_naming_it(
    helm, helm_home, tmp_path, chart, message
):
    chart, message = chart.format(tmp=tmp_path), message.format(tmp=tmp_path)
    result = CliRunner().invoke(
        app, ["k8s", "values", "--out", str(tmp_path / "v"), "--dagster-chart", chart]
    )
    assert result.exit_code == 1
    assert f"error: {message}" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def fresh_clone(tmp_path) -> Path:
    """The repository's files (tracked and new, not ignored) alone in a temporary folder:
    no shared/ beside it, no .tools/, no .venv."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    clone = tmp_path / "clone" / "mlplat"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    return clone


def mlplat(clone: Path, helm: str, *args: str) -> subprocess.CompletedProcess:
    """`mlplat ARGS` run from the clone's own code (helm on PATH, as a user has it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPLAT_")}
    env |= {"PYTHONPATH": str(clone), "MLPLAT_HELM": helm}
    env["DAGSTER_HOME"] = str(clone / ".dagster_home")
    return subprocess.run(
        [sys.executable, "-m", "platform_assets.cli.main", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )


SKIPPED = (
    "skipped: the Dagster chart's values-schema check of the Helm values (none found: not "
    "beside the repository, and no chart repository you added (`helm repo list`) has chart "
    f"'dagster' at version {chart_version()} (add Dagster's: `helm repo add dagster "
    "https://dagster-io.github.io/helm`)); point --dagster-chart or MLPLAT_DAGSTER_CHART at "
    "the chart"
)


@pytest.mark.slow
def test_a_fresh_clone_renders_and_checks_policies_without_the_chart(
    helm, helm_home, fresh_clone, tmp_path
):
    out = tmp_path / "out"
    render = mlplat(fresh_clone, helm, "k8s", "render", "--out", str(out))
    assert render.returncode == 0, render.stdout + render.stderr
    assert SKIPPED in render.stdout
    files = len(list(out.rglob("*.yaml")))
    assert f"ok: {files} files in {out}, checked except the skipped check above" in render.stdout
    check = mlplat(fresh_clone, helm, "policy", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert SKIPPED in check.stdout
    assert (
        f"ok: {len(TENANTS)} tenants and their workloads pass every policy (the chart-schema "
        "check skipped: see above)"
    ) in check.stdout
    for run in (render, check):
        assert "Traceback" not in run.stdout + run.stderr


def test_a_fresh_clone_finds_the_chart_in_a_repository_the_user_added(
    helm, chart_repository, fresh_clone, tmp_path
):
    values = mlplat(fresh_clone, helm, "k8s", "values", "--out", str(tmp_path / "v"))
    assert values.returncode == 0, values.stdout + values.stderr
    assert (
        f"chart schemas: chart dagster/dagster {chart_version()}, pulled by helm\n" in values.stdout
    )
    assert values.stdout.rstrip().endswith("every one checked")
