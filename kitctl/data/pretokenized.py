"""Ready llm.c shards (``fineweb10B-pretokenized``): from the HF dataset kjj0/fineweb10B-gpt2 (pinned
revision, downloaded into the HF cache and hard-linked into the output folder) or from a local folder of those .bin files (hard-linked
or copied). Every header and size is checked, and a manifest.json is written like for tokenized data."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from kitctl.core.data_folder import DataFolder
from kitctl.core.data_manifest import DataManifest, RunInfo
from kitctl.core.llmc_files import shard_filename
from kitctl import __version__
from kitctl.core.files import atomic_output, sha256_file
from kitctl.core.pins import pins_sha256
from kitctl.core.errors import ConfigError, KitError
from kitctl.data.hf import offline_hint
from kitctl.core.records import error_text


def _place(src: Path, dst: Path) -> None:
    """Hard-link (same disk: no extra space) or copy ``src`` to ``dst``. A link appears whole or not at all; a
    copy goes through the atomic writer. A file already there with the same bytes is kept (a re-run)."""
    src = Path(src).resolve()          # the HF cache hands out symlinks into its blob store
    if dst.is_file():
        if os.path.samefile(src, dst) or (dst.stat().st_size == src.stat().st_size
                                          and sha256_file(dst) == sha256_file(src)):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        with open(src, "rb") as f, atomic_output(dst) as out:
            shutil.copyfileobj(f, out, 1 << 20)


def fetch(plan, tok_sums: dict[str, str], log: Callable[[str], None] = print, download=None) -> DataManifest:
    r = plan.recipe
    n_train = plan.train_shards if plan.train_shards is not None else (r.train_shards or 103)
    names = [shard_filename(plan.name, i) for i in range(0, n_train + 1)]
    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    rev = r.revision() or "main"
    if plan.source:
        srcdir = Path(plan.source)
        missing = [n for n in names if not (srcdir / n).is_file()]
        if missing:
            raise ConfigError(f"{srcdir} lacks {len(missing)} of the {len(names)} shards ({missing[0]}, ...)",
                              "use --shards N to take only the first N train shards")
        for n in names:
            _place(srcdir / n, out / n)
        origin = f"{srcdir} (local copy of {r.repo})"
    else:
        if download is None:
            from huggingface_hub import hf_hub_download

            def download(fname: str) -> str:     # into the HF cache on the data root (HF_HOME)
                return hf_hub_download(r.repo, fname, repo_type="dataset", revision=rev)
        for i, n in enumerate(names):
            if not (out / n).is_file():
                log(f"downloading {n} ({i + 1}/{len(names)}) from {r.repo}@{rev[:12]}")
                try:
                    got = download(n)
                except Exception as e:
                    raise KitError(f"download of {n} failed: {error_text(e)}",
                                   "re-run to continue; " + offline_hint()) from None
                _place(Path(got), out / n)
        origin = f"{r.repo}@{rev}"
    run = RunInfo(source=origin, source_fingerprint=origin, revision=None if plan.source else rev,
                  tokenizer={"encoding": "gpt2", **tok_sums}, kit_version=__version__, pins_sha256=pins_sha256(),
                  pretokenized=True)
    folder = DataFolder(out)
    m = DataManifest(dir=out, name=plan.name, dataset=plan.dataset, run=run)
    for n in names:
        folder.adopt_shard(m, n)           # header and size checked, sha256 taken
    m.complete = True
    folder.save_manifest(m)
    log(f"{len(m.shards)} shards, {m.total_tokens:,} tokens checked in {out}")
    return m
