"""What the training planner knows about the machine: :class:`Facts`, its parts, and :func:`gather_facts`,
the one reader of them (GPUs from nvidia-smi or --inventory, the shards through kitctl.core.data_folder.DataFolder,
the run folder, host mpirun, the runtime's identity, the tune cache). The only part of planning that touches the machine.

Each reader returns a small frozen record; ``kitctl.train.planner.build_plan`` takes them and stays pure (tests build
these records by hand). Nothing here starts a process (python-on-whales asks the Docker engine for an image id).
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kitctl.core.config import KitConfig, nccl_env
from kitctl.core.files import sha256_file
from kitctl.core.llmc_files import BINARIES as LLMC_BINARIES
# what train reads from a data folder is defined there (Shard: train's name for one shard's facts, kitctl.train's face)
from kitctl.core.data_folder import DataFolder, DataInfo
from kitctl.core.data_folder import ShardTokens as Shard  # noqa: F401
from kitctl.host import built_archs
from kitctl.host.gpus import GPU, load_inventory, visible
from kitctl.host.runtimes import runtime_image_ref
from kitctl.train.presets import get_preset
from kitctl.core.run_folder import RunFolder
from kitctl.core.run_record import PlanRecord, RuntimeRecord
from kitctl.train.request import TrainRequest
from kitctl.train.tune_cache import CachedTune, load_records

CUDA_LABEL = "org.llmc-kit.cuda"   # the image's CUDA (kitctl/images/render.py image_labels)
BINARIES = LLMC_BINARIES          # llm.c's binary per precision (kitctl.core.llmc_files)


def inspect_data(data_dir: Path) -> DataInfo:
    """What train reads from the shard folder ``data_dir``: kitctl.core.data_folder.DataFolder.facts (the folder
    checked against its manifest.json, whose shard list and token counts are the facts; headers only for a folder
    without one). Exit 2 naming the files and the fix otherwise."""
    return DataFolder(data_dir).facts()


@dataclass(frozen=True)
class OutState:
    """What an output folder holds from earlier runs."""

    dir: Path
    done_steps: tuple[int, ...] = ()
    state_ranks: int = 0                  # state_<max>_<rank>.bin files of the newest checkpoint
    run_plan: Optional[PlanRecord] = None  # run.json's plan (what the checkpoints were written with)
    has_main_log: bool = False
    run_json_error: Optional[str] = None  # run.json exists but cannot be read (why)

    @property
    def last_done(self) -> Optional[int]:
        return max(self.done_steps) if self.done_steps else None


def inspect_out(out_dir: Path) -> OutState:
    if not out_dir.is_dir():
        return OutState(out_dir)
    run = RunFolder(out_dir)
    ckpts = run.checkpoints()
    ranks = ckpts.states.get(ckpts.done[-1], 0) if ckpts.done else 0
    rec, error = run.load()
    plan = rec.plan if rec is not None else None
    return OutState(out_dir, ckpts.done, ranks, plan, run.main_log.exists(), error)


@dataclass(frozen=True)
class HostFacts:
    """The host side of a native or docker launch."""

    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    mpirun: Optional[str] = None          # resolved path of host mpirun (native), None if absent
    environ_nccl: tuple[tuple[str, str], ...] = ()   # NCCL_* of the caller's environment

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def host_facts(mpirun: str = "/usr/bin/mpirun", environ: Optional[dict[str, str]] = None) -> HostFacts:
    env = dict(os.environ) if environ is None else environ
    path = mpirun if os.path.isfile(mpirun) and os.access(mpirun, os.X_OK) else shutil.which(mpirun)
    nccl = tuple(sorted((k, v) for k, v in env.items() if k.startswith("NCCL_")))
    return HostFacts(mpirun=path, environ_nccl=nccl)


@dataclass(frozen=True)
class Facts:
    """Everything the planner knows about the machine (read by :func:`gather_facts`; tests write them by hand)."""

    gpus: list[GPU]
    data: DataInfo
    out: OutState
    data_root: Path
    host: HostFacts = field(default_factory=HostFacts)
    image: str = "llmc-kit:latest"
    native_bin_dir: Optional[Path] = None        # <data_root>/native/bin
    nccl_env: dict = field(default_factory=dict)  # from kit.yaml's nccl section
    hellaswag: Optional[Path] = None             # <data_root>/hellaswag/hellaswag_val.bin when present
    tokenizer: Optional[Path] = None             # <data_root>/gpt2_tokenizer.bin when present
    runtime_ids: dict = field(default_factory=dict)   # precision -> image id / binary sha256 (tune cache key)
    tune_records: tuple[CachedTune, ...] = ()    # <data_root>/tune/*.json
    run_token: str = "0"                         # makes the container name unique
    cudnn: Optional[bool] = None                 # the BF16 binary's cuDNN (build record / image label; None: unknown)
    image_cuda: Optional[str] = None             # docker: the CUDA the image is built for (its label, else kit.yaml cuda)


def inspect_image(ref: str) -> RuntimeRecord:
    """Image id, digests and labels through python-on-whales; only the reference when there is no engine or
    no such image (the run itself will then say why). python-on-whales is imported here, not at the top: it
    costs ~150 ms, which every kitctl command would pay at start-up."""
    from python_on_whales import DockerException, docker
    from python_on_whales.client_config import ClientNotFoundError

    try:
        img = docker.image.inspect(ref)
    except (DockerException, ClientNotFoundError, OSError):   # no docker CLI / engine / image
        return RuntimeRecord(kind="docker", image=ref)
    labels = dict(getattr(img.config, "labels", None) or {})
    return RuntimeRecord(kind="docker", image=ref, id=img.id, repo_digests=list(img.repo_digests or []),
                         labels=labels, images_lock=labels.get("org.llmc-kit.images-lock") or None)


def native_binary(req: TrainRequest, bin_dir: Path, precision: str) -> Path:
    """The host train_gpt2cu a native run of ``precision`` starts: ``--binary``, else the one in ``bin_dir``."""
    return Path(req.binary) if req.binary else bin_dir / BINARIES[precision]


def runtime_ids(req: TrainRequest, image: Optional[RuntimeRecord], bin_dir: Path) -> dict[str, str]:
    """What the tune cache is keyed by, per precision: the native binaries' sha256 (``--binary`` or the ones in
    ``bin_dir``), else the image's id; {} when neither exists yet."""
    if req.runtime == "native":
        ids: dict[str, str] = {}
        for prec in BINARIES:
            b = native_binary(req, bin_dir, prec)
            if b.is_file():
                ids[prec] = "sha256:" + sha256_file(b)
        return ids
    iid = image.id if image is not None else None
    return {"bf16": iid, "fp32": iid} if iid else {}


def built_cudnn(req: TrainRequest, image: Optional[RuntimeRecord], bin_dir: Path) -> Optional[bool]:
    """Whether the BF16 binary a run would start has cuDNN attention: the native build record beside it (when it
    still describes the binaries there, host.built_archs.native), or the image's ``org.llmc-kit.cudnn`` label;
    None when neither says."""
    if req.runtime == "native":
        return built_archs.native(native_binary(req, bin_dir, "bf16").parent).cudnn
    return built_archs.label_cudnn(image.labels) if image is not None else None


def gather_facts(cfg: KitConfig, req: TrainRequest, inventory: Optional[Path] = None,
                 mpirun: str = "/usr/bin/mpirun", environ: Optional[dict[str, str]] = None, *,
                 data: Optional[DataInfo] = None, gpus: Optional[list[GPU]] = None,
                 eval_files_planned: bool = False) -> Facts:
    """This machine's facts for ``req``. ``data``: the shards as a caller plans them (a pipeline plans training
    before its data stage writes them); ``gpus``: plan for these GPUs instead of ``inventory`` or nvidia-smi (a
    reference box); ``eval_files_planned``: the HellaSwag file and the tokenizer will be there by the launch (a
    pipeline's own stages make them first), so the plan mounts them even if absent now."""
    preset = get_preset(req.preset)
    where = cfg.layout
    data_dir = Path(req.data) if req.data else where.shards(preset.data)
    out_dir = Path(req.out) if req.out else where.run(req.name or preset.name)
    hs = where.hellaswag_bin
    tok = where.tokenizer_bin
    image = runtime_image_ref(cfg)
    bin_dir = where.native_bin
    img = inspect_image(image) if req.runtime != "native" else None
    if gpus is None:     # this machine's GPUs as the user's CUDA_VISIBLE_DEVICES allows (another machine's: as listed)
        gpus = load_inventory(inventory) if inventory is not None else visible(load_inventory(None),
                                                                               os.environ if environ is None else environ)
    return Facts(gpus=gpus, data=data if data is not None else inspect_data(data_dir),
                 out=inspect_out(out_dir.absolute()), data_root=cfg.data_root, host=host_facts(mpirun, environ),
                 image=image, native_bin_dir=bin_dir, nccl_env=nccl_env(cfg.nccl),
                 hellaswag=hs if eval_files_planned or hs.is_file() else None,
                 tokenizer=tok if eval_files_planned or tok.is_file() else None,
                 runtime_ids=runtime_ids(req, img, bin_dir), tune_records=load_records(where.tune_cache),
                 run_token=uuid.uuid4().hex[:8], cudnn=built_cudnn(req, img, bin_dir),
                 image_cuda=((img.labels or {}).get(CUDA_LABEL) if img else None) or (
                     cfg.cuda if req.runtime != "native" else None))
