"""Bad inputs to `kitctl build` / `render` are refused like a bad kit.yaml: exit 2, what is allowed, no tag."""
from __future__ import annotations


import pytest

import kitctl_proc

from kitctl.host import doctor
from kitctl.images import render as rendering
from kitctl.images import request
from kitctl.core.config import KitConfig
from kitctl.core.validate import KNOWN_ARCHS
from kitctl.core.errors import ConfigError
from kitctl.host.gpus import parse_csv


def kit(tmp_path, *args, config: str = ""):
    (tmp_path / "kit.yaml").write_text(config or "data_root: ./data\n")
    r = kitctl_proc.run(["--config", str(tmp_path / "kit.yaml"), *args], cwd=tmp_path)
    r.stderr = " ".join(r.stderr.split())     # rich wraps long lines
    return r


@pytest.mark.slow
def test_cli_arch_is_checked_like_kit_yaml(tmp_path):
    r = kit(tmp_path, "build", "--dry-run", "--arch", "99")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "unknown compute capability [99]" in r.stderr and str(list(KNOWN_ARCHS)) in r.stderr
    assert "sm99" not in r.stdout
    from_yaml = kit(tmp_path, "build", "--dry-run", config="data_root: ./data\narch: [99]\n")
    assert from_yaml.returncode == 2 and "unknown compute capability [99]" in from_yaml.stderr
    r = kit(tmp_path, "render", "--stdout", "--arch", "75,99")
    assert r.returncode == 2 and "unknown compute capability [99]" in r.stderr


@pytest.mark.slow
def test_cuda_must_name_a_known_nvidia_image(tmp_path):
    for bad in ("banana", "11.0", "12.5.0"):
        with pytest.raises(ConfigError, match="known: 12.2.2, 12.4.1") as e:
            request.BuildRequest.from_config(KitConfig(), provider="nvidia", cuda=bad)
        assert "--base-image" in e.value.hint
    r = kit(tmp_path, "build", "--dry-run", config="data_root: ./data\ncuda: banana\n")
    assert r.returncode == 2 and "cuda 'banana'" in r.stderr and "cubanana" not in r.stdout
    r = kit(tmp_path, "build", "--dry-run", "--cuda", "11.0")
    assert r.returncode == 2 and "known: 12.2.2" in r.stderr
    # every table entry gives a tag of the form NVIDIA publishes; X.Y picks the table's X.Y.Z
    assert request.base_images(request.BuildRequest.from_config(KitConfig(), cuda="12.2.2"))["toolchain"] == \
        "nvidia/cuda:12.2.2-cudnn8-devel-ubuntu22.04"
    req = request.BuildRequest.from_config(KitConfig(), cuda="12.4")
    assert req.cuda == "12.4.1"
    assert request.base_images(req)["runtime"] == "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"
    assert "libnccl-dev=" not in rendering.render(req)   # NCCL as shipped in the devel image: no 12.8 pin
    # an unknown version with --base-image: the user names the image
    own = request.BuildRequest.from_config(KitConfig(), cuda="12.5.1",
                                          base_image="nvcr.io/nvidia/cuda:12.5.1-cudnn-devel-ubuntu22.04")
    assert request.base_images(own)["runtime"] == "nvcr.io/nvidia/cuda:12.5.1-cudnn-runtime-ubuntu22.04"


def test_wheels_provider_takes_only_its_pinned_cuda():
    assert request.BuildRequest.from_config(KitConfig(), provider="wheels", cuda="13.0").cuda == "13.0"
    for bad, hint in (("12.8", "nvcc"), ("13.1", "cuda 13.0"), ("banana", "cuda 13.0")):
        with pytest.raises(ConfigError, match="pinned to CUDA 13.0 only") as e:
            request.BuildRequest.from_config(KitConfig(), provider="wheels", cuda=bad)
        assert hint in e.value.hint


def test_doctor_old_driver_advice_names_an_existing_image():
    facts = dict(docker_cli=True, engine="28.0", buildx="0.20", compose="2.30", runtimes=["nvidia"],
                 free_bytes=500 * 10**9, shm_bytes=8 * 10**9)
    for prov in ("nvidia", "wheels"):
        gpus = parse_csv("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 535.104.05\n")
        f = {x.check: x for x in doctor.evaluate(doctor.Facts(gpus=gpus, **facts), KitConfig(provider=prov, arch=[86]))}
        assert f["driver"].status == "fail" and 'cuda: "12.2.2"' in f["driver"].meaning, f["driver"].meaning
        req = request.BuildRequest.from_config(KitConfig(provider="nvidia", cuda="12.2.2"), archs=[86])
        assert request.base_images(req)["toolchain"].endswith("12.2.2-cudnn8-devel-ubuntu22.04")
    gpus = parse_csv("0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 525.60.13\n")     # CUDA <= 12.0
    f = {x.check: x for x in doctor.evaluate(doctor.Facts(gpus=gpus, **facts), KitConfig(arch=[86]))}
    assert f["driver"].status == "fail" and "update the driver" in f["driver"].meaning
    assert "cuda:" not in f["driver"].meaning
