"""The kit travels in the bundle (issue 27): `kitctl bundle` packs a wheelhouse (kitctl's wheel and every
dependency at the locked version, each with its sha256 in the manifest), and a box with nothing but Python and
the bundle installs the kit with README's exact commands inside a network namespace with no network
(`unshare -n`, root), then plans a reproduce from the bundle with it.

The dependencies' wheels (~60, ~140 MB) come from `pip download` once and are kept in the user's cache between
test runs (seeded into the data root's wheelhouse cache, which the kit itself keeps per lock x Python x
platform), so a run after the first downloads nothing but hatchling for the kit's own wheel.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core import bundle as bf
from kitctl.core.layout import DataLayout
from kitctl.pipeline import wheelhouse

pytestmark = pytest.mark.slow          # a wheel build, a wheelhouse (cached), a venv installed from it

UNSHARE = shutil.which("unshare") if shutil.which("ip") else None
TEST_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmc-kit-tests" / "wheelhouse"


def _lock_names() -> dict[str, str]:
    out = {}
    for line in (Path(__file__).resolve().parents[2] / "docker" / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, ver = line.split("==", 1)
            out[name.strip().lower().replace("-", "_").replace(".", "_")] = ver.strip()
    return out


@pytest.fixture(scope="module")
def wheel_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheels")
    root = tmp / "data"
    key = wheelhouse.cache_key(wheelhouse.WheelOptions())
    seeded = TEST_CACHE / key
    cache = DataLayout(root).wheelhouse_cache / key
    if (seeded / wheelhouse.COMPLETE).is_file():
        shutil.copytree(seeded, cache)
    llmc = tmp / "llm.c"                             # a checkout's shape with no git HEAD: unverified
    (llmc / "llmc").mkdir(parents=True)
    (llmc / "train_gpt2.cu").write_text("int main() { return 0; }\n")
    (llmc / "Makefile").write_text("all:\n")
    hs = tmp / "hellaswag_val.jsonl"
    hs.write_text("".join(json.dumps({"ctx": f"ctx {i}", "endings": ["a", "b", "c", "d"], "label": i % 4}) + "\n"
                          for i in range(8)))
    out = tmp / "offline.tar"
    env = {**os.environ, "KIT_DATA_ROOT": str(root), "COLUMNS": "200"}
    r = kitctl_proc.run(["bundle", "--out", str(out), "--dataset", "tinyshakespeare", "--hellaswag-source", str(hs),
                         "--llmc-src", str(llmc), "--no-images"], env=env, cwd=tmp, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    if not (seeded / wheelhouse.COMPLETE).is_file():
        shutil.rmtree(seeded, ignore_errors=True)
        seeded.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(cache, seeded)
    return {"bundle": out, "tmp": tmp, "stdout": r.stdout, "cache": cache, "hellaswag": hs, "llmc": llmc}


def test_the_wheelhouse_is_packed_with_every_locked_dependency_and_its_sha256(wheel_bundle):
    with tarfile.open(wheel_bundle["bundle"]) as tf:
        names = tf.getnames()
        manifest = json.loads(tf.extractfile(names[0]).read())
    wheels = [n for n in names if n.startswith(bf.WHEELS + "/")]
    assert all(n.endswith(".whl") for n in wheels) and len(wheels) > 40
    recorded = {m["name"]: m for m in manifest["members"]}
    assert all(len(recorded[n]["sha256"]) == 64 for n in wheels)          # in the manifest like every member
    kit = [n for n in wheels if Path(n).name.startswith("llmc_kit-")]
    assert kit == [manifest["contents"]["wheels"]["kit_wheel"]]
    locked = _lock_names()
    for n in wheels:                                    # every dependency at the lock's version
        dist, ver = Path(n).name.split("-")[:2]
        if dist != "llmc_kit":
            assert locked.get(dist.lower()) == ver, n
    assert {"numpy", "pydantic", "typer", "tiktoken", "pyarrow"} <= {Path(n).name.split("-")[0] for n in wheels}
    assert not [n for n in wheels if Path(n).name.split("-")[0] in ("torch", "transformers", "pytest")]
    assert manifest["contents"]["llmc_verified"] is False and manifest["contents"]["llmc_commit"] is None
    assert "tar -xf offline.tar wheels && python3 -m venv kit && kit/bin/pip install --no-index --find-links " \
           "wheels llmc-kit" in wheel_bundle["stdout"]


@pytest.mark.skipif(UNSHARE is None or os.geteuid() != 0, reason="unshare -n needs root and iproute2")
def test_a_box_with_nothing_but_python_installs_the_kit_from_the_bundle_and_plans(wheel_bundle, tmp_path):
    bundle = wheel_bundle["bundle"]
    py = Path(sys.executable).resolve()                 # the Python the wheelhouse was made for
    script = (f"ip link set lo up && cd {tmp_path} && "       # README's offline commands, word for word
              f"tar -xf {bundle} wheels && {py} -m venv kit && kit/bin/pip install --no-index --find-links wheels "
              f"llmc-kit && kit/bin/kitctl reproduce --bundle {bundle} --runtime native --dry-run --json")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KIT_DATA_ROOT": str(tmp_path / "data"),
           "PIP_CONFIG_FILE": os.devnull}      # nothing but Python: no pip config, no index, no find-links
    r = subprocess.run([UNSHARE, "-n", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = json.loads(r.stdout[r.stdout.index("{"):])
    assert {s["name"]: s["download_bytes"] for s in plan["stages"]} == {s["name"]: 0 for s in plan["stages"]}
    assert all(s["sources"] == [] for s in plan["stages"])          # nothing comes from the network
    site = subprocess.run([str(tmp_path / "kit" / "bin" / "python"), "-c", "import kitctl; print(kitctl.__file__)"],
                          capture_output=True, text=True, check=True, env=env, cwd=tmp_path).stdout
    assert "site-packages" in site                       # the installed wheel, not a checkout
    # the installed kit bundles itself again, still offline: its wheel packed again from the installed files, the
    # dependencies from the data root's wheelhouse cache (copied here: the first bundle's)
    shutil.copytree(wheel_bundle["cache"], DataLayout(tmp_path / "data").wheelhouse_cache / wheel_bundle["cache"].name)
    again = tmp_path / "again.tar"
    r = subprocess.run([UNSHARE, "-n", str(tmp_path / "kit" / "bin" / "kitctl"), "bundle", "--out", str(again),
                        "--no-images", "--dataset", "tinyshakespeare", "--hellaswag-source",
                        str(wheel_bundle["hellaswag"]), "--llmc-src", str(wheel_bundle["llmc"])],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "packed again from this installed kitctl" in r.stdout
    with tarfile.open(again) as a, tarfile.open(bundle) as b:
        wheels = sorted(n for n in a.getnames() if n.startswith(bf.WHEELS + "/"))
        assert wheels == sorted(n for n in b.getnames() if n.startswith(bf.WHEELS + "/"))
