"""THE TRAINER IMAGES, BUILT AND RUN (marker `image`, run by `make image-test`).

On the private engine and local bookworm base of the platform image's test (tests/k8s/conftest.py):
the trainer base from deploy/trainer/Dockerfile, then ridehail's tenant image from
deploy/trainer/tenant.Dockerfile with its real `code/` project (LightGBM, from its uv.lock),
tagged as the trainer pod names it. Then one real training in a container of it, started from
the pod PipesK8sClient submits for `k8s.steps.trainer_pod` (its command, user, security context,
CPU and memory limits, a /tmp of the emptyDir's size limit, env only Pipes' two bootstrap
variables), driven from a real `dg.materialize` through a Pipes session: the context in the env,
the messages read from the container's log by the pod path's own reader (`pod.team_pod_logs`).

The network is none, so the split and the model pass through bind mounts (the runner's `input`
and `output` take plain paths; on a cluster they are pre-signed URLs). Skips, saying why, where
no engine can run; MLPLAT_REQUIRE_SERVICES=1 turns those skips into failures.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from dagster_k8s.pipes import build_pod_body
from kubernetes.client import ApiClient

from platform_assets.k8s.steps import TRAINER_ENV, trainer_pod
from platform_assets.models.flavors import accept_trained
from platform_assets.models.trainers.job import ARTIFACT_FILES
from platform_assets.models.trainers.messages import mark
from platform_assets.models.trainers.pod import IMAGE_CODE, environment_key, team_pod_logs
from platform_assets.tenancy.limits import trainer_limits
from tests.k8s.conftest import ROOT, Engine, run_args

TENANT = "ridehail"
DEFS = ROOT / "platform_assets" / "defs" / TENANT
CODE = DEFS / "code"
MODEL = DEFS / "models" / "driver_churn_lgbm" / "defs.yaml"
BASE = "mlplat-trainer-base:image-test"
LABEL = "churned"
ROWS = 2000
# What a trainer would try: the host's loopback (port argv[1]) and an address outside.
PROBE = """
import errno, socket, sys
for address in (("127.0.0.1", int(sys.argv[1])), ("1.1.1.1", 443)):
    try:
        socket.create_connection(address, timeout=5).close()
        print("connected", address)
    except OSError as exc:
        kind = {errno.ECONNREFUSED: "refused", errno.ENETUNREACH: "unreachable"}
        print(kind.get(exc.errno, exc), address)
"""


@pytest.fixture(scope="session")
def trainer_base(engine: Engine, base_image: str) -> str:
    return engine.build(
        "trainer_base", BASE, ROOT,
        "--file", str(ROOT / "deploy" / "trainer" / "Dockerfile"),
        "--build-arg", f"PYTHON_IMAGE={base_image}",
    )  # fmt: skip


def submitted_pod(env: dict[str, str]) -> dict:
    """The trainer pod as PipesK8sClient submits it for ridehail's model (camelCase, as the API
    server receives it), with the Pipes bootstrap `env`."""
    limits = trainer_limits(TENANT)
    meta, spec = trainer_pod(
        TENANT,
        f"{TENANT}/models/driver_churn_lgbm",
        env_key=environment_key(CODE),
        cpu=1,
        memory_gib=1,
        tmp_mib=limits.tmp_mib,
        timeout_s=limits.timeout_s,
    )
    body = build_pod_body(f"dagster-trainer-{uuid.uuid4().hex[:8]}", None, None, env, meta, spec)
    return ApiClient().sanitize_for_serialization(body)


@pytest.fixture(scope="session")
def tenant_image(engine: Engine, trainer_base: str) -> str:
    """Ridehail's trainer image, tagged as its trainer pod names it (repository and
    environment key)."""
    [container] = submitted_pod({})["spec"]["containers"]
    return engine.build(
        "trainer_ridehail", container["image"], CODE,
        "--file", str(ROOT / "deploy" / "trainer" / "tenant.Dockerfile"),
        "--build-arg", f"BASE={trainer_base}",
    )  # fmt: skip


def feature_names() -> list[str]:
    """The columns of ridehail's feature sets the model declares (driver_stats, zone_demand)."""
    names: list[str] = []
    for feature_set in ("driver_stats", "zone_demand"):
        spec = yaml.safe_load((DEFS / "features" / feature_set / "defs.yaml").read_text())
        names += list(spec["attributes"]["features"])
    return names


def synthetic_split(features: list[str]) -> pd.DataFrame:
    """A training split with churn that depends on the features, about a fifth churners."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(ROWS, len(features))), columns=features)
    score = df[features[0]] - df[features[-1]] + rng.normal(scale=0.5, size=ROWS)
    df[LABEL] = (score > np.quantile(score, 0.8)).astype("int64")
    return df


class ContainerLog:
    """The one CoreV1Api call the pod log reader makes, answered with a finished container's
    log as `docker logs --timestamps` gives it (the kubelet's format: stdout and stderr, one
    RFC 3339 timestamp a line)."""

    def __init__(self, log: bytes) -> None:
        self.log = log

    def read_namespaced_pod_log(self, name: str, namespace: str, **_: object):
        return iter([self.log])


def container_log(engine: Engine, name: str) -> bytes:
    out = engine("logs", "--timestamps", name)
    lines = out.stdout.splitlines(keepends=True) + out.stderr.splitlines(keepends=True)
    return "".join(sorted(lines, key=lambda line: line.split(" ", 1)[0])).encode()


def run_pod(engine: Engine, pod: dict, tmp: Path, mounts: list[str], timeout_s: float):
    """Start the pod's one container as the kubelet would, wait for it (at most its deadline)
    and return its exit code and log; the container is removed afterwards."""
    spec = pod["spec"]
    [container] = spec["containers"]
    env = [
        arg
        for var in container.get("env") or []
        for arg in ("--env", f"{var['name']}={var['value']}")
    ]
    name = pod["metadata"]["name"]
    engine(
        "run", "--detach", "--name", name, "--network", "none",
        *run_args(spec["securityContext"], container, spec["volumes"], {}, tmp / "volumes"),
        *env, *mounts, container["image"], *container["command"],
    )  # fmt: skip
    try:
        code = int(engine("wait", name, timeout=timeout_s).stdout.strip())
        return code, container_log(engine, name)
    finally:
        engine("rm", "--force", name, check=False)


@pytest.mark.image
def test_ridehail_trains_in_its_trainer_image_as_its_pod_through_dagster_pipes(
    engine, tenant_image, tmp_path
):
    features = feature_names()
    split = synthetic_split(features)
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir(mode=0o755)
    out.mkdir()
    os.chmod(out, 0o777)  # the pod's user writes the model there, as to its /tmp
    split.to_parquet(data / "train.parquet", index=False)
    artifact = ARTIFACT_FILES["lightgbm"]
    trainer = yaml.safe_load(MODEL.read_text())["attributes"]["trainer"]
    extras = {
        "entrypoint": trainer["entrypoint"],
        "sys_path": [str(IMAGE_CODE / "src")],
        "flavor": trainer["flavor"],
        "label": LABEL,
        "features": features,
        "params": trainer["params"],
        "input": "/data/train.parquet",
        "output": f"/out/{artifact}",
    }
    mounts = [
        "--mount", f"type=bind,source={data},destination=/data,readonly",
        "--mount", f"type=bind,source={out},destination=/out",
    ]  # fmt: skip
    seen: dict = {}

    @dg.asset
    def driver_churn_lgbm(context):  # unannotated: the module's annotations are strings
        reader = team_pod_logs(context, TENANT)
        with dg.open_pipes_session(
            context=context.op_execution_context,  # Dagster's pipes code reads its run id
            context_injector=dg.PipesEnvContextInjector(),
            message_reader=reader,
            extras=extras,
        ) as session:
            pod = submitted_pod(session.get_bootstrap_env_vars())
            seen["pod"] = pod
            started = time.monotonic()
            seen["exit"], log = run_pod(
                engine, pod, tmp_path, mounts, pod["spec"]["activeDeadlineSeconds"]
            )
            engine.timed("trainer_run_s", started)
            seen["log"] = log.decode(errors="replace")
            reader.consume_pod_logs(context, ContainerLog(log), pod["metadata"]["name"], "")
        seen["reported"] = reader.reported
        return dg.MaterializeResult(metadata={"exit_code": seen["exit"]})

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([driver_churn_lgbm], instance=instance, raise_on_error=False)
        logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert seen.get("exit") == 0, seen.get("log", "")[-4000:]
    assert result.success, "\n".join(logged)[-4000:]
    [container] = seen["pod"]["spec"]["containers"]
    assert {var["name"] for var in container["env"]} == set(TRAINER_ENV)
    # The team's Pipes log line, marked as the team's, in the run's Dagster log; its reported
    # loss kept apart from the platform's metadata.
    focal = [m for m in logged if m.startswith(f"{mark(TENANT)}focal loss (alpha 0.5, gamma 2.0)")]
    assert focal, "\n".join(logged)[-4000:]
    assert f"{ROWS} rows" in focal[0]
    assert seen["reported"]["metadata"]["train_focal_loss"] > 0
    # The model came back as LightGBM's text model and loads in the platform's process: a
    # custom objective, so raw margins the platform turns into probabilities.
    model = accept_trained(out / artifact, tuple(features), split[features], "driver_churn_lgbm")
    assert model.flavor == "lightgbm" and model.margin
    proba = model.predict_proba(split[features])[:, 1]
    churned = split[LABEL].to_numpy() == 1
    assert proba[churned].mean() > proba[~churned].mean()


@pytest.mark.image
def test_a_trainer_container_reaches_neither_the_hosts_loopback_nor_any_network(
    engine, tenant_image, tmp_path
):
    """The same container with a probe for a command: a port listening on the host's loopback
    (as Postgres does) is refused inside, and any other address is unreachable."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        pod = submitted_pod({})
        pod["spec"]["containers"][0]["command"] = ["python", "-c", PROBE, str(port)]
        code, log = run_pod(engine, pod, tmp_path, [], 60)
    lines = [line.split(" ", 1)[1] for line in log.decode().splitlines()]
    assert code == 0, lines
    assert lines == [f"refused ('127.0.0.1', {port})", "unreachable ('1.1.1.1', 443)"]


def test_the_trainer_pod_becomes_docker_run_options_with_its_limits_and_scratch_size(tmp_path):
    pod = submitted_pod({"DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="})
    spec = pod["spec"]
    [container] = spec["containers"]
    args = run_args(spec["securityContext"], container, spec["volumes"], {}, tmp_path)
    scratch = int(trainer_limits(TENANT).tmp_mib * 2**20)
    assert args == [
        "--user", "10001:10001", "--read-only", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--cpus", "1", "--memory", str(2**30),
        "--mount", f"type=tmpfs,destination=/tmp,tmpfs-mode=1777,tmpfs-size={scratch}",
    ]  # fmt: skip
    assert container["command"] == ["python", "/opt/mlplat/runner.py"]
