"""train's face: the names other packages use are exported from kitctl/train/__init__.py, and the import-linter
contract in pyproject.toml holds every other package to them (kitctl.train.cli besides)."""
from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kitctl
import kitctl.train as train

try:
    import tomllib
except ModuleNotFoundError:     # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
FACE = "train's face"


def _contract() -> dict:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(FACE))


def test_face_exports_exactly_its_all():
    assert len(train.__all__) == len(set(train.__all__)) and list(train._HOMES) == train.__all__
    # what type checkers and import-linter see (the TYPE_CHECKING imports) is the same names from the same modules
    import ast

    tree = ast.parse(Path(train.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen = {a.asname or a.name: n.module.rsplit(".", 1)[-1] for n in block.body if isinstance(n, ast.ImportFrom)
            for a in n.names}
    assert seen == train._HOMES
    for name, home in train._HOMES.items():    # each name is its module's own object, loaded on first use
        assert getattr(train, name) is getattr(importlib.import_module(f"kitctl.train.{home}"), name), name
    with pytest.raises(AttributeError):
        train.Decided     # noqa: B018  (behind the face, and gone)
    missing = [n for n in train.__all__ if not hasattr(train, n)]
    assert not missing, missing
    ns: dict = {}
    exec("from kitctl.train import *", ns)
    assert set(ns) - {"__builtins__"} == set(train.__all__)


def test_face_contract_covers_every_other_package():
    """A new top-level package or module of kitctl is held to the face too (it must be listed)."""
    tops = {f"kitctl.{m.name}" for m in pkgutil.iter_modules(kitctl.__path__)} - {"kitctl.train"}
    c = _contract()
    assert c["type"] == "forbidden" and c["forbidden_modules"] == ["kitctl.train.*"]
    assert set(c["source_modules"]) == tops
    assert sorted(c["ignore_imports"]) == ["kitctl.** -> kitctl.train.cli"]
    for allowed in ("kitctl.train.cli",):
        importlib.import_module(allowed)


def _lint(tmp: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (the lint extra)")
    return subprocess.run([str(exe), "--config", str(tmp / "pyproject.toml"), "--contract", _contract_id(tmp)],
                          cwd=tmp, env={"PYTHONPATH": str(tmp), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=120)


def _contract_id(tmp: Path) -> str:
    # a contract is picked by its id; give the face contract one in the copy
    text = (tmp / "pyproject.toml").read_text()
    if 'id = "train-face"' not in text:
        text = text.replace('type = "forbidden"', 'id = "train-face"\ntype = "forbidden"', 1)
        (tmp / "pyproject.toml").write_text(text)
    return "train-face"


@pytest.mark.slow
def test_face_contract_refuses_a_module_behind_the_face(tmp_path):
    """The contract is kept by the kit as it is, and broken by one import from behind the face."""
    shutil.copytree(ROOT / "kitctl", tmp_path / "kitctl", ignore=shutil.ignore_patterns("__pycache__", "_share"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    ok = _lint(tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tmp_path / "kitctl" / "observe" / "sneaky.py").write_text("from kitctl.train.planner import build_plan\n")
    bad = _lint(tmp_path)
    assert bad.returncode != 0 and "kitctl.observe.sneaky -> kitctl.train.planner" in bad.stdout, bad.stdout
    # the face itself and the launcher hook stay open (run.json's record is core's)
    (tmp_path / "kitctl" / "observe" / "sneaky.py").write_text(
        "from kitctl.train import build_plan\nfrom kitctl.train.cli import add_launcher\n"
        "from kitctl.core.run_record import RunRecord\n")
    assert _lint(tmp_path).returncode == 0


def test_face_loads_nothing_until_used_and_steplog_runs_as_a_script(tmp_path):
    """Importing run.json's record does not load the planner, and `python -m kitctl.train.steplog` (docs/train.md)
    runs without runpy's "found in sys.modules" warning (the package does not import it first)."""
    code = ("import sys, kitctl.core.run_folder; "
            "print('kitctl.train.planner' in sys.modules, 'kitctl.train.steplog' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert r.stdout.split() == ["False", "False"], r.stderr
    log = tmp_path / "stdout.log"
    log.write_text("".join(f"step {i:4d}/10 | loss 11.000000 (+0.00z)| norm 1.0000 (+0.00z)| lr 6.00e-04 | "
                           f"10.00 ms | -100.0% bf16 MFU | 100000 tok/s\n" for i in range(1, 5)))
    r = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "kitctl.train.steplog", str(log),
                        "--warmup", "1"], capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "median 10.00 ms/step" in r.stdout, r.stdout + r.stderr
