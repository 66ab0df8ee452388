"""Model artifacts as the platform trusts them: a content hash recorded when a version is
registered and checked wherever one is loaded. The loaders of each flavor's safe format are in
`models/flavors.py`.

Every load goes through `verified_download`: the version's files are downloaded from MLflow
into a private temporary folder, hashed there, compared with the hash in the platform's own
records, and only then handed to a flavor's loader, which reads that folder and nothing else.
MLflow is storage here, not a source of truth: a tenant with write access to its runs could
replace a logged artifact, and MLflow's own `MLmodel` file chooses how `mlflow.*.load_model`
deserializes (pickle included).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from platform_assets.resources.mlflow import MlflowResource

HASH_PREFIX = 12  # hex digits of a hash in messages: enough to tell two apart
# MLflow's client writes this file (the model's name and version) into a version's folder
# whenever it downloads one through `models:/`: on a local artifact store, into the stored
# folder itself. No loader here reads it, so it is not part of what is verified; hashing it would
# let anyone's `mlflow.sklearn.load_model` make the champion refuse to load.
MLFLOW_CLIENT_FILES = frozenset({"registered_model_meta"})


class ArtifactRefused(RuntimeError):
    """A model artifact the platform will not load; names the model, version and why."""


def artifact_digest(folder: Path) -> str:
    """SHA-256 over every file under `folder` in the order of their relative POSIX paths, each
    as its path, its size and its bytes (lengths included, so no two trees hash alike by
    moving bytes between names), except MLflow's own `registered_model_meta` at the top. A
    symlink or any other non-regular file is refused: what is hashed must be exactly what a
    loader reads."""
    digest = hashlib.sha256()
    files = []
    for path in folder.rglob("*"):
        if path.parent == folder and path.name in MLFLOW_CLIENT_FILES:
            continue
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise ArtifactRefused(f"{path.relative_to(folder)}: not a regular file")
        files.append((path.relative_to(folder).as_posix(), path))
    for name, path in sorted(files):
        data = path.read_bytes()
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def storage_uri(mlflow: MlflowResource, registered: str, version: int) -> str:
    """Where version `version`'s files are stored (the logged model's artifact location), read
    there rather than through `models:/`, whose download adds a file of the client's own."""
    client = mlflow.client()
    uri = client.get_model_version_download_uri(registered, str(version))
    if uri.startswith("models:/"):
        return client.get_logged_model(uri.removeprefix("models:/")).artifact_location
    return uri


@contextmanager
def downloaded(mlflow: MlflowResource, uri: str) -> Iterator[Path]:
    """The artifacts stored at `uri` in a private temporary folder (0700, removed on exit), so
    no other process can change them between the hash and the load."""
    import mlflow as mlflow_lib

    mlflow.client()  # points the mlflow module at the platform's registry
    with tempfile.TemporaryDirectory(prefix="mlplat-artifact-") as tmp:
        os.chmod(tmp, 0o700)
        local = mlflow_lib.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        yield Path(local)


@contextmanager
def verified_download(
    mlflow: MlflowResource, registered: str, version: int, expected: str | None
) -> Iterator[Path]:
    """Version `version` of `registered`, downloaded and verified against `expected`, the hash
    the platform recorded when it registered the version. Refuses a version with no recorded
    hash and one whose files hash differently, naming both hashes."""
    what = f"{registered} v{version}"
    if not expected:
        raise ArtifactRefused(
            f"{what}: the platform holds no artifact hash for this version (registered before "
            "artifacts were hashed, or not by the platform); not loaded. Retrain and promote a "
            "new version"
        )
    with downloaded(mlflow, storage_uri(mlflow, registered, version)) as folder:
        actual = artifact_digest(folder)
        if actual != expected:
            raise ArtifactRefused(
                f"{what}: artifact refused: its files hash to sha256 {actual[:HASH_PREFIX]}..., "
                f"not the {expected[:HASH_PREFIX]}... the platform recorded when it registered "
                "the version (changed in MLflow since); not loaded"
            )
        yield folder
