"""Slurm launcher: the same llm.c plan as single-node training, handed to sbatch/srun on many nodes.

Pure rendering (``render_sbatch``: a ``SlurmJob``, the training plan's side, + ``SlurmOptions``, the Slurm side ->
sbatch script text, or a ``ConfigError`` that says what is wrong and what to do; ``render_plan`` makes the job from
a ``kitctl.train.Plan``; the checks are in ``slurm_checks``). The thin runtime (write the script,
one ``sbatch`` call) is ``slurm_run``.

How the ranks start (llm.c f1e2ace, ``train_gpt2.cu`` + ``llmc/zero.cuh``):

* ``srun`` starts one task per GPU, ``gpus_per_node`` tasks per node, block distribution, so ranks
  ``0..G-1`` are on the first node. Every task sees all GPUs of its node (no per-task GPU binding): with
  ``-pi fs|tcp`` llm.c sets ``local_device_idx = process_rank % gpus_per_node`` itself. The rendered script
  checks ``SLURM_LOCALID == SLURM_PROCID % G`` in every rank before starting the program.
* llm.c's own init, not MPI: ``-pn $SLURM_NTASKS -pr $SLURM_PROCID -pg G`` and either ``-pi fs -pf DIR``
  (rank 0 writes ``DIR/ncclUniqueId.sync``; the others sleep 2 s and poll for it, so DIR must be shared and
  must not hold a stale id: the script uses a fresh ``<shared>/nccl-sync/<job id>`` and removes it at the end)
  or ``-pi tcp -ps IPv4`` (rank 0 binds IPv4:12345; the script resolves the first node's NodeAddr).
  llm.c copies ``-pf``/``-ps`` into ``char[256]`` with ``strcpy``: longer paths are refused here.
* A binary built with MPI (USE_MPI) calls ``MPI_Finalize`` at exit even when ``-pi`` is not ``mpi``; Open MPI
  then complains after training has finished. Prefer a binary built with ``NO_USE_MPI=1`` for Slurm.
* The divisibility rule of the planner holds across nodes: ``-d`` must be a multiple of
  ``B x T x (nodes x gpus_per_node)``.

Containers: ``pyxis`` (``srun --container-image=IMAGE|file.sqsh --container-mounts=...``), ``apptainer``
(``srun apptainer exec --nv --bind ... file.sif``) or ``none`` (the binary on a shared path). For a container the
argv must use container paths (the Docker plan's), with ``mounts`` mapping host -> container; for ``none`` host
paths (the native plan's).
"""
from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import jinja2

from kitctl.cluster.slurm_checks import (CONTAINERS, INITS, _check_path, _check_positive, _check_word,
                                         batch_flags, check_choice, check_divisibility, check_sbatch_extra,
                                         check_shared_dir, check_time)
from kitctl.core import resources
from kitctl.core.errors import ConfigError
from kitctl.host.gpus import select
from kitctl.host.runtimes import Mount

TEMPLATE = resources.share("docker", "slurm", "sbatch.sh.j2")
SCRIPT_NAME = "sbatch.sh"
RANK_FLAGS = ("-pn", "-pr", "-pg", "-pi", "-pf", "-ps", "-pm", "-pp")


class Raw(str):
    """A shell fragment put into the script as is (a variable reference), not quoted."""


def _q(token: Union[str, Path]) -> str:
    return str(token) if isinstance(token, Raw) else shlex.quote(str(token))


def _words(tokens: Iterable[Union[str, Path]]) -> str:
    return " ".join(_q(t) for t in tokens)


# ----------------------------------------------------------------------------------------------------------
# rendering


@dataclass(frozen=True)
class SlurmScript:
    """A rendered sbatch script and the numbers behind it."""

    text: str
    ranks: int
    micro_batch: int
    seq_len: int
    total_batch: int
    grad_accum: int


def _mount_list(mounts: Sequence[Mount], shared_dir: Path, data_root: Optional[Path]) -> list[Mount]:
    """The plan's mounts (default: the data root at /data), plus an identity mount of the shared folder so
    -pf names the same folder inside the container on every node (unless a plan mount covers it)."""
    out = list(mounts)
    if not out and data_root is not None:
        out.append(Mount(Path(data_root), "/data"))

    def covered(p: Path) -> bool:
        return any(str(p) == m.target or str(p).startswith(m.target.rstrip("/") + "/") for m in out)

    if not covered(shared_dir):
        out.append(Mount(shared_dir, str(shared_dir)))
    return out


def _container_parts(container: str, image: Optional[str], mounts: Sequence[Mount],
                     workdir: Optional[str]) -> tuple[list[Union[str, Raw]], list[Union[str, Raw]]]:
    """(srun options, launcher words before `bash -c`) for one container mode."""
    srun: list[Union[str, Raw]] = []
    launcher: list[Union[str, Raw]] = []
    if container == "pyxis":
        srun.append(Raw('--container-image="$IMAGE"'))
        if mounts:
            srun.append("--container-mounts=" + ",".join(
                f"{m.source}:{m.target}" + (":ro" if m.read_only else "") for m in mounts))
        if workdir:
            srun.append(f"--container-workdir={workdir}")
        srun.append("--no-container-mount-home")
    elif container == "apptainer":
        launcher += ["apptainer", "exec", "--nv"]
        for m in mounts:
            launcher += ["--bind", f"{m.source}:{m.target}" + (":ro" if m.read_only else "")]
        if workdir:
            launcher += ["--pwd", workdir]
        launcher.append(Raw('"$SIF"'))
    else:
        if workdir:
            srun.append(f"--chdir={workdir}")
    return srun, launcher


def _arg_lines(args: Sequence[str]) -> list[str]:
    """llm.c flags one pair a line (``-b 64``); anything unpaired one word a line."""
    lines, i = [], 0
    while i < len(args):
        if args[i].startswith("-") and i + 1 < len(args):
            lines.append(f"{_q(args[i])} {_q(args[i + 1])}")
            i += 2
        else:
            lines.append(_q(args[i]))
            i += 1
    return lines


@dataclass(frozen=True)
class SlurmOptions:
    """The Slurm side of `kitctl train --launcher slurm`."""

    nodes: int = 1
    gpus_per_node: Optional[int] = None        # default: the GPUs --gpus picks from the node's inventory
    shared_dir: Optional[Path] = None
    container: str = "pyxis"
    image: Optional[str] = None                 # pyxis: .sqsh path or registry image (enroot URI)
    sif: Optional[Path] = None                  # apptainer
    partition: Optional[str] = None
    time: Optional[str] = None
    account: Optional[str] = None
    init: str = "fs"
    sbatch_extra: tuple[str, ...] = ()

    @property
    def runtime(self) -> str:
        """The single-node runtime whose plan a container mode reuses: container paths or host paths."""
        return "native" if self.container == "none" else "docker"


@dataclass(frozen=True)
class SlurmJob:
    """What the job runs: the training plan's side of the script (:func:`render_plan` makes it from a
    ``kitctl.train.Plan``; :class:`SlurmOptions` is the Slurm side).

    ``argv``: train_gpt2cu's argv, ``argv[0]`` the program (container path for pyxis/apptainer, host path for
    none); it must not carry -pn/-pr/-pg/-pi/-pf/-ps (the script adds them per rank). ``micro_batch`` /
    ``seq_len`` / ``total_batch`` default to the argv's -b/-t/-d. ``run_dir`` is the host path of the run folder
    (the job's log goes there). ``mounts`` map host -> container (default: ``data_root`` at /data); ``env`` is the
    launch environment (NCCL's from kit.yaml included)."""

    argv: Sequence[str]
    run_dir: Union[str, Path]
    micro_batch: Optional[int] = None
    seq_len: Optional[int] = None
    total_batch: Optional[int] = None
    mounts: Sequence[Mount] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    workdir: Optional[str] = None
    data_root: Union[None, str, Path] = None
    name: str = "llmc"
    summary: str = ""


def render_sbatch(job: SlurmJob, opts: SlurmOptions, *, check_paths: bool = True) -> SlurmScript:
    """Render the sbatch script for a job. Raises ConfigError (exit 2) with a hint on bad input.

    ``opts.gpus_per_node`` must be set (:func:`render_plan` fills it from the plan). ``check_paths``: the shared
    folder (and the .sif) must exist here, the login node, which sees the cluster's shared filesystems.
    """
    nodes, container, init, image = opts.nodes, opts.container, opts.init, opts.image
    argv = [str(a) for a in job.argv]
    if not argv:
        raise ConfigError("the plan has no program to run", "this is a bug in the planner; report it")
    _check_positive("--nodes", nodes, "pass --nodes N (N >= 1)")
    _check_positive("--gpus-per-node", opts.gpus_per_node, "pass --gpus-per-node G, the GPUs of one node (e.g. 8)")
    gpus_per_node = int(opts.gpus_per_node or 0)          # checked: a whole number >= 1
    check_choice("--container", container, CONTAINERS,
                 "pyxis: srun --container-image (enroot); apptainer: a .sif; none: a binary on a shared path")
    check_choice("--init", init, INITS,
                 "fs: NCCL id through the shared folder (default); tcp: through rank 0 on port 12345")
    clash = sorted({a for a in argv[1:] if a in RANK_FLAGS})
    if clash:
        raise ConfigError(f"the plan's argv already sets {' '.join(clash)}; the Slurm launcher sets llm.c's "
                          "rank flags per rank", "drop them from the pass-through flags after --")
    shared = check_shared_dir(opts.shared_dir, must_exist=check_paths)
    run = _check_path("run folder", job.run_dir, "--out", must_exist=False)
    if "%" in str(run):     # sbatch reads %j, %x, ... in --output as its own placeholders
        raise ConfigError(f"run folder {run} contains %, which sbatch's --output=<run>/slurm-%j.out would expand",
                          "use a run folder path without % (--name / --out / data_root)")
    time = check_time(opts.time)
    _check_word("--partition", opts.partition)
    _check_word("--account", opts.account)
    job_name = re.sub(r"[^A-Za-z0-9_.-]", "-", job.name or "llmc")[:64]

    if container == "pyxis":
        if not image:
            raise ConfigError("--container pyxis needs an image",
                              "pass --image with an enroot .sqsh on the shared filesystem (make one with `kitctl "
                              "export --format sqsh`) or a registry image, e.g. registry#llmc-kit:tag")
        # a local file (.sqsh, ./x, or a path that exists here) must be absolute, as for apptainer's .sif: pyxis
        # takes anything else for a registry image, and the nodes need the path they see
        if image.endswith((".sqsh", ".squashfs")) or image.startswith(".") or ("/" in image and Path(image).exists()):
            image = str(_check_path(".sqsh image", image, "--image", must_exist=False))
        image_ref = image
    elif container == "apptainer":
        if not opts.sif:
            raise ConfigError("--container apptainer needs a .sif image",
                              "make one with `kitctl export --format sif`, copy it to the shared filesystem, and "
                              "pass --sif /shared/llmc-kit.sif")
        sif_path = _check_path(".sif image", opts.sif, "--sif", must_exist=False)
        if check_paths and not sif_path.is_file():
            raise ConfigError(f".sif image {sif_path} does not exist",
                              "make it with `kitctl export --format sif` and copy it to the shared filesystem")
        image_ref = str(sif_path)
    else:
        image_ref = ""

    b_argv, t_argv, d_argv = batch_flags(argv)
    B = job.micro_batch if job.micro_batch is not None else b_argv
    T = job.seq_len if job.seq_len is not None else t_argv
    D = job.total_batch if job.total_batch is not None else d_argv
    grad_accum = check_divisibility(B, T, D, nodes, gpus_per_node)
    ranks = nodes * gpus_per_node

    all_env = dict(job.env)
    bad_env = [k for k in all_env if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)]
    if bad_env:
        raise ConfigError(f"environment variable name(s) {bad_env} are not valid", "fix nccl.extra_env in kit.yaml")

    all_mounts = _mount_list(job.mounts, shared, Path(job.data_root) if job.data_root else None) \
        if container != "none" else []
    srun_extra, launcher = _container_parts(container, image_ref, all_mounts, job.workdir)

    directives = [f"--job-name={job_name}", f"--nodes={nodes}", f"--ntasks-per-node={gpus_per_node}",
                  f"--gres=gpu:{gpus_per_node}"]
    if opts.partition:
        directives.append(f"--partition={opts.partition}")
    if opts.account:
        directives.append(f"--account={opts.account}")
    if time:
        directives.append(f"--time={time}")
    directives.append(f"--output={run}/slurm-%j.out")
    directives += check_sbatch_extra(opts.sbatch_extra)

    srun_opts: list[Union[str, Raw]] = [f"--ntasks={ranks}", f"--ntasks-per-node={gpus_per_node}",
                                        "--distribution=block", "--kill-on-bad-exit=1", "--mpi=none", *srun_extra]
    summary = " ".join((job.summary or "llm.c train_gpt2cu").split())    # one comment line, whatever it holds
    summary += (f"; B={B} x T={T} x {ranks} ranks, total batch "
                f"{D if D > 0 else B * T * ranks} tokens, {grad_accum} grad-accumulation step(s)")
    rendezvous = ("through the shared folder (-pi fs -pf <shared>/nccl-sync/<job id>)" if init == "fs"
                  else "through rank 0 over TCP (-pi tcp -ps <first node's IPv4>, port 12345)")

    tmpl = jinja2.Template(TEMPLATE.read_text(), undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = tmpl.render(
        nodes=nodes, gpus_per_node=gpus_per_node, ranks=ranks, script_name=SCRIPT_NAME,
        plan_summary=summary, rendezvous_doc=rendezvous, sbatch_directives=directives,
        program=_q(argv[0]), args=_arg_lines(argv[1:]),
        run_dir=_q(run), shared_dir=_q(shared), container=container, image=_q(image_ref),
        env_lines=[f"{k}={_q(v)}" for k, v in all_env.items()], init=init,
        srun_options=" \\\n  ".join(_q(o) for o in srun_opts),
        launcher=(_words(launcher) + " \\\n  ") if launcher else "",
    )
    return SlurmScript(text=text, ranks=ranks, micro_batch=B, seq_len=T, total_batch=D, grad_accum=grad_accum)


# ----------------------------------------------------------------------------------------------------------
# from a training plan (kitctl.train.Plan) to the script


# the plan's launch env that must not reach the Slurm script: Slurm sets the GPUs, there is no mpirun, and
# HOME would change the batch shell's own home
DROP_ENV = ("HOME", "CUDA_VISIBLE_DEVICES")


def node_gpus(gpus: Sequence, spec: str, gpus_per_node: Optional[int]) -> list:
    """The GPUs of one compute node that the job uses (``--gpus`` over the node's inventory)."""
    if not gpus:
        raise ConfigError(
            "no GPU inventory for the compute nodes (this machine has no NVIDIA GPU: a login node?)",
            "describe one compute node: srun -N1 --exclusive nvidia-smi --query-gpu=index,name,compute_cap,"
            "memory.total,driver_version --format=csv,noheader > node.csv (add --partition/--gres as your "
            "cluster needs), then pass --inventory node.csv")
    picked = select(list(gpus), spec)
    if gpus_per_node is None:
        return picked
    _check_positive("--gpus-per-node", gpus_per_node, "pass --gpus-per-node G, the GPUs of one node (e.g. 8)")
    if gpus_per_node > len(picked):
        raise ConfigError(f"--gpus-per-node {gpus_per_node} but the node inventory has {len(picked)} GPU(s) picked "
                          f"by --gpus {spec}", "pass an --inventory of the compute node, or a smaller --gpus-per-node")
    return picked[:gpus_per_node]


def cluster_facts(facts, gpus: Sequence, nodes: int):
    """Planner facts for ``nodes`` identical nodes: the node's GPUs repeated, numbered by rank, so the planner's
    micro-batch, memory and divisibility rules see every rank of the job."""
    _check_positive("--nodes", nodes, "pass --nodes N (N >= 1)")
    ranks = [dataclasses.replace(g, index=r) for r, g in enumerate(list(gpus) * nodes)]
    return dataclasses.replace(facts, gpus=ranks)


def render_plan(plan, opts: SlurmOptions, *, check_paths: bool = True) -> SlurmScript:
    """The sbatch script of a plan made over ``cluster_facts`` (docker plan for pyxis/apptainer: container
    paths and mounts; native plan for none: host paths and llm.c's per-run working directory)."""
    d, lc = plan.decisions, plan.launch
    gpn = opts.gpus_per_node or (d.ranks // opts.nodes if opts.nodes else 0)
    if gpn * opts.nodes != d.ranks:
        raise ConfigError(f"the plan has {d.ranks} ranks, the job {opts.nodes} node(s) x {gpn} GPUs",
                          "plan over cluster_facts(facts, node_gpus, nodes) (a bug if you see this from kitctl)")
    if d.runtime != opts.runtime:
        raise ConfigError(f"--container {opts.container} needs a {opts.runtime} plan, got a {d.runtime} plan",
                          "a bug if you see this from kitctl")
    if opts.container == "none":
        mounts: Sequence[Mount] = ()
        workdir = str(lc.cwd) if lc.cwd is not None else None
        env = dict(lc.env)
    else:
        mounts, workdir, env = lc.container.mounts, lc.container.workdir, dict(lc.container.env)
    env = {k: v for k, v in env.items() if k not in DROP_ENV and not k.startswith("OMPI_")}
    name = d.request.name or d.out_dir.name or d.preset.name
    r = d.resumption
    resume = f"resumes from step {r.resume_step} (-y 1)" if r.resume else "fresh start (-y 0)"
    summary = (f"preset {d.preset.name} ({d.preset.descriptor}, {d.hardware.precision}), {d.schedule.steps} steps, "
               f"recompute {d.batch.recompute}, {resume}")
    job = SlurmJob(argv=(str(lc.binary), *lc.llmc_args), run_dir=d.out_dir, micro_batch=d.batch.micro_batch,
                   seq_len=d.seq_len, total_batch=d.total_batch, mounts=tuple(mounts), env=env,
                   workdir=workdir, name=f"llmc-{name}", summary=summary)
    return render_sbatch(job, dataclasses.replace(opts, gpus_per_node=gpn), check_paths=check_paths)
