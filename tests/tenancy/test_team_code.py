"""A tenant's `code/` folder: its Python project, run only by a trainer sandbox or pod. No
platform process opens its sources: not the code locations, not `dg check defs`, not the CLI
(they read its manifest, pyproject.toml and uv.lock, as data: it names the trainer image).
Models naming a trainer are checked against it by file name at load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from platform_assets.tenancy.catalog import PlatformConfigError, load_all, load_tenant
from platform_assets.tenancy.limits import LIMITS_PATH, read_limits
from tests.tenancy.test_team_folders import DEMO_DEFS, MODEL_FILE, refused

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LGBM_MODEL = Path("ridehail/models/driver_churn_lgbm/defs.yaml")

# Imported at start-up by every Python process (and child) with this folder on PYTHONPATH: an
# audit hook that records every file opened or module imported from a tenant's code/ folder.
SITECUSTOMIZE = """
import os, sys
_LOG = os.environ["MLPLAT_TEST_CODE_LOG"]
_MARK = os.sep + "code" + os.sep

def _hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
    elif event == "import" and len(args) > 1 and args[1]:
        path = str(args[1])
    else:
        return
    manifest = os.path.basename(path) in ("pyproject.toml", "uv.lock")  # data: CODE_MANIFEST
    if _MARK in path and os.sep + "defs" + os.sep in path and not manifest:
        with open(_LOG, "a") as log:
            log.write(f"{event} {path}\\n")

sys.addaudithook(_hook)
"""


@pytest.fixture(autouse=True)
def _fresh_catalog():
    load_tenant.cache_clear()
    yield
    load_tenant.cache_clear()


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([str(BIN / "dg"), "check", "defs"], id="dg-check-defs"),
        pytest.param([str(BIN / "mlplat"), "validate"], id="mlplat-validate"),
        pytest.param(
            [sys.executable, "-c", "import platform_assets.definitions as d; d.defs()"],
            id="code-location",
        ),
    ],
)
def test_no_platform_process_opens_the_team_code(tmp_path, command):
    """The demo's ridehail tenant has code/ and a model naming its trainer; loading everything
    the platform loads opens none of its files (an audit hook in every process says so)."""
    assert (DEMO_DEFS / "ridehail" / "code" / "pyproject.toml").is_file()
    assert opened_by(command, tmp_path) == ""


def test_the_audit_hook_sees_a_process_that_reads_the_team_code(tmp_path):
    """The control: the same hook does record a read of the team's code."""
    churn = DEMO_DEFS / "ridehail" / "code" / "src" / "ridehail_models" / "churn.py"
    command = [sys.executable, "-c", f"open({str(churn)!r}).read()"]
    assert opened_by(command, tmp_path) == f"open {churn}\n"


def opened_by(command: list[str], tmp_path: Path) -> str:
    """What `command`'s processes opened or imported from a tenant's code/ folder."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "opened.log"
    log.touch()
    env = {
        **os.environ,
        "MLPLAT_ENV": "local",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "MLPLAT_TEST_CODE_LOG": str(log),
    }
    env.pop("MLPLAT_DEFS_ROOT", None)
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return log.read_text()


def test_a_model_naming_a_trainer_needs_the_tenants_project(root):
    shutil.rmtree(root / "ridehail" / "code")
    path = root / LGBM_MODEL
    assert refused(root) == (
        f"{path}: attributes.trainer.entrypoint: the trainer needs the tenant's Python project: "
        f"{root / 'ridehail' / 'code'}/pyproject.toml does not exist (docs/trainers.md)"
    )


def test_a_trainer_module_not_in_the_project_is_refused(root):
    path = root / LGBM_MODEL
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["trainer"]["entrypoint"] = "ridehail_models.retention:train"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    src = root / "ridehail" / "code" / "src"
    assert refused(root) == (
        f"{path}: attributes.trainer.entrypoint: module 'ridehail_models.retention' is not in "
        f"{src} (looked for code/src/ridehail_models/retention.py and "
        "code/src/ridehail_models/retention/__init__.py)"
    )


def test_an_entrypoint_that_is_not_module_colon_function_is_refused(root):
    path = root / LGBM_MODEL
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["trainer"]["entrypoint"] = "../../etc:train"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert refused(root) == (
        f"{path}: attributes.trainer.entrypoint: '../../etc:train' must look like "
        "'package.module:function' (a module inside the tenant's code/ folder and a function "
        "in it)"
    )


def test_a_model_with_both_an_algorithm_and_a_trainer_is_refused(root):
    path = root / LGBM_MODEL
    doc = yaml.safe_load(path.read_text())
    doc["attributes"]["algorithm"] = "lightgbm"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert refused(root) == (
        f"{path}: attributes: set exactly one of `algorithm` (a built-in) and `trainer` (the "
        "team's own code in code/)"
    )


def test_a_model_with_neither_is_refused(root):
    path = root / MODEL_FILE
    doc = yaml.safe_load(path.read_text())
    del doc["attributes"]["algorithm"], doc["attributes"]["params"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert refused(root) == (
        f"{path}: attributes: set exactly one of `algorithm` (a built-in) and `trainer` (the "
        "team's own code in code/)"
    )


def test_code_that_is_a_file_is_refused(root):
    shutil.rmtree(root / "growth" / "code", ignore_errors=True)
    (root / "growth" / "code").write_text("not a project")
    assert refused(root) == (
        f"{root / 'growth' / 'code'}: <file>: code must be a folder: the team's Python project, "
        "with its pyproject.toml (docs/trainers.md)"
    )


def test_code_below_the_tenant_folder_is_still_python_refused(root):
    """Only the top-level code/ is the team's project; a code/ folder deeper is not."""
    path = root / "ridehail" / "models" / "driver_churn" / "code" / "train.py"
    path.parent.mkdir()
    path.write_text("print('hello')\n")
    assert refused(root) == (
        f"{path}: <file>: Python files are not allowed in a tenant folder outside its code/ "
        "project: team code runs only as a model's trainer, from code/ (docs/trainers.md)"
    )


def test_the_demo_tenants_load_with_ridehails_code(root):
    catalogs = load_all(root)
    spec = catalogs["ridehail"].models["driver_churn_lgbm"]
    assert spec.trainer is not None and spec.trainer.flavor == "lightgbm"
    assert json.loads(json.dumps(spec.trainer.params))["gamma"] == 2.0


def test_a_symlinked_code_folder_is_refused(root, tmp_path):
    code = root / "ridehail" / "code"
    shutil.move(code, tmp_path / "elsewhere")
    code.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PlatformConfigError) as exc:
        load_all(root)
    assert str(exc.value) == (
        f"{code}: <file>: symlinks are not allowed in a tenant folder (copy the file instead)"
    )


def test_trainer_limits_fall_back_to_the_defaults_one_by_one(tmp_path):
    doc = yaml.safe_load(LIMITS_PATH.read_text())
    doc["tenants"]["ridehail"]["trainer"] = {"timeout_s": 60}
    path = tmp_path / "limits.yaml"
    path.write_text(yaml.safe_dump(doc))
    limits = read_limits(path).for_tenant("ridehail")
    assert (limits.trainer.timeout_s, limits.trainer.artifact_mib) == (60, 64)


def test_a_trainer_limit_out_of_range_is_refused(tmp_path):
    doc = yaml.safe_load(LIMITS_PATH.read_text())
    doc["defaults"]["trainer"]["artifact_mib"] = 100000
    path = tmp_path / "limits.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PlatformConfigError) as err:
        read_limits(path)
    assert str(err.value) == (
        f"{path}: defaults.trainer.artifact_mib: Input should be less than or equal to 4096"
    )
