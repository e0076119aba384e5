"""``kitctl doctor``: is this box ready for the kit, and what does each finding mean for llm.c?

Two halves, so the judgement is testable without Docker or GPUs:
* ``gather(cfg, inventory)`` probes the machine (docker CLI, ``docker info``, Docker's storage, nvidia-smi or an
  inventory CSV, disk space of the data root, /dev/shm, nvcc, Slurm, the arch list of what is built for the
  configured runtime: kitctl.host.built_archs) into a ``Facts``;
* ``evaluate(facts, cfg, disk)`` turns facts into ``Finding``s (ok / warn / fail, with what it means and what to
  do); ``disk`` is what the reference plan needs (kitctl/pipeline/reference.py hands it in: the numbers are the
  forecast planner's, never typed here);
* ``verdicts(findings, facts, cfg)``: ready or not for each purpose (data, build, train, and multi-node where
  Slurm is present), each with its reason. The box is ready when every purpose is.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from kitctl.core import net, pins
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError
from kitctl.core.files import existing_parent
from kitctl.host import built_archs, disks, docker_disk
from kitctl.core.records import short
from kitctl.host.gpus import (GPU, distinct_archs, driver_cuda, load_inventory, max_cuda_for_driver, unsupported,
                              unsupported_reason)
from kitctl.host.runtimes import gpu_container_argv, runtime_image_ref

GB = 1e9
DATA_NEED_GB = 10     # below this not even a small dataset + checkpoints fit: fail
SHM_NEED_GB = 1.0
PURPOSES = ("data", "build", "train", "multi-node")


@dataclass(frozen=True)
class DiskNeed:
    """What the reference plan (FineWeb10B + GPT-2 124M) needs, from the forecast planner."""

    data_root_bytes: int
    docker_bytes: int               # for this config's provider
    what: str                       # the sentence with its parts
    wheels_docker_bytes: int = 0
    hf_cache_bytes: int = 0         # of data_root_bytes: the HF cache's parquet (hf_home may be another disk)


_disk_model: Optional[Callable[[KitConfig], DiskNeed]] = None


def use_disk_model(model: Callable[[KitConfig], DiskNeed]) -> None:
    """The hook: what the reference plan needs on disk (kitctl/cli.py hands in kitctl.pipeline.reference.disk_need:
    host may not import the pipeline layer that owns the planner). Without it doctor judges no disk sizes."""
    global _disk_model
    _disk_model = model


def disk_need(cfg: KitConfig) -> Optional[DiskNeed]:
    return _disk_model(cfg) if _disk_model is not None else None


@dataclass(frozen=True)
class Endpoint:
    """A host the plan downloads from (after mirrors), for one purpose, and the offline way round it."""

    purpose: str        # data | build
    what: str           # HF endpoint | HellaSwag | registry | PyPI index | llm.c source
    url: str
    offline: str


NET_PROBE_SECONDS = 3.0
NET_CHECK = "network: "
_endpoints: Optional[Callable[[KitConfig], list[Endpoint]]] = None


def use_endpoints(source: Callable[[KitConfig], list[Endpoint]]) -> None:
    """The hook: the hosts the reproduce plan downloads from, after mirrors (kitctl/cli.py hands in
    kitctl.pipeline.sources.endpoints: the plan's own list). Without it doctor probes no network."""
    global _endpoints
    _endpoints = source


def endpoints(cfg: KitConfig) -> list[Endpoint]:
    return _endpoints(cfg) if _endpoints is not None else []


def network_findings(eps: list[Endpoint], ca_cert: Optional[Path] = None,
                     timeout: float = NET_PROBE_SECONDS) -> list[Finding]:
    """One probe per endpoint (an HTTP answer within ``timeout``; all at once, so doctor waits ``timeout`` at
    most), a finding each: ok, or warn with why and the offline way round it."""
    from concurrent.futures import ThreadPoolExecutor

    if not eps:
        return []
    with ThreadPoolExecutor(max_workers=len(eps)) as pool:
        why = list(pool.map(lambda e: net.probe_http(e.url, timeout, str(ca_cert) if ca_cert else None), eps))
    proxy = any(os.environ.get(k) for k in net.PROXY_VARIABLES)
    out = []
    for e, w in zip(eps, why, strict=True):
        if w is None:
            out.append(Finding(NET_CHECK + e.what, "ok", f"{e.url}: " + ("via the proxy (not probed)" if proxy
                                                                           else "answers"), f"the {e.purpose} stage downloads from it"))
        else:
            out.append(Finding(NET_CHECK + e.what, "warn", f"{e.url}: {w}", f"{e.purpose} unreachable: {e.offline}"))
    return out


@dataclass
class Facts:
    docker_cli: bool = False
    engine: Optional[str] = None           # server version, None if no engine answers
    engine_error: str = ""
    buildx: Optional[str] = None
    compose: Optional[str] = None
    runtimes: list[str] = field(default_factory=list)
    nvidia_ctk: bool = False               # nvidia-container-toolkit CLI or hook on PATH (CDI / --gpus)
    gpus: list[GPU] = field(default_factory=list)
    gpu_source: str = "nvidia-smi"
    data_root: Path = Path(".")
    free_bytes: Optional[int] = None
    shm_bytes: Optional[int] = None
    docker: docker_disk.DockerStorage = field(default_factory=docker_disk.DockerStorage)
    nvcc: bool = False                     # a host CUDA compiler (the native build)
    slurm: bool = False                    # sbatch on PATH (multi-node through Slurm)
    built: Optional[built_archs.Built] = None   # what train would run with (None: not looked, kit.yaml is judged)
    places: list[disks.Place] = field(default_factory=list)   # data root, HF cache, Docker's storage, by filesystem


@dataclass
class Finding:
    check: str
    status: str      # ok | warn | fail | info
    detail: str
    meaning: str = ""


def _run(argv: list[str], timeout: int = 20) -> tuple[int, str, str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout.strip(), r.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, "", str(e)


def _free(path: Path) -> Optional[int]:
    p = existing_parent(path)
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def gather(cfg: KitConfig, inventory: Optional[Path] = None) -> Facts:
    """Probe this machine (read-only)."""
    f = Facts(data_root=cfg.data_root)
    f.docker_cli = shutil.which("docker") is not None
    if f.docker_cli:
        rc, out, err = _run(["docker", "info", "--format", "{{json .}}"])
        if rc == 0 and out:
            try:
                info = json.loads(out)
                f.engine = info.get("ServerVersion") or None
                f.runtimes = sorted((info.get("Runtimes") or {}).keys())
                if not f.engine:
                    f.engine_error = "; ".join(info.get("ServerErrors") or []) or "no server version"
            except json.JSONDecodeError:
                f.engine_error = short(out, 200)
        else:
            f.engine_error = short(err or out)
        rc, out, _ = _run(["docker", "buildx", "version"])
        f.buildx = out.split()[1] if rc == 0 and len(out.split()) > 1 else None
        rc, out, _ = _run(["docker", "compose", "version", "--short"])
        f.compose = out if rc == 0 and out else None
        if f.engine:
            f.docker = docker_disk.query()
    f.nvcc = shutil.which("nvcc") is not None or Path("/usr/local/cuda/bin/nvcc").is_file()
    f.slurm = shutil.which("sbatch") is not None
    f.nvidia_ctk = any(shutil.which(x) for x in ("nvidia-ctk", "nvidia-container-runtime-hook",
                                                 "nvidia-container-runtime"))
    f.gpus = load_inventory(inventory)
    f.gpu_source = str(inventory) if inventory else "nvidia-smi"
    f.built = (built_archs.native(cfg.layout.native_bin) if cfg.runtime == "native"
               else built_archs.image(runtime_image_ref(cfg), f.engine is not None))
    f.free_bytes = _free(cfg.data_root)
    f.places = [disks.locate(disks.DATA_ROOT, cfg.data_root), disks.locate(disks.HF_CACHE, cfg.hf_cache)]
    dp = disks.docker_place(f.docker) if cfg.runtime == "docker" else None
    f.places += [dp] if dp else []
    try:
        st = os.statvfs("/dev/shm")
        f.shm_bytes = st.f_blocks * st.f_frsize
    except OSError:
        f.shm_bytes = None
    return f


def evaluate(f: Facts, cfg: KitConfig, disk: Optional[DiskNeed] = None) -> list[Finding]:
    """Judge the facts for this kit (pure). ``disk``: the reference plan's need (None: only the hard floor)."""
    out: list[Finding] = []
    docker_needed = cfg.runtime == "docker"
    miss = "fail" if docker_needed else "warn"
    why_docker = ("the kit builds and runs its images with it" if docker_needed
                  else "runtime is native: only needed for `kitctl build` of images")
    # engine, buildx, compose
    if not f.docker_cli:
        out.append(Finding("docker engine", miss, "no docker CLI on PATH",
                           f"{why_docker}; install Docker Engine (docs/images.md)"
                           + (", or set runtime: native (this host's CUDA toolkit)" if docker_needed else "")))
    elif not f.engine:
        out.append(Finding("docker engine", miss, f"the engine does not answer: {f.engine_error or 'unknown'}",
                           f"{why_docker}; start it (systemctl start docker) or add your user to the docker group"))
    else:
        out.append(Finding("docker engine", "ok", f"engine {f.engine}"))
    if f.engine:
        out.append(Finding("buildx", "ok" if f.buildx else miss, f"buildx {f.buildx}" if f.buildx else "not installed",
                           "" if f.buildx else "kitctl build needs BuildKit (cache mounts, secrets): install docker-buildx"))
        out.append(Finding("compose", "ok" if f.compose else "warn",
                           f"compose {f.compose}" if f.compose else "not installed",
                           "" if f.compose else "only compose.yaml users need it (docker compose plugin v2)"))
        has_rt = "nvidia" in f.runtimes or f.nvidia_ctk
        if has_rt:
            out.append(Finding("nvidia container runtime", "ok",
                               f"runtimes: {', '.join(f.runtimes) or '-'}; toolkit on PATH: {f.nvidia_ctk}"))
        else:
            out.append(Finding("nvidia container runtime", "fail" if (f.gpus and docker_needed) else "warn",
                               f"not registered (docker runtimes: {', '.join(f.runtimes) or 'none'})",
                               ("runtime is native: training runs on the host, not in containers; only a "
                                "docker runtime needs it" if not docker_needed else
                                "containers cannot see the GPUs: install nvidia-container-toolkit and run "
                                "`nvidia-ctk runtime configure --runtime=docker` then restart docker")
                               if f.gpus else "no GPUs here anyway: images can be built, data prepared, no training"))
    # GPUs
    if not f.gpus:
        out.append(Finding("GPUs", "warn", f"none found ({f.gpu_source})",
                           "this box can build images and prepare data, not train; plan for another box with "
                           "--inventory FILE (nvidia-smi CSV)"))
    else:
        out.extend(_gpu_findings(f.gpus, cfg, f.built))
    # disk: the data root, and Docker's own storage (images, build cache), often another disk
    if f.free_bytes is None:
        out.append(Finding("data root space", "warn", f"cannot stat {f.data_root}", "create it on your big disk"))
    else:
        free = f.free_bytes / GB
        want = disk.data_root_bytes if disk else DATA_NEED_GB * GB
        st = "ok" if f.free_bytes >= want else ("warn" if free >= DATA_NEED_GB else "fail")
        puts = f"; kitctl reproduce gpt2-124m puts ~{disk.data_root_bytes / GB:.0f} GB there" if disk else ""
        out.append(Finding("data root space", st, f"{free:.0f} GB free at {f.data_root}{puts}",
                           "" if st == "ok" else (f"{disk.what}: " if disk else "")
                           + "point data_root at the big disk (`kitctl init --data-root /big/disk`), or use "
                           "tinyshakespeare; `kitctl reproduce --dry-run` prints the exact need"))
    if f.engine and docker_needed:
        need = disk.docker_bytes if disk else 0
        found = docker_space(f.docker, need, cfg, disk.wheels_docker_bytes if disk else 0,
                             "the kit's images (nvidia provider)" if cfg.provider == "nvidia" else
                             "the kit's images (wheels provider)")
        if found.status == "fail" and not disk:
            found.status = "warn"
        out.append(found)
    out += shared_disks(f, cfg, disk)
    # shared memory
    if f.shm_bytes is not None:
        shm = f.shm_bytes / GB
        if shm >= SHM_NEED_GB or cfg.runtime == "docker":
            n = max(1, len(f.gpus))
            out.append(Finding("shared memory", "ok", f"/dev/shm {shm:.1f} GB" + (
                f"; containers get their own: {' '.join(gpu_container_argv(n))} for {n} GPU(s) "
                "(1 GB of /dev/shm per rank, no host IPC)" if cfg.runtime == "docker" else "")))
        else:
            out.append(Finding("shared memory", "warn", f"/dev/shm {shm:.2f} GB",
                               "NCCL between ranks on one host uses /dev/shm: enlarge it (mount -o remount,size=8G /dev/shm)"))
    return out


def _gpu_findings(gpus: list[GPU], cfg: KitConfig, built: Optional[built_archs.Built] = None) -> list[Finding]:
    out = []
    for g in gpus:
        mx = max_cuda_for_driver(g.driver)
        out.append(Finding(f"GPU {g.index}", "info",
                           f"{g.name}, sm_{g.compute_cap}, {g.memory_label}, driver {g.driver} -> CUDA <= {mx or '?'}",
                           "" if g.has_bf16 else "no BF16 tensor cores and no cuDNN flash attention (pre-Ampere): "
                           "runs llm.c only as the FP32 build (train_gpt2cu_fp32)"))
    too_old = unsupported(gpus)
    if too_old:
        rest = len(gpus) - len(too_old)
        out.append(Finding("GPU support", "warn" if rest else "fail", unsupported_reason(too_old),
                           (f"they sit out: `kitctl train --gpus all` runs on the other {rest} GPU(s)" if rest else
                            "train on a newer box: the kit refuses to plan on these")))
        gpus = [g for g in gpus if g not in too_old]
        if not gpus:
            return out
    caps = sorted({g.compute_cap for g in gpus})
    archs = distinct_archs(gpus)                 # what `kitctl build --arch` accepts for these GPUs
    old = [g for g in gpus if not g.has_bf16]
    if old and len(old) < len(gpus):
        names = ", ".join(f"{g.index}:{g.name}" for g in old)
        out.append(Finding("mixed GPUs", "warn", f"sm_{'/'.join(map(str, caps))}: {names} lack BF16",
                           "one job on all of them must use the FP32 binary (slower, ~2x memory); or leave the "
                           "pre-Ampere GPU(s) out (--gpus with the others) and run BF16 + cuDNN"))
    elif old:
        out.append(Finding("precision", "warn", "no GPU with BF16 (all pre-Ampere)",
                           "train with the FP32 binary; cuDNN flash attention is unavailable"))
    # driver vs provider
    lowest = driver_cuda(gpus) or "0.0"
    prov = cfg.provider
    need = (cfg.cuda or pins.load().providers.nvidia.cuda) if prov == "nvidia" else pins.load().providers.wheels.cuda
    if pins.mm(lowest) < pins.mm(need):
        images = pins.cuda_images()
        fit = pins.newest_cuda_image(lowest)
        if fit is None:
            hint = f"update the driver: the oldest CUDA image the kit knows is {next(iter(images))} " \
                   f"(known: {', '.join(images)})"
        elif prov == "wheels":
            hint = (f"use the nvidia provider with a CUDA it runs (provider: nvidia, cuda: \"{fit}\" in kit.yaml, "
                    f"or --provider nvidia --cuda {fit}), or update the driver to >= 580. "
                    + pins.WHEELS_NO_CUDA12 + ".")
        else:
            hint = f"set cuda: \"{fit}\" in kit.yaml (or --cuda {fit}; kitctl build picks it when cuda is unset), " \
                   "or update the driver"
        out.append(Finding("driver", "fail", f"driver runs CUDA <= {lowest}; the {prov} provider builds CUDA {need}",
                           f"binaries would fail with 'driver too old': {hint}"))
    else:
        out.append(Finding("driver", "ok", f"driver runs CUDA <= {lowest}; the {prov} provider builds CUDA {need}"))
    # the provider's CUDA can build every GPU's arch (pins.CUDA_ARCHS: CUDA 13 dropped sm_50..sm_72, CUDA 12 before
    # 12.8 stops at sm_90); natively the host's nvcc builds, which doctor does not judge here
    if cfg.runtime == "docker":
        try:
            pins.check_buildable(archs, need, prov)
            lo, hi = pins.arch_range(need) or (0, 0)
            out.append(Finding("CUDA builds the archs", "ok", f"CUDA {need} ({prov} provider) builds sm_{lo}..sm_{hi}: "
                               f"sm_{', sm_'.join(map(str, archs))} covered" if lo else f"CUDA {need}: not in the table"))
        except ConfigError as e:
            out.append(Finding("CUDA builds the archs", "fail", e.message, e.hint or ""))
    # the arch list a run would use (the built binaries or image; else kit.yaml's) covers the GPUs
    judged = built_archs.judge(archs, cfg, built)
    if judged is not None:
        out.append(Finding("arch list", *judged))
    return out


def shared_disks(f: Facts, cfg: KitConfig, disk: Optional[DiskNeed]) -> list[Finding]:
    """The reference plan's places that share a filesystem, judged on their sum (each alone is judged above):
    the data root and Docker's storage on one system disk were each "ok" while their sum did not fit."""
    if disk is None:
        return []
    hf = min(disk.hf_cache_bytes, disk.data_root_bytes)
    needs = {disks.DATA_ROOT: disk.data_root_bytes - hf, disks.HF_CACHE: hf}
    if cfg.runtime == "docker":
        needs[disks.DOCKER] = disk.docker_bytes
    out = []
    for fs in disks.group(f.places, needs):
        if fs.shared and sum(1 for n in fs.needs.values() if n) > 1:
            status, detail, meaning = disks.verdict(fs, cfg.provider)
            out.append(Finding("one disk", status, f"kitctl reproduce gpt2-124m: {detail}", meaning))
    return out


def docker_space(st: docker_disk.DockerStorage, need: int, cfg: KitConfig, wheels_bytes: int = 0,
                 what: str = "this plan's images") -> Finding:
    """Docker's storage (its root dir) against ``need`` bytes still to land there (pure). Too small: how to move
    it (the engine's data-root), or the smaller wheels provider, or a prebuilt image."""
    where = f"{st.root_dir}" + (f" on {st.filesystem}" if st.filesystem else "")
    cache = f"; build cache {st.build_cache_bytes / GB:.1f} GB" if st.build_cache_bytes is not None else ""
    if st.root_dir is None:
        return Finding("docker storage", "warn", f"unknown: {st.error or 'the engine did not say'}",
                       "images and build cache land in the engine's root dir (docker info: DockerRootDir)")
    if st.free_bytes is None:
        return Finding("docker storage", "info", f"{where}: not on this host (DOCKER_HOST){cache}",
                       f"{what} need ~{need / GB:.0f} GB there")
    free = st.free_bytes / GB
    detail = f"{free:.0f} GB free at {where}{cache}; {what} need ~{need / GB:.1f} GB"
    if st.free_bytes >= need:
        return Finding("docker storage", "ok", detail)
    ways = [docker_disk.move_hint()]
    if cfg.provider == "nvidia" and wheels_bytes and wheels_bytes < need:
        ways.append(f"or use the smaller wheels provider (~{wheels_bytes / GB:.1f} GB: provider: wheels in "
                    "kit.yaml, or kitctl build --provider wheels)")
    ways.append("or pull a prebuilt image instead of building (`docker pull REGISTRY/IMAGE && docker tag "
                f"REGISTRY/IMAGE {cfg.image}:latest`, or `docker load -i` a tar made by `kitctl export --format "
                "tar` on another box): only the runtime image lands, no toolchain or build cache")
    if st.build_cache_bytes:
        ways.append(f"or free the build cache: {docker_disk.prune_hint()}")
    return Finding("docker storage", "fail", detail, "Docker's storage is too small: " + "; ".join(ways))


def ready(findings: list[Finding]) -> bool:
    """No ``fail`` row (the per-purpose verdicts below say what this box is ready for)."""
    return not any(x.status == "fail" for x in findings)


@dataclass
class Verdict:
    purpose: str       # data | build | train | multi-node
    ready: bool
    reason: str


# the checks each purpose stands on (a ``fail`` in one of them: not ready for that purpose)
_NEEDS = {
    "data": ("docker engine", "data root space"),
    "build": ("docker engine", "buildx", "docker storage", "CUDA builds the archs"),
    "train": ("docker engine", "nvidia container runtime", "driver", "arch list", "data root space", "docker storage",
              "GPU support", "one disk", "CUDA builds the archs"),
}


def verdicts(findings: list[Finding], f: Facts, cfg: KitConfig) -> list[Verdict]:
    """Ready or not for each purpose, with the reason (pure). Multi-node only where Slurm is present."""
    by = {x.check: x for x in findings}

    def fails(purpose: str) -> list[str]:
        return [f"{c}: {by[c].detail}" for c in _NEEDS[purpose] if c in by and by[c].status == "fail"]

    def offline(purpose: str) -> str:
        down = [x.check[len(NET_CHECK):] for x in findings
                if x.check.startswith(NET_CHECK) and x.status == "warn" and x.meaning.startswith(purpose + " ")]
        return (f"; unreachable from here: {', '.join(down)} (offline: a bundle, `--bundle FILE`; the network rows "
                "say the way round each)") if down else ""

    out = []
    bad = fails("data")
    out.append(Verdict("data", not bad, "; ".join(bad) or (
        f"kitctl data can run ({cfg.runtime} runtime); data root {f.data_root}") + offline("data")))
    bad = fails("build")
    if cfg.runtime == "native" and not f.nvcc:
        bad.append("native runtime: no nvcc on PATH (install a CUDA 12.x toolkit, or runtime: docker)")
    out.append(Verdict("build", not bad, "; ".join(bad) or (
        "native build: nvcc found (`kitctl build --runtime native --dry-run` lists the rest of the toolchain)"
        if cfg.runtime == "native" else "docker + buildx answer and Docker's storage has room") + offline("build")))
    bad = fails("train")
    if not f.gpus:
        bad.insert(0, f"no GPU found ({f.gpu_source}): train on a GPU box; plan for one here with "
                      "`kitctl reproduce --dry-run --inventory FILE` (examples in docs/inventories/)")
    names = ", ".join(f"{g.index}:{g.name}" for g in f.gpus)
    out.append(Verdict("train", not bad, "; ".join(bad) or f"{len(f.gpus)} GPU(s): {names}"))
    if f.slurm:
        bad = [] if out[-1].ready else ["not ready to train on this node (see train)"]
        out.append(Verdict("multi-node", not bad, "; ".join(bad) or
                           "sbatch found: `kitctl train --launcher slurm` (docs/cluster.md)"))
    return out
