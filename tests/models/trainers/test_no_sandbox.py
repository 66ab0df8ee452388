"""Where bubblewrap is missing or cannot create its namespaces, a trainer fails saying what to
install; team code never runs unsandboxed instead."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from platform_assets.models.trainers import sandbox
from platform_assets.models.trainers.job import TrainerFailed
from tests.models.trainers.conftest import make_job, training_split, write_code


@pytest.fixture
def fresh_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MLPLAT_DATA", str(tmp_path / "data"))
    sandbox.check_sandbox.cache_clear()
    yield
    sandbox.check_sandbox.cache_clear()


def _fails(tmp_path: Path) -> str:
    job = make_job(write_code(tmp_path, "def train(df, **kw):\n    return b''\n"), flavor="onnx")
    with pytest.raises(TrainerFailed) as exc:
        sandbox.run_in_sandbox(None, job, training_split())  # refused before any context use
    return str(exc.value)


def test_bwrap_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_check) -> None:
    monkeypatch.setattr(sandbox, "BWRAP", str(tmp_path / "bwrap"))
    assert _fails(tmp_path) == (
        f"{tmp_path / 'bwrap'} not found: the platform runs team code only in a bubblewrap "
        "sandbox: install it (`apt-get install bubblewrap`, or `make install` as root) on a "
        "kernel that allows unprivileged user namespaces"
    )


def test_no_user_namespaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_check) -> None:
    fake = tmp_path / "bwrap"  # what bwrap says where the kernel refuses it namespaces
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox, "BWRAP", str(fake))
    message = _fails(tmp_path)
    assert message.startswith(
        "bubblewrap cannot create the sandbox here (bwrap: No permissions to creating new "
        "namespace): the platform runs team code only in a bubblewrap sandbox"
    )
    assert "`apt-get install bubblewrap`" in message
    assert not (tmp_path / "data").exists()  # no environment was built either
