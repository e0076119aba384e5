"""A data root that `kitctl train --runtime native` takes on a machine without a GPU: two tiny shards of
tinyshakespeare, the HellaSwag and tokenizer files it checks for, and the fake train_gpt2cu (tests/fake_train_gpt2cu.py)
as both native binaries. Shared by tests/train/test_train_run.py and tests/hostile/test_run_trust.py."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

FAKE = Path(__file__).resolve().parent / "fake_train_gpt2cu.py"
ONE = "0, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06\n"     # an inventory line of one H100


def fake_shard(path: Path, ntok: int) -> None:
    """An llm.c token shard of ``ntok`` tokens (all 1): the 1024-byte header, then uint16 tokens."""
    path.write_bytes(struct.pack("<3i", 20240520, 1, ntok) + b"\0" * (1024 - 12) + b"\1\0" * ntok)


def fake_kit_root(root: Path) -> Path:
    """``root`` made into the data root above; returns it."""
    shards = root / "tinyshakespeare"
    shards.mkdir(parents=True)
    fake_shard(shards / "tinyshakespeare_val_000000.bin", 40_000)
    fake_shard(shards / "tinyshakespeare_train_000001.bin", 300_000)
    (root / "hellaswag").mkdir()
    (root / "hellaswag" / "hellaswag_val.bin").write_bytes(b"x")
    (root / "gpt2_tokenizer.bin").write_bytes(b"t")
    bindir = root / "native" / "bin"
    bindir.mkdir(parents=True)
    for name in ("train_gpt2cu", "train_gpt2cu_fp32"):
        b = bindir / name
        b.write_text(f"#!{sys.executable}\n" + FAKE.read_text())
        b.chmod(0o755)
    return root
