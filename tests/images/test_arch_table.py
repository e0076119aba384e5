"""The arch x CUDA table (kitctl/core/pins.py CUDA_ARCHS) against the pinned CUDAs of both providers, and the
refusals of impossible pairs in build, render, doctor and the reproduce planner (issue 29)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core import pins
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError
from kitctl.core.validate import KNOWN_ARCHS
from kitctl.host import doctor
from kitctl.host.gpus import parse_csv
from kitctl.images.request import BuildRequest


def test_every_pinned_cuda_has_its_range_and_every_known_arch_a_builder():
    table = {(p, c): (lo, hi) for p, c, lo, hi in pins.arch_table()}
    assert set(table) == set(pins.pinned_cudas())             # no pinned CUDA outside the table
    wheels = pins.load().providers.wheels.cuda
    assert table[("wheels", wheels)] == (75, 121)              # CUDA 13 dropped sm_50..sm_72
    for v in pins.cuda_images():
        lo, hi = table[("nvidia", v)]
        assert lo == (75 if pins.mm(v) >= (13, 0) else 50)
        assert hi == (90 if pins.mm(v) < (12, 8) else 120 if pins.mm(v) < (12, 9) else 121)
    for a in KNOWN_ARCHS:
        assert pins.builders(a), f"sm_{a}: no pinned CUDA builds it"
    assert pins.unbuildable([60, 70, 75, 120], "13.0") == [60, 70]
    assert pins.unbuildable([75, 90, 100, 120], "12.4.1") == [100, 120]
    assert pins.unbuildable([70], "11.8") == []                # older than the table: not judged


@pytest.mark.parametrize("provider,cuda,archs,bad,fix", [
    ("wheels", None, [70], "sm_70", "CUDA 12.8.1"),
    ("nvidia", "12.4.1", [120], "sm_120", "CUDA 12.8.1"),
    ("nvidia", "13.0.1", [61, 86], "sm_61", "CUDA 12.8.1"),
])
def test_build_request_refuses_a_cuda_that_cannot_build_the_arch(provider, cuda, archs, bad, fix):
    with pytest.raises(ConfigError) as e:
        BuildRequest.from_config(KitConfig(), provider=provider, cuda=cuda, archs=archs)
    assert e.value.exit_code == 2 and bad in e.value.message and "cannot build" in e.value.message
    assert fix in e.value.hint
    # the data image compiles nothing for a GPU
    BuildRequest.from_config(KitConfig(), provider=provider, cuda=cuda, archs=archs, target="data")


def test_no_single_cuda_for_pascal_and_a_cuda13_only_arch_says_so(monkeypatch):
    monkeypatch.setattr(pins, "CUDA_ARCHS", (((12, 0), 50, 90), ((13, 0), 75, 121)))
    with pytest.raises(ConfigError) as e:
        pins.check_buildable([60, 120], "13.0", "wheels")
    assert "no one pinned CUDA builds all of them" in e.value.hint and "sm_60: CUDA 12.2.2 (nvidia)" in e.value.hint


def test_doctor_judges_the_providers_cuda_against_the_gpus():
    v100 = parse_csv("0, Tesla V100-SXM2-32GB, 7.0, 32768 MiB, 580.65.06\n", "v100")
    facts = doctor.Facts(docker_cli=True, engine="28", buildx="0.2", gpus=v100, free_bytes=500 * 10**9)
    rows = {f.check: f for f in doctor.evaluate(facts, KitConfig(provider="wheels", arch=[70]))}
    assert rows["CUDA builds the archs"].status == "fail" and "12.8.1" in rows["CUDA builds the archs"].meaning
    v = {x.purpose: x for x in doctor.verdicts(list(rows.values()), facts, KitConfig(provider="wheels"))}
    assert not v["build"].ready and "cannot build sm_70" in v["build"].reason
    ok = {f.check: f for f in doctor.evaluate(facts, KitConfig(provider="nvidia", arch=[70]))}
    assert ok["CUDA builds the archs"].status == "ok" and "sm_50..sm_120" in ok["CUDA builds the archs"].detail


@pytest.mark.slow
def test_build_and_render_refuse_before_anything_is_downloaded(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "KIT_DATA_ROOT": str(tmp_path / "d")}
    r = kitctl_proc.run(["build", "--provider", "wheels", "--arch", "70", "--dry-run"], env=env, cwd=tmp_path)
    assert r.returncode == 2 and "cannot build sm_70" in " ".join(r.stderr.split())
    r = kitctl_proc.run(["render", "--cuda", "12.4.1", "--arch", "120", "--out", str(tmp_path / "r")], env=env,
                        cwd=tmp_path)
    assert r.returncode == 2 and "CUDA 12.8.1" in " ".join(r.stderr.split())
    assert not Path(tmp_path / "r").exists()
