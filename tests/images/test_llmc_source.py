"""llm.c source for builds: the pinned tarball's sha256 is enforced; checkouts are copied without data/.git."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kitctl.images import llmc_source
from kitctl.core import pins as versions
from kitctl.core.errors import KitError

REPO = Path(__file__).resolve().parents[2]
TARBALL = REPO / ".llmc-src" / "llm.c-f1e2ace.tar.gz"


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"llm.c-x/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_pinned_tarball_is_accepted_and_extracted(tmp_path):
    if not TARBALL.exists():
        pytest.skip(f"no pinned llm.c tarball at {TARBALL} (GitHub is unreachable in CI)")
    src = llmc_source.fetch(str(TARBALL), tmp_path / "llmc")
    assert src.verified and src.kind == "tarball" and src.digest == versions.pins()["llmc"]["tarball_sha256"]
    assert (tmp_path / "llmc" / "train_gpt2.cu").is_file() and (tmp_path / "llmc" / "llmc" / "cuda_utils.cuh").is_file()


def test_tarball_with_another_sha_is_refused(tmp_path):
    tb = _tarball(tmp_path / "other.tar.gz", {"train_gpt2.cu": b"int main(){}"})
    with pytest.raises(KitError) as e:
        llmc_source.fetch(str(tb), tmp_path / "llmc")
    assert "sha256" in e.value.message and e.value.exit_code == 2
    # issue 27: a hand-made tarball of the right commit differs in its gzip bytes: the hint says how to get one
    assert "tarball_url" not in e.value.hint and "github.com/karpathy/llm.c/archive/" in e.value.hint
    assert "unpacked checkout folder" in e.value.hint and "git -C DIR checkout" in e.value.hint


def test_checkout_copy_skips_data_checkpoints_and_git(tmp_path):
    co = tmp_path / "llm.c"
    (co / "llmc").mkdir(parents=True)
    (co / "train_gpt2.cu").write_text("x")
    (co / "llmc" / "a.cuh").write_text("y")
    (co / "gpt2_124M.bin").write_bytes(b"\0" * 10)
    (co / "dev" / "data").mkdir(parents=True)
    (co / "dev" / "data" / "big.txt").write_bytes(b"\0" * (llmc_source.MAX_FILE + 1))
    (co / ".git").mkdir()
    (co / ".git" / "HEAD").write_text("ref")
    src = llmc_source.fetch(str(co), tmp_path / "ctx" / "llmc")
    got = sorted(str(p.relative_to(tmp_path / "ctx" / "llmc")) for p in (tmp_path / "ctx" / "llmc").rglob("*") if p.is_file())
    assert got == ["llmc/a.cuh", "train_gpt2.cu"]
    assert src.kind == "checkout" and not src.verified and "unverified" in src.label()
    # same tree -> same digest; a changed file -> another digest (and so another image tag)
    again = llmc_source.fetch(str(co), tmp_path / "ctx2")
    assert again.digest == src.digest
    (co / "llmc" / "a.cuh").write_text("z")
    assert llmc_source.fetch(str(co), tmp_path / "ctx3").digest != src.digest


def test_not_an_llmc_checkout(tmp_path):
    with pytest.raises(KitError, match="train_gpt2.cu"):
        llmc_source.fetch(str(tmp_path), tmp_path / "out")
    with pytest.raises(KitError, match="no such file"):
        llmc_source.fetch(str(tmp_path / "missing"), tmp_path / "out")


def test_unreachable_url_says_what_to_do(tmp_path):
    with pytest.raises(KitError) as e:
        llmc_source.fetch("http://127.0.0.1:9/llm.c.tar.gz", tmp_path / "out")
    assert "--llmc-src" in e.value.hint
