"""`dagster dev` (webserver, daemon, one code server per location) on a generated workspace of
copied demo tenants, for tests that need the real daemon: its GraphQL, ticks and instance."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.tenancy.locations import render_workspace

ROOT = Path(__file__).resolve().parents[1]
DEMO_DEFS = ROOT / "platform_assets" / "defs"

LOCATIONS = """
query {
  workspaceOrError { ... on Workspace { locationEntries {
    name
    locationOrLoadError { __typename ... on PythonError { message causes { message } } }
  } } }
}"""
RELOAD = """
mutation($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message causes { message } } }
    }
  }
}"""
TICKS = """
query($selector: SensorSelector!, $limit: Int!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      id
      sensorState {
        status
        ticks(limit: $limit) { id status timestamp skipReason runIds error { message } }
      }
    }
  }
}"""
STOP_SENSOR = """
mutation($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dev:
    """A `dagster dev` process on copies of the demo tenants (all of them, or `tenants`), with
    its own Dagster home and data root; `env` adds to its environment. `start()` launches it."""

    def __init__(
        self, tmp: Path, tenants: tuple[str, ...] | None = None, env: dict[str, str] | None = None
    ):
        self.tmp = tmp
        self.defs = tmp / "defs"
        self.defs.mkdir()
        shutil.copy(DEMO_DEFS / "defs.yaml", self.defs / "defs.yaml")  # the platform's root
        for tenant in tenants or sorted(p.name for p in DEMO_DEFS.iterdir() if p.is_dir()):
            shutil.copytree(DEMO_DEFS / tenant, self.defs / tenant)
        self.home = tmp / "home"
        self.home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
        # Code servers start at once on a 2-core machine: give each longer than Dagster's
        # default to come up, so a slow start is not a load error.
        with (self.home / "dagster.yaml").open("a") as f:
            f.write("code_servers:\n  local_startup_timeout: 300\n")
        self.workspace = tmp / "workspace.yaml"
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "MLPLAT_ENV": "local",
            "MLPLAT_DATA": str(tmp / "data"),
            "MLPLAT_DEFS_ROOT": str(self.defs),
            **(env or {}),
        }
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.workspace.write_text(render_workspace(self.defs))
        self.log = open(self.tmp / "dev.log", "a")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster")),
                "dev",
                "-w",
                str(self.workspace),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_until_loaded(self, timeout: float = 600) -> None:
        """Every location of the workspace loaded (the tenants' and the platform's). The machine
        is shared: at a load average of 15-30 the four locations took 374 s to load."""
        expected = len([p for p in self.defs.iterdir() if p.is_dir()]) + 1
        wait_for(
            "every location to load",
            lambda: (
                (locs := self.locations())
                and len(locs) == expected
                and all(v["__typename"] == "RepositoryLocation" for v in locs.values())
            ),
            timeout,
        )

    def graphql(self, query: str, **variables) -> dict:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            out = json.loads(response.read())
        assert "errors" not in out, out
        return out["data"]

    def locations(self) -> dict[str, dict]:
        data = self.graphql(LOCATIONS)["workspaceOrError"]
        return {e["name"]: e["locationOrLoadError"] for e in data["locationEntries"]}

    def reload(self, name: str) -> dict:
        return self.graphql(RELOAD, name=name)["reloadRepositoryLocation"]["locationOrLoadError"]

    def sensor(self, location: str, sensor: str, limit: int = 100) -> dict:
        selector = {
            "repositoryLocationName": location,
            "repositoryName": "__repository__",
            "sensorName": sensor,
        }
        data = self.graphql(TICKS, selector=selector, limit=limit)["sensorOrError"]
        assert data["__typename"] == "Sensor", data
        return data

    def ticks(self, location: str, sensor: str, limit: int = 100) -> list[dict]:
        """The sensor's ticks, newest first."""
        return self.sensor(location, sensor, limit)["sensorState"]["ticks"]

    def stop_sensor(self, location: str, sensor: str) -> None:
        stopped = self.graphql(STOP_SENSOR, id=self.sensor(location, sensor)["id"])["stopSensor"]
        assert stopped["__typename"] == "StopSensorMutationResult", stopped

    @contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            yield instance

    @contextmanager
    def in_process(self, location: str) -> Iterator[dg.Definitions]:
        """The definitions of `location` built in this process from the same folders and
        environment as the code servers, for running steps on the daemon's instance."""
        from platform_assets.composition.locations import tenant_location
        from platform_assets.tenancy import catalog
        from platform_assets.tenancy.locations import location_named

        keys = ["DAGSTER_HOME", "MLPLAT_ENV", "MLPLAT_DATA", "MLPLAT_DEFS_ROOT"]
        keys += [k for k in self.env if k.startswith("MLPLAT_") and k not in keys]
        with pytest.MonkeyPatch.context() as monkeypatch:
            for key in keys:
                monkeypatch.setenv(key, self.env[key])
            catalog.load_tenant.cache_clear()
            try:
                yield tenant_location(location_named(location))
            finally:
                catalog.load_tenant.cache_clear()

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.log.close()


@contextmanager
def dagster_dev(
    tmp: Path, tenants: tuple[str, ...] | None = None, env: dict[str, str] | None = None
) -> Iterator[Dev]:
    """A started `Dev` whose every location has loaded; stopped on exit."""
    server = Dev(tmp, tenants, env)
    server.start()
    try:
        server.wait_until_loaded()
        yield server
    finally:
        server.stop()


def error_text(error: dict) -> str:
    """The location error as the UI shows it: the message and its chain of causes."""
    return "\n".join([error["message"], *(c["message"] for c in error.get("causes") or [])])


def wait_for(what: str, condition: Callable[[], object], timeout: float = 300) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (OSError, urllib.error.URLError):
            value = None  # the webserver is still starting
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(2)
