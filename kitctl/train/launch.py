"""The last step of a plan: the exact :class:`~kitctl.train.plan.Launch` built from the frozen
:class:`~kitctl.train.plan.Decisions` (pure: no processes, no writes).

docker: a ``ContainerSpec`` (mounts, env, user, GPUs, shm, ulimits, name) whose ``docker run`` line --dry-run
prints and whose inside is ``mpirun -np <ranks> ... /opt/llmc/bin/train_gpt2cu[_fp32] <flags>``. native: host
mpirun (or the binary alone for one rank without mpirun), env, and llm.c's working directory with links to the
eval files it opens relative to its cwd.
"""
from __future__ import annotations

from pathlib import Path

from kitctl.core.layout import DataLayout
from kitctl.core.llmc_files import HELLASWAG_BIN, TOKENIZER_BIN
from kitctl.core.errors import ConfigError
from kitctl.host.runtimes import ContainerSpec, Mount, docker_run_argv
from kitctl.train.facts import BINARIES, Facts, native_binary
from kitctl.train.plan import Decisions, Launch

IMAGE_BIN = "/opt/llmc/bin"
WORKDIR = "/workspace"
MAX_OUT_PATH = 400         # llm.c's output path buffer


def llmc_args(d: Decisions, data_root: str, out: str) -> list[str]:
    """train_gpt2cu's flags, each decided value once; then the preset's extra flags and the user's pass-through."""
    pre, s = d.preset, d.schedule
    args = ["-i", d.data.train_glob(data_root), "-j", d.data.val_glob(data_root), "-o", out,
            "-e", pre.descriptor, "-b", str(d.batch.micro_batch), "-t", str(d.seq_len), "-d", str(d.total_batch),
            "-r", str(d.batch.recompute), "-z", str(d.zero_stage), "-c", f"{pre.weight_decay:g}",
            "-l", f"{pre.learning_rate:g}", "-q", f"{pre.final_lr_frac:g}", "-u", str(pre.warmup),
            "-n", str(s.checkpoint_every), "-v", str(s.val_every), "-s", str(s.sample_every),
            "-h", str(s.hellaswag), "-x", str(s.steps), "-y", "1" if d.resumption.resume else "0"]
    if s.val_batches is not None:
        args += ["-m", str(s.val_batches)]
    if s.checkpoints_keep is not None:
        args += ["-nk", str(s.checkpoints_keep)]
    return [*args, *pre.extra, *d.request.passthrough]


def _nccl_env(facts: Facts) -> dict[str, str]:
    env = dict(facts.host.environ_nccl)
    env.update({k: str(v) for k, v in facts.nccl_env.items()})
    return env


def _root_env(facts: Facts) -> dict[str, str]:
    """Open MPI refuses to run as root without these two (docker and native alike)."""
    return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"} if facts.host.is_root else {}


def _mpi_prefix(mpirun: str, ranks: int, root: bool, env_names: list[str]) -> list[str]:
    a = [mpirun, "-np", str(ranks), "--bind-to", "none"]
    if root:
        a.append("--allow-run-as-root")
    for name in env_names:
        a += ["-x", name]
    return a


def build_launch(d: Decisions, facts: Facts) -> Launch:
    return _docker(d, facts) if d.runtime == "docker" else _native(d, facts)


def _docker(d: Decisions, facts: Facts) -> Launch:
    nccl = _nccl_env(facts)
    ranks = d.ranks
    binary = f"{IMAGE_BIN}/{BINARIES[d.hardware.precision]}"
    args = llmc_args(d, f"{WORKDIR}/data", f"{WORKDIR}/out")
    mounts = [Mount(d.data.dir, f"{WORKDIR}/data", read_only=True), Mount(d.out_dir, f"{WORKDIR}/out")]
    if facts.hellaswag is not None:
        mounts.append(Mount(facts.hellaswag.parent, f"{WORKDIR}/dev/data/hellaswag", read_only=True))
    if facts.tokenizer is not None:
        mounts.append(Mount(facts.tokenizer, f"{WORKDIR}/{TOKENIZER_BIN}", read_only=True))
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "HOME": "/tmp", **nccl, **_root_env(facts)}
    inner = [*_mpi_prefix("mpirun", ranks, facts.host.is_root, sorted(nccl)), binary, *args]
    name = d.request.name or d.preset.name
    safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)
    spec = ContainerSpec(image=facts.image, argv=inner, mounts=mounts, env=env, workdir=WORKDIR,
                         user=f"{facts.host.uid}:{facts.host.gid}", gpus=[g.index for g in d.hardware.gpus],
                         shm_size=f"{max(1, ranks)}g", ulimits=["memlock=-1", "stack=67108864"],
                         name=f"kitctl-train-{safe}-{facts.run_token}")
    return Launch(binary, args, docker_run_argv(spec), container=spec)


def _native(d: Decisions, facts: Facts) -> Launch:
    """Host mpirun, the binary from `kitctl build --runtime native` (or --binary); llm.c's cwd-relative eval
    files come from symlinks in a per-run working directory (no mounts on a host)."""
    ranks = d.ranks
    bin_dir = facts.native_bin_dir or DataLayout(facts.data_root).native_bin
    binary = native_binary(d.request, bin_dir, d.hardware.precision)
    if len(str(d.out_dir)) >= MAX_OUT_PATH:
        raise ConfigError(f"output path is {len(str(d.out_dir))} characters; llm.c allows under {MAX_OUT_PATH}",
                          "use a shorter --out")
    args = llmc_args(d, str(d.data.dir), str(d.out_dir))
    cwd = d.out_dir / ".llmc-cwd"
    links: list[tuple[Path, Path]] = []
    if facts.hellaswag is not None:
        links.append((cwd / "dev" / "data" / "hellaswag" / HELLASWAG_BIN, facts.hellaswag))
    if facts.tokenizer is not None:
        links.append((cwd / TOKENIZER_BIN, facts.tokenizer))
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(str(g.index) for g in d.hardware.gpus),
           **_nccl_env(facts), **_root_env(facts)}
    if facts.host.mpirun is None and ranks <= 1:
        return Launch(str(binary), args, [str(binary), *args], env=env, cwd=cwd, links=links,
                      notes=("no host mpirun found: running the single rank directly (MPI singleton)",))
    notes: tuple[str, ...] = ()
    mpirun = facts.host.mpirun
    if mpirun is None:
        notes = ("no host mpirun found: install Open MPI (apt install openmpi-bin) or pass --mpirun PATH",)
        mpirun = "mpirun"
    argv = [*_mpi_prefix(mpirun, ranks, facts.host.is_root, sorted(k for k in env if not k.startswith("OMPI_"))),
            str(binary), *args]
    return Launch(str(binary), args, argv, env=env, cwd=cwd, links=links, notes=notes)
