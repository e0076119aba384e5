"""Issue 29: the plan's own words work on the command line: the done-when command (`-b 32` on the 2080 Ti alone
refused with the B that fits), `--gpus 0` refused naming `0,`, `--precision` on reproduce, rows naming only the
chosen GPUs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import kitctl_proc

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "docs" / "inventories" / "2080ti-3090.csv"


def _dry(tmp_path, *args):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "300", "KIT_DATA_ROOT": str(tmp_path / "d")}
    return kitctl_proc.run(["reproduce", "gpt2-124m", "--dry-run", "--no-tune", "--inventory", str(SEED), *args],
                           env=env, timeout=120)


@pytest.mark.slow
def test_a_b_that_cannot_fit_the_2080ti_is_refused_with_the_b_that_fits(tmp_path):
    r = _dry(tmp_path, "--gpus", "0,", "--", "-b", "32")
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "B=32" in err and "cannot fit NVIDIA GeForce RTX 2080 Ti" in err, err
    assert "use -b 4 -r 0" in err and "--force-memory" in err
    forced = _dry(tmp_path, "--gpus", "0,", "--force-memory", "--json", "--", "-b", "32")
    assert forced.returncode == 0, forced.stderr
    d = json.loads(forced.stdout)["decisions"]
    assert d["micro_batch"] == {"value": 32, "reason": "your --micro-batch", "source": "given"}


@pytest.mark.slow
def test_gpus_zero_is_a_count_and_the_refusal_names_zero_comma(tmp_path):
    r = _dry(tmp_path, "--gpus", "0")
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "--gpus 0 is a count" in err and "--gpus 0," in err
    one = _dry(tmp_path, "--gpus", "0,")
    out = " ".join(one.stdout.split())
    assert one.returncode == 0 and "1x GeForce RTX 2080 Ti" in out and "3090" not in out, out


@pytest.mark.slow
def test_reproduce_takes_the_precision_its_plan_advises(tmp_path):
    r = _dry(tmp_path, "--precision", "fp32", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)["decisions"]
    assert d["precision"] == {"value": "fp32", "reason": "--precision fp32", "source": "given"}
    assert len(d["gpus"]["value"]) == 2
    bad = _dry(tmp_path, "--precision", "fp16")
    assert bad.returncode == 2 and "bf16 or fp32" in bad.stderr


@pytest.mark.slow
def test_train_dry_run_plans_before_the_data_exists_and_says_so(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "300", "KIT_DATA_ROOT": str(tmp_path / "d")}
    r = kitctl_proc.run(["train", "--gpus", "0,1", "--inventory", str(SEED), "--dry-run"], env=env, timeout=120)
    out = " ".join(r.stdout.split())
    assert r.returncode == 0, r.stderr
    assert "no shards at" in out and "planned on the ~10,000,000,000 tokens" in out and "-x 18882" in out
    assert not (tmp_path / "d").exists()                     # a dry run writes nothing
    # a real run (no --dry-run) still needs the shards: it is refused with how to make them
    r = kitctl_proc.run(["train", "--gpus", "0,1", "--inventory", str(SEED)], env=env, timeout=120)
    assert r.returncode == 2


def test_init_proposes_the_runtime_and_arch_this_box_has_and_says_why():
    from kitctl.cli import propose_setup
    from kitctl.core.errors import ConfigError
    from kitctl.host.gpus import parse_csv

    h100 = parse_csv("0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.86.10\n", "t")
    rt, arch, why = propose_setup(None, None, docker=False, nvcc=True, gpus=h100)
    assert (rt, arch) == ("native", "auto") and "no docker CLI" in why[0] and "sm_90" in why[1]
    rt, arch, why = propose_setup(None, None, docker=True, nvcc=True, gpus=[])
    assert (rt, arch) == ("docker", [75, 86]) and "no GPU seen here" in why[1]
    assert propose_setup("native", "8.0,9.0", docker=True, nvcc=False, gpus=[])[:3] == ("native", [80, 90], [])
    with pytest.raises(ConfigError):
        propose_setup("podman", None, docker=True, nvcc=False, gpus=[])


def test_init_writes_the_runtime_and_arch_given(tmp_path):
    from kitctl.core.config import KitConfig
    from kitctl.core.records import parse_yaml

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = kitctl_proc.run(["init", str(tmp_path / "kit.yaml"), "--data-root", str(tmp_path / "d"), "--runtime",
                         "native", "--arch", "auto"], env=env)
    assert r.returncode == 0, r.stderr
    cfg = KitConfig.model_validate(parse_yaml((tmp_path / "kit.yaml").read_text()))
    assert cfg.runtime == "native" and cfg.arch == "auto"
    bad = kitctl_proc.run(["init", str(tmp_path / "k2.yaml"), "--arch", "65"], env=env)
    assert bad.returncode == 2 and not (tmp_path / "k2.yaml").exists()
