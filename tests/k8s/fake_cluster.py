"""A stand-in for the Kubernetes API server and kubelet, as much as dagster-k8s's
PipesK8sClient uses of them: the CoreV1Api methods it calls, on pods that really run.

Admission checks a new pod against the Kubernetes schemas and every pod policy, as Gatekeeper
would. The "kubelet" runs the pod's command in bubblewrap, with the container's view of the
image (a folder standing in for /opt/mlplat), a read-only root, a /tmp of the emptyDir's size
limit, no env but the pod's and the image's, and the pod's deadline; its output (stdout and
stderr, as a container's log) is the pod log, one timestamp a line.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client import (
    ApiClient,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodStatus,
)

from platform_assets.k8s.policy import PolicySet
from platform_assets.k8s.schemas import check_manifest

BWRAP = "/usr/bin/bwrap"
IMAGE_ROOT = "/opt/mlplat"


def quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(value)


@dataclass
class _Pod:
    manifest: dict[str, Any]
    proc: subprocess.Popen
    lines: list[bytes] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    deadline_exceeded: bool = False


class _Log:
    """What `read_namespaced_pod_log(_preload_content=False)` returns: the stream (followed
    until the container exits) and `.data`."""

    def __init__(self, pod: _Pod, follow: bool, tail_lines: int | None):
        self._pod, self._follow, self._tail = pod, follow, tail_lines

    def __iter__(self):
        sent = 0
        while True:
            finished = self._pod.done.is_set()
            while sent < len(self._pod.lines):
                yield self._pod.lines[sent]
                sent += 1
            if finished or not self._follow:
                return
            time.sleep(0.02)

    def stream(self):
        return iter(self)

    @property
    def data(self) -> bytes:
        lines = self._pod.lines[-self._tail :] if self._tail else self._pod.lines
        return b"".join(line.split(b" ", 1)[1] for line in lines)


class FakeCoreApi:
    """CoreV1Api for one namespace's pods. `image_root`: the folder a pod's image holds at
    /opt/mlplat; `image_env`: the image's own ENV; `parameters`: the pod policies'."""

    def __init__(self, image_root: Path, image_env: dict[str, str], parameters: dict[str, Any]):
        self.image_root, self.image_env, self.parameters = image_root, image_env, parameters
        self.pods: dict[str, _Pod] = {}
        self.created: list[dict[str, Any]] = []  # every pod admitted, as its manifest
        self.deleted: list[str] = []
        self._policies = PolicySet("pods")

    # -- the API server --------------------------------------------------------------------

    def create_namespaced_pod(self, namespace: str, body: V1Pod) -> V1Pod:
        manifest = ApiClient().sanitize_for_serialization(body)
        manifest = {"apiVersion": "v1", "kind": "Pod", **manifest}
        manifest["metadata"]["namespace"] = namespace
        review = {"review": {"object": manifest, "namespace": namespace}}
        refused = check_manifest(manifest, "pod") + [
            str(v)
            for v in self._policies.evaluate({**review, "parameters": self.parameters}, "pod")
        ]
        if refused:
            raise kubernetes.client.ApiException(status=403, reason="; ".join(refused))
        self.created.append(manifest)
        self.pods[manifest["metadata"]["name"]] = self._start(manifest)
        return body

    def list_namespaced_pod(self, namespace: str, field_selector: str = "", **_: Any):
        name = field_selector.removeprefix("metadata.name=")
        items = [self._status(name, self.pods[name])] if name in self.pods else []
        return kubernetes.client.V1PodList(items=items)

    def read_namespaced_pod_log(self, name: str, namespace: str, **kwargs: Any) -> _Log:
        return _Log(self.pods[name], kwargs.get("follow", False), kwargs.get("tail_lines"))

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        pod = self.pods.pop(name)
        if pod.proc.poll() is None:
            pod.proc.kill()
        self.deleted.append(name)

    def _status(self, name: str, pod: _Pod) -> V1Pod:
        container = pod.manifest["spec"]["containers"][0]
        if pod.done.is_set():
            code = pod.proc.returncode
            reason = "DeadlineExceeded" if pod.deadline_exceeded else "Completed"
            state = V1ContainerState(
                terminated=V1ContainerStateTerminated(exit_code=code, reason=reason)
            )
            phase = "Succeeded" if code == 0 else "Failed"
        else:
            state, phase = V1ContainerState(running=V1ContainerStateRunning()), "Running"
        status = V1ContainerStatus(
            name=container["name"],
            image=container["image"],
            image_id=container["image"],
            ready=not pod.done.is_set(),
            restart_count=0,
            state=state,
        )
        return V1Pod(
            metadata=V1ObjectMeta(name=name),
            status=V1PodStatus(phase=phase, container_statuses=[status]),
        )

    # -- the kubelet -----------------------------------------------------------------------

    def _start(self, manifest: dict[str, Any]) -> _Pod:
        spec = manifest["spec"]
        [container] = spec["containers"]
        env = {**self.image_env, **{e["name"]: e["value"] for e in container.get("env", [])}}
        argv = [BWRAP, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        argv += ["--tmpfs", "/opt", "--ro-bind", str(self.image_root), IMAGE_ROOT]
        for mount in container.get("volumeMounts", []):
            [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
            size = quantity_bytes(volume["emptyDir"]["sizeLimit"])
            argv += ["--size", str(size), "--tmpfs", mount["mountPath"]]
        argv += ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--clearenv"]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv += ["--chdir", "/tmp", "--", *container["command"], *container.get("args", [])]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        pod = _Pod(manifest, proc)
        threading.Thread(target=self._run, args=(pod, spec["activeDeadlineSeconds"])).start()
        return pod

    def _run(self, pod: _Pod, deadline_s: int) -> None:
        timer = threading.Timer(deadline_s, self._expire, args=(pod,))
        timer.start()
        assert pod.proc.stdout is not None
        last = 0
        for line in pod.proc.stdout:
            # RFC 3339 with nanoseconds, distinct per line (the log reader orders by them).
            now = last = max(time.time_ns(), last + 1)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9))
            pod.lines.append(f"{stamp}.{now % 10**9:09d}Z ".encode() + line)
        pod.proc.wait()
        timer.cancel()
        pod.done.set()

    def _expire(self, pod: _Pod) -> None:
        pod.deadline_exceeded = True
        pod.proc.kill()
