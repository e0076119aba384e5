"""The data root's layout: one object with a place per thing the kit keeps on the big disk (pipx's paths, for
llm.c). Every reader and writer asks it instead of spelling ``data_root / "..."``::

    <data_root>/
      <dataset>/                  shards + manifest.json (kitctl data), e.g. fineweb10B/     shards(name)
      hf/                         the HuggingFace cache (kit.yaml hf_home overrides)          hf_cache
      tiktoken/                   tiktoken's cache seeded with the shipped GPT-2 BPE          tiktoken_cache
      gpt2_tokenizer.bin          llm.c's decoder table (train mounts it)                     tokenizer_bin
      hellaswag/                  hellaswag_val.jsonl (download), hellaswag_val.bin (llm.c)   hellaswag_dir ...
      runs/<name>/                one training run (llm.c's -o)                               runs, run(name)
      tune/                       measured (B, -r) per GPU and preset                         tune_cache
      native/llm.c, native/bin    a native build's source and binaries                        native_src, native_bin
      export/                     images exported for clusters (.sqsh, .sif, .tar)            exports
      demo/                       kitctl demo's own data root                                 demo
      compose.env                 compose's env file (kitctl build writes it)                 compose_env

Built from a :class:`kitctl.core.config.KitConfig` (``cfg.layout``) or from a root alone (``DataLayout(root)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kitctl.core.llmc_files import HELLASWAG_BIN, HELLASWAG_JSONL, TOKENIZER_BIN

COMPOSE_ENV = "compose.env"


@dataclass(frozen=True)
class DataLayout:
    """Where each thing lives under the data root (no file-system access; paths only)."""

    root: Path
    hf_home: Optional[Path] = None       # kit.yaml hf_home: the HF cache somewhere else

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def shards(self, name: str) -> Path:
        """The shard folder of a dataset (``kitctl data NAME``'s default --out; train's --data default)."""
        return self.root / name

    @property
    def hf_cache(self) -> Path:
        return Path(self.hf_home) if self.hf_home is not None else self.root / "hf"

    @property
    def tiktoken_cache(self) -> Path:
        return self.root / "tiktoken"

    @property
    def tokenizer_bin(self) -> Path:
        return self.root / TOKENIZER_BIN

    @property
    def hellaswag_dir(self) -> Path:
        return self.root / "hellaswag"

    @property
    def hellaswag_bin(self) -> Path:
        return self.hellaswag_dir / HELLASWAG_BIN

    @property
    def hellaswag_jsonl(self) -> Path:
        return self.hellaswag_dir / HELLASWAG_JSONL

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, name: str) -> Path:
        return self.runs / name

    @property
    def tune_cache(self) -> Path:
        return self.root / "tune"

    @property
    def native(self) -> Path:
        return self.root / "native"

    @property
    def native_src(self) -> Path:
        """Where ``kitctl build --runtime native`` keeps the llm.c checkout it compiles."""
        return self.native / "llm.c"

    @property
    def native_bin(self) -> Path:
        """Where a native build puts llm.c's binaries and the train planner looks for them."""
        return self.native / "bin"

    @property
    def exports(self) -> Path:
        return self.root / "export"

    @property
    def demo(self) -> Path:
        return self.root / "demo"

    @property
    def compose_env(self) -> Path:
        return self.root / COMPOSE_ENV

    @property
    def pushed_images(self) -> Path:
        """The record of images ``kitctl build --push`` pushed (ref, digest, recipe hash)."""
        return self.root / "images" / "pushed.json"

    @property
    def bundles(self) -> Path:
        """Where ``--bundle FILE`` is unpacked once (``bundles/<id>``)."""
        return self.root / "bundles"

    @property
    def wheelhouse_cache(self) -> Path:
        """``kitctl bundle``'s wheelhouses of the kit's dependencies, one folder per lock x Python x platform x
        extras (``wheels/<key>``): a second bundle packs them without downloading again."""
        return self.root / "bundle-out" / "wheels"

    @property
    def bundle_work(self) -> Path:
        """Scratch space of ``kitctl bundle`` while it packs a dataset."""
        return self.root / "bundle-out"
