"""The UI gateway in front of a real Dagster webserver (`gateway:create_app` on uvicorn, on
loopback, with a small workspace and its own DAGSTER_HOME): who the trusted proxy says you are
decides what Dagster lets you change; a header from an untrusted address is refused and audited.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from platform_assets.services.stack import free_port

pytestmark = pytest.mark.slow

APPROVER, VIEWER = "paul@payments.example", "vera@payments.example"
APPROVER2 = "pat@payments.example"
OTHER_TENANT = "grace@growth.example"
DEFS = """
import dagster as dg


KEY = ["payments", "scores"]


@dg.asset(key=KEY, check_specs=[dg.AssetCheckSpec("ok", asset=KEY)])
def scores():
    return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="ok", passed=True)])


defs = dg.Definitions(
    assets=[scores], jobs=[dg.define_asset_job("payments_job", selection=[scores])]
)
"""
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename
  ... on LaunchRunSuccess { run { runId tags { key value } } }
  ... on UnauthorizedError { message }
  ... on PythonError { message }
} }"""
REEXECUTE = """mutation($r: ReexecutionParams!) { launchPipelineReexecution(reexecutionParams: $r) {
  __typename
  ... on LaunchRunSuccess { run { runId parentRunId tags { key value } } }
  ... on PythonError { message }
} }"""
REPORT_CHECK = """mutation($e: ReportAssetCheckEvaluationsParams!) {
  reportAssetCheckEvaluations(eventParams: $e) { __typename ... on UnauthorizedError { message } }
}"""
REPORT_EVENT = """mutation($e: ReportRunlessAssetEventsParams!) {
  reportRunlessAssetEvents(eventParams: $e) { __typename ... on UnauthorizedError { message } }
}"""
PARAMS = {
    "selector": {
        "repositoryLocationName": "payments",
        "repositoryName": "__repository__",
        "jobName": "payments_job",
    },
    "runConfigData": {},
    "executionMetadata": {"tags": [{"key": "mlplat/launched_by", "value": "raj@x.example"}]},
}
SCORES = dg.AssetKey(["payments", "scores"])
CHECK = {"assetKey": {"path": ["payments", "scores"]}, "checkName": "ok", "passed": True}


class Server:
    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = root / "dagster_home"
        home.mkdir(parents=True)
        # Queued and never dequeued (no daemon): a launch is recorded, nothing runs.
        (home / "dagster.yaml").write_text(
            "run_coordinator:\n  module: dagster._core.run_coordinator\n"
            "  class: QueuedRunCoordinator\ntelemetry:\n  enabled: false\n"
        )
        (root / "defs.py").write_text(DEFS)
        (root / "workspace.yaml").write_text(
            textwrap.dedent(f"""\
                load_from:
                  - python_file:
                      relative_path: {root / "defs.py"}
                      location_name: payments
                """)
        )
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_WORKSPACE_FILE": str(root / "workspace.yaml"),
            "MLPLAT_ENV": "local",
            "MLPLAT_DATA": str(root / "data"),
            "MLPLAT_TRUSTED_PROXIES": "127.0.0.1/32",
        }
        self.env.pop("MLPLAT_DB_URL", None)

    def __enter__(self) -> Server:
        import httpx

        uvicorn = Path(sys.executable).with_name("uvicorn")
        self.log = open(self.root / "server.log", "wb")
        self.proc = subprocess.Popen(
            [str(uvicorn), "--factory", "platform_assets.governance.gateway:create_app"]
            + ["--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {(self.root / 'server.log').read_text()}")
            try:
                if self.graphql(APPROVER, "{ version }").get("data"):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"gateway not up: {(self.root / 'server.log').read_text()[-3000:]}")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def http(self, source: str = "127.0.0.1"):
        import httpx

        return httpx.Client(
            base_url=self.url, timeout=60, transport=httpx.HTTPTransport(local_address=source)
        )

    def graphql(self, who: str, query: str, source: str = "127.0.0.1", **variables) -> dict:
        with self.http(source) as http:
            response = http.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"X-Forwarded-Email": who},
            )
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("gateway")) as running:
        yield running


def instance(server: Server):
    return dg.DagsterInstance.from_config(server.env["DAGSTER_HOME"])


def test_an_approver_through_the_trusted_proxy_launches_signed_as_themselves(server):
    from platform_assets.governance.identity import run_launcher
    from platform_assets.governance.keys import audit_keys

    result = server.graphql(APPROVER, LAUNCH, p=PARAMS)["data"]["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    tags = {t["key"]: t["value"] for t in result["run"]["tags"]}
    assert tags["mlplat/launched_by"] == APPROVER  # the client's claim was replaced
    assert tags["mlplat/identity"] == "proxy"
    os.environ["MLPLAT_DATA"] = server.env["MLPLAT_DATA"]  # the server's audit key
    try:
        launcher = run_launcher(audit_keys(), tags, "payments_job", {})
    finally:
        os.environ.pop("MLPLAT_DATA")
    assert (launcher.name, launcher.source) == (APPROVER, "proxy")


def test_a_reexecution_is_launched_by_whoever_reexecutes_it(server, monkeypatch):
    """Dagster copies the parent run's tags onto the re-execution; the gateway's signed tags
    replace its launcher, so pat re-executing paul's run cannot pass for paul."""
    from platform_assets.governance.identity import Identity, run_launcher
    from platform_assets.governance.keys import audit_keys

    parent = server.graphql(APPROVER, LAUNCH, p=PARAMS)["data"]["launchRun"]["run"]
    variables = {"parentRunId": parent["runId"], "strategy": "ALL_STEPS"}
    result = server.graphql(APPROVER2, REEXECUTE, r=variables)["data"]
    child = result["launchPipelineReexecution"]
    assert child["__typename"] == "LaunchRunSuccess", child
    assert child["run"]["parentRunId"] == parent["runId"]
    tags = {t["key"]: t["value"] for t in child["run"]["tags"]}
    assert tags["mlplat/launched_by"] == APPROVER2
    monkeypatch.setenv("MLPLAT_DATA", server.env["MLPLAT_DATA"])  # the server's audit key
    keys = audit_keys()
    monkeypatch.setenv("MLPLAT_ENV", "services")  # where a bare tag counts for nothing
    launcher = run_launcher(keys, tags, "payments_job", {}, parent["runId"])
    assert launcher == Identity(APPROVER2, "proxy")
    # The parent's own tags, as Dagster would have copied them, prove nothing on the child.
    inherited = {t["key"]: t["value"] for t in parent["tags"]}
    assert run_launcher(keys, inherited, "payments_job", {}, parent["runId"]) is None


@pytest.mark.parametrize("who", [VIEWER, OTHER_TENANT])
def test_a_viewer_or_another_tenant_cannot_launch_or_report_checks(server, who):
    with instance(server) as inst:
        runs_before = len(inst.get_runs())
    launched = server.graphql(who, LAUNCH, p=PARAMS)["data"]["launchRun"]
    assert launched["__typename"] == "UnauthorizedError", launched
    check = server.graphql(who, REPORT_CHECK, e=CHECK)["data"]["reportAssetCheckEvaluations"]
    assert check["__typename"] == "UnauthorizedError", check
    event = server.graphql(
        who,
        REPORT_EVENT,
        e={"eventType": "ASSET_MATERIALIZATION", "assetKey": {"path": ["payments", "scores"]}},
    )["data"]["reportRunlessAssetEvents"]
    assert event["__typename"] == "UnauthorizedError", event
    with server.http() as http:  # the webserver's REST route for the same report
        rest = http.post(
            "/report_asset_check/payments/scores",
            json={"check_name": "ok", "passed": True},
            headers={"X-Forwarded-Email": who},
        )
    assert rest.status_code == 401
    assert rest.json() == {"error": "Not authorized to report runless asset events."}
    with instance(server) as inst:
        assert len(inst.get_runs()) == runs_before
        assert inst.fetch_materializations(SCORES, limit=1).records == []
    # Reading is open to them.
    repos = server.graphql(who, "{ repositoriesOrError { __typename } }")["data"]
    assert repos["repositoriesOrError"]["__typename"] == "RepositoryConnection"


def test_an_approver_may_report_a_check_on_their_tenants_asset(server):
    check = server.graphql(APPROVER, REPORT_CHECK, e=CHECK)["data"]["reportAssetCheckEvaluations"]
    assert check["__typename"] == "ReportAssetCheckEvaluationsSuccess", check


def test_a_header_from_an_untrusted_address_is_refused_and_audited(server, monkeypatch):
    from platform_assets.governance.audit import UNIDENTIFIED
    from platform_assets.governance.workflow import open_store

    with server.http("127.0.0.2") as http:
        response = http.post(
            "/graphql",
            json={"query": LAUNCH, "variables": {"p": PARAMS}},
            headers={"X-Forwarded-Email": APPROVER},
        )
    assert response.status_code == 403
    assert response.text == (
        "refused by rule untrusted-proxy: identity header X-Forwarded-Email came from "
        "127.0.0.2, which is not a trusted proxy (MLPLAT_TRUSTED_PROXIES)"
    )
    monkeypatch.setenv("MLPLAT_DATA", server.env["MLPLAT_DATA"])
    monkeypatch.setenv("MLPLAT_ENV", "local")
    monkeypatch.delenv("MLPLAT_DB_URL", raising=False)
    store = open_store()
    try:
        (record,) = store.records(tenant="platform")
        assert store.verify().problems == []
    finally:
        store.dispose()
    assert (record.actor, record.identity, record.action) == (UNIDENTIFIED, "refused", "ui_request")
    assert record.reason == response.text
    assert record.evidence == {
        "rule": "untrusted-proxy",
        "via": "gateway",
        "claimed": f"header X-Forwarded-Email={APPROVER}",
        "client": "127.0.0.2",
        "path": "/graphql",
        "method": "POST",
    }
