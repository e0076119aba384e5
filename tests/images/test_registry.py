"""`kitctl build --push` and `--image`: through a real registry on loopback (Debian's docker-registry, started by
.ci/run at KIT_TEST_REGISTRY, default 127.0.0.1:5000).

The CPU-only data stage travels (the runtime image needs CUDA layers too big for CI): pushed with its recipe tags,
removed locally, pulled back by `--image`, its labels checked; an image of another stage is refused naming the
label that differs. The image name is this file's own (llmc-kit-reg) so the session's llmc-kit-test tags stay put.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.docker_fixtures import BASE_IMAGE, CA_BUNDLE

pytestmark = pytest.mark.docker
REGISTRY = os.environ.get("KIT_TEST_REGISTRY", "127.0.0.1:5000")
NAME = "llmc-kit-reg"


def _registry_up() -> bool:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=2):
            return True
    except OSError:
        return False


def _kitctl(args, env, timeout=900):
    return subprocess.run([sys.executable, "-m", "kitctl", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def _remote_digest(repo: str, tag: str) -> str:
    req = urllib.request.Request(f"http://{REGISTRY}/v2/{repo}/manifests/{tag}", method="HEAD", headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Docker-Content-Digest"]


def test_push_remove_pull_back_and_label_check(tmp_path, docker_base_image):
    if not _registry_up():
        pytest.skip(f"no registry at {REGISTRY} (.ci/run starts Debian's docker-registry there)")
    env = {**os.environ, "KIT_IMAGE": NAME, "KIT_PROVIDER": "wheels", "KIT_DATA_ROOT": str(tmp_path / "data"),
           "HOME": str(tmp_path), "COLUMNS": "300"}
    repo = f"{REGISTRY}/{NAME}"
    common = ["build", "--target", "data", "--base-image", BASE_IMAGE, "--arch", "75",
              "--build-dir", str(tmp_path / "build")]
    if CA_BUNDLE.is_file():
        common += ["--ca-cert", str(CA_BUNDLE)]

    # 1. build + push: the recipe tags land in the registry, the digest in pushed.json
    r = _kitctl([*common, "--push", repo], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rec = json.loads((tmp_path / "data" / "images" / "pushed.json").read_text())
    by_ref = {e["ref"]: e for e in rec["images"]}
    assert f"{repo}:data" in by_ref and any(k.startswith(f"{repo}:data-") for k in by_ref)
    assert by_ref[f"{repo}:data"]["digest"] == _remote_digest(NAME, "data")
    assert by_ref[f"{repo}:data"]["labels"]["org.llmc-kit.stage"] == "data"

    # 2. gone locally
    local = [ln for ln in _docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
             if ln.startswith((f"{NAME}:", f"{repo}:")) and "<none>" not in ln]
    assert _docker("rmi", *local).returncode == 0
    assert _docker("image", "inspect", f"{NAME}:data").returncode != 0

    # 3. pulled back instead of built, labels checked, tagged as the local data image with the pushed digest
    r = _kitctl([*common, "--image", repo], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "recipe labels match" in r.stdout and "docker buildx build" not in r.stderr
    digests = json.loads(_docker("image", "inspect", "--format", "{{json .RepoDigests}}", f"{NAME}:data").stdout)
    assert f"{repo}@{by_ref[f'{repo}:data']['digest']}" in digests

    # 3b. `kitctl data --image` pulls REPO:data (again), checks its recipe hash and tokenizes in it
    _docker("rmi", f"{NAME}:data")
    r = _kitctl(["data", "tinyshakespeare", "--image", repo, "--runtime", "docker", "--workers", "1"],
                {**env, "KIT_BASE_IMAGE": BASE_IMAGE})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = " ".join(r.stdout.split())
    assert f"data image: {repo}:data (pulled) is this kit's recipe; tagged {NAME}:data" in out
    assert "done: 338,028 tokens" in out and "natively" not in out

    # 4. an image of another stage is refused, naming what differs
    r = _kitctl(["build", "--target", "runtime", "--arch", "75", "--image", f"{repo}:data"], env)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert "org.llmc-kit.stage: the image has 'data', this plan needs 'runtime'" in r.stderr + r.stdout


def test_pulled_runtime_image_is_what_train_runs(tmp_path, docker_base_image):
    """A runtime image (labels as this plan expects, on the base image: CUDA layers are too big for CI) pushed with
    plain docker; `kitctl build --image` pulls it instead of building and `kitctl train --dry-run` runs it."""
    if not _registry_up():
        pytest.skip(f"no registry at {REGISTRY} (.ci/run starts Debian's docker-registry there)")
    from kitctl.core.config import KitConfig
    from kitctl.images.build import expected_labels
    from kitctl.images.request import BuildRequest

    req = BuildRequest.from_config(KitConfig(image=NAME, provider="wheels"), archs=[90], target="runtime")
    labels = expected_labels(req, None, "runtime")
    remote = f"{REGISTRY}/{NAME}:rt-test"
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\n" + "".join(
        f"LABEL {json.dumps(k)}={json.dumps(v)}\n" for k, v in labels.items()))
    assert _docker("build", "-q", "-t", remote, str(tmp_path / "ctx")).returncode == 0
    assert _docker("push", remote).returncode == 0
    assert _docker("rmi", remote).returncode == 0
    _docker("rmi", f"{NAME}:latest")
    env = {**os.environ, "KIT_IMAGE": NAME, "KIT_PROVIDER": "wheels", "KIT_DATA_ROOT": str(tmp_path / "data"),
           "KIT_RUNTIME": "docker", "HOME": str(tmp_path), "COLUMNS": "300"}
    r = _kitctl(["build", "--target", "runtime", "--arch", "90", "--image", remote], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"pulled {remote}" in r.stdout and f"tagged {NAME}:latest" in r.stdout

    r = _kitctl(["data", "tinyshakespeare", "--runtime", "native", "--shard-size", "65536"], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (tmp_path / "h100.csv").write_text("0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 580.95.05\n")
    r = _kitctl(["train", "--inventory", str(tmp_path / "h100.csv"), "--data", str(tmp_path / "data" / "tinyshakespeare"),
                 "--image", f"{REGISTRY}/{NAME}:rt-test", "--steps", "10", "--no-tune", "--dry-run"], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pushed = json.loads(_docker("image", "inspect", "--format", "{{json .RepoDigests}}", remote).stdout)[0]
    assert f"image: {remote} ({pushed.split('@')[1]}) runs as {NAME}:latest" in r.stdout
    assert f" {NAME}:latest " in r.stdout.strip().splitlines()[-1]          # the docker run line runs it
    from kitctl.train import inspect_image                 # what run.json's `runtime` records for this image
    assert pushed in inspect_image(f"{NAME}:latest").repo_digests

    # reproduce plans a pull instead of a build (once the local image is gone)
    _docker("rmi", f"{NAME}:latest")
    r = _kitctl(["reproduce", "gpt2-124m", "--image", remote, "--inventory", str(tmp_path / "h100.csv"),
                 "--dataset", "tinyshakespeare", "--shard-size", "65536", "--steps", "10", "--dry-run", "--json"], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    build = json.loads(r.stdout)["stages"][1]
    assert build["detail"].startswith(f"pull {remote}") and 0 < build["download_bytes"] < 5e9

    # an image of other pins is refused by train, naming the label
    bad = f"{REGISTRY}/{NAME}:rt-other"
    (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {remote}\nLABEL org.llmc-kit.versions-sha256=0000\n")
    assert _docker("build", "-q", "-t", bad, str(tmp_path / "ctx")).returncode == 0
    r = _kitctl(["train", "--inventory", str(tmp_path / "h100.csv"), "--data", str(tmp_path / "data" / "tinyshakespeare"),
                 "--image", bad, "--steps", "10", "--no-tune", "--dry-run"], env)
    assert r.returncode == 2 and "org.llmc-kit.versions-sha256: the image has '0000'" in r.stderr, r.stderr[-2000:]
