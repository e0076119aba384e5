"""`kitctl bundle` and `kitctl reproduce --bundle`: one file carries every input across a firewall.

The end-to-end case runs `kitctl reproduce` from a bundle inside a network namespace with no network
(`unshare -n`, needs root), with the stand-in trainer (tests/fake_train_gpt2cu.py) as --binary; a damaged and a
partial bundle are refused (exit 2) naming the member.
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
from kitctl.core.pipeline_state import PipelineState

from fake_gpus import fake_nvidia_smi
from tests.pipeline.test_reproduce import H100, _env, write_inputs

pytestmark = pytest.mark.slow          # bundles built and read back by kitctl in subprocesses

UNSHARE = shutil.which("unshare") if shutil.which("ip") else None


def _kitctl(args, env, netns=False, timeout=300):
    if not netns:
        return kitctl_proc.run(args, env=env, timeout=timeout)
    # a new network namespace: loopback only (mpirun's PMIx needs it up), no route anywhere
    argv = [UNSHARE, "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, "-m", "kitctl", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A bundle (no images) of a small local corpus, a HellaSwag jsonl and an llm.c checkout, packed once."""
    tmp = tmp_path_factory.mktemp("bundle")
    p = write_inputs(tmp)
    llmc_src = tmp / "llm.c"                         # a checkout's shape (the stand-in trainer needs no build)
    (llmc_src / "llmc").mkdir(parents=True)
    (llmc_src / "train_gpt2.cu").write_text("int main() { return 0; }\n")
    (llmc_src / "Makefile").write_text("all:\n")
    (llmc_src / "llmc" / "adamw.cuh").write_text("// stand-in\n")
    (llmc_src / ".env").write_text("SECRET=1\n")    # never packed (the build context's allow-list)
    small = tmp / "small.jsonl"                      # ~1/10 of the corpus: a quick tokenize
    lines = p["corpus"].read_text().splitlines()
    small.write_text("\n".join(lines[: len(lines) // 10]) + "\n")
    cfe = tmp / "cudnn-frontend" / "include"          # native builds: the headers travel too
    (cfe / "cudnn_frontend").mkdir(parents=True)
    (cfe / "cudnn_frontend.h").write_text("#pragma once\n")
    (cfe / "cudnn_frontend" / "graph.h").write_text("#pragma once\n")
    out = tmp / "offline.tar"
    env = _env(tmp)
    r = _kitctl(["bundle", "--out", str(out), "--dataset", str(small), "--hellaswag-source", str(p["hellaswag"]),
                 "--llmc-src", str(llmc_src), "--cudnn-frontend", str(cfe), "--no-images",
                 "--no-wheels"], env)        # the wheelhouse: tests/pipeline/test_bundle_wheels.py
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "not the pinned HellaSwag validation set" in r.stdout and "10,042" in r.stdout   # 12 examples: warned
    return {**p, "small": small, "bundle": out, "tmp": tmp}


def test_bundle_has_manifest_first_with_every_members_sha256(packed):
    with tarfile.open(packed["bundle"]) as tf:
        names = tf.getnames()
        manifest = json.loads(tf.extractfile(names[0]).read())
        assert names[0] == "manifest.json"
        assert sorted(m["name"] for m in manifest["members"]) == sorted(names[1:])
        import hashlib
        for m in manifest["members"]:
            assert hashlib.sha256(tf.extractfile(m["name"]).read()).hexdigest() == m["sha256"], m["name"]
    assert "dataset/small.jsonl" in names and bf.HELLASWAG in names
    assert "cudnn-frontend/include/cudnn_frontend/graph.h" in names
    assert "tokenizer/vocab.bpe" in names and "llmc/llm.c/train_gpt2.cu" in names and "llmc/llm.c/.env" not in names
    assert not [n for n in names if n.startswith("images/")]                       # --no-images
    assert not [f for f in packed["bundle"].parent.iterdir() if f.name.startswith(".")]   # no temp left


@pytest.mark.skipif(UNSHARE is None or os.geteuid() != 0, reason="unshare -n needs root and iproute2")
def test_reproduce_from_a_bundle_with_no_network(packed, tmp_path):
    env = _env(tmp_path, FAKE_TRAIN_STEP_SLEEP="0")
    probe = subprocess.run([UNSHARE, "-n", sys.executable, "-c", "import socket; socket.create_connection("
                            "('140.82.112.3', 443), timeout=3)"], capture_output=True, text=True)
    assert probe.returncode != 0 and "unreachable" in probe.stderr.lower()     # GitHub's address: no route there
    base = ["reproduce", "gpt2-124m", "--bundle", str(packed["bundle"]), "--runtime", "native",
            "--binary", str(packed["binary"]), "--shard-size", "131072", "--steps", "12", "--no-tune"]
    # this box "has" the H100 through _env's stand-in nvidia-smi (--inventory only plans: a run with it is refused)
    r = _kitctl([*base, "--dry-run", "--json"], env, netns=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = json.loads(r.stdout)
    assert {s["name"]: s["download_bytes"] for s in plan["stages"]} == {s["name"]: 0 for s in plan["stages"]}
    r = _kitctl(base, env, netns=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "data" / "runs" / "gpt2-124m"
    st = PipelineState.read(run / "reproduce.json")
    assert st.complete, [(s.name, s.status, s.detail) for s in st.stages]
    assert (run / "report.html").is_file() and (run / "DONE_00000012").exists()
    manifest = json.loads((tmp_path / "data" / "small" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["total_tokens"] > 100_000
    assert "not the pinned HellaSwag validation set" in (run / "logs" / "hellaswag.log").read_text()


def test_a_hub_dataset_not_in_the_bundle_is_refused_not_downloaded(packed, tmp_path):
    r = _kitctl(["reproduce", "gpt2-124m", "--bundle", str(packed["bundle"]), "--dataset", "fineweb10B",
                 "--runtime", "native", "--binary", str(packed["binary"]), "--inventory", str(packed["inventory"]),
                 "--dry-run"], _env(tmp_path))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "holds the dataset" in r.stderr + r.stdout


def _copy(src: Path, dst: Path, cut: int | None = None, flip_in: str | None = None) -> Path:
    data = bytearray(src.read_bytes())
    if flip_in is not None:
        with tarfile.open(src) as tf:
            ti = tf.getmember(flip_in)
        data[ti.offset_data + ti.size // 2] ^= 0xFF
    dst.write_bytes(bytes(data[:cut] if cut is not None else data))
    return dst


@pytest.mark.parametrize("case", ["damaged", "partial"])
def test_damaged_or_partial_bundle_is_refused_naming_the_member(packed, tmp_path, case):
    with tarfile.open(packed["bundle"]) as tf:
        ti = tf.getmember("dataset/small.jsonl")
    if case == "damaged":
        bad = _copy(packed["bundle"], tmp_path / "b.tar", flip_in="dataset/small.jsonl")
    else:
        bad = _copy(packed["bundle"], tmp_path / "b.tar", cut=ti.offset_data + ti.size // 2)
    r = _kitctl(["reproduce", "gpt2-124m", "--bundle", str(bad), "--runtime", "native", "--binary",
                 str(packed["binary"]), "--inventory", str(packed["inventory"]), "--dry-run"], _env(tmp_path))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout + r.stderr
    assert "dataset/small.jsonl" in out, out[-2000:]
    assert ("damaged" if case == "damaged" else "cut short") in out
    assert not (tmp_path / "data" / "bundles").exists() or not [
        d for d in (tmp_path / "data" / "bundles").iterdir() if not d.name.startswith(".")]


@pytest.mark.skipif(UNSHARE is None or os.geteuid() != 0, reason="unshare -n needs root and iproute2")
def test_data_and_hellaswag_from_a_bundle_with_no_network(packed, tmp_path):
    env = _env(tmp_path)
    r = _kitctl(["data", "--bundle", str(packed["bundle"]), "--runtime", "native", "--shard-size", "65536"], env,
                netns=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((tmp_path / "data" / "small" / "manifest.json").read_text())
    assert m["complete"] and "bundles" in m["run"]["source"]
    r = _kitctl(["data", "hellaswag", "--bundle", str(packed["bundle"]), "--runtime", "native"], env, netns=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "data" / "hellaswag" / "hellaswag_val.bin").is_file()
    assert "not the pinned HellaSwag validation set" in r.stdout
    r = _kitctl(["data", "fineweb10B", "--bundle", str(packed["bundle"]), "--runtime", "native"], env, netns=True)
    assert r.returncode == 2 and "the bundle holds" in r.stderr, r.stderr[-2000:]


def _fake_checkout(root: Path) -> Path:
    src = root / "llm.c"
    (src / "llmc").mkdir(parents=True)
    (src / "train_gpt2.cu").write_text("int main() { return 0; }\n")
    (src / "Makefile").write_text("all:\n")
    return src


@pytest.mark.docker
def test_bundle_with_the_runtime_image_loads_it_on_the_other_box(tmp_path, docker_base_image):
    """A runtime image (this recipe's labels on the base image: CUDA layers are too big for CI) packed with
    `docker save`, removed, then loaded by `kitctl build --bundle` (labels and recipe hash checked, tags restored);
    reproduce's plan loads it instead of building: nothing to download."""
    from kitctl.core.config import KitConfig
    from kitctl.images.build import expected_labels, tags
    from kitctl.images.context import prepare_context
    from kitctl.images.request import BuildRequest

    name = "llmc-kit-bun"
    src = _fake_checkout(tmp_path)
    req = BuildRequest.from_config(KitConfig(image=name, provider="wheels"), archs=[90], target="runtime",
                                   llmc_src=str(src), build_dir=tmp_path / "ctx-build")
    ctx = prepare_context(req)
    labels = expected_labels(req, ctx, "runtime")
    assert labels["org.llmc-kit.recipe-hash"] == ctx.hashes["runtime"]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "Dockerfile").write_text(f"FROM {docker_base_image}\n" + "".join(
        f"LABEL {json.dumps(k)}={json.dumps(v)}\n" for k, v in labels.items()))
    assert subprocess.run(["docker", "build", "-q", "-t", f"{name}:latest", str(tmp_path / "img")],
                          capture_output=True).returncode == 0
    # a 580 driver (CUDA 13), which the wheels provider's image needs: the stand-in nvidia-smi and the inventory say so
    h100_580 = H100.replace("570.124.06", "580.95.05")
    env = _env(tmp_path, KIT_IMAGE=name, KIT_PROVIDER="wheels", KIT_RUNTIME="docker")
    env["PATH"] = f"{fake_nvidia_smi(tmp_path / 'gpu-580', h100_580)}:{env['PATH']}"
    hs = tmp_path / "hs.jsonl"
    hs.write_text(json.dumps({"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": 0}) + "\n")
    out = tmp_path / "with-images.tar"
    try:
        r = _kitctl(["bundle", "--out", str(out), "--dataset", "tinyshakespeare", "--hellaswag-source", str(hs),
                     "--llmc-src", str(src), "--no-wheels"], env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        with tarfile.open(out) as tf:
            assert "images/runtime.tar" in tf.getnames()
        assert f"no {name}:data image" in " ".join(r.stdout.split())
        subprocess.run(["docker", "rmi", f"{name}:latest"], capture_output=True)

        r = _kitctl(["build", "--bundle", str(out), "--arch", "90", "--target", "runtime"], env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert f"loaded {name}:latest from the bundle, recipe labels match; tagged {name}:latest" in r.stdout
        content_tag = tags(req, ctx, "runtime")[0]
        assert subprocess.run(["docker", "image", "inspect", content_tag], capture_output=True).returncode == 0

        subprocess.run(["docker", "rmi", f"{name}:latest", content_tag], capture_output=True)
        (tmp_path / "h100.csv").write_text(h100_580)
        r = _kitctl(["reproduce", "gpt2-124m", "--bundle", str(out), "--inventory", str(tmp_path / "h100.csv"),
                     "--steps", "10", "--dry-run", "--json"], env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        build = json.loads(r.stdout)["stages"][1]
        assert build["download_bytes"] == 0 and "from the bundle" in build["detail"]
    finally:
        subprocess.run(["docker", "rmi", f"{name}:latest"], capture_output=True)


@pytest.mark.parametrize("flag", ["--hellaswag-source", "--llmc-src", "--cudnn-frontend"])
def test_a_flag_for_an_input_the_bundle_holds_is_refused(packed, tmp_path, flag):
    r = _kitctl(["reproduce", "gpt2-124m", "--bundle", str(packed["bundle"]), flag, str(packed["hellaswag"]),
                 "--runtime", "native", "--binary", str(packed["binary"]), "--inventory", str(packed["inventory"]),
                 "--dry-run"], _env(tmp_path))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"{flag} with --bundle: the bundle" in " ".join(r.stderr.split())


def test_too_little_space_for_the_unpack_folder_is_refused_before_writing(packed, tmp_path):
    """Issue 29: the bundle unpack folder (under the data root) is judged against its filesystem's free space."""
    from kitctl.core.bundle import open_bundle, total_bytes, use_bundle
    from kitctl.core.errors import KitError

    need = total_bytes(open_bundle(packed["bundle"]))
    with pytest.raises(KitError) as e:
        use_bundle(packed["bundle"], tmp_path / "d", free_fn=lambda p: need - 1)
    assert "bundle unpack folder" in e.value.message and "--data-root" in (e.value.hint or "")
    assert not (tmp_path / "d").exists()
    assert use_bundle(packed["bundle"], tmp_path / "d", free_fn=lambda p: need).root.is_dir()
