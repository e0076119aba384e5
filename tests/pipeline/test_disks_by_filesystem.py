"""One disk counted once: the data root, the HF cache and Docker's storage (a stand-in root folder) on the same real
filesystem are judged as one sum against its free space by the plan, doctor and preflight (issue 29)."""
from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core.config import KitConfig
from kitctl.host import disks, docker_disk, doctor
from kitctl.pipeline import forecast as fc

REPO = Path(__file__).resolve().parents[2]


def _places(tmp_path: Path) -> tuple[disks.Place, ...]:
    """A data root, an hf_home beside it and a stand-in Docker root dir: three folders, one real filesystem."""
    (tmp_path / "docker").mkdir(parents=True)
    return (disks.locate(disks.DATA_ROOT, tmp_path / "data"),          # not made yet: its parent is probed
            disks.locate(disks.HF_CACHE, tmp_path / "hf"),
            disks.locate(disks.DOCKER, tmp_path / "docker"))


def test_places_on_one_filesystem_are_one_sum(tmp_path):
    places = _places(tmp_path)
    assert len({p.fs for p in places}) == 1 and places[0].fs == f"dev:{os.stat(tmp_path).st_dev}"
    free = places[0].free_bytes
    assert free and places[0].mount and str(tmp_path).startswith(places[0].mount)
    each = int(free * 0.6)                           # each alone fits; the two together do not
    [fs] = disks.group(places, {disks.DATA_ROOT: each, disks.DOCKER: each})
    assert fs.need_bytes == 2 * each and fs.ok is False and fs.purposes == [disks.DATA_ROOT, disks.DOCKER]
    status, detail, meaning = disks.verdict(fs)
    assert status == "fail" and "data root" in detail and "Docker's storage" in detail and "one disk" in detail
    assert "kitctl init --data-root" in meaning and '"data-root"' in meaning and "wheels provider" in meaning
    assert disks.verdict(disks.group(places, {disks.DATA_ROOT: each})[0])[0] == "ok"
    # hf_home's own way out is named when the HF cache shares the disk
    [fs] = disks.group(places, {disks.DATA_ROOT: each, disks.HF_CACHE: each})
    assert "hf_home" in disks.verdict(fs, "wheels")[2] and "wheels provider" not in disks.verdict(fs, "wheels")[2]


def _plan(tmp_path: Path, factor: float) -> fc.Forecast:
    places = _places(tmp_path)
    free = places[0].free_bytes
    hf = int(free * factor)               # the HF cache's parquet and the shards: each ~factor x free
    box = fc.Box(gpus=1, cpus=4, net_bytes_per_s=25e6, free_bytes=free, label="here", docker_root=places[2].path,
                 docker_free_bytes=free, places=places)
    data = fc.DataInput("tokenize", "big", hf // 2, 10, hf, hf)
    train = fc.TrainInput("1x H100", 1, "bf16", 16, 1024, 524288, 10, 124_475_904, 1, 5e5, "estimate")
    return fc.plan_stages(fc.Inputs(box, fc.BuildInput("nvidia", False, "images"), data,
                                    fc.HellaswagInput(10, False, 0), fc.TuneInput("off", 0), train))


def test_the_plan_lists_filesystems_and_counts_one_disk_once(tmp_path):
    from kitctl.pipeline.view import plan_lines

    f = _plan(tmp_path, 0.45)            # HF cache 0.45 + shards 0.45 + build 14 GB: more than the disk
    j = json.loads(json.dumps(f.as_json()))
    [fs] = j["filesystems"]
    assert fs["purposes"] == [disks.DATA_ROOT, disks.HF_CACHE, disks.DOCKER] and fs["ok"] is False
    assert fs["need_bytes"] == fc.remaining_disk(f) + fc.remaining_docker(f) == j["total"]["disk_bytes"] + \
        j["total"]["docker_bytes"]
    assert fs["needs"][disks.HF_CACHE] == f.hf_cache_bytes > 0 and fs["free_bytes"] == f.box.free_bytes
    text = " ".join(" ".join(plan_lines(f)).split())
    assert "one disk: the filesystem at" in text and "too small for this plan" in text and "hf_home" in text
    small = _plan(tmp_path / "b", 0.0001)
    [fs] = small.as_json()["filesystems"]
    assert fs["ok"] is True and "one disk:" in " ".join(plan_lines(small)) and "(ok)" in " ".join(plan_lines(small))
    # another box (--inventory): nothing here is judged
    other = dataclasses.replace(f, box=dataclasses.replace(f.box, places=()))
    assert other.as_json()["filesystems"] == []


def test_doctor_judges_the_sum_where_each_alone_is_ok(tmp_path):
    places = _places(tmp_path)
    free = places[0].free_bytes
    need = doctor.DiskNeed(int(free * 0.7), int(free * 0.5), "the reference plan", 0, hf_cache_bytes=int(free * 0.3))
    facts = doctor.Facts(docker_cli=True, engine="28", buildx="0.2", compose="2", runtimes=["nvidia"],
                         free_bytes=free, shm_bytes=8 * 10**9, data_root=tmp_path / "data", places=list(places),
                         docker=docker_disk.DockerStorage(tmp_path / "docker", "", free, 0, 0))
    rows = {f.check: f for f in doctor.evaluate(facts, KitConfig(data_root=tmp_path / "data"), need)}
    assert rows["data root space"].status == "ok" and rows["docker storage"].status == "ok"
    one = rows["one disk"]
    assert one.status == "fail" and "data root" in one.detail and "Docker's storage" in one.detail
    assert "HF cache" in one.detail and "data-root" in one.meaning
    v = {x.purpose: x for x in doctor.verdicts(list(rows.values()), facts, KitConfig())}
    assert not v["train"].ready and "one disk" in v["train"].reason
    # native runtime: Docker's storage is not this run's; the data root and the HF cache still share the disk
    native = {f.check: f for f in doctor.evaluate(facts, KitConfig(runtime="native"), need)}
    assert "Docker's storage" not in native["one disk"].detail and native["one disk"].status == "ok"


def test_preflight_sums_the_data_root_and_a_docker_root_on_one_disk(tmp_path, monkeypatch):
    from rich.console import Console

    from kitctl.pipeline import stages

    f = _plan(tmp_path, 0.45)
    cfg = KitConfig(data_root=tmp_path / "data", hf_home=tmp_path / "hf", runtime="docker")
    console = Console(file=io.StringIO(), width=200)
    ctx = stages.StageContext(cfg, None, None, f, console, stages.StageLog(tmp_path / "p.log", console),  # type: ignore[arg-type]
                              lambda *a: None)
    st = docker_disk.DockerStorage(tmp_path / "docker", "", f.box.free_bytes, 0, 0)
    [one] = stages.shared_disks(ctx, st, 0)
    assert one.status == "fail" and one.check.startswith("one disk") and "Docker's storage" in one.detail
    assert "data root" in one.detail and "sudo systemctl restart docker" in one.meaning
    # Docker's storage elsewhere (not on this host): the data root and the HF cache are still one sum
    [one] = stages.shared_disks(ctx, docker_disk.DockerStorage(), 0)
    assert "Docker's storage" not in one.detail and "HF cache" in one.detail


@pytest.mark.slow
def test_dry_run_json_has_the_filesystems(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KIT_DATA_ROOT": str(tmp_path / "d")}
    r = kitctl_proc.run(["reproduce", "--dry-run", "--json", "--no-tune", "--runtime", "native"], env=env,
                        timeout=120)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    [fs] = j["filesystems"]
    assert fs["purposes"] == [disks.DATA_ROOT, disks.HF_CACHE]
    assert fs["need_bytes"] == sum(s["disk_bytes"] for s in j["stages"] if s["status"] not in ("done", "skipped"))
    assert fs["free_bytes"] > 0 and str(tmp_path).startswith(fs["mount"])
