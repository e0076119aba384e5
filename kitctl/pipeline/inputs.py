"""What the reproduce planner needs, asked of each area through its public entry points (read-only).

One of the pipeline's two adapter modules (the other, kitctl/pipeline/stages.py, runs the stages): when an area's
entry points move, only these two change. Touch points:

    data      kitctl.data.plan.make_plan (the data and HellaSwag plans: output folders, token estimates);
    train     kitctl.train (its face): gather_facts (with the planned data), build_plan (pure) and
              sweep_configs_for (how many configs a tune measures)
    host      kitctl.host.gpus.load_inventory
    images    kitctl.host.runtimes.runtime_image_ref (what a build makes); the data root's places: kitctl.core.layout

Without data on disk yet, the train plan is made on *synthetic* shards with the recipe's token counts (the
planner is pure, so it cannot tell), which is how ``--dry-run`` plans the whole run before any download.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kitctl.core.bundle import Unpacked
from kitctl.core import pins, validate
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import check_regular, free_bytes, open_regular
from kitctl.core.data_folder import DataFolder
from kitctl.core.data_manifest import DataManifest
from kitctl.core.llmc_files import (HEADER_BYTES, TOKENIZER_BIN, HeaderError, shard_filename,
                                    unpack_hellaswag_header)
from kitctl.data import encoders
from kitctl.data.plan import DataPlan, make_plan, small_shard_size
from kitctl.host import disks, docker_disk
from kitctl.host.gpus import GPU, distinct_archs, select
from kitctl.host.runtimes import runtime_image_ref
from kitctl.images import lock as images_lock
from kitctl.images.render import label_differences
from kitctl.images.request import BuildRequest, resolve_cuda
from kitctl.pipeline import forecast as fc
from kitctl.train import (BINARIES, DataInfo, Facts, OutState, Plan, Shard, TrainRequest, absorb_passthrough,
                          build_plan, dims_for, gather_facts, inspect_data, inspect_image, load_presets,
                          sweep_configs_for)

TUNE_MODES = ("auto", "on", "off")
DEFAULT_NET_MBPS = 200.0


@dataclass(frozen=True)
class ReproduceOptions:
    """What the user asked ``kitctl reproduce`` for (CLI options); None = the kit decides."""

    preset: str = "gpt2-124m"
    name: Optional[str] = None
    dataset: Optional[str] = None            # a recipe or local files (default: the preset's dataset)
    source: Optional[Path] = None            # a recipe's local input (downloaded parquet files, a shard folder)
    hellaswag_source: Optional[Path] = None  # a local hellaswag_val.jsonl
    stream: bool = False
    shard_size: Optional[int] = None
    workers: Optional[int] = None
    runtime: str = "docker"
    gpus: str = "all"
    steps: Optional[int] = None
    binary: Optional[Path] = None
    llmc_src: Optional[str] = None
    cudnn_frontend: Optional[Path] = None
    mpirun: str = "/usr/bin/mpirun"
    inventory: Optional[Path] = None
    cpus: Optional[int] = None
    net_mbps: float = DEFAULT_NET_MBPS
    price_per_gpu_hour: Optional[float] = None
    tune: str = "auto"
    passthrough: tuple[str, ...] = ()
    bundle: Optional[Unpacked] = None        # --bundle: the unpacked, verified offline bundle
    precision: Optional[str] = None          # bf16 | fp32 (None: the train planner's choice)
    force_memory: bool = False               # run a -b the memory model says cannot fit

    def key(self) -> dict:
        """What a re-run of the same command must repeat to continue this run folder."""
        return {"preset": self.preset, "dataset": self.dataset, "source": str(self.source) if self.source else None,
                "runtime": self.runtime, "gpus": self.gpus, "steps": self.steps, "shard_size": self.shard_size,
                "stream": self.stream, "passthrough": list(self.passthrough),
                **({"precision": self.precision} if self.precision else {})}


def apply_bundle(opts: ReproduceOptions, ub: Unpacked) -> ReproduceOptions:
    """The options with the bundle's members as the inputs they replace. A flag for an input the bundle holds
    does nothing, so it is refused (exit 2)."""
    ds, ds_source = ub.dataset
    given = {"--source": (opts.source, ds_source), "--hellaswag-source": (opts.hellaswag_source, ub.hellaswag),
             "--llmc-src": (opts.llmc_src, ub.llmc_src), "--cudnn-frontend": (opts.cudnn_frontend, ub.cudnn_frontend)}
    for flag, (mine, packed) in given.items():
        if mine is not None and packed is not None:
            raise ConfigError(f"{flag} with --bundle: the bundle {ub.source} holds that input already",
                              f"leave {flag} out (the bundle's copy is used), or leave --bundle out")
    packed_for = ub.contents.get("preset")
    if packed_for and packed_for != opts.preset and opts.dataset is None:
        raise ConfigError(f"the bundle {ub.source} was packed for preset {packed_for} (its dataset "
                          f"{ub.contents.get('dataset')}); this run is preset {opts.preset}, whose dataset it would "
                          "silently replace", f"run `kitctl reproduce {packed_for} --bundle ...`, pack a bundle for "
                          f"{opts.preset} (`kitctl bundle --preset {opts.preset}`), or name the dataset to use "
                          "(--dataset)")
    if ds is not None and opts.dataset is not None and opts.dataset != ub.contents.get("dataset"):
        raise ConfigError(f"--dataset {opts.dataset} with --bundle: the bundle {ub.source} holds the dataset "
                          f"{ub.contents.get('dataset')}", "leave --dataset out to use the bundle's, or leave "
                          "--bundle out")
    return dataclasses.replace(
        opts, dataset=ds or opts.dataset or ub.contents.get("dataset"), source=ds_source or opts.source,
        hellaswag_source=ub.hellaswag or opts.hellaswag_source, llmc_src=ub.llmc_src or opts.llmc_src,
        cudnn_frontend=ub.cudnn_frontend or opts.cudnn_frontend, bundle=ub)


def check_offline(opts: ReproduceOptions, f: fc.Forecast) -> None:
    """With --bundle nothing may be downloaded: a stage that would is refused, with what brings its input."""
    if opts.bundle is None:
        return
    ways = {"build": "pack the images into the bundle (leave --no-images out), or pull a pushed image (--image "
                     "REGISTRY/REPO), or --runtime native",
            "data": "pack the dataset into the bundle (`kitctl bundle --dataset ... --source FILES`), or give its "
                    "files here with --source",
            "hellaswag": "pack it into the bundle (`kitctl bundle --hellaswag-source FILE`)"}
    for s in f.stages:
        if s.download_bytes > 0 and s.status != "done":
            raise ConfigError(f"--bundle {opts.bundle.source}: the {s.name} stage would download "
                              f"{s.download_bytes / 1e9:.2f} GB ({s.detail}), and a bundle run never touches the "
                              "network", ways.get(s.name, "bring that input in the bundle"))


@dataclass
class Gathered:
    """The pure planner's inputs, and the area plans the stages reuse."""

    inputs: fc.Inputs
    run_dir: Path
    data_plan: DataPlan
    hellaswag_plan: DataPlan
    train_request: TrainRequest
    train_plan: Optional[Plan]          # None: planned without GPUs (a dry run on a box with none)
    archs: list[int]
    notes: list[str] = field(default_factory=list)


MAX_CPUS = 65_536
MAX_NET_MBPS = 1_000_000.0        # 1 Tbit/s
MAX_PRICE = 1_000_000.0


def check_options(opts: ReproduceOptions) -> None:
    """Bad option values: exit 2 with what, why and the fix (before anything is read or written)."""
    presets = load_presets()
    if opts.preset not in presets:
        raise ConfigError(f"unknown preset {opts.preset!r}: kitctl reproduce knows the presets of "
                          "kitctl/train/presets.yaml", f"use one of: {', '.join(presets)} (default gpt2-124m)")
    if opts.price_per_gpu_hour is not None and not (opts.price_per_gpu_hour >= 0 and math.isfinite(opts.price_per_gpu_hour)):
        raise ConfigError(f"--price-per-gpu-hour {opts.price_per_gpu_hour}: a price cannot be negative",
                          "give what one GPU costs per hour, e.g. --price-per-gpu-hour 2.49 (0 for a box you own)")
    if not (opts.net_mbps > 0 and math.isfinite(opts.net_mbps)):
        raise ConfigError(f"--net-mbps {opts.net_mbps}: the download speed must be positive",
                          f"give your link's speed in Mbit/s, e.g. --net-mbps {DEFAULT_NET_MBPS:.0f}")
    if opts.cpus is not None and opts.cpus < 1:
        raise ConfigError(f"--cpus {opts.cpus}: at least one CPU tokenizes", "give the box's CPU count, e.g. --cpus 16")
    # upper bounds: numbers past these are typos that would plan nonsense (or exhaust memory planning them)
    if opts.cpus is not None:
        validate.int_range(opts.cpus, "--cpus", 1, MAX_CPUS, f"no single box has more than {MAX_CPUS:,} CPUs")
    if opts.net_mbps > MAX_NET_MBPS:
        validate.bounded_float(opts.net_mbps, "--net-mbps", 0, MAX_NET_MBPS, "Mbit/s: 1 Tbit/s at most",
                               f"{DEFAULT_NET_MBPS:.0f}")
    if opts.price_per_gpu_hour is not None and opts.price_per_gpu_hour > MAX_PRICE:
        validate.bounded_float(opts.price_per_gpu_hour, "--price-per-gpu-hour", -1, MAX_PRICE,
                               "per GPU and hour", "2.49")
    if opts.steps is not None:
        validate.steps_or_epoch(opts.steps, "--steps")
    if opts.tune not in TUNE_MODES:
        raise ConfigError(f"tune mode {opts.tune!r}", "use --tune (always), --no-tune (never) or neither (auto)")
    if opts.runtime not in ("docker", "native"):
        raise ConfigError(f"--runtime {opts.runtime!r}: kitctl runs in docker (the kit's images) or native",
                          "use --runtime docker or --runtime native")
    for flag, path in (("--source", opts.source), ("--hellaswag-source", opts.hellaswag_source),
                       ("--inventory", opts.inventory)):
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{flag} {path}: no such file or folder", f"check the path given to {flag}")
        if path is not None and not Path(path).is_dir():
            check_regular(Path(path), flag)       # a device, FIFO or socket: exit 2 naming it, never a hang
    if opts.binary is not None and opts.runtime != "native":
        raise ConfigError("--binary is a host program: it needs --runtime native", "add --runtime native")


# ------------------------------------------------------------------------------------------------ data
def _manifest(out_dir: Path) -> Optional[DataManifest]:
    """The data folder's typed manifest; None when there is none or it is damaged (the data stage says why)."""
    try:
        folder = DataFolder(out_dir)
        return folder.manifest() if folder.has_manifest() else None
    except KitError:
        return None


def data_input(cfg: KitConfig, plan: DataPlan) -> fc.DataInput:
    c = fc.costs().data
    r = plan.recipe
    if plan.kind not in ("tokenize", "pretokenized"):
        raise ConfigError(f"dataset {plan.spec!r} is not training data", "give fineweb10B, "
                          "fineweb10B-pretokenized, tinyshakespeare or local parquet/jsonl/txt files")
    tokens = plan.est_tokens or 0     # local files (a recipe's --source too): measured on a sample by make_plan
    download = hf_cache = 0
    if plan.kind == "pretokenized":
        assert r is not None      # pre-tokenized shards always come from a recipe
        shards = (plan.train_shards if plan.train_shards is not None else (r.train_shards or 103)) + 1
        download = 0 if plan.source else shards * c.pretokenized_shard_bytes
    else:
        first = min(plan.first_shard_size, max(tokens, 1))
        shards = 1 + max(1, math.ceil((tokens - first) / plan.shard_size))
        if r is not None and r.kind == "hf_parquet" and not plan.source:
            download = r.approx_download_bytes or 0
            hf_cache = 0 if plan.stream else download
    m = _manifest(plan.out_dir)
    done = m.total_tokens if m is not None else 0
    # no training shard (a folder made before the kit picked shard sizes): not complete; the data stage says why
    complete = m is not None and m.complete and done > 0 and bool(m.train_files)
    if complete:
        assert m is not None
        tokens, shards = done, len(m.shards)
        download = 0
    elif hf_cache and done:   # tokenizing again: the parquet is in the HF cache already
        download = 0
    what = plan.recipe.description if plan.recipe else f"local files {plan.spec}"
    return fc.DataInput(plan.kind, f"{plan.dataset} -> {plan.out_dir}" if plan.recipe else what, tokens, shards,
                        download, hf_cache, done if not complete else tokens, complete,
                        encoder=encoders.choose(plan.encoder)[0])


def synthetic_data(plan: DataPlan, d: fc.DataInput) -> DataInfo:
    """Shards as the data stage will write them (token counts only), for planning before they exist."""
    size = plan.shard_size if plan.kind == "tokenize" else 100_000_000
    first = plan.first_shard_size if plan.kind == "tokenize" else size
    if d.tokens <= first:
        suggest = small_shard_size(d.tokens)
        raise ConfigError(f"{plan.spec}: ~{d.tokens:,} tokens fill only the val shard (its first {first:,} tokens):"
                          " no training shard would be left", f"pass --shard-size {suggest} (tokens per shard) so "
                          "the data makes a val shard and several training shards")
    rest = d.tokens - first
    train = [Shard(shard_filename(plan.name, i + 1), min(size, rest - i * size))
             for i in range(max(1, math.ceil(rest / size)))]
    return DataInfo(plan.out_dir, plan.name, tuple(train), (Shard(shard_filename(plan.name, 0), first),))


def planned_data(cfg: KitConfig, preset: str) -> DataInfo:
    """The shards the preset's dataset will have once `kitctl data` writes them, said as such: what `kitctl train
    --dry-run` plans on before the data exists."""
    dplan = make_plan(cfg, load_presets()[preset].data)
    d = data_input(cfg, dplan)
    info = synthetic_data(dplan, d)
    return dataclasses.replace(info, notes=(*info.notes, (
        f"no shards at {dplan.out_dir} yet: planned on the ~{d.tokens:,} tokens that `kitctl data {dplan.spec}` "
        f"will write there ({d.shards} shards, the dataset's size), not on shards read")))


def hellaswag_input(plan: DataPlan) -> fc.HellaswagInput:
    c = fc.costs().hellaswag
    out = plan.hellaswag_bin
    if out.is_file():
        with out.open("rb") as f:
            head = f.read(HEADER_BYTES)
        try:
            n = unpack_hellaswag_header(head).examples
        except HeaderError:
            n = c.examples
        return fc.HellaswagInput(n, True, 0)
    if plan.source:
        with open_regular(Path(plan.source), "HellaSwag file") as f:
            n = sum(1 for line in f if line.strip())
        return fc.HellaswagInput(n, False, 0)
    cached = plan.layout.hellaswag_jsonl
    return fc.HellaswagInput(c.examples, False, 0 if cached.is_file() else c.jsonl_bytes)


# ----------------------------------------------------------------------------------------------- train
def tune_configs(req: TrainRequest, facts: Facts, plan: Plan) -> int:
    """How many (B, -r) the default ``kitctl tune`` sweep measures for this plan (train's own rules)."""
    scratch = dataclasses.replace(facts, out=OutState(plan.decisions.out_dir / "tune-scratch"), tune_records=())
    tune_req = dataclasses.replace(req, mode="bench", no_tune=True, tune_first=False, fresh=False, micro_batch=None,
                                   recompute=None)
    return len(sweep_configs_for(tune_req, scratch, plan))


def _measured_tok_s(plan: Plan, facts: Facts) -> Optional[float]:
    b = plan.decisions.batch
    for cached in facts.tune_records:
        if str(cached.path) == b.tune_file:
            hits = [r.tok_s for r in cached.record.ok()
                    if r.micro_batch == b.micro_batch and r.recompute == b.recompute and r.tok_s]
            return float(max(hits)) if hits else None
    return None


def gpus_label(gpus) -> str:
    """``8x H100 80GB HBM3``; a mixed box ``1x GeForce RTX 2080 Ti + 1x GeForce RTX 3090`` (a count per model)."""
    counts: dict[str, int] = {}
    for g in gpus:
        name = g.name.replace("NVIDIA ", "")
        counts[name] = counts.get(name, 0) + 1
    return " + ".join(f"{n}x {name}" for name, n in sorted(counts.items()))


def train_input(plan: Plan, facts: Facts, hs_examples: int) -> fc.TrainInput:
    d = plan.decisions
    b, s, r = d.batch, d.schedule, d.resumption
    measured = _measured_tok_s(plan, facts) if b.tune_file else None
    return fc.TrainInput(
        gpus_label=gpus_label(d.hardware.gpus), ranks=d.ranks, precision=d.hardware.precision,
        micro_batch=b.micro_batch, seq_len=d.seq_len, total_batch=d.total_batch, steps=s.steps,
        params=dims_for(d.preset.descriptor).params, zero_stage=d.zero_stage,
        tok_s=measured or b.est_tok_s, tok_s_basis="measured" if measured else (
            "quoted" if b.estimate and "quoted:" in b.estimate.basis else "estimate"),
        hellaswag_examples=hs_examples if s.hellaswag else 0, val_every=s.val_every,
        val_batches=s.val_batches if s.val_batches is not None else fc.costs().train.val_batches,
        checkpoint_every=s.checkpoint_every, checkpoints_keep=s.checkpoints_keep or 0,
        done_step=r.resume_step if r.resume else None)


NO_GPU_REASON = ("no NVIDIA GPU on this machine: plan training for the box that trains with --inventory FILE "
                 "(examples: docs/inventories/*.csv)")
NO_GPU_NOTE = ("training is planned for the GPUs of --inventory FILE: on the training box, nvidia-smi "
               "--query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader > box.csv; the "
               "checkout's docs/inventories/ has examples, e.g. --inventory docs/inventories/2080ti-3090.csv")


def gpu_less_train_input(req: TrainRequest, data: DataInfo) -> fc.TrainInput:
    """The train stage without GPUs to plan on: its checkpoints from the preset (ZeRO-1 shards the optimizer
    state, so their total size does not depend on the GPU count), no time (``tok_s`` None, with the reason)."""
    preset = load_presets()[req.preset]
    r = absorb_passthrough(req)       # the pass-through's values, as the planner reads them

    def pick(asked: Optional[int], preset_value: int) -> int:
        return asked if asked is not None else preset_value

    seq, total = pick(r.seq_len, preset.seq_len), pick(r.total_batch, preset.total_batch)
    steps = req.steps if req.steps and req.steps > 0 else (preset.steps if preset.steps > 0 else
                                                           sum(s.tokens for s in data.train) // total)
    return fc.TrainInput(
        gpus_label="GPUs not known", ranks=1, precision="bf16", micro_batch=0, seq_len=seq, total_batch=total,
        steps=steps, params=dims_for(preset.descriptor).params, zero_stage=pick(r.zero_stage, preset.zero_stage),
        tok_s=None, tok_s_basis="estimate", val_every=pick(r.val_every, preset.val_every),
        checkpoint_every=pick(r.checkpoint_every, preset.checkpoint_every), checkpoints_keep=r.checkpoints_keep or 0,
        unplanned=NO_GPU_REASON)


# ----------------------------------------------------------------------------------------------- build
def build_input(cfg: KitConfig, opts: ReproduceOptions, precision: str, archs: list[int]) -> fc.BuildInput:
    sm = ",".join(str(a) for a in archs) or "(the GPUs' own; none here)"
    if opts.runtime == "native":
        binary = Path(opts.binary) if opts.binary else cfg.layout.native_bin / BINARIES[precision]
        if binary.is_file():
            why = "--binary" if opts.binary else "built earlier (`kitctl build --runtime native` rebuilds)"
            return fc.BuildInput("native", True, f"{binary} ({why})")
        if opts.binary:
            raise ConfigError(f"--binary {binary}: no such file", "give the path of a built train_gpt2cu")
        spec = opts.llmc_src or cfg.mirrors.llmc_src
        local = bool(spec) and not str(spec).startswith(("http://", "https://"))
        return fc.BuildInput("native", False, f"compile llm.c for sm {sm} into {binary.parent}", local)
    ref = runtime_image_ref(cfg)
    found = inspect_image(ref)
    differs = image_differences(cfg, opts, archs, found.labels) if found.id else []
    if found.id and not differs:
        return fc.BuildInput(cfg.provider, True, f"image {ref} found (its recipe hash is re-checked when run)")
    if differs:
        note = f"rebuild: {ref} is another recipe ({'; '.join(differs)}), "
        if opts.bundle is not None and opts.bundle.image("runtime") is not None:
            return fc.BuildInput(cfg.provider, False, note + "load the bundle's", True, bundled=True)
        if cfg.pull_image:
            return fc.BuildInput(cfg.provider, False, note + f"pull {cfg.pull_image} instead", pulled=True)
        return fc.BuildInput(cfg.provider, False, note + f"images ({cfg.provider} provider) for sm {sm}")
    packed = opts.bundle.image("runtime") if opts.bundle is not None else None
    if packed is not None:
        return fc.BuildInput(cfg.provider, False, f"load {packed[1].get('ref')} from the bundle (docker load, "
                             "recipe labels checked)", True, bundled=True)
    if cfg.pull_image:
        return fc.BuildInput(cfg.provider, False, f"pull {cfg.pull_image} (pushed by `kitctl build --push`; recipe "
                             f"labels checked) as {ref}: nothing built here", pulled=True)
    if archs:       # an arch the provider's CUDA cannot build would stop nvcc after the download: refuse it now
        pins.check_buildable(archs, resolve_cuda(cfg.provider, cfg.cuda, cfg.base_image), cfg.provider)
    return fc.BuildInput(cfg.provider, False, f"images ({cfg.provider} provider) for sm {sm}: {ref}")


def places(cfg: KitConfig, dk: docker_disk.DockerStorage) -> tuple[disks.Place, ...]:
    """Where this run writes on this machine, each with its filesystem: the data root, the HF cache (hf_home)
    and Docker's storage (when the engine is local)."""
    out = [disks.locate(disks.DATA_ROOT, cfg.data_root), disks.locate(disks.HF_CACHE, cfg.hf_cache)]
    dp = disks.docker_place(dk)
    return tuple(out + ([dp] if dp else []))


def image_differences(cfg: KitConfig, opts: ReproduceOptions, archs: list[int],
                      labels: Optional[dict[str, str]]) -> list[str]:
    """How the existing runtime image's labels differ from this plan's build (provider, CUDA, archs, lock hash);
    [] when they agree or the plan's build cannot be said here (the build stage then says why)."""
    try:
        req = BuildRequest.from_config(cfg, archs=archs or (None if cfg.arch != "auto" else [90]), target="runtime",
                                       llmc_src=opts.llmc_src)
        req.lock = images_lock.load()
    except ConfigError:
        return []
    if not archs and cfg.arch == "auto":
        req.archs = []                   # no GPUs to say which: the archs are not judged
    return label_differences(req, {str(k): str(v) for k, v in (labels or {}).items()})


# ------------------------------------------------------------------------------------------------ all
def gather(cfg: KitConfig, opts: ReproduceOptions, plan_only: bool = False,
           gpus: Optional[list[GPU]] = None) -> Gathered:
    """Read everything the pure planner needs (no writes, no downloads) and make its inputs. ``plan_only`` (a dry
    run): on a machine without GPUs (and no --inventory) every GPU-free stage is planned and the train stage says
    how to plan it, instead of the refusal a run gets. ``gpus``: plan for these GPUs (the reference box of
    kitctl/pipeline/reference.py) instead of ``--inventory`` or nvidia-smi."""
    check_options(opts)
    preset = load_presets()[opts.preset]
    notes: list[str] = []
    dplan = make_plan(cfg, opts.dataset or preset.data, shard_size=opts.shard_size, workers=opts.workers,
                      stream=opts.stream, source=str(opts.source) if opts.source else None)
    dinput = data_input(cfg, dplan)
    hplan = make_plan(cfg, "hellaswag", source=str(opts.hellaswag_source) if opts.hellaswag_source else None,
                      source_flag="--hellaswag-source")
    hinput = hellaswag_input(hplan)
    treq = TrainRequest(preset=opts.preset, gpus=opts.gpus, steps=opts.steps, name=opts.name, data=dplan.out_dir,
                        runtime=opts.runtime, binary=opts.binary, passthrough=list(opts.passthrough),
                        precision=opts.precision, force_memory=opts.force_memory)
    data = inspect_data(dplan.out_dir) if dinput.complete else synthetic_data(dplan, dinput)
    if not dinput.complete:
        notes.append(f"no complete data in {dplan.out_dir} yet: training is planned on the ~{dinput.tokens:,} "
                     "tokens the data stage will write")
    # the HellaSwag file and the tokenizer: this pipeline's own stages make them before training
    facts = gather_facts(cfg, treq, opts.inventory, opts.mpirun, data=data, gpus=gpus,
                         eval_files_planned=True)
    if plan_only and opts.inventory is None and gpus is None and not facts.gpus:
        return _gpu_less(cfg, opts, dplan, dinput, hplan, hinput, treq, data, notes)
    try:
        tplan = build_plan(treq, facts)
    except KitError as e:   # the train planner's refusal, said for this command
        where = f"the box in {opts.inventory}" if opts.inventory else "this machine's GPUs"
        raise KitError(f"cannot train {opts.preset} on {where}: {e.message}",
                       (e.hint or "") + "; train_gpt2cu flags go after the preset and `--`, e.g. "
                       f"`kitctl reproduce {opts.preset} -- -r 2`", exit_code=e.exit_code) from None
    notes += [n for n in tplan.notes if "HellaSwag file not found" not in n and TOKENIZER_BIN not in n]
    archs = sorted(set(cfg.arch if isinstance(cfg.arch, list) else []) | set(distinct_archs(facts.gpus)))
    tinput = train_input(tplan, facts, hinput.examples)
    td = tplan.decisions
    resuming = td.resumption.resume
    tune = fc.TuneInput(opts.tune, tune_configs(treq, facts, tplan) if not resuming else 0,
                        cached=td.batch.tune_file, resuming=resuming)
    cpus = opts.cpus or dplan.workers or os.cpu_count() or 1
    if opts.inventory is not None and opts.cpus is None:
        notes.append(f"tokenizing assumed on {cpus} CPUs (this machine's count): pass --cpus N for the planned box")
    run_dir = td.out_dir
    here = opts.inventory is None and gpus is None        # planning for this machine
    dk = docker_disk.query() if opts.runtime == "docker" and here else docker_disk.DockerStorage()
    box = fc.Box(gpus=len(facts.gpus), cpus=cpus, net_bytes_per_s=opts.net_mbps * 1e6 / 8,
                 free_bytes=free_bytes(cfg.data_root) if here else None,
                 docker_root=str(dk.root_dir or ""), docker_free_bytes=dk.free_bytes,
                 label=gpus_label(select(facts.gpus, opts.gpus)), places=places(cfg, dk) if here else ())
    inputs = fc.Inputs(box=box, build=build_input(cfg, opts, td.hardware.precision, archs), data=dinput,
                       hellaswag=hinput, tune=tune, train=tinput,
                       report_exists=(run_dir / "report.html").is_file() and td.resumption.complete,
                       price_per_gpu_hour=opts.price_per_gpu_hour)
    return Gathered(inputs, run_dir, dplan, hplan, treq, tplan, archs, notes)


def _gpu_less(cfg: KitConfig, opts: ReproduceOptions, dplan: DataPlan, dinput: fc.DataInput, hplan: DataPlan,
              hinput: fc.HellaswagInput, treq: TrainRequest, data: DataInfo, notes: list[str]) -> Gathered:
    """The plan of a dry run on a machine without GPUs: everything but the train stage's time (and the tune)."""
    archs = sorted(set(cfg.arch if isinstance(cfg.arch, list) else []))
    cpus = opts.cpus or dplan.workers or os.cpu_count() or 1
    run_dir = (cfg.runs_dir / (opts.name or opts.preset)).absolute()
    dk = docker_disk.query() if opts.runtime == "docker" else docker_disk.DockerStorage()   # this machine's
    box = fc.Box(gpus=0, cpus=cpus, net_bytes_per_s=opts.net_mbps * 1e6 / 8, free_bytes=free_bytes(cfg.data_root),
                 docker_root=str(dk.root_dir or ""), docker_free_bytes=dk.free_bytes, label="no GPU here",
                 places=places(cfg, dk))
    notes.append(NO_GPU_NOTE)
    inputs = fc.Inputs(box=box, build=build_input(cfg, opts, "bf16", archs), data=dinput, hellaswag=hinput,
                       tune=fc.TuneInput(opts.tune, 0), train=gpu_less_train_input(treq, data),
                       report_exists=False, price_per_gpu_hour=opts.price_per_gpu_hour)
    return Gathered(inputs, run_dir, dplan, hplan, treq, None, archs, notes)


# ------------------------------------------------------------------------------------------- decisions
# where a decision's number comes from: measured (the tune cache on this box), quoted (a published llm.c figure),
# estimate (the kit's models), given (the user's flag), checkpoint (kept to resume), rule (llm.c's arithmetic)
_BY_SOURCE = {"user": "given", "checkpoint": "checkpoint", "oom-retry": "given", "tune": "measured"}


def _decision(value, reason: str, source: str) -> dict:
    return {"value": value, "reason": reason, "source": source}


def decisions(g: Gathered) -> dict:
    """The train plan's decisions for ``--dry-run --json``: GPUs, precision, B, recompute and gradient
    accumulation, each with its reason and the source of the numbers behind it (scripts read these, not the
    ``detail`` strings)."""
    plan, t, req = g.train_plan, g.inputs.train, g.train_request
    if plan is None:
        why = t.unplanned or NO_GPU_REASON
        return {k: _decision(None, why, "unknown") for k in ("gpus", "precision", "micro_batch", "recompute",
                                                            "grad_accumulation")}
    basis = t.tok_s_basis           # measured | quoted | estimate: the tokens/s the choices were compared by
    d = plan.decisions
    hw, batch = d.hardware, d.batch
    gpus = [{"index": x.index, "name": x.name, "memory_mib": x.memory_mib} for x in hw.gpus]
    picked = [o for o in hw.options if o.chosen]
    gpu_reason = "; ".join(hw.notes) or (f"--gpus {req.gpus}" if req.gpus.strip() != "all" else
                                         "every GPU of the box")
    gpu_source = "given" if req.gpus.strip() != "all" and not hw.options else basis
    if req.precision:
        prec = _decision(hw.precision, f"--precision {req.precision}", "given")
    elif picked:
        others = [o for o in hw.options if not o.chosen]
        prec = _decision(hw.precision, f"{picked[0].label}: ~{picked[0].est_tok_s or 0:,.0f} tok/s against "
                         + ", ".join(f"{o.label}: ~{o.est_tok_s or 0:,.0f} tok/s" for o in others)
                         + "; override with --precision", basis)
    else:
        prec = _decision(hw.precision, "every chosen GPU has BF16 tensor cores (sm_80+)" if hw.precision == "bf16"
                         else "a chosen GPU has no BF16 tensor cores (pre-Ampere): the FP32 build", "rule")
    src = _BY_SOURCE.get(batch.source, basis)
    r_notes = [n for n in plan.notes if "recompute" in n or "-r 0 and -r 1" in n]
    rows = batch.micro_batch * d.seq_len * d.ranks
    return {
        "gpus": _decision(gpus, gpu_reason, gpu_source),
        "precision": prec,
        "micro_batch": _decision(batch.micro_batch, batch.choice, src),
        "recompute": _decision(batch.recompute, "; ".join(r_notes) or f"with B={batch.micro_batch}: {batch.choice}",
                               "given" if req.recompute is not None or "-r" in req.passthrough else src),
        "grad_accumulation": _decision(d.total_batch // rows, f"total batch -d {d.total_batch:,} / (B "
                                       f"{batch.micro_batch} x T {d.seq_len} x {d.ranks} rank(s))", "rule"),
        "tok_s": _decision(t.tok_s, f"tokens/s of the chosen config ({basis})", basis),
    }
