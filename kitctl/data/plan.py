"""`kitctl data` as a plan (pure: config + options -> what will happen) and its execution.

Paths on the data root (the big disk)::

    <data_root>/<recipe>/                 shards + manifest.json (default --out)
    <data_root>/hf/                       HF_HOME: HuggingFace cache (config hf_home overrides)
    <data_root>/tiktoken/                 TIKTOKEN_CACHE_DIR (seeded from tokenizer_dir when given)
    <data_root>/gpt2_tokenizer.bin        llm.c's decoder file (train mounts it into llm.c's working dir)
    <data_root>/hellaswag/hellaswag_val.bin   llm.c's eval file (train mounts it as dev/data/hellaswag/...;
                                          `kitctl data hellaswag --out DIR` writes DIR/hellaswag_val.bin)
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from kitctl import __version__
from kitctl.core.config import KitConfig
from kitctl.data import sources as src
from kitctl.data.tokenize import DEFAULT_SHARD_SIZE, Summary, check_space, default_workers, estimate_bytes
from kitctl.core import pins as versions
from kitctl.core.errors import KitError
from kitctl.core import resources

CONTAINER_DATA = "/data"
DEFAULT_DATASET = "fineweb10B"
TOKENIZER_BIN_BYTES = 400_000        # gpt2_tokenizer.bin: 372,108 bytes
TIKTOKEN_CACHE_BYTES = 2_500_000     # vocab.bpe + encoder.json + kitctl's parsed ranks: ~2.35 MB


@dataclass
class DataPlan:
    dataset: str                     # recipe name, or "local"
    spec: str                        # what the user gave as DATASET
    kind: str                        # tokenize | hellaswag | pretokenized
    recipe: Optional[src.Recipe]
    out_dir: Path
    name: str
    shard_size: int
    first_shard_size: int
    workers: int
    stream: bool
    source: Optional[str]            # --source: local file/folder for a recipe
    data_root: Path
    hf_home: Path
    tokenizer_dir: Optional[Path]
    hf_endpoint: Optional[str]
    train_shards: Optional[int] = None
    est_tokens: Optional[int] = None
    need: dict[Path, int] = field(default_factory=dict)
    force: bool = False              # hellaswag: replace an existing eval file that differs

    @property
    def tiktoken_dir(self) -> Path:
        return Path(os.environ.get("TIKTOKEN_CACHE_DIR") or self.data_root / "tiktoken")

    @property
    def tokenizer_bin(self) -> Path:
        return self.data_root / "gpt2_tokenizer.bin"

    @property
    def hellaswag_bin(self) -> Path:
        return self.out_dir / "hellaswag_val.bin"     # the hellaswag recipe's out_dir: <data_root>/hellaswag

    def describe(self) -> list[str]:
        what = {"tokenize": "tokenize into llm.c shards", "hellaswag": "write llm.c's HellaSwag eval file",
                "pretokenized": "fetch ready llm.c shards"}[self.kind]
        lines = [f"dataset      {self.dataset}" + (f" ({self.recipe.description})" if self.recipe else f" ({self.spec})"),
                 f"action       {what}"]
        if self.recipe and self.recipe.repo:
            lines.append(f"source       {self.recipe.repo}@{self.recipe.revision() or 'main'}"
                         + (f" {self.recipe.config}" if self.recipe.config else "")
                         + (" (streamed, no HF cache)" if self.stream else f" (HF cache {self.hf_home})"))
        if self.source:
            lines.append(f"input        {self.source}")
        out = self.hellaswag_bin if self.kind == "hellaswag" else self.out_dir
        lines.append(f"output       {out}")
        if self.kind == "tokenize":
            lines.append(f"files        {self.name}_val_000000.bin, {self.name}_train_000001.bin, ...")
            first = f" (val shard {self.first_shard_size:,})" if self.first_shard_size != self.shard_size else ""
            lines.append(f"shard size   {self.shard_size:,} tokens{first}")
            lines.append(f"workers      {self.workers} tokenizer processes")
        if self.est_tokens:
            lines.append(f"estimate     ~{self.est_tokens:,} tokens, disk ~{sum(self.need.values()) / 1e9:.2f} GB")
        lines.append(f"tokenizer    {self.tokenizer_dir or 'embedded GPT-2 BPE files (kitctl/assets/gpt2-bpe)'} -> cache {self.tiktoken_dir}")
        lines.append(f"also         {self.tokenizer_bin} (if missing)")
        return lines


def _under(path: Path, root: Path) -> Optional[str]:
    try:
        return str(Path(path).absolute().relative_to(Path(root).absolute()))
    except ValueError:
        return None


def make_plan(cfg: KitConfig, dataset: Optional[str] = None, out: Optional[Path] = None,
              name: Optional[str] = None, shard_size: Optional[int] = None, workers: Optional[int] = None,
              stream: bool = False, source: Optional[str] = None, tokenizer_dir: Optional[Path] = None,
              train_shards: Optional[int] = None, force: bool = False) -> DataPlan:
    spec = dataset or DEFAULT_DATASET
    recipe = None
    if spec in src.recipe_names():   # a recipe name wins; write ./NAME for a local folder of that name
        recipe = src.load_recipe(spec)
        kind = {"hf_parquet": "tokenize", "text": "tokenize", "hellaswag": "hellaswag",
                "pretokenized": "pretokenized"}[recipe.kind]
        ds_name = spec
    elif src.is_local_spec(spec):
        src.resolve_local(spec)               # fail now on a missing file / empty folder
        kind, ds_name = "tokenize", "local"
    else:
        src.load_recipe(spec)                 # raises "unknown dataset" with the list of recipes
        raise AssertionError("unreachable")
    if source is not None and not Path(source).exists():
        raise KitError(f"--source {source} does not exist", exit_code=2)
    default_out = spec if recipe else _local_name(spec)
    out_dir = Path(out).absolute() if out else (cfg.data_root / default_out).absolute()
    prefix = name or (recipe.prefix if recipe else default_out)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
        raise KitError(f"--name {prefix!r}: use letters, digits, _ . - only", exit_code=2)
    # `is None`, not `or`: --shard-size 0 is refused, not taken as "the default" (which could match a folder)
    ss = int(shard_size if shard_size is not None else
             (recipe.shard_size if recipe and recipe.shard_size else DEFAULT_SHARD_SIZE))
    if ss < 1 or ss >= 2**31:
        raise KitError(f"--shard-size {ss}: must be between 1 and 2^31-1 tokens (llm.c's int32 header)",
                       "give a positive token count (llm.c uses 100000000)", exit_code=2)
    first = recipe.first_shard_tokens if recipe and recipe.first_shard_tokens and shard_size is None else ss
    if workers is not None and workers < 0:
        raise KitError(f"--workers {workers}: must be >= 0",
                       "give a number of tokenizer processes; 0 tokenizes in this process, no --workers "
                       "uses all cores", exit_code=2)
    plan = DataPlan(dataset=ds_name, spec=spec, kind=kind, recipe=recipe, out_dir=out_dir, name=prefix,
                    shard_size=ss, first_shard_size=first,
                    workers=default_workers() if workers is None else workers, stream=stream,
                    source=str(Path(source).absolute()) if source else None, data_root=cfg.data_root.absolute(),
                    hf_home=cfg.hf_cache.absolute(),
                    tokenizer_dir=Path(tokenizer_dir).absolute() if tokenizer_dir else cfg.tokenizer_dir,
                    hf_endpoint=cfg.mirrors.hf_endpoint, train_shards=train_shards, force=force)
    _estimate(plan)
    if not plan.tokenizer_bin.exists():          # written by every kind, on the data root
        plan.need[plan.data_root] = plan.need.get(plan.data_root, 0) + TOKENIZER_BIN_BYTES
    if not (plan.tiktoken_dir.is_dir() and any(plan.tiktoken_dir.iterdir())):
        plan.need[plan.data_root] = plan.need.get(plan.data_root, 0) + TIKTOKEN_CACHE_BYTES
    return plan


def _local_name(spec: str) -> str:
    """Default folder/prefix for local inputs: a file's stem, a folder's name, a glob's first folder."""
    p = Path(spec)
    if any(c in spec for c in "*?["):
        parts = [x for x in p.parts if not any(c in x for c in "*?[")]
        p = Path(*parts) if parts else Path("local")
        name = p.name
    else:
        name = p.stem if p.is_file() else p.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "local"


def _estimate(plan: DataPlan) -> None:
    """Tokens ~ text bytes / 3 (src.BYTES_PER_TOKEN, on the safe side; parquet text bytes scaled from a row
    group, see FilesSource.approx_text_bytes); shards take 2 bytes a token; the HF cache the recipe's download."""
    r = plan.recipe
    if plan.kind == "hellaswag":
        plan.need = {plan.hellaswag_bin.parent: 20_000_000}
        return
    if plan.kind == "pretokenized":
        n = (plan.train_shards if plan.train_shards is not None else (r.extra.get("train_shards", 103))) + 1
        plan.est_tokens = n * 100_000_000
        plan.need = {plan.out_dir: n * 200_000_000}
        return
    if r is not None and r.kind == "hf_parquet":
        plan.est_tokens = r.approx_tokens
        plan.need = {plan.out_dir: estimate_bytes(r.approx_tokens or 0)}
        if not plan.stream and not plan.source:
            plan.need[plan.hf_home] = r.approx_download_bytes or 0
        return
    if plan.source or r is None:
        # parquet: the text column's uncompressed size from the metadata; jsonl/txt: the file size
        tb = src.FilesSource(src.resolve_local(plan.source or plan.spec)).approx_text_bytes() or 0
        plan.est_tokens = int(tb / src.BYTES_PER_TOKEN)
    else:
        plan.est_tokens = r.approx_tokens
    plan.need = {plan.out_dir: estimate_bytes(plan.est_tokens or 0)}


# ----------------------------------------------------------------------------------------- environment
def prepare_env(plan: DataPlan) -> None:
    """Point every cache at the data root and set the HF mirror, before any HF library is imported."""
    os.environ["HF_HOME"] = str(plan.hf_home)
    os.environ.setdefault("HF_DATASETS_CACHE", str(plan.hf_home / "datasets"))
    os.environ.setdefault("HF_HUB_CACHE", str(plan.hf_home / "hub"))
    if plan.hf_endpoint:
        os.environ["HF_ENDPOINT"] = plan.hf_endpoint
    os.environ["TIKTOKEN_CACHE_DIR"] = str(plan.tiktoken_dir)


def run_identity(plan: DataPlan, source: src.Source, tok_sums: dict[str, str], revision: Optional[str]) -> dict[str, Any]:
    from kitctl.core.pins import pins_sha256

    return {
        "source": source.description, "source_fingerprint": source.fingerprint(), "revision": revision,
        "tokenizer": {"encoding": "gpt2", **tok_sums},
        "shard_size": plan.shard_size, "first_shard_size": plan.first_shard_size,
        "kit_version": __version__, "pins_sha256": pins_sha256(),
    }


def build_source(plan: DataPlan) -> tuple[src.Source, Optional[str]]:
    """The document source of a tokenize plan, and the HF revision (None for local inputs)."""
    r = plan.recipe
    if r is None:
        return src.FilesSource(src.resolve_local(plan.spec)), None
    if r.kind == "text":
        path = _text_input(plan)
        return src.FilesSource([path], split_on=r.split_on, description=f"{r.name} ({path.name})"), None
    if plan.source:   # a recipe's files already downloaded (offline hosts)
        return src.FilesSource(src.resolve_local(plan.source),
                               description=f"{r.repo} {r.config} from {plan.source}",
                               fingerprint_extra=""), r.revision()
    rev = resolve_revision(r.repo, r.revision() or "main")   # a branch name -> the commit it points at now
    return src.hf_source(r, plan.stream, revision=rev), rev


def resolve_revision(repo: str, rev: str) -> str:
    if re.fullmatch(r"[0-9a-f]{40}", rev):
        return rev
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo, revision=rev).sha or rev
    except Exception:
        return rev


def _text_input(plan: DataPlan) -> Path:
    r = plan.recipe
    if plan.source:
        return Path(plan.source)
    local = plan.data_root / r.name / "input.txt"
    if local.is_file():
        return local
    embedded = resources.share("datasets", "files", f"{r.name}.txt")   # shipped with the kit (offline demo)
    if embedded.is_file():
        return embedded
    from kitctl.data.hellaswag import download

    download(r.url, local)
    want = r.extra.get("sha256")
    if want:
        from kitctl.core.files import sha256_file

        got = sha256_file(local)
        if got != want:
            local.unlink()
            raise KitError(f"{r.url} downloaded with sha256 {got}, expected {want}")
    return local




def execute(plan: DataPlan, progress=None, free_fn=None, log: Callable[[str], None] = print) -> Summary | int:
    """Run a plan in this process. ``progress(tokens, shard)``; returns a Summary (or example count)."""
    from kitctl.data import tokenizer as tk

    prepare_env(plan)
    if plan.kind == "tokenize":       # check inputs and space before writing anything (tokenizer files too)
        source, revision = build_source(plan)
        source.check()
        check_space(_remaining_need(plan), free_fn)
    else:
        check_space(plan.need, free_fn)
    tok_sums = tk.setup_tiktoken(plan.tokenizer_dir, plan.tiktoken_dir)
    enc = tk.get_encoding()
    if tk.write_tokenizer_bin(plan.tokenizer_bin, enc):
        log(f"wrote {plan.tokenizer_bin}")
    if plan.kind == "hellaswag":
        jsonl = Path(plan.source) if plan.source else None
        if jsonl is None:
            from kitctl.data.hellaswag import download

            jsonl = plan.data_root / "hellaswag" / "hellaswag_val.jsonl"
            if not jsonl.is_file():
                download(plan.recipe.url, jsonl)
        from kitctl.data.hellaswag import build

        return build(jsonl, plan.hellaswag_bin, enc, force=plan.force, log=log)
    if plan.kind == "pretokenized":
        from kitctl.data.pretokenized import fetch

        return fetch(plan, tok_sums, log=log)
    from kitctl.data.tokenize import make_shards

    run = run_identity(plan, source, tok_sums, revision)
    return make_shards(source, plan.out_dir, plan.name, run, dataset=plan.dataset, workers=plan.workers,
                       progress=progress, log=log)


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


# ------------------------------------------------------------------------------------------------ docker
def data_image(cfg: KitConfig) -> str:
    try:
        from kitctl.images.render import data_ref

        return data_ref(cfg)
    except (ImportError, AttributeError):
        return f"{cfg.image}:data"


def docker_spec(plan: DataPlan, cfg: KitConfig, dry_run: bool = False, extra_args: Optional[list[str]] = None):
    """The container that runs this plan natively inside the kit's data image, as the calling user."""
    from kitctl.host.runtimes import ContainerSpec, Mount, host_user

    mounts = [Mount(plan.data_root, CONTAINER_DATA)]

    def inside(p: Path, target: str, ro: bool = False) -> str:
        rel = _under(p, plan.data_root)
        if rel is not None:
            return f"{CONTAINER_DATA}/{rel}" if rel != "." else CONTAINER_DATA
        mounts.append(Mount(Path(p), target, read_only=ro))
        return target

    env = {"KIT_DATA_ROOT": CONTAINER_DATA, "KIT_RUNTIME": "native", "HOME": "/tmp"}
    env["HF_HOME"] = env["KIT_HF_HOME"] = inside(plan.hf_home, "/hf")
    if plan.hf_endpoint:
        env["HF_ENDPOINT"] = env["KIT_MIRRORS__HF_ENDPOINT"] = plan.hf_endpoint
    argv = ["kitctl", "data"]
    if plan.recipe is not None:
        argv.append(plan.spec)
    else:   # local input files: mount their folder read-only
        p = Path(plan.spec)
        if any(c in plan.spec for c in "*?["):
            base = Path(plan.spec.split("*")[0].split("?")[0].split("[")[0])
            base = base if base.is_dir() else base.parent
            argv.append(inside(base.absolute(), "/input", ro=True) + "/" +
                        str(Path(plan.spec).absolute().relative_to(base.absolute())))
        elif p.is_dir():
            argv.append(inside(p.absolute(), "/input", ro=True))
        else:
            argv.append(inside(p.absolute().parent, "/input", ro=True) + "/" + p.name)
    argv += ["--out", inside(plan.out_dir, "/out"), "--name", plan.name]
    if plan.kind == "tokenize":
        if plan.shard_size != (plan.recipe.shard_size if plan.recipe and plan.recipe.shard_size else DEFAULT_SHARD_SIZE):
            argv += ["--shard-size", str(plan.shard_size)]
        argv += ["--workers", str(plan.workers)]
    if plan.stream:
        argv.append("--stream")
    if plan.source:
        s = Path(plan.source)
        argv += ["--source", inside(s.parent, "/source", ro=True) + "/" + s.name]
    if plan.tokenizer_dir:
        argv += ["--tokenizer-dir", inside(plan.tokenizer_dir, "/tokenizer", ro=True)]
    if plan.train_shards is not None:
        argv += ["--shards", str(plan.train_shards)]
    if plan.force:
        argv.append("--force")
    argv += ["--runtime", "native", *(extra_args or [])]
    return ContainerSpec(image=data_image(cfg), argv=argv, mounts=mounts, env=env, workdir=CONTAINER_DATA,
                         user=host_user(), name=None)
