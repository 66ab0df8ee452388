"""A Postgres cluster of our own in a folder (initdb + pg_ctl), for machines that run none and for
fault tests that restart the server without touching a shared one."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "postgres"  # initdb refuses to run as root; the cluster then runs as this user


def pg_bin(name: str) -> str:
    """A Postgres server binary: on PATH, else the newest under /usr/lib/postgresql/*/bin."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (install the PostgreSQL server package)")
    return found


@dataclass(frozen=True)
class PostgresCluster:
    """One server: data in `folder / "data"`, listening on 127.0.0.1:`port` only, trust auth."""

    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{self._user()}@127.0.0.1:{self.port}/postgres"

    def _user(self) -> str:
        return SERVER_USER if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        if os.getuid() == 0:
            cmd = ("runuser", "-u", SERVER_USER, "--", *cmd)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stdout}{proc.stderr}")
        return proc

    def init(self) -> PostgresCluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run(pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", self._user())
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        self._run(
            pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None
