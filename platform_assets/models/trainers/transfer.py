"""The runner's side of a trainer pod's input and output: the training split fetched from a
pre-signed GET URL, the model file posted to a pre-signed POST (the object store's form upload,
whose policy caps its size), so the pod holds no credential (docs/trainers.md, "On Kubernetes").

Shipped beside runner.py (the sandbox binds it next to the runner; the trainer image copies
both into /opt/mlplat/) and imported by it as `transfer`: standard library only, no platform
import. In the sandbox `input` and `output` are paths and pass through unchanged.

The runner wraps its work in one call:

    with transfer.staged(pipes.extras) as extras:   # extras with local paths
        model = train(extras)
        write_model(model, extras["flavor"], extras["output"])

and treats `transfer.TransferError` as it treats its own refusals.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_CHUNK = 1 << 20
_TIMEOUT_S = 60


class TransferError(Exception):
    """The split could not be fetched or the model not delivered; the message says which."""


def is_remote(spec: Any) -> bool:
    """A pre-signed request (`{"url": ...}`, with `fields` for a POST) rather than a path."""
    return isinstance(spec, dict) and isinstance(spec.get("url"), str)


@contextmanager
def staged(extras: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`extras` with a remote `input` fetched into scratch space and a remote `output` replaced
    by a scratch path, posted where it belongs when the block ends without an error."""
    source, target = extras["input"], extras["output"]
    if not (is_remote(source) or is_remote(target)):
        yield extras
        return
    scratch = tempfile.mkdtemp(prefix="mlplat-transfer-")
    try:
        local = dict(extras)
        if is_remote(source):
            local["input"] = os.path.join(scratch, "train.parquet")
            fetch(source, local["input"])
        if is_remote(target):
            local["output"] = os.path.join(scratch, "model")
        yield local
        if is_remote(target):
            deliver(target, local["output"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fetch(spec: dict[str, Any], path: str) -> None:
    """GET the pre-signed URL into `path`."""
    try:
        with urllib.request.urlopen(spec["url"], timeout=_TIMEOUT_S) as response:
            with open(path, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
    except (urllib.error.URLError, OSError) as exc:
        raise TransferError(f"could not fetch the training split: {_reason(exc)}") from None


def deliver(spec: dict[str, Any], path: str) -> None:
    """POST `path` as the form upload `spec` describes (`url`, `fields`): the fields first, the
    file last, as the object store requires. A file over the policy's size cap is refused by
    the store itself."""
    boundary = uuid.uuid4().hex
    head = b"".join(
        _part(boundary, f'name="{name}"', str(value).encode())
        for name, value in spec.get("fields", {}).items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="model"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = len(head) + os.path.getsize(path) + len(tail)
    request = urllib.request.Request(
        spec["url"],
        data=_body(head, path, tail),
        method="POST",
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(size),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise TransferError(f"could not deliver the model file: {_reason(exc)}") from None


def _part(boundary: str, disposition: str, value: bytes) -> bytes:
    return f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode() + (
        value + b"\r\n"
    )


def _body(head: bytes, path: str, tail: bytes) -> Iterator[bytes]:
    yield head
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk
    yield tail


def _reason(exc: Exception) -> str:
    """What went wrong, without the URL (its query string is the signature)."""
    if isinstance(exc, urllib.error.HTTPError):
        body = exc.read(2000).decode(errors="replace")
        return f"the object store answered {exc.code} {exc.reason}: {body}"
    if isinstance(exc, urllib.error.URLError):
        return f"the object store is unreachable ({exc.reason})"
    return str(exc)
