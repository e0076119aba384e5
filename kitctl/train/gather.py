"""Read this machine's :class:`~kitctl.train.request.Facts` for the planner: GPUs (nvidia-smi or --inventory),
shards, the run folder, host mpirun, the runtime's identity (image id or native binary sha256: the tune cache
key) and the tune cache. The only part of planning that touches the machine."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Optional

from kitctl.core.config import KitConfig, nccl_env
from kitctl.core.files import sha256_file
from kitctl.host.gpus import load_inventory
from kitctl.host.runtimes import runtime_image_ref
from kitctl.train.facts import host_facts, inspect_data, inspect_out
from kitctl.train.launch import BINARIES
from kitctl.train.presets import get_preset
from kitctl.train.record import RuntimeRecord
from kitctl.train.request import Facts, TrainRequest
from kitctl.train.tune_cache import load_records


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


def runtime_ids(req: TrainRequest, image: str, bin_dir: Path) -> dict[str, str]:
    """What the tune cache is keyed by, per precision: the native binaries' sha256 (``--binary`` or the ones in
    ``bin_dir``), else the image's id; {} when neither exists yet."""
    if req.runtime == "native":
        ids: dict[str, str] = {}
        for prec, name in BINARIES.items():
            b = Path(req.binary) if req.binary else bin_dir / name
            if b.is_file():
                ids[prec] = "sha256:" + sha256_file(b)
        return ids
    iid = inspect_image(image).id
    return {"bf16": iid, "fp32": iid} if iid else {}


def gather_facts(cfg: KitConfig, req: TrainRequest, inventory: Optional[Path] = None,
                 mpirun: str = "/usr/bin/mpirun", environ: Optional[dict[str, str]] = None) -> Facts:
    preset = get_preset(req.preset)
    where = cfg.layout
    data_dir = Path(req.data) if req.data else where.shards(preset.data)
    out_dir = Path(req.out) if req.out else where.run(req.name or preset.name)
    gpus = load_inventory(inventory)
    data = inspect_data(data_dir)
    hs = where.hellaswag_bin
    tok = where.tokenizer_bin
    image = runtime_image_ref(cfg)
    bin_dir = where.native_bin
    return Facts(gpus=gpus, data=data, out=inspect_out(out_dir.absolute()), data_root=cfg.data_root,
                 host=host_facts(mpirun, environ), image=image, native_bin_dir=bin_dir, nccl_env=nccl_env(cfg.nccl),
                 hellaswag=hs if hs.is_file() else None, tokenizer=tok if tok.is_file() else None,
                 runtime_ids=runtime_ids(req, image, bin_dir), tune_records=load_records(where.tune_cache),
                 run_token=uuid.uuid4().hex[:8])
