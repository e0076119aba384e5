"""Running a :class:`kitctl.data.plan.DataPlan` in this process: caches on the data root, inputs checked, disk
preflight, then the tokenize run, the HellaSwag eval file or the pre-tokenized shards."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

from kitctl import __version__
from kitctl.core import resources
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import sha256_file
from kitctl.core.pins import pins_sha256
from kitctl.core.data_folder import DataFolder
from kitctl.data import encoders, hellaswag, hf, pretokenized
from kitctl.core.data_manifest import DataManifest, RunInfo
from kitctl.data import sources as src
from kitctl.data import tokenizer as tk
from kitctl.data.container import to_host
from kitctl.data.plan import DataPlan, small_shard_size
from kitctl.data.space import check_space
from kitctl.data.tokenize import ProgressFn, Summary, make_shards

LogFn = Callable[[str], None]


def prepare_env(plan: DataPlan) -> None:
    """Point every cache at the data root and set the HF mirror, before any HF library is imported."""
    os.environ["HF_HOME"] = str(plan.hf_home)
    os.environ.setdefault("HF_DATASETS_CACHE", str(plan.hf_home / "datasets"))
    os.environ.setdefault("HF_HUB_CACHE", str(plan.hf_home / "hub"))
    if plan.hf_endpoint:
        os.environ["HF_ENDPOINT"] = plan.hf_endpoint
    os.environ["TIKTOKEN_CACHE_DIR"] = str(plan.tiktoken_dir)


def run_identity(plan: DataPlan, source: src.Source, tok_sums: dict[str, str], revision: Optional[str]) -> RunInfo:
    return RunInfo(source=to_host(source.description), source_fingerprint=source.fingerprint(), revision=revision,
                      tokenizer={"encoding": "gpt2", **tok_sums}, shard_size=plan.shard_size,
                      first_shard_size=plan.first_shard_size, kit_version=__version__, pins_sha256=pins_sha256())


def build_source(plan: DataPlan) -> tuple[src.Source, Optional[str]]:
    """The document source of a tokenize plan, and the HF revision (None for local inputs)."""
    r = plan.recipe
    if plan.files is not None:           # local files: DATASET, or a recipe's --source
        return plan.local_source(), (r.revision() if r is not None and r.repo else None)
    assert r is not None
    if r.kind == "text":
        path = _text_input(plan)
        return src.FilesSource([path], split_on=r.split_on, description=f"{r.name} ({path.name})"), None
    assert r.repo and r.data_files
    rev = hf.resolve_revision(r.repo, r.revision() or "main")   # a branch name -> the commit it points at now
    return hf.hf_source(r, plan.stream, revision=rev), rev


def _text_input(plan: DataPlan) -> Path:
    r = plan.recipe
    assert r is not None
    local = plan.layout.shards(r.name) / "input.txt"
    if local.is_file():
        return local
    embedded = resources.share("datasets", "files", f"{r.name}.txt")   # shipped with the kit (offline demo)
    if embedded.is_file():
        return embedded
    if not r.url:
        raise ConfigError(f"recipe {r.name} has no url and no local input", f"give the file with {plan.source_flag}")
    hellaswag.download(r.url, local)
    if r.sha256:
        got = sha256_file(local)
        if got != r.sha256:
            local.unlink()
            raise KitError(f"{r.url} downloaded with sha256 {got}, expected {r.sha256}")
    return local


def _remaining_need(plan: DataPlan) -> dict[Path, int]:
    """Space still needed: subtract what the output folder already holds (a resumed run)."""
    need = dict(plan.need)
    if plan.out_dir in need and plan.out_dir.is_dir():
        have = sum(p.stat().st_size for p in plan.out_dir.glob(f"{plan.name}_*.bin"))
        need[plan.out_dir] = max(0, need[plan.out_dir] - have)
    if plan.hf_home in need and plan.recipe is not None and plan.recipe.repo:
        repo_cache = plan.hf_home / "hub" / ("datasets--" + plan.recipe.repo.replace("/", "--"))
        have = sum(p.stat().st_size for p in repo_cache.rglob("*") if p.is_file() and not p.is_symlink()) \
            if repo_cache.is_dir() else 0
        need[plan.hf_home] = max(0, need[plan.hf_home] - have)
    return need


def execute(plan: DataPlan, progress: Optional[ProgressFn] = None, free_fn: Optional[Callable[[Path], int]] = None,
            log: LogFn = print) -> Union[Summary, int, DataManifest]:
    """Run a plan in this process. ``progress(tokens, shard)``; returns a Summary (tokenize), the example count
    (hellaswag) or the manifest (pre-tokenized)."""
    prepare_env(plan)
    if plan.kind == "tokenize":       # check inputs and space before writing anything (tokenizer files too)
        encoders.choose(plan.encoder)            # --encoder NAME that is not installed: exit 2 now
        source, revision = build_source(plan)
        source.check()
        check_space(_remaining_need(plan), free_fn)
    else:
        check_space(plan.need, free_fn)
    tok_sums = tk.setup_tiktoken(plan.tokenizer_dir, plan.tiktoken_dir)
    # tiktoken's Encoding is loaded where it is used: for HellaSwag, a missing gpt2_tokenizer.bin, the identity
    # gate (which overlaps it with the first batches' encode) or as the run's encoder
    if tk.write_tokenizer_bin(plan.tokenizer_bin, log=log):
        log(f"wrote {plan.tokenizer_bin}")
    if plan.kind == "hellaswag":
        enc = tk.get_encoding(plan.tokenizer_dir)
        jsonl = Path(plan.source) if plan.source else None
        if jsonl is None:
            assert plan.url
            jsonl = plan.layout.hellaswag_jsonl
            if not jsonl.is_file():
                hellaswag.download(plan.url, jsonl, plan.source_flag)
        n = hellaswag.build(jsonl, plan.hellaswag_bin, enc, force=plan.force, log=log)
        warn = hellaswag.pin_warning(jsonl, n)
        if warn:
            log(f"warning: {warn}")
        return n
    if plan.kind == "pretokenized":
        return pretokenized.fetch(plan, tok_sums, log=log)
    run = run_identity(plan, source, tok_sums, revision)
    summary = make_shards(source, plan.out_dir, plan.name, run, dataset=plan.dataset, workers=plan.workers,
                          progress=progress, log=log, encoder=plan.encoder)
    check_splits(plan)
    return summary


def check_splits(plan: DataPlan) -> None:
    """A finished folder must hold a val shard and a training shard: never "done" with an empty split (an
    estimate that was too high, or a folder made before the kit picked shard sizes for small datasets)."""
    m = DataFolder(plan.out_dir).manifest()
    if m.complete and (not m.train_files or not m.val_files):
        empty = "training" if not m.train_files else "val"
        pick = small_shard_size(m.total_tokens)
        raise KitError(f"{plan.out_dir}: its {m.total_tokens:,} tokens made no {empty} shard (shard size "
                       f"{m.run.shard_size or 0:,}): `kitctl train` would have no {empty} data",
                       f"make it again with smaller shards: `kitctl data {plan.spec} --shard-size {pick} --fresh` "
                       "(--fresh moves this folder aside, it deletes nothing)")
