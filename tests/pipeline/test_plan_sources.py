"""The plan names its sources (issue 27): per stage, where each download comes from after every mirror -- the
dry run's text, ``--json``'s ``sources`` -- and a registry mirror leaves no Docker Hub image in the wheels plan."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

import kitctl_proc

HS = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"


def _plan(tmp_path, *args, **env_extra):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "COLUMNS": "200", **env_extra}
    r = kitctl_proc.run(["reproduce", "--dry-run", *args], env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def test_json_sources_per_stage_after_every_mirror(tmp_path):
    r = _plan(tmp_path, "--json", "--hellaswag-source", "http://127.0.0.1:8/hs.jsonl",
              KIT_PROVIDER="wheels", KIT_MIRRORS__REGISTRY="m.example:5000",
              KIT_MIRRORS__HF_ENDPOINT="https://hf-mirror.example", KIT_MIRRORS__PIP_INDEX="https://pypi.m.example/simple",
              KIT_MIRRORS__LLMC_SRC="https://git.m.example/llm.c.tar.gz")
    stages = {s["name"]: {(x["what"], x["from"]) for x in s["sources"]} for s in json.loads(r.stdout)["stages"]}
    assert stages["build"] == {("base image", "m.example:5000/library/debian:bookworm"),
                               ("apt", "http://deb.debian.org/debian"), ("pip", "https://pypi.m.example/simple"),
                               ("llm.c", "https://git.m.example/llm.c.tar.gz")}
    assert stages["data"] == {("dataset", "https://hf-mirror.example/datasets/HuggingFaceFW/fineweb")}
    assert stages["hellaswag"] == {("HellaSwag", "http://127.0.0.1:8/hs.jsonl")}      # --hellaswag-source URL
    assert stages["train"] == stages["report"] == set()


@pytest.mark.slow       # a second reproduce plan in a subprocess (~0.7 s); the JSON one above stays in the fast tier
def test_text_plan_lists_the_hosts_and_the_defaults_without_mirrors(tmp_path):
    out = _plan(tmp_path).stdout
    assert "downloads from (after mirrors" in out
    assert "  build: base image nvidia/cuda:" in out and "pip https://pypi.org/simple" in out
    assert "  data: dataset https://huggingface.co/datasets/HuggingFaceFW/fineweb" in out
    assert f"  hellaswag: HellaSwag {HS}" in out


def _labelled_image(ref: str, labels: dict[str, str]) -> None:
    """A layer-less image (FROM scratch) carrying only ``labels``: what the plan reads of an existing image."""
    lines = ["FROM scratch", *(f'LABEL {k}="{v}"' for k, v in labels.items())]
    subprocess.run(["docker", "build", "-q", "-t", ref, "-"], input="\n".join(lines) + "\n", text=True, check=True,
                   capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})


@pytest.mark.docker
def test_an_existing_image_of_another_recipe_is_planned_as_a_rebuild_with_its_download(tmp_path):
    """Issue 27: any `<image>:latest` (another provider's, another CUDA's) made the plan say "build: done"."""
    from kitctl.core.config import KitConfig
    from kitctl.images import render, request

    image = f"llmc-kit-test-labels-{os.getpid()}"
    req = request.BuildRequest.from_config(KitConfig(arch=[75, 86]), provider="nvidia")
    same = render.image_labels(req, "runtime")
    env = {"KIT_IMAGE": image, "KIT_ARCH": "75,86", "KIT_PROVIDER": "nvidia"}
    try:
        _labelled_image(f"{image}:latest", {**same, "org.llmc-kit.provider": "wheels", "org.llmc-kit.cuda": "13.0.2"})
        build = next(s for s in json.loads(_plan(tmp_path, "--json", **env).stdout)["stages"] if s["name"] == "build")
        assert build["status"] == "to do" and build["download_bytes"] > 0, build
        assert "rebuild" in build["detail"] and "provider: image wheels, this plan nvidia" in build["detail"]
        _labelled_image(f"{image}:latest", same)
        build = next(s for s in json.loads(_plan(tmp_path, "--json", **env).stdout)["stages"] if s["name"] == "build")
        assert build["status"] == "done" and build["download_bytes"] == 0, build
    finally:
        subprocess.run(["docker", "rmi", "-f", f"{image}:latest"], capture_output=True)


@pytest.mark.slow
def test_bundle_dry_run_names_every_download_with_its_host(tmp_path):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "COLUMNS": "200",
           "KIT_MIRRORS__HELLASWAG_URL": "https://hs.m.example/hellaswag_val.jsonl",
           "KIT_MIRRORS__PIP_INDEX": "https://pypi.m.example/simple"}
    r = kitctl_proc.run(["bundle", "--out", str(tmp_path / "b.tar"), "--no-images", "--dry-run"], env=env,
                        cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "llm.c: DOWNLOAD https://github.com/karpathy/llm.c/archive/" in out
    assert "HellaSwag: DOWNLOAD https://hs.m.example/hellaswag_val.jsonl" in out
    assert "DOWNLOAD from https://pypi.m.example/simple" in out and "wheelhouse" in out
    assert not (tmp_path / "b.tar").exists() and not (tmp_path / "root").exists()      # nothing written


@pytest.mark.docker
def test_bundle_dry_run_refuses_a_missing_runtime_image_up_front(tmp_path):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "KIT_IMAGE": f"llmc-kit-absent-{os.getpid()}"}
    r = kitctl_proc.run(["bundle", "--out", str(tmp_path / "b.tar"), "--dry-run"], env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "no image llmc-kit-absent-" in r.stderr and "--no-images" in r.stderr, r.stderr
