"""The services deployment on one machine, as real processes: `mlplat services up|down|status`.

`up` starts what is not already running (an S3 API server, the MLflow tracking server with
authentication on, the Dagster webserver and daemon; Postgres and Redis only when none is
reachable), waits until each is healthy and records pids, ports and the deployment's environment
under the state folder (`.services/`, git-ignored; the env file is 0600). `down` stops exactly the
processes `up` started, by process group id.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from platform_assets.cost.quotas import render_block
from platform_assets.env import repo_root
from platform_assets.governance.mlflow_auth import (
    GOVERNANCE_USER,
    configure_permissions,
    write_auth_config,
)
from platform_assets.resources.feature_store import write_private
from platform_assets.resources.lake import LakeResource
from platform_assets.resources.mlflow import write_tenant_passwords
from platform_assets.services.postgres import PostgresCluster
from platform_assets.tenancy.catalog import load_all
from platform_assets.tenancy.locations import render_workspace

TEMPLATE = Path(__file__).with_name("dagster.yaml")
BUCKET = "mlplat"
# MLflow's artifact store; clients map its `mlflow-artifacts:` URIs here (KServe's storageUri).
ARTIFACTS = f"s3://{BUCKET}/mlflow"
MLFLOW_ADMIN = "admin"
DATABASES = ("dagster", "mlflow", "mlflow_auth", "feast", "platform")
ENV_FILE = "services.env"
STATE_FILE = "state.json"
TENANT_CREDENTIALS = "mlflow_tenants"  # one 0600 file per tenant: its MLflow password
KEPT = ("logs", "demo.log")  # what `down` leaves behind: the components' and the demo's logs


def state_dir() -> Path:
    return Path(os.environ.get("MLPLAT_SERVICES_DIR", repo_root() / ".services")).resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _http_ok(url: str, auth: tuple[str, str] | None = None) -> bool:
    request = urllib.request.Request(url)
    if auth:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Component:
    name: str
    url: str
    pid: int | None = None  # set when `up` started it (the process group leader)
    log: str | None = None
    cmd: list[str] = field(default_factory=list)  # how it was started, to start it again
    env: dict[str, str] = field(default_factory=dict)

    @property
    def started(self) -> bool:
        return self.pid is not None


@dataclass
class Stack:
    """What `up` recorded: components, the databases it created, and the environment."""

    folder: Path
    stack_id: str
    components: dict[str, Component] = field(default_factory=dict)
    admin_postgres_url: str = ""
    databases: list[str] = field(default_factory=list)

    @property
    def env_file(self) -> Path:
        return self.folder / ENV_FILE

    def env(self) -> dict[str, str]:
        """The deployment's environment (endpoints and credentials), from the 0600 env file."""
        out = {}
        for line in self.env_file.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                out[key] = value
        return out

    def save(self) -> None:
        data = {
            "stack_id": self.stack_id,
            "admin_postgres_url": self.admin_postgres_url,
            "databases": self.databases,
            "components": {k: asdict(c) for k, c in self.components.items()},
        }

        write_private(self.folder / STATE_FILE, json.dumps(data, indent=2))  # holds credentials

    @classmethod
    def load(cls, folder: Path | None = None) -> Stack:
        folder = folder or state_dir()
        path = folder / STATE_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run `make services-up` first")
        data = json.loads(path.read_text())
        return cls(
            folder=folder,
            stack_id=data["stack_id"],
            admin_postgres_url=data["admin_postgres_url"],
            databases=data["databases"],
            components={k: Component(**c) for k, c in data["components"].items()},
        )


def _write_env(path: Path, env: dict[str, str]) -> None:
    lines = ["# mlplat services deployment: endpoints and credentials (0600; `services down`)"]
    write_private(path, "\n".join([*lines, *(f"{k}={v}" for k, v in env.items())]) + "\n")


def _spawn(stack: Stack, name: str, cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Start one component in its own process group; returns (pid, log file)."""
    logs = stack.folder / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=stack.folder,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: `down` stops it and its children
        )
    return proc.pid, str(log)


def start_component(stack: Stack, name: str, url: str, cmd: list[str], env: dict) -> Component:
    pid, log = _spawn(stack, name, cmd, env)
    stack.components[name] = Component(name, url, pid, log, cmd, env)
    stack.save()
    return stack.components[name]


def stop_component(stack: Stack, name: str) -> None:
    """Stop one component `up` started (its whole process group), keeping its record."""
    _stop_group(stack.components[name].pid)


def restart_component(stack: Stack, name: str, timeout: float = 180) -> float:
    """Start a stopped component again as it was started; seconds until it is healthy."""
    comp = stack.components[name]
    start_component(stack, name, comp.url, comp.cmd, comp.env)
    new = stack.components[name]
    return wait_until(name, lambda: health(stack, [name])[name], timeout, new.pid, new.log)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by us) is not alive either.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def wait_until(
    what: str, healthy: Callable[[], bool], timeout: float, pid: int | None = None, log=None
) -> float:
    """Seconds until `healthy()`; raises naming the component (and its log) on timeout/exit."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if healthy():
            return time.monotonic() - started
        if pid is not None and not _alive(pid):
            tail = Path(log).read_text()[-3000:] if log else ""
            raise RuntimeError(f"{what} exited before it became healthy (log {log}):\n{tail}")
        time.sleep(0.5)
    raise TimeoutError(f"{what} was not healthy after {timeout:.0f}s (log {log})")


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def workspace_config() -> dict:
    """The code locations the webserver and daemon load: `platform` and one per tenant, as in
    workspace.yaml; launches find a job's location by asking the webserver."""
    import yaml

    return yaml.safe_load(render_workspace())


def dagster_yaml() -> str:
    """The services instance config with the tenants' run quotas rendered in."""
    text = TEMPLATE.read_text()
    head, rest = text.split("# BEGIN mlplat quotas", 1)
    tail = rest.split("# END mlplat quotas", 1)[1].removeprefix("\n")
    return head + render_block(load_all()) + tail


def _postgres(stack: Stack, report: Callable[[str], None]) -> str:
    """An admin URL to a Postgres server: given, already running locally, or started here."""
    given = os.environ.get("MLPLAT_SERVICES_POSTGRES_URL")
    if given:
        stack.components["postgres"] = Component("postgres", _redact(given))
        return given
    if _reachable("127.0.0.1", 5432):
        url = "postgresql://postgres@127.0.0.1:5432/postgres"
        stack.components["postgres"] = Component("postgres", url)
        return url

    cluster = PostgresCluster(stack.folder / "postgres", free_port()).init()
    cluster.start()
    stack.components["postgres"] = Component(
        "postgres", cluster.url, pid=cluster.pid(), log=str(cluster.folder / "server.log")
    )
    report(f"started Postgres on 127.0.0.1:{cluster.port}")
    return cluster.url


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _create_databases(stack: Stack, admin_url: str) -> dict[str, str]:
    import psycopg2
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url)
    conn = psycopg2.connect(admin.set(drivername="postgresql").render_as_string(False))
    conn.autocommit = True
    urls = {}
    try:
        for role in DATABASES:
            name = f"mlplat_{role}_{stack.stack_id}"
            cur = conn.cursor()
            cur.execute("select 1 from pg_database where datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'create database "{name}"')
                stack.databases.append(name)
            urls[role] = admin.set(database=name).render_as_string(hide_password=False)
    finally:
        conn.close()
    return urls


def _redis(stack: Stack, report: Callable[[str], None]) -> str:
    """Feast's Redis connection string: given, the local server (db MLPLAT_SERVICES_REDIS_DB),
    or a server started here."""
    given = os.environ.get("MLPLAT_SERVICES_REDIS")
    if given:
        stack.components["redis"] = Component("redis", given.split(",")[0])
        return given
    if _reachable("127.0.0.1", 6379):
        db = int(os.environ.get("MLPLAT_SERVICES_REDIS_DB", "0"))
        stack.components["redis"] = Component("redis", f"redis://127.0.0.1:6379/{db}")
        return f"127.0.0.1:6379,db={db}"
    port = free_port()
    server = shutil.which("redis-server")
    if server is None:
        raise FileNotFoundError("no Redis at 127.0.0.1:6379 and redis-server is not installed")
    cmd = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    comp = start_component(stack, "redis", f"redis://127.0.0.1:{port}/0", cmd, {})
    wait_until("Redis", lambda: _reachable("127.0.0.1", port), 30, comp.pid, comp.log)
    report(f"started Redis on 127.0.0.1:{port}")
    return f"127.0.0.1:{port},db=0"


def _graphql(url: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors from {url}: {payload['errors']}")
    return payload["data"]


DAEMON_HEALTH = (
    "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"
)


def daemons_healthy(webserver_url: str) -> bool:
    try:
        statuses = _graphql(webserver_url, DAEMON_HEALTH, timeout=10)["instance"]["daemonHealth"]
    except (urllib.error.URLError, OSError, RuntimeError):
        return False
    required = [s for s in statuses["allDaemonStatuses"] if s["required"]]
    return bool(required) and all(s["healthy"] for s in required)


def up(
    report: Callable[[str], None] = lambda _: None,
    folder: Path | None = None,
    dagster: bool = True,
) -> Stack:
    """Start what is not running, wait until healthy; returns the recorded stack.

    `dagster=False` stops short of the webserver and daemon (what a step pod talks to)."""
    folder = folder or state_dir()
    if (folder / STATE_FILE).exists():
        stack = Stack.load(folder)
        unhealthy = [n for n, ok in health(stack).items() if not ok]
        if not unhealthy:
            report(f"already up (state in {folder})")
            return stack
        raise RuntimeError(
            f"{folder} records a stack whose {', '.join(unhealthy)} is not healthy: "
            "run `make services-down` first"
        )
    folder.mkdir(parents=True, exist_ok=True)
    stack = Stack(folder=folder, stack_id=secrets.token_hex(4))
    try:
        _start(stack, report, dagster)
    except BaseException:
        stack.save()  # so `down` can stop whatever did start
        raise
    stack.save()
    return stack


def _start(stack: Stack, report: Callable[[str], None], dagster: bool = True) -> None:
    folder = stack.folder
    stack.admin_postgres_url = _postgres(stack, report)
    stack.save()
    dbs = _create_databases(stack, stack.admin_postgres_url)
    stack.save()
    redis = _redis(stack, report)

    s3_port = free_port()
    s3_url = f"http://127.0.0.1:{s3_port}"
    cmd = [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)]
    comp = start_component(stack, "s3", s3_url, cmd, {})
    wait_until("S3 server", lambda: _http_ok(f"{s3_url}/moto-api/"), 60, comp.pid, comp.log)

    password = os.environ.get("MLPLAT_MLFLOW_ADMIN_PASSWORD") or secrets.token_urlsafe(18)
    aws = {
        "AWS_ACCESS_KEY_ID": "mlplat",
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(18),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_url,
    }
    import boto3

    boto3.client("s3", endpoint_url=s3_url, **_boto_kwargs(aws)).create_bucket(Bucket=BUCKET)

    mlflow_port = free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"

    auth_ini = write_auth_config(
        folder / "mlflow_auth.ini", _psycopg2(dbs["mlflow_auth"]), MLFLOW_ADMIN
    )
    mlflow_env = {
        **aws,
        "MLFLOW_S3_ENDPOINT_URL": s3_url,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
        # Creates the admin on the server's first start; no platform process gets it.
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(24),
        # The server's GenAI job runner (huey workers) is not used by the platform.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    cmd = [
        _bin("mlflow"), "server",
        "--backend-store-uri", _psycopg2(dbs["mlflow"]),
        "--artifacts-destination", ARTIFACTS,
        "--serve-artifacts",
        "--app-name", "basic-auth",
        "--host", "127.0.0.1", "--port", str(mlflow_port),
        "--workers", "1",
    ]  # fmt: skip
    mlflow = start_component(stack, "mlflow", mlflow_url, cmd, mlflow_env)

    home = folder / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(dagster_yaml())
    workspace = folder / "workspace.yaml"
    workspace.write_text(yaml.safe_dump(workspace_config(), sort_keys=False))
    wait_until(
        "MLflow server",
        lambda: _http_ok(f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1",
                         (MLFLOW_ADMIN, password)),
        180, mlflow.pid, mlflow.log,
    )  # fmt: skip
    governance_password = mlflow_users(stack, mlflow_url, password)
    env = {
        "MLPLAT_ENV": "services",
        "DAGSTER_HOME": str(home),
        "MLPLAT_DAGSTER_PG_URL": _psycopg2(dbs["dagster"]),
        "MLPLAT_DB_URL": _psycopg2(dbs["platform"]),
        "MLPLAT_FEAST_REGISTRY_URL": dbs["feast"],
        "MLPLAT_REDIS": redis,
        "MLPLAT_LAKE_URI": lake_uri(folder),
        "MLPLAT_S3_BUCKET": BUCKET,
        "MLPLAT_MLFLOW_ARTIFACTS": ARTIFACTS,
        **aws,
        "MLPLAT_AUDIT_KEY_FILE": str(audit_key(folder)),
        "MLPLAT_AUDIT_HEAD_FILE": str(folder / "audit_heads.jsonl"),
        "MLFLOW_TRACKING_URI": mlflow_url,
        # The platform's processes act as its governance identity; tenant runs are logged as
        # the tenant, with the passwords in this folder (governance/mlflow_auth.py).
        "MLFLOW_TRACKING_USERNAME": GOVERNANCE_USER,
        "MLFLOW_TRACKING_PASSWORD": governance_password,
        "MLPLAT_MLFLOW_TENANT_CREDENTIALS": str(folder / TENANT_CREDENTIALS),
        # Fail fast when the server is down; the steps' retry policy rides out an outage.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    _write_env(stack.env_file, env)
    report(f"MLflow tracking server (basic auth) at {mlflow_url}")
    if not dagster:
        return

    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    cmd = [_bin("dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", str(workspace)]
    web = start_component(stack, "webserver", web_url, cmd, env)
    # A sensor tick that loads the heavy libraries for the first time on a busy machine can take
    # longer than Dagster's 60 s default.
    daemon_env = {**env, "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS": "300"}
    cmd = [_bin("dagster-daemon"), "run", "-w", str(workspace)]
    daemon = start_component(stack, "daemon", f"{web_url} (daemon health)", cmd, daemon_env)
    wait_until(
        "Dagster webserver", lambda: _http_ok(f"{web_url}/server_info"), 300, web.pid, web.log
    )
    wait_until("Dagster daemon", lambda: daemons_healthy(web_url), 300, daemon.pid, daemon.log)


def mlflow_users(stack: Stack, url: str, admin_password: str) -> str:
    """As MLflow's admin: the governance user and one user per tenant, with their permissions;
    the tenants' passwords go to 0600 files. Returns the governance user's password."""
    catalogs = load_all()
    tenants = {name: secrets.token_urlsafe(18) for name in sorted(catalogs)}
    governance_password = secrets.token_urlsafe(18)
    models = {name: sorted(c.models) for name, c in catalogs.items()}
    configure_permissions(url, MLFLOW_ADMIN, admin_password, governance_password, tenants, models)
    write_tenant_passwords(stack.folder / TENANT_CREDENTIALS, tenants)
    return governance_password


def audit_key(folder: Path) -> Path:
    """The audit chain's HMAC key, outside the platform database: a 0600 file of the stack."""
    path = folder / "audit.key"
    if not path.exists():
        write_private(path, secrets.token_hex(32) + "\n")
    return path


def lake_uri(folder: Path) -> str:

    # The lake on the S3 server where the lake speaks URIs; a folder of the stack until then.
    if "commit" in LakeResource.__dict__:
        return f"s3://{BUCKET}/lake"
    return str(folder / "lake")


def _psycopg2(url: str) -> str:
    # dagster-postgres issues NOTIFY with a bound parameter, which psycopg 3 (SQLAlchemy 2.1's
    # default for postgresql://) rejects; MLflow and the platform store work with either.
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def _boto_kwargs(aws: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"],
        "region_name": aws["AWS_DEFAULT_REGION"],
    }


def health(stack: Stack, names: list[str] | None = None) -> dict[str, bool]:
    """Each component's health, checked against the component itself."""
    env = stack.env() if stack.env_file.exists() else {}
    out: dict[str, bool] = {}
    for name, comp in stack.components.items():
        if names is not None and name not in names:
            continue
        if name == "postgres":
            out[name] = _postgres_ok(stack.admin_postgres_url)
        elif name == "redis":
            host, port = comp.url.removeprefix("redis://").split("/")[0].split(":")
            out[name] = _reachable(host, int(port))
        elif name == "s3":
            out[name] = _http_ok(f"{comp.url}/moto-api/")
        elif name == "mlflow":
            auth = (
                env.get("MLFLOW_TRACKING_USERNAME", ""),
                env.get("MLFLOW_TRACKING_PASSWORD", ""),
            )
            out[name] = _http_ok(
                f"{comp.url}/api/2.0/mlflow/experiments/search?max_results=1", auth
            )
        elif name == "webserver":
            out[name] = _http_ok(f"{comp.url}/server_info")
        elif name == "daemon":
            out[name] = daemons_healthy(stack.components["webserver"].url)
        if comp.pid is not None and not _alive(comp.pid):
            out[name] = False
    return out


def _postgres_ok(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def status(folder: Path | None = None) -> dict[str, dict]:
    stack = Stack.load(folder)
    ok = health(stack)
    return {
        name: {"url": comp.url, "healthy": ok[name], "pid": comp.pid, "started_here": comp.started}
        for name, comp in stack.components.items()
    }


def down(
    folder: Path | None = None, drop_databases: bool = True, report=lambda _: None
) -> list[str]:
    """Stop exactly the processes `up` started (newest first), by process group; drop the
    databases it created; remove the state but keep the logs. Returns what was stopped."""
    folder = folder or state_dir()
    if not (folder / STATE_FILE).exists():
        report(f"nothing to stop: {folder / STATE_FILE} does not exist")
        return []
    stack = Stack.load(folder)
    stopped = []
    for name, comp in reversed(list(stack.components.items())):
        if comp.pid is None:
            continue
        if name == "postgres":
            port = int(comp.url.rsplit(":", 1)[1].split("/")[0])
            if _alive(comp.pid):
                PostgresCluster(folder / "postgres", port).stop()
        else:
            _stop_group(comp.pid)
        stopped.append(f"{name} (pid {comp.pid})")
        report(f"stopped {name} (pid {comp.pid})")
    if drop_databases and stack.databases and not stack.components["postgres"].started:
        import psycopg2

        conn = psycopg2.connect(stack.admin_postgres_url)
        conn.autocommit = True
        try:
            for name in stack.databases:
                conn.cursor().execute(f'drop database if exists "{name}" with (force)')
        finally:
            conn.close()
    for entry in folder.iterdir():
        if entry.name in KEPT:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return stopped


def _stop_group(pgid: int, timeout: float = 20) -> None:
    """SIGTERM the process group `up` started, SIGKILL what is left after `timeout`."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
