"""Policy as code: the Rego in `policies/` evaluated in-process by regopy (rego-cpp).

`policies/pods/` judge workload manifests (the Gatekeeper `input.review.object` shape, with the
platform's `parameters`); `policies/specs/` judge each tenant's YAML at `mlplat validate`. Every
policy exposes `violation` (what OPA and Gatekeeper read) and `violations(input)`, a function of
its input, which the tests call (rego-cpp mishandles `with input as`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from platform_assets.env import repo_root

Kind = Literal["pods", "specs"]
PACKAGES: dict[Kind, str] = {"pods": "k8s.pods", "specs": "mlplat.specs"}
TEST_RULE = re.compile(r"^(test_\w+)\s+if\b", re.MULTILINE)


def policy_root() -> Path:
    return repo_root() / "policies"


class PolicyError(RuntimeError):
    """A policy that does not compile or evaluate: a bug in the Rego, never a verdict."""


@dataclass(frozen=True)
class Violation:
    policy: str  # e.g. "pods/no_privileged"
    where: str  # the file or manifest at fault
    message: str

    def __str__(self) -> str:
        return f"{self.where}: policy {self.policy}: {self.message}"


def _modules(kind: Kind, root: Path) -> list[Path]:
    """The shared library and the policies of `kind`, without their tests."""
    policies = [p for p in sorted((root / kind).glob("*.rego")) if not p.stem.endswith("_test")]
    return sorted((root / "lib").glob("*.rego")) + policies


@cache
def policy_names(kind: Kind, root: Path | None = None) -> tuple[str, ...]:
    folder = (root or policy_root()) / kind
    return tuple(sorted(p.stem for p in folder.glob("*.rego") if not p.stem.endswith("_test")))


def _interpreter(files: list[Path]):
    import pyarrow.fs as pafs

    # pyarrow's AWS SDK aborts the process (`free(): invalid pointer`) when it first starts
    # after rego-cpp's library is loaded; started first, both live in one process (a step that
    # checks pods and reads an S3 lake).
    pafs.ensure_s3_initialized()
    import regopy

    rego = regopy.Interpreter()
    for path in files:
        rego.add_module(str(path), path.read_text())
    return rego


def _query(rego, query: str) -> Any:
    try:
        # regopy parses rego-cpp's output itself, and that output is not always JSON (rego-cpp
        # leaves quotes unescaped in some `sprintf` results).
        output = rego.query(f"x := {query}")
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{query}: its output is not JSON ({exc}): {exc.doc}") from exc
    text = str(output)
    if text == "undefined":
        return None
    try:
        return json.loads(text)["bindings"]["x"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise PolicyError(f"{query}: {text}") from exc


class PolicySet:
    """The policies of one kind, compiled once; `evaluate` runs all of them on one input."""

    def __init__(self, kind: Kind, root: Path | None = None):
        self.kind = kind
        self.root = root or policy_root()
        self.names = policy_names(kind, self.root)
        self._rego = _interpreter(_modules(kind, self.root))

    def evaluate(self, document: dict[str, Any], where: str) -> list[Violation]:
        """Every violation of every policy on `document`; `where` names it in the messages."""
        self._rego.set_input(document)
        package = PACKAGES[self.kind]
        # One query for all policies: rego-cpp compiles per query.
        query = "{" + ", ".join(f'"{n}": data.{package}.{n}.violation' for n in self.names) + "}"
        try:
            results = _query(self._rego, query)
        except PolicyError:
            results = self._one_by_one(where)
        if results is None or set(results) != set(self.names):
            raise PolicyError(f"a policy in {self.root / self.kind} has no `violation` rule")
        found = [
            Violation(f"{self.kind}/{name}", item.get("file", where), item["msg"])
            for name in self.names
            for item in results[name]
        ]
        return sorted(found, key=lambda v: (v.where, v.policy, v.message))

    def _one_by_one(self, where: str) -> dict[str, Any]:
        """Each policy on its own, after the joint query failed: the error names the policy."""
        results = {}
        for name in self.names:
            try:
                found = _query(self._rego, f"data.{PACKAGES[self.kind]}.{name}.violation")
            except PolicyError as exc:
                raise PolicyError(
                    f"{where}: policy {self.kind}/{name} gave output mlplat cannot read: {exc}"
                ) from exc
            if found is None:
                raise PolicyError(f"policy {self.kind}/{name} has no `violation` rule")
            results[name] = found
        return results


def run_policy_tests(kind: Kind, root: Path | None = None) -> dict[str, bool]:
    """Every `test_` rule of every policy's test file (what `opa test policies/` runs)."""
    root = root or policy_root()
    outcomes = {}
    for name in policy_names(kind, root):
        test_file = root / kind / f"{name}_test.rego"
        rego = _interpreter([*_modules(kind, root), test_file])
        for rule in TEST_RULE.findall(test_file.read_text()):
            result = _query(rego, f"data.{PACKAGES[kind]}.{name}_test.{rule}")
            outcomes[f"{kind}/{name}_test.{rule}"] = result is True
    return outcomes
