"""`kitctl data --runtime docker`: tinyshakespeare tokenized inside the kit's CPU-only data image, written to
a mounted folder as the calling user, read back and compared with the spec-level reference."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from data_ref import read_dir, reference_files
from kitctl.data import manifest as mf
from kitctl.data.sources import split_like_llmc


@pytest.mark.docker
def test_tinyshakespeare_in_data_image(data_image, tmp_path, tinyshakespeare, gpt2_bpe_dir, tiktoken_cache):
    import tiktoken

    image_name = data_image.rsplit(":", 1)[0]
    root = tmp_path / "root"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "HF_", "TIKTOKEN"))}
    env.update(KIT_DATA_ROOT=str(root), KIT_IMAGE=image_name, KIT_RUNTIME="docker", COLUMNS="200")
    cmd = [sys.executable, "-m", "kitctl", "data", "tinyshakespeare", "--source", str(tinyshakespeare),
           "--tokenizer-dir", str(gpt2_bpe_dir), "--workers", "2"]
    dry = subprocess.run(cmd + ["--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and f"{image_name}:data kitctl data tinyshakespeare" in dry.stdout
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "done: 338,028 tokens, 2 shards" in r.stdout
    out = root / "tinyshakespeare"
    enc = tiktoken.get_encoding("gpt2")
    docs = split_like_llmc(tinyshakespeare.read_text(), "\n\n")
    assert read_dir(out, "tinyshakespeare") == reference_files(enc, docs, "tinyshakespeare", 10**8,
                                                                first_shard_size=32768)
    m = mf.load(out)
    assert m.complete and [p.name for p in m.train_files] == ["tinyshakespeare_train_000001.bin"]
    # files on the host belong to the calling user, caches stayed on the data root
    for p in [out / "manifest.json", out / "tinyshakespeare_val_000000.bin", root / "gpt2_tokenizer.bin"]:
        assert p.stat().st_uid == os.getuid(), p
    assert (root / "tiktoken").is_dir()
