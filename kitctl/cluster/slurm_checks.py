"""The Slurm launcher's checks: every option of `kitctl train --launcher slurm` validated at the edge (pure).

A bad value is a :class:`~kitctl.core.errors.ConfigError` (exit 2) that says what is wrong and how to fix it,
raised before any data is read or any file is written. Also here: llm.c's batch flags in a plan's argv and the
divisibility rule (``-d`` must be a multiple of ``B x T x nodes x gpus_per_node``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence, Union

from kitctl.core.errors import ConfigError
from kitctl.core.llmc_files import grad_accum_steps
from kitctl.train import MICRO_BATCHES

LLMC_PATH_MAX = 255          # llm.c: char fs_path[256], char server_ip[256], strcpy
SYNC_SUFFIX_MAX = len("/nccl-sync/") + 12   # + a Slurm job id
CONTAINERS = ("pyxis", "apptainer", "none")
INITS = ("fs", "tcp")
_TIME_RE = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}|"
                      r"infinite|UNLIMITED|unlimited)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ----------------------------------------------------------------------------------------------------------
# the llm.c batch flags and the divisibility rule


def _flag(argv: Sequence[str], name: str) -> Optional[str]:
    """Value of llm.c flag ``name`` in argv (llm.c reads flag/value pairs after argv[0]; the last one wins)."""
    val = None
    for i in range(1, len(argv) - 1, 2):
        if argv[i] == name:
            val = argv[i + 1]
    return val


def _int_flag(argv: Sequence[str], name: str, default: int) -> int:
    v = _flag(argv, name)
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        raise ConfigError(f"llm.c flag {name} {v!r} in the plan is not an integer", "fix the override") from None


def batch_flags(argv: Sequence[str]) -> tuple[int, int, int]:
    """(B, T, total batch -d) from a train_gpt2cu argv, with llm.c's defaults (B=4, T=1024, -d -1 = B*T*ranks)."""
    return _int_flag(argv, "-b", 4), _int_flag(argv, "-t", 1024), _int_flag(argv, "-d", -1)


def check_divisibility(micro_batch: int, seq_len: int, total_batch: int, nodes: int, gpus_per_node: int) -> int:
    """Grad-accumulation steps for ``nodes x gpus_per_node`` ranks, or a ConfigError that says how to fix it.
    ``total_batch <= 0`` means llm.c's default (one micro-batch per rank, no accumulation)."""
    ranks = nodes * gpus_per_node
    per_step = micro_batch * seq_len * ranks
    steps = grad_accum_steps(total_batch, micro_batch, seq_len, ranks)
    if steps is not None:
        return steps
    ok_ranks = [r for r in range(1, 1025) if grad_accum_steps(total_batch, micro_batch, seq_len, r) is not None]
    ok_nodes = [n for n in range(1, 257) if n * gpus_per_node in ok_ranks]
    ok_b = [b for b in MICRO_BATCHES if b < micro_batch and grad_accum_steps(total_batch, b, seq_len, ranks) is not None]
    fixes = []
    if ok_nodes:
        near = sorted(sorted(ok_nodes, key=lambda n: (abs(n - nodes), n))[:3])   # the counts nearest the ask
        fixes.append(f"--nodes {' or '.join(str(n) for n in near)} (with {gpus_per_node} GPUs per node)")
    if ok_b:
        fixes.append(f"--micro-batch {ok_b[0]}")
    multiple = per_step * max(1, -(-total_batch // per_step))
    fixes.append(f"a total batch (-d) that is a multiple of {per_step}, e.g. {multiple}")
    raise ConfigError(
        f"total batch -d {total_batch} tokens is not a multiple of B x T x ranks = {micro_batch} x {seq_len} x "
        f"{ranks} ({nodes} node(s) x {gpus_per_node} GPUs) = {per_step}: llm.c needs a whole number of "
        f"gradient-accumulation steps on every rank",
        "use " + ", or ".join(fixes))


# ----------------------------------------------------------------------------------------------------------
# validation


def _check_positive(name: str, value: object, hint: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}", hint)


def check_counts(nodes: int, gpus_per_node: Optional[int]) -> None:
    """--nodes and --gpus-per-node (when given) are whole numbers >= 1."""
    _check_positive("--nodes", nodes, "pass --nodes N (N >= 1)")
    if gpus_per_node is not None:
        _check_positive("--gpus-per-node", gpus_per_node, "pass --gpus-per-node G, the GPUs of one node (e.g. 8)")


def _check_path(name: str, value: Union[None, str, Path], flag: str, *, must_exist: bool) -> Path:
    if value is None or str(value).strip() == "":
        raise ConfigError(f"no {name} given", f"pass {flag} PATH")
    p = Path(str(value))
    if not p.is_absolute():
        raise ConfigError(f"{name} {value} is not an absolute path",
                          f"pass {flag} with an absolute path that every node sees, e.g. /shared/llmc")
    if any(c.isspace() for c in str(p)):
        raise ConfigError(f"{name} {p} contains whitespace, which #SBATCH lines cannot carry",
                          "use a path without spaces")
    if must_exist and not p.is_dir():
        raise ConfigError(f"{name} {p} does not exist (or is not a folder) here",
                          f"create it on the shared filesystem (mkdir -p {p}) and make sure every node mounts it "
                          "at the same path")
    return p


def check_shared_dir(shared_dir: Union[None, str, Path], *, must_exist: bool = True) -> Path:
    """The shared folder llm.c's ranks rendezvous through (``-pi fs -pf``): required, absolute, existing."""
    if shared_dir is None or str(shared_dir).strip() == "":
        raise ConfigError(
            "multi-node training needs a shared folder and none was given",
            "pass --shared-dir PATH: a folder on a filesystem every node mounts at the same path (NFS, Lustre, "
            "GPFS, ...); llm.c's ranks exchange their NCCL id through it (-pi fs -pf), and the run folder with "
            "its checkpoints must be shared too")
    p = _check_path("shared folder", shared_dir, "--shared-dir", must_exist=must_exist)
    if len(str(p)) + SYNC_SUFFIX_MAX > LLMC_PATH_MAX:
        raise ConfigError(f"shared folder path is {len(str(p))} characters; llm.c keeps -pf in a 256-byte buffer",
                          f"use a path shorter than {LLMC_PATH_MAX - SYNC_SUFFIX_MAX} characters (a symlink works)")
    return p


def check_time(time: Optional[str]) -> Optional[str]:
    if time is None:
        return None
    t = str(time).strip()
    if not _TIME_RE.match(t):
        raise ConfigError(f"--time {time!r} is not a Slurm time limit",
                          "write minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. 2-00:00:00")
    return t


def _check_word(name: str, value: Optional[str]) -> Optional[str]:
    if value is not None and (not value or any(c.isspace() for c in value) or value.startswith("-")):
        raise ConfigError(f"{name} {value!r} is not a valid Slurm name", f"pass {name} without spaces")
    return value


def check_choice(flag: str, value: str, choices: Sequence[str], hint: str) -> str:
    if value not in choices:
        raise ConfigError(f"{flag} {value!r} is not one of {', '.join(choices)}", hint)
    return value


def check_sbatch_extra(extra: Sequence[str]) -> list[str]:
    """``--sbatch-opt`` values: options (``--qos=high``), one #SBATCH line each, no control characters (a
    newline would end the comment line and put the rest into the script as a command)."""
    out = []
    for e in extra:
        if not e.startswith("-") or _CONTROL.search(e):
            raise ConfigError(f"extra sbatch option {e!r} is not an option", "write it like --qos=high")
        out.append(e)
    return out


def check_run_name(name: Optional[str]) -> Optional[str]:
    """``--name``: one folder name under <data_root>/runs (no path separator, not . or ..), so the run folder,
    its sbatch.sh and run.json never land outside runs/."""
    if name is None:
        return None
    seps = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
    if name in ("", ".", "..") or any(s in name for s in seps) or _CONTROL.search(name):
        raise ConfigError(f"--name {name!r} is not a run name: it must be one folder name under <data_root>/runs",
                          "pass a plain name such as --name gpt2-124m-2node (letters, digits, - _ .), or put the "
                          "run somewhere else with --out /abs/path")
    return name
