"""The record a native build leaves beside its binaries: ``<bin dir>/llmc_build.json``.

``kitctl build --runtime native`` (kitctl/images, the writer) removes it before it compiles and writes it once both
binaries are built, so a record names what is in its folder: the arch list, the binaries and their precision, cuDNN
on or off, the CUDA and llm.c it came from. ``kitctl doctor`` (kitctl/host, the reader) judges the arch list
against this box's GPUs. It lives in core because images and host may not import each other.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from pydantic import field_validator

from kitctl.core.files import sha256_file
from kitctl.core.records import Record
from kitctl.core.validate import check_arch_list

FILENAME = "llmc_build.json"


def record_path(bin_dir: Path) -> Path:
    """Where the record of the binaries in ``bin_dir`` lives."""
    return Path(bin_dir) / FILENAME


def changed_binaries(record: NativeBuild, bin_dir: Path) -> list[str]:
    """The binaries in ``bin_dir`` that are not the ones ``record`` was written for (replaced, rebuilt by hand,
    gone): what the record says of them no longer holds. A record without checksums (an older kit) vouches for
    whatever is there."""
    out = []
    for name, want in sorted(record.sha256.items()):
        f = Path(bin_dir) / name
        try:
            got = sha256_file(f) if f.is_file() else None
        except OSError:
            got = None
        if got != want:
            out.append(name)
    return out


class NativeBuild(Record):
    """What one native build made (every field as the build saw it)."""

    SCHEMA = 1
    KIND = "native build record"
    MAX_BYTES = 64 << 10
    archs: list[int]                       # the --generate-code list, e.g. [75, 86]
    binaries: dict[str, str]               # precision -> file name: {"bf16": "train_gpt2cu", "fp32": ...}
    cudnn: bool                            # the BF16 binary has cuDNN flash attention
    cuda: Optional[str] = None             # the toolkit's version (its version.json / nvcc --version), if known
    llmc_commit: Optional[str] = None      # the llm.c commit compiled, if known
    sha256: dict[str, str] = {}            # file name -> sha256 of each binary as built (records before: {})
    built_at: str = ""                     # UTC ISO

    @field_validator("archs")
    @classmethod
    def _known(cls, v: list[int]) -> list[int]:
        return check_arch_list(v)

    def model_post_init(self, __context: object) -> None:
        super().model_post_init(__context)
        if not self.built_at:
            self.built_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
