"""Render ``docker/Dockerfile.j2`` (with its blocks, ``docker/blocks.j2``) for a :class:`BuildRequest`. Pure.

Python passes data only -- :func:`template_data`: validated pins (versions, the arch list, the provider's wheel set
or NCCL apt pin, base images) and the OCI labels; every constant and every Dockerfile word is in the templates.

* :func:`render` -- the whole Dockerfile text;
* :func:`stage_texts` -- the rendered file split by stage (what each image tag hashes);
* :func:`image_labels` -- the ``org.llmc-kit.*`` labels of a stage (every pin that went into it);
"""
from __future__ import annotations

import hashlib
from typing import Any, NoReturn, Optional

import jinja2

from kitctl.core import pins, resources
from kitctl.images import inputs
from kitctl.images import lock as lock_mod
from kitctl.images.request import TARGETS, BuildRequest, base_images

DOCKER_DIR = resources.share("docker")
TEMPLATE_NAME = "Dockerfile.j2"
BLOCKS_NAME = "blocks.j2"
STAGE_MARK = "# {name}: "
APT_STAGES = ("toolchain", "runtime", "data")     # the stages that run apt_install (build is FROM toolchain)


def _fail(message: str) -> NoReturn:
    raise ValueError(message)


def environment() -> jinja2.Environment:
    """The Jinja environment of the templates in docker/ (strict: an unknown name is an error)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(DOCKER_DIR)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.globals["fail"] = _fail
    env.filters["apt_pin"] = _apt_pin
    return env


@jinja2.pass_context
def _apt_pin(ctx: Any, packages: list[str], stage: str) -> list[str]:
    """Filter ``packages | apt_pin("data")``: the stage's apt list under the lock (:func:`lock.pin_list`); the
    named list is recorded in ``apt_seen`` when the render collects it (:func:`apt_requests`)."""
    seen = ctx.get("apt_seen")
    if isinstance(seen, dict):
        seen[stage] = list(packages)
    return lock_mod.pin_list(list(packages), ctx["apt_lock"].get(stage, {}))


def blocks() -> Any:
    """docker/blocks.j2 as a module: ``blocks().apt_install(["curl"], "why")`` renders one block (tests, docs)."""
    return environment().get_template(BLOCKS_NAME).module


def wheel_pins(req: BuildRequest) -> dict[str, Any]:
    """The wheels provider's set for ``req``: toolkit version + extras, the other exact pins, the --no-deps tools."""
    w = pins.load().providers.wheels
    keep = {k: v for k, v in w.wheels.items() if k not in ("cuda-toolkit", "nvidia-cudnn-frontend")}
    if not req.cudnn:
        keep = {k: v for k, v in keep.items() if not k.startswith("nvidia-cudnn-cu")}
    return {"toolkit": w.wheels["cuda-toolkit"], "extras": list(w.toolkit_extras), "pins": keep,
            "tools": dict(w.tools)}


def stage_locks(req: BuildRequest) -> dict[str, lock_mod.StageLock]:
    """The lock entries that apply to ``req``: stage -> entry, for each apt stage whose entry in ``req.lock`` was
    made from the same base reference this build uses (an entry for another base does not apply)."""
    if req.lock is None:
        return {}
    bases = base_images(req)
    out = {}
    for stage in APT_STAGES:
        entry = req.lock.stages.get(lock_mod.stage_id(req.provider, stage))
        if entry is not None and entry.base == bases[stage]:
            out[stage] = entry
    return out


def lock_gaps(req: BuildRequest) -> list[str]:
    """Why the lock does not cover ``req`` (one line per stage), [] when it does or there is no lock."""
    if req.lock is None:
        return []
    bases, have = base_images(req), stage_locks(req)
    out = []
    for stage in APT_STAGES:
        sid = lock_mod.stage_id(req.provider, stage)
        entry = req.lock.stages.get(sid)
        if entry is None:
            out.append(f"[{sid}] is not in the lock (base {bases[stage]})")
        elif stage not in have:
            out.append(f"[{sid}] was locked for base {entry.base}, this build uses {bases[stage]}")
    return out


def apt_requests(req: BuildRequest) -> dict[str, list[str]]:
    """The packages each apt stage names in the template (before any lock): stage -> list (pure)."""
    seen: dict[str, list[str]] = {}
    data = template_data(req, "", use_lock=False)
    environment().get_template(TEMPLATE_NAME).render(**data, apt_seen=seen)
    return seen


def image_labels(req: BuildRequest, stage: str, llmc_label: str = "") -> dict[str, str]:
    """OCI labels recording every pin that went into a stage, plus the arch list."""
    p = pins.load()
    lab = {
        "org.opencontainers.image.title": f"llmc-kit {stage}",
        "org.opencontainers.image.source": "llmc-kit",
        "org.llmc-kit.stage": stage,
        "org.llmc-kit.provider": req.provider,
        "org.llmc-kit.cuda": req.cuda,
        "org.llmc-kit.archs": req.arch_csv,
        "org.llmc-kit.cudnn": "on" if req.cudnn else "off",
        "org.llmc-kit.cudnn-frontend": p.cudnn_frontend.version,
        "org.llmc-kit.openmpi": "distro " + " ".join(p.openmpi.apt_build),
        "org.llmc-kit.llmc.commit": p.llmc.commit,
        "org.llmc-kit.llmc.tarball-sha256": p.llmc.tarball_sha256,
        "org.llmc-kit.versions-sha256": pins.pins_sha256(),
    }
    if req.provider == "wheels":
        w = p.providers.wheels
        used = {**w.wheels, **w.tools}
        if not req.cudnn:
            used = {k: v for k, v in used.items() if not k.startswith("nvidia-cudnn-cu")}
        lab["org.llmc-kit.wheels"] = " ".join(f"{k}=={v}" for k, v in sorted(used.items()))
    else:
        known = pins.cuda_images().get(req.cuda)
        lab["org.llmc-kit.nccl"] = (known.nccl_apt if known else None) or "as shipped in the base image"
    if stage == "data":   # CPU-only: nothing of the CUDA side, so the data tag does not move with it
        lab = {k: v for k, v in lab.items() if k.startswith("org.opencontainers") or k in (
            "org.llmc-kit.stage", "org.llmc-kit.versions-sha256")}
        lab["org.llmc-kit.requirements-lock-sha256"] = hashlib.sha256(
            resources.share("docker", "requirements.lock").read_bytes()).hexdigest()
    if llmc_label and stage in ("build", "runtime"):
        lab["org.llmc-kit.llmc.source"] = llmc_label
    if req.lock is not None:
        sids = lock_mod.image_sids(req.provider, stage)
        if all(s in req.lock.stages for s in sids) and set(lock_mod.IMAGE_SECTIONS[stage]) <= set(stage_locks(req)):
            lab[lock_mod.LABEL] = req.lock.sections_sha256(sids)
    return lab


def template_data(req: BuildRequest, llmc_label: str = "", use_lock: bool = True) -> dict[str, Any]:
    """Everything the template varies on -- data only, every string checked to be one line. Under a lock
    (``req.lock``, for the stages it covers): the FROM reference pinned by digest, a note for a local image ID, and
    the apt versions (``apt_lock``, applied by the ``apt_pin`` filter)."""
    p = pins.load()
    known = pins.cuda_images().get(req.cuda)
    locks = stage_locks(req) if use_lock else {}
    bases = base_images(req)
    data: dict[str, Any] = {
        "provider": req.provider, "cuda": req.cuda, "cuda_mm": req.cuda_mm, "cuda_major": req.cuda_major,
        "archs": list(req.archs), "cudnn": req.cudnn, "llmc_commit": p.llmc.commit, "image": req.image,
        "bases": {k: (locks[k].pinned_base() if k in locks else v) for k, v in bases.items()},
        "base_notes": {k: (f"locked: local image ID {locks[k].digest} (kitctl build checks it; BuildKit cannot "
                           "name an image ID in FROM)" if k in locks and locks[k].source == "local" else "")
                       for k in bases},
        "apt_lock": {k: dict(v.apt) for k, v in locks.items()},
        "openmpi": {"apt_build": list(p.openmpi.apt_build), "apt_runtime": list(p.openmpi.apt_runtime),
                    "dir": p.openmpi.dir},
        "cudnn_frontend": p.cudnn_frontend.version,
        "wheels": wheel_pins(req) if req.provider == "wheels" else None,
        "nccl_apt": known.nccl_apt if (known and req.provider == "nvidia") else None,
        "not_in_data_image": list(p.python.not_in_data_image),
        "uv": p.python.uv,
        "labels": {stage: image_labels(req, stage, llmc_label) for stage in ("toolchain", "runtime", "data")},
    }
    inputs.single_line_values(data)
    return data


def render(req: BuildRequest, llmc_label: str = "") -> str:
    """The whole multi-stage Dockerfile for ``req`` (pure)."""
    text = environment().get_template(TEMPLATE_NAME).render(**template_data(req, llmc_label))
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def stage_texts(dockerfile: str) -> dict[str, str]:
    """Split a rendered Dockerfile into its stages (by the ``# <stage>: ...`` banners)."""
    out: dict[str, str] = {}
    current = "_header"
    for line in dockerfile.splitlines(keepends=True):
        for name in TARGETS:
            if line.startswith(STAGE_MARK.format(name=name)):
                current = name
        out[current] = out.get(current, "") + line
    return out


APT_HOSTS = {"debian": "http://deb.debian.org/debian", "ubuntu": "http://archive.ubuntu.com/ubuntu"}
APT_SNAPSHOTS = {"debian": "http://snapshot.debian.org/archive/debian/{ts}", "ubuntu": "http://snapshot.ubuntu.com/ubuntu/{ts}"}
PYPI_INDEX = "https://pypi.org/simple"
NVIDIA_APT = "https://developer.download.nvidia.com/compute/cuda/repos"
TARGET_STAGES = {"toolchain": ("toolchain",), "build": ("toolchain",), "runtime": ("toolchain", "runtime"),
                 "data": ("data",)}


def _distro(ref: str) -> str:
    return "ubuntu" if "ubuntu" in ref.rsplit("/", 1)[-1] else "debian"


def download_sources(req: BuildRequest, target: Optional[str] = None) -> list[tuple[str, str]]:
    """Where a build of ``target`` (default ``req.target``) downloads from, after every mirror: (what, where)
    pairs -- each FROM image (pinned by the lock when it covers the stage), the apt archive (mirrors.apt /
    mirrors.apt_snapshot, else the distribution's), the pip index (mirrors.pip_index, else PyPI) and llm.c's
    source (--llmc-src / mirrors.llmc_src, else the pinned GitHub tarball). Pure."""
    stages = TARGET_STAGES[target or req.target]
    bases, locks = base_images(req), stage_locks(req)
    out: list[tuple[str, str]] = []
    for s in stages:
        ref = locks[s].pinned_base() if s in locks else bases[s]
        if ("base image", ref) not in out:
            out.append(("base image", ref))
    for s in stages:
        d = _distro(bases[s])
        where = (req.apt_mirror or (APT_SNAPSHOTS[d].format(ts=req.apt_snapshot) if req.apt_snapshot else APT_HOSTS[d]))
        if ("apt", where) not in out:
            out.append(("apt", where))
    if req.provider == "nvidia" and set(stages) & {"toolchain", "runtime"}:
        out.append(("apt", NVIDIA_APT))        # the nvidia/cuda images' own list (NCCL); no kit.yaml mirror
    out.append(("pip", req.pip_index or PYPI_INDEX))
    if "toolchain" in stages and (target or req.target) != "toolchain" and (
            not req.llmc_src or str(req.llmc_src).startswith(("http://", "https://"))):   # a local source: no download
        p = pins.load().llmc
        out.append(("llm.c", str(req.llmc_src) if req.llmc_src else p.tarball_url.format(commit=p.commit)))
    return out


JUDGED_LABELS = ("org.llmc-kit.provider", "org.llmc-kit.cuda", "org.llmc-kit.archs", lock_mod.LABEL)


def label_differences(req: BuildRequest, found: dict[str, str], stage: str = "runtime") -> list[str]:
    """How an existing image's labels differ from what a build of ``req`` would write, judged on what can be read
    without llm.c's source: provider, CUDA, the arch list (an image built for more archs serves fewer) and the
    images lock's hash. [] when they agree; one ``label: image X, this plan Y`` line each otherwise. Pure."""
    want = image_labels(req, stage)
    out = []
    for key in JUDGED_LABELS:
        mine, theirs = want.get(key), found.get(key)
        if mine is None and theirs is None:
            continue
        if key == "org.llmc-kit.archs":
            if not mine:                 # the plan does not know the GPUs: archs are not judged
                continue
            if theirs and {a.strip() for a in mine.split(",")} <= {a.strip() for a in theirs.split(",")}:
                continue
        if mine != theirs:
            out.append(f"{key.removeprefix('org.llmc-kit.')}: image {theirs or '(none)'}, this plan {mine or '(none)'}")
    return out
