"""What a team's training code says through Dagster Pipes, kept as the team's own whichever
backend ran it (the sandbox's message pipe, the trainer pod's log): its logs marked, its
reported metadata kept (bounded) apart from the platform's, never a materialization or a check
result; only `opened` and `closed` reach Dagster's own handler."""

from __future__ import annotations

import json
from typing import Any

LOG_MESSAGE_CHARS = 4000
LOG_MESSAGES = 1000  # each is an event in the platform's event log, on its disk
REPORTED_ENTRIES = 100
REPORTED_BYTES = 64 * 1024
KNOWN_METHODS = {"log_external_stream"}  # Pipes methods a trainer has no use for
LOG_LEVELS = {"debug", "info", "warning", "error", "critical"}


def mark(tenant: str) -> str:
    """What starts every line the platform logs on the team's behalf."""
    return f"[{tenant} trainer] "


def new_reported() -> dict[str, Any]:
    """`TrainerOutput.reported`: the metadata and custom messages the team's code reported."""
    return {"metadata": {}, "custom_messages": []}


class TeamMessages:
    """A proxy for Dagster's Pipes message handler that a backend's message reader hands the
    team's messages to instead of the handler itself."""

    def __init__(self, handler: Any, context: Any, tenant: str, reported: dict) -> None:
        self._handler, self._log, self._mark = handler, context.log, mark(tenant)
        self._reported = reported
        self._size = self._logged = 0
        self._warned: set[str] = set()
        self._passed: set[str] = set()

    def handle_message(self, message: Any) -> None:
        method = message.get("method") if isinstance(message, dict) else None
        params = message.get("params") if isinstance(message, dict) else None
        params = params if isinstance(params, dict) else {}
        if method in ("opened", "closed") and method in self._passed:
            self.drop(f"a repeated {method!r} message")
        elif method in ("opened", "closed"):
            # Once each: Dagster's handler warns, quoting it, of every message after `closed`.
            # An exception in `closed` is in the trainer's output, which the failure shows.
            self._passed.add(method)
            self._handler.handle_message({"method": method, "params": {}})
        elif method == "log" and self._logged >= LOG_MESSAGES:
            self.drop(f"log messages past the first {LOG_MESSAGES}")
        elif method == "log":
            self._logged += 1
            level = params.get("level") if params.get("level") in LOG_LEVELS else "info"
            self._log.log(level, self._mark + str(params.get("message"))[:LOG_MESSAGE_CHARS])
        elif method == "report_asset_materialization":
            metadata = params.get("metadata") or {}
            if isinstance(metadata, dict):
                for key, value in metadata.items():
                    raw = value.get("raw_value") if isinstance(value, dict) else value
                    self._keep(str(key), raw)
        elif method == "report_custom_message":
            self._keep(None, params.get("payload"))
        elif method == "report_asset_check":
            self.drop("an asset check (a team's code reports no check results)")
        elif method in KNOWN_METHODS:
            self.drop(f"a {method!r} message")
        else:
            self.drop("a message of no Pipes method")

    def _keep(self, key: str | None, value: Any) -> None:
        size = len(json.dumps(value, default=str))
        entries = len(self._reported["metadata"]) + len(self._reported["custom_messages"])
        if entries >= REPORTED_ENTRIES or self._size + size > REPORTED_BYTES:
            self.drop(
                f"reported data over {REPORTED_ENTRIES} entries or {REPORTED_BYTES // 1024} KiB"
            )
            return
        self._size += size
        if key is None:
            self._reported["custom_messages"].append(value)
        else:
            self._reported["metadata"][key] = value

    def drop(self, what: str) -> None:
        if what not in self._warned:  # once per kind, so a flood does not flood the log
            self._warned.add(what)
            self._log.warning(f"{self._mark}dropped {what}")

    def report_pipes_framework_exception(self, origin: str, exc_info: Any) -> None:
        self._handler.report_pipes_framework_exception(origin, exc_info)
