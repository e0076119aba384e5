"""`kitctl data --runtime docker`: tinyshakespeare tokenized inside the kit's CPU-only data image, written to
a mounted folder as the calling user, read back and compared with the spec-level reference."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from data_ref import read_dir, reference_files
from kitctl.core.data_folder import DataFolder
from kitctl.data.sources import split_like_llmc
from tests.docker_fixtures import BASE_IMAGE


@pytest.mark.docker
def test_tinyshakespeare_in_data_image(data_image, tmp_path, tinyshakespeare, gpt2_bpe_dir, tiktoken_cache):
    import tiktoken

    image_name = data_image.rsplit(":", 1)[0]
    root = tmp_path / "root"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "HF_", "TIKTOKEN"))}
    # the base image the fixture built from: the data image is used only when its recipe hash is this kit's
    env.update(KIT_DATA_ROOT=str(root), KIT_IMAGE=image_name, KIT_RUNTIME="docker", COLUMNS="200",
               KIT_BASE_IMAGE=BASE_IMAGE)
    cmd = [sys.executable, "-m", "kitctl", "data", "tinyshakespeare", "--source", str(tinyshakespeare),
           "--tokenizer-dir", str(gpt2_bpe_dir), "--workers", "2"]
    dry = subprocess.run(cmd + ["--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and f"{image_name}:data kitctl data tinyshakespeare" in dry.stdout
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "done: 338,028 tokens, 2 shards" in r.stdout
    assert "natively" not in r.stdout + r.stderr                       # it ran in the image
    # host paths, never the container's mount points, in what it says and in the manifest
    assert str(root / "tinyshakespeare") in r.stdout and " /data/" not in r.stdout and "/source/" not in r.stdout
    assert json.loads((root / "tinyshakespeare" / "manifest.json").read_text())["run"]["source"].find("/source/") < 0
    out = root / "tinyshakespeare"
    enc = tiktoken.get_encoding("gpt2")
    docs = split_like_llmc(tinyshakespeare.read_text(), "\n\n")
    assert read_dir(out, "tinyshakespeare") == reference_files(enc, docs, "tinyshakespeare", 10**8,
                                                                first_shard_size=32768)
    m = DataFolder(out).manifest()
    assert m.complete and [p.name for p in m.train_files] == ["tinyshakespeare_train_000001.bin"]
    assert m.run.encoder.name == "gigatoken", m.run.encoder     # the image installs the lock's pinned fast encoder
    # files on the host belong to the calling user, caches stayed on the data root
    for p in [out / "manifest.json", out / "tinyshakespeare_val_000000.bin", root / "gpt2_tokenizer.bin"]:
        assert p.stat().st_uid == os.getuid(), p
    assert (root / "tiktoken").is_dir()


@pytest.mark.docker
def test_data_image_of_another_recipe_is_not_used_silently(data_image, tmp_path, tinyshakespeare, gpt2_bpe_dir):
    """The fixture image is built from local/debian:bookworm; a kit.yaml without that base_image expects another
    recipe hash: the default runtime tokenizes natively and says why, --runtime docker is refused (exit 2)."""
    image_name = data_image.rsplit(":", 1)[0]
    root = tmp_path / "root"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "HF_", "TIKTOKEN"))}
    env.update(KIT_DATA_ROOT=str(root), KIT_IMAGE=image_name, COLUMNS="300")
    cmd = [sys.executable, "-m", "kitctl", "data", "tinyshakespeare", "--source", str(tinyshakespeare),
           "--tokenizer-dir", str(gpt2_bpe_dir), "--workers", "0"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = " ".join(r.stdout.split())
    assert f"the {data_image} image was built from another recipe (recipe hash" in out and "natively" in out
    r = subprocess.run([*cmd, "--runtime", "docker"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "built from another recipe" in " ".join(r.stderr.split()), r.stderr[-2000:]
