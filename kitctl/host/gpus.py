"""GPU inventory: what GPUs a box has (nvidia-smi), or what a described box has (an inventory CSV).

The CSV is exactly what ``nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version
--format=csv,noheader`` prints, so ``--inventory FILE`` can plan for a machine you are not on.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional

from kitctl.core.errors import ConfigError
from kitctl.core.files import read_limited
from kitctl.core.records import short
from kitctl.core.validate import build_arch

QUERY = "index,name,compute_cap,memory.total,driver_version"
NVIDIA_SMI_ARGV = ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader"]

# Lowest Linux driver for each CUDA major.minor (NVIDIA's CUDA Toolkit release notes, table 3).
_DRIVER_FOR_CUDA = [
    ("13.0", 580.65), ("12.9", 575.51), ("12.8", 570.26), ("12.6", 560.28), ("12.4", 550.54),
    ("12.2", 535.54), ("12.0", 525.60), ("11.8", 520.61), ("11.0", 450.36),
]


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    compute_cap: int          # 86 for 8.6
    memory_mib: int
    driver: str

    @property
    def memory_label(self) -> str:
        """GPU memory as nvidia-smi prints it (MiB), the one unit the kit shows a GPU's memory in."""
        return f"{self.memory_mib} MiB"

    @property
    def memory_gb(self) -> float:
        return self.memory_mib * 1024 * 1024 / 1e9

    @property
    def has_bf16(self) -> bool:
        """BF16 tensor cores and cuDNN flash attention start at sm_80 (Ampere)."""
        return self.compute_cap >= 80

    def as_dict(self) -> dict:
        return asdict(self)


# The oldest GPUs the kit runs llm.c on: it builds train_gpt2cu for sm_60 and newer (core.validate.KNOWN_ARCHS),
# with CUDA 12 (llm.c at its pinned commit does not compile with CUDA 13), which has no code for sm_3x (Kepler,
# dropped in CUDA 12.0) and which the kit does not build for sm_5x (Maxwell). BF16 + cuDNN need sm_80 (has_bf16).
MIN_COMPUTE_CAP = 60


def unsupported(gpus: list[GPU]) -> list[GPU]:
    """The GPUs below :data:`MIN_COMPUTE_CAP`: no train_gpt2cu of the kit runs on them."""
    return [g for g in gpus if g.compute_cap < MIN_COMPUTE_CAP]


def unsupported_reason(gpus: list[GPU]) -> str:
    names = ", ".join(f"{g.index} ({g.name}, sm_{g.compute_cap})" for g in gpus)
    return (f"GPU {names} is older than llm.c's floor: the kit builds train_gpt2cu for compute capability "
            f"{MIN_COMPUTE_CAP // 10}.{MIN_COMPUTE_CAP % 10} (sm_{MIN_COMPUTE_CAP}) and newer, with CUDA 12, "
            "which has no code for older GPUs")


_CAP = re.compile(r"([0-9]{1,2})\.([0-9])")
_MEM = re.compile(r"([0-9]{1,9})(?:\s*MiB)?|\[N/A\]", re.IGNORECASE)   # N/A: unified-memory boards
_DRIVER = re.compile(r"[0-9]{2,4}(?:\.[0-9]{1,4}){0,2}")


def parse_csv(text: str, source: str = "nvidia-smi", unified_mib: Optional[int] = None) -> list[GPU]:
    """Parse nvidia-smi's CSV (with or without units and a header line); every field is checked: an index once,
    a compute capability like 8.6 (not ``inf``, not 8.65), memory in MiB, a driver version like 570.86.10.

    ``[N/A]`` memory is what nvidia-smi prints for a board whose GPU shares the host's memory (GH200, GB10): it
    is ``unified_mib`` when the caller knows the host's memory (this machine), else a refusal: never 0 GB."""
    gpus: list[GPU] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#") or line.lower().startswith("index"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            raise ConfigError(f"{source}, line {n}: expected 5 fields ({QUERY}), got {len(parts)}: {_short(line)}",
                              "write it as nvidia-smi prints it: 0, NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 570.86.10")
        idx, name, cap, mem, driver = parts
        cap_m, mem_m = _CAP.fullmatch(cap), _MEM.fullmatch(mem)
        if not idx.isdigit() or len(idx) > 3 or not name or not cap_m or not mem_m or not _DRIVER.fullmatch(driver):
            raise ConfigError(f"{source}, line {n}: cannot read {_short(line)}",
                              "index a number, a GPU name, compute_cap like 8.6, memory like 24576 MiB, driver like "
                              "570.86.10 (as nvidia-smi --format=csv,noheader prints them)")
        if mem_m.group(1) is None:          # [N/A]
            if unified_mib is None:
                raise ConfigError(f"{source}, line {n}: GPU {idx} ({name}) reports its memory as [N/A] (a board whose "
                                  "GPU shares the host's memory); the kit plans the micro-batch from the GPU's memory",
                                  f"write the memory the GPU may use instead of [N/A] in {source}, e.g. "
                                  f"{idx}, {name}, {cap}, 122880 MiB, {driver}")
            memory = unified_mib
        else:
            memory = int(mem_m.group(1))
        g = GPU(int(idx), name, int(cap_m.group(1)) * 10 + int(cap_m.group(2)), memory, driver)
        if any(o.index == g.index for o in gpus):
            raise ConfigError(f"{source}, line {n}: GPU index {g.index} appears twice",
                              "each GPU once, as nvidia-smi lists them (a repeated index would put two ranks on one "
                              "GPU)")
        gpus.append(g)
    return gpus


def _short(line: str) -> str:
    return repr(short(line, 120))


def query(nvidia_smi: str = "nvidia-smi") -> list[GPU]:
    """The GPUs of this machine; [] when there is no NVIDIA driver."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, *NVIDIA_SMI_ARGV[1:]], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return parse_csv(out.stdout, unified_mib=host_memory_mib())


def host_memory_mib(meminfo: Path = Path("/proc/meminfo")) -> Optional[int]:
    """This machine's memory (MemTotal) in MiB: what a unified-memory GPU ([N/A] in nvidia-smi) can use."""
    try:
        with open(meminfo, encoding="ascii", errors="replace") as f:
            for line in f.read(1 << 16).splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


MAX_INVENTORY_BYTES = 1 << 20     # an nvidia-smi CSV is ~100 bytes a GPU


def load_inventory(path: Optional[Path]) -> list[GPU]:
    """GPUs from ``--inventory FILE`` if given, else from this machine's nvidia-smi."""
    if path is None:
        return query()
    path = Path(path)
    hint = f"make one on the target machine with: {' '.join(NVIDIA_SMI_ARGV)} > {path.name}"
    if not path.exists():
        raise ConfigError(f"inventory file {path} does not exist", hint)
    try:       # a folder, device, FIFO or socket, or more than 1 MiB: exit 2 naming it, never read whole
        raw = read_limited(path, "inventory", MAX_INVENTORY_BYTES, hint)
    except OSError as e:
        raise ConfigError(f"cannot read inventory {path}: {e.strerror or e}", "check the path and its permissions") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"inventory {path} is not UTF-8 text", hint) from None
    if "\0" in text:
        raise ConfigError(f"inventory {path} is a binary file", hint)
    gpus = parse_csv(text, str(path))
    if not gpus:     # said here, where the file is known: not "no GPU found ... pass --inventory" to one who did
        raise ConfigError(f"inventory {path} lists no GPU (it is empty, or only comments and a header)", hint)
    return gpus


CVD = "CUDA_VISIBLE_DEVICES"


def visible(gpus: list[GPU], environ: Mapping[str, str]) -> list[GPU]:
    """This machine's GPUs as the user's CUDA_VISIBLE_DEVICES restricts them (nvidia-smi lists every GPU; the kit
    sets CUDA_VISIBLE_DEVICES itself for the chosen ones, so a user's setting is honoured here, not overwritten).
    Indices only (read as nvidia-smi's: the kit runs with CUDA_DEVICE_ORDER=PCI_BUS_ID); UUIDs, MIG names or
    indices this machine lacks are refused (exit 2) naming the variable."""
    raw = environ.get(CVD)
    if raw is None:
        return gpus
    words = [w.strip() for w in raw.split(",")]
    if raw.strip() == "":
        raise ConfigError(f"{CVD} is set but empty: CUDA sees no GPU",
                          f"unset {CVD} (the kit picks GPUs with --gpus) or list indices, e.g. {CVD}=0,1")
    if not all(w.isdigit() for w in words):
        raise ConfigError(f"{CVD}={raw}: the kit reads GPU indices there (as nvidia-smi numbers them), not UUIDs "
                          "or MIG names", f"unset {CVD} and pass --gpus with nvidia-smi's indices (e.g. --gpus 0,2)")
    by_index = {g.index: g for g in gpus}
    missing = [w for w in words if int(w) not in by_index]
    if missing:
        raise ConfigError(f"{CVD}={raw} names GPU(s) {', '.join(missing)}, which this machine does not have "
                          f"(nvidia-smi lists {sorted(by_index)})", f"fix or unset {CVD}")
    return [by_index[i] for i in dict.fromkeys(int(w) for w in words)]


def select(gpus: list[GPU], spec: str) -> list[GPU]:
    """``all`` | ``N`` (the first N) | ``0,2`` (these indices; one GPU by its index: ``0,``)."""
    spec = spec.strip()
    if not gpus:
        raise ConfigError("no NVIDIA GPU found (nvidia-smi is missing or lists none)",
                          "run on a GPU host, check `nvidia-smi`, or plan for another machine with --inventory FILE")
    if spec == "all":
        return list(gpus)
    by_index = {g.index: g for g in gpus}
    try:
        if "," not in spec:
            n = int(spec)
            if n < 1 or n > len(gpus):
                alone = (f"; for GPU {n} alone write --gpus {n}, (a trailing comma makes it a list of indices)"
                         if n in by_index else "")
                raise ConfigError(f"--gpus {n} is a count (the first {n} GPUs): this machine has {len(gpus)} GPU(s)",
                                  f"use a count from 1 to {len(gpus)}, a list of indices like 0,1, or all{alone}")
            return list(gpus[:n])
        picked = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--gpus {spec!r} is not all, a count or a list of indices",
                          "write e.g. --gpus all, --gpus 2 or --gpus 0,2") from None
    missing = [i for i in picked if i not in by_index]
    if missing:
        raise ConfigError(f"--gpus {spec}: no GPU with index {missing} (have {sorted(by_index)})",
                          "pick indices that nvidia-smi lists")
    if len(set(picked)) != len(picked):
        raise ConfigError(f"--gpus {spec}: an index is repeated", "name each GPU once")
    return [by_index[i] for i in picked]


def max_cuda_for_driver(driver: str) -> Optional[str]:
    """Highest CUDA major.minor a Linux driver runs (None if older than CUDA 11)."""
    try:   # compare as version tuples: 535.104 is newer than 535.54
        ver = tuple(int(x) for x in driver.split(".")[:2])
    except ValueError:
        return None
    for cuda, need in _DRIVER_FOR_CUDA:
        if ver >= tuple(int(x) for x in f"{need:.2f}".split(".")):
            return cuda
    return None


def driver_cuda(gpus: list[GPU]) -> Optional[str]:
    """The newest CUDA major.minor that the driver of EVERY GPU in ``gpus`` runs (None without GPUs, or when a
    driver is unknown or older than CUDA 11)."""
    if not gpus:
        return None
    got = [max_cuda_for_driver(g.driver) for g in gpus]
    if any(v is None for v in got):
        return None
    return min(got, key=lambda v: tuple(int(x) for x in v.split(".")))  # type: ignore[union-attr]


def distinct_archs(gpus: Iterable[GPU]) -> list[int]:
    """The archs to build for these GPUs: each one's own, or the arch of its major version that runs on it
    (core.validate.build_arch); GPUs with none are left out (gpu_choice / doctor refuse them with the reason)."""
    return sorted({a for g in gpus if (a := build_arch(g.compute_cap)) is not None})
