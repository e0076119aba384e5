"""The kit installs as a wheel and works from an empty folder: nothing is read from this checkout.

Builds the wheel (hatchling, force-included docker/ native/ datasets/ compose.yaml), installs it with --no-deps
into a fresh venv that borrows the test venv's third-party packages through a plain .pth path line (so the
editable install's own .pth, which points at this checkout, is never processed), then runs the three commands
the restructure issue names from an empty folder.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow          # a wheel build and a venv (once per run), then kitctl from it

REPO = Path(__file__).resolve().parents[1]


def _make_wheel_venv(work: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "hatchling" in r.stderr and "No matching distribution" in r.stderr:
        pytest.skip("hatchling (the build backend) is not reachable on this machine's package index")
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = (work / "dist").glob("llmc_kit-*.whl")
    venv = work / "venv"
    # no pip of its own (ensurepip costs seconds): the test venv's pip installs into it with --python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(whl)], check=True, timeout=300)


@pytest.fixture(scope="session")
def wheel_kitctl(once_per_run) -> Path:
    """kitctl installed from the wheel into a fresh venv: made once per test run, shared by the xdist workers."""
    venv = once_per_run("wheel", _make_wheel_venv) / "venv"
    assert (venv / "bin" / "kitctl").is_file()
    return venv / "bin" / "kitctl"


def _run(kitctl: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{kitctl.parent}:/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "200",
           "KIT_DATA_ROOT": str(cwd / "data")}
    return subprocess.run([str(kitctl), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_wheel_does_not_import_the_checkout(wheel_kitctl, tmp_path):
    py = wheel_kitctl.parent / "python"
    r = subprocess.run([str(py), "-c", "import kitctl, kitctl.core.resources as r; print(kitctl.__file__); "
                        "print(r.share_dir())"], cwd=tmp_path, capture_output=True, text=True, check=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})     # no PYTHONPATH to a checkout
    pkg, share = r.stdout.split()
    assert not pkg.startswith(str(REPO)) and share.endswith("_share"), r.stdout


def test_wheel_demo_from_an_empty_folder(wheel_kitctl, tmp_path):
    """`kitctl demo` (the README's first command) end to end, once per test run, from the installed wheel: it
    says what it skipped, and makes real shards in llm.c's format from the embedded corpus and tokenizer."""
    root = tmp_path / "demo"
    r = _run(wheel_kitctl, tmp_path, "demo", "--data-root", str(root))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "demo summary" in r.stdout and "failed" not in r.stdout.split("demo summary")[1]
    assert "\u2026" not in r.stdout.split("demo summary")[1]      # whole paths, never cut with "..."
    val = np.fromfile(root / "tinyshakespeare" / "tinyshakespeare_val_000000.bin", dtype=np.int32, count=3)
    assert list(val) == [20240520, 1, 32768]
    assert (root / "gpt2_tokenizer.bin").exists() and (root / "report.png").stat().st_size > 10_000
    assert list((root / "runs" / "h100-tinyshakespeare-150" / "tb").glob("events.out.tfevents.*"))
    if shutil.which("nvidia-smi") is None:
        assert "no NVIDIA GPU here" in r.stdout        # training is skipped, and the demo says why


def test_wheel_data_tinyshakespeare_native(wheel_kitctl, tmp_path):
    r = _run(wheel_kitctl, tmp_path, "data", "tinyshakespeare", "--runtime", "native")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    val = np.fromfile(tmp_path / "data" / "tinyshakespeare" / "tinyshakespeare_val_000000.bin", dtype=np.int32,
                      count=3)
    assert list(val) == [20240520, 1, 32768]


def test_wheel_render_from_an_empty_folder(wheel_kitctl, tmp_path):
    r = _run(wheel_kitctl, tmp_path, "render", "--out", str(tmp_path / "ctx"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = (tmp_path / "ctx" / "Dockerfile").read_text()
    assert "FROM" in text and (tmp_path / "ctx" / "native" / "build.sh").is_file()
    assert (tmp_path / "ctx" / "kitctl" / "cli.py").is_file() and not (tmp_path / "ctx" / "kitctl" / "_share").exists()
    assert (tmp_path / "ctx" / "datasets" / "tinyshakespeare.yaml").is_file()
