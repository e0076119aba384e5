"""``kitctl eval``: EleutherAI's lm-evaluation-harness on an export, results recorded in the run's run.json.

The harness is an optional extra (``pip install 'llmc-kit[eval]'``: lm-eval, torch, transformers); without it the
command exits 2 saying so. It runs the harness's ``hf`` model on the export folder in float32 (``pretrained=<export
folder>``), so the numbers are those of the exported transformers model. The harness's HellaSwag ``acc_norm``
(0-shot, 10,042 validation examples) normalises each ending's summed log-likelihood by its length in bytes;
llm.c's own ``-h 1`` eval picks the ending with the lowest mean loss per token: close, not the same number.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from kitctl import __version__
from kitctl.core import validate
from kitctl.core.net import probe_endpoint
from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import check_regular
from kitctl.core.optional import import_optional, installed

INSTALL_HINT = "pip install 'llmc-kit[eval]'   (lm-eval + torch + transformers; on a GPU box install torch for CUDA)"


DEFAULT_HF_ENDPOINT = "https://huggingface.co"


@dataclass
class HubAccess:
    """Where the task datasets come from: the endpoint, and why it is not used (None: it is reachable)."""

    endpoint: str
    offline: Optional[str] = None
    hf_home: Optional[Path] = None

    def hint(self) -> str:
        cache = self.hf_home or "$HF_HOME"
        return (f"set HF_ENDPOINT (or mirrors.hf_endpoint in kit.yaml) to a mirror this machine reaches, e.g. "
                f"https://hf-mirror.com; or work offline: run the same `kitctl eval` once on a connected machine "
                f"and copy its HF cache into {cache} (the kit then reads it without a network), or pass "
                "--include-path with a task YAML whose dataset is a local file")


def prepare_hub(hf_home: Optional[Path], hf_endpoint: Optional[str]) -> HubAccess:
    """Set the HF environment BEFORE lm-eval is imported (datasets and huggingface_hub read HF_ENDPOINT and the
    offline switches at import): the cache on the data root, the endpoint from kit.yaml unless HF_ENDPOINT is set,
    and offline mode (cache only, no retries for minutes) when the endpoint cannot be reached."""
    if hf_home is not None:           # the task's dataset (HellaSwag: ~50 MB) lands on the data root
        os.environ.setdefault("HF_HOME", str(hf_home))
    if hf_endpoint:
        os.environ.setdefault("HF_ENDPOINT", hf_endpoint)
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
    validate.url(endpoint, "HF_ENDPOINT" if endpoint != hf_endpoint else "mirrors.hf_endpoint")
    offline = "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE") == "1" or \
        os.environ.get("HF_DATASETS_OFFLINE") == "1" else probe_endpoint(endpoint)
    if offline:
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ[k] = "1"
        _set_offline_constants()
    home = Path(os.environ["HF_HOME"]) if os.environ.get("HF_HOME") else None
    return HubAccess(endpoint, offline, home)


def _set_offline_constants() -> None:
    """The libraries read the switches at import: when they are imported already (a long-lived process), say it
    to them too."""
    import sys

    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = True          # type: ignore[attr-defined]
    ds = sys.modules.get("datasets.config")
    if ds is not None:
        ds.HF_DATASETS_OFFLINE = True      # type: ignore[attr-defined]
        ds.HF_HUB_OFFLINE = True           # type: ignore[attr-defined]


def load_harness():
    """The ``lm_eval`` module and its TaskManager; KitError (exit 2) when the extra is not installed."""
    # optional extra: imported only when `kitctl eval` runs; a version conflict is named, not "not installed"
    lm_eval = import_optional("lm_eval", purpose="kitctl eval (lm-evaluation-harness)", install=INSTALL_HINT)
    tasks = import_optional("lm_eval.tasks", purpose="kitctl eval (lm-evaluation-harness)", install=INSTALL_HINT)
    if installed("transformers"):        # lm-eval's hf model imports it later: a conflict is named now
        import_optional("transformers", purpose="kitctl eval (lm-eval's hf model)", install=INSTALL_HINT)
    return lm_eval, tasks.TaskManager


def pick_device(device: Optional[str]) -> str:
    """``--device``, checked against this torch: the default is the first GPU when torch sees CUDA, else the CPU
    (lm-eval's own default is cuda, which fails on a machine without one)."""
    try:
        import torch   # lm-eval's dependency
    except ImportError:
        return device or "cpu"
    has_cuda = bool(torch.cuda.is_available())
    if device is None:
        return "cuda:0" if has_cuda else "cpu"
    if device.startswith("cuda") and not has_cuda:
        why = ("this torch is built without CUDA" if getattr(torch.version, "cuda", None) is None
               else "torch sees no CUDA GPU (driver, CUDA_VISIBLE_DEVICES)")
        raise ConfigError(f"--device {device}: {why} (torch {torch.__version__})",
                          "pass --device cpu (slow but complete), or install torch for CUDA on a GPU box "
                          "(https://pytorch.org/get-started/locally/)")
    return device


def harness_version() -> str:
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def parse_tasks(tasks: str) -> list[str]:
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise ConfigError("--tasks is empty", "e.g. --tasks hellaswag (comma-separated for several)")
    return names


def run_harness(export: Path, tasks: list[str], *, device: Optional[str] = None, batch_size: str = "auto",
                limit: Optional[float] = None, num_fewshot: Optional[int] = None,
                include_path: Optional[Path] = None, hf_home: Optional[Path] = None,
                hf_endpoint: Optional[str] = None, hub: Optional[HubAccess] = None) -> dict[str, Any]:
    """Run the harness; returns its result dict (``results``, ``versions``, ``n-shot``, ``n-samples``...).
    ``hub``: what :func:`prepare_hub` found (called before lm-eval is imported); made here when not given."""
    if hub is None:
        hub = prepare_hub(hf_home, hf_endpoint)
    lm_eval, TaskManager = load_harness()
    device = pick_device(device)
    bs: Any = int(batch_size) if str(batch_size).isdigit() else batch_size
    lim: Any = int(limit) if limit is not None and limit >= 1 else limit
    try:
        tm = narrow_task_manager(TaskManager, tasks, include_path)
        if tm is None:          # lm-eval's whole index (None: the harness builds it)
            tm = TaskManager(include_path=str(include_path)) if include_path else None
        res = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(export), "dtype": "float32"}, tasks=tasks,
            num_fewshot=num_fewshot, batch_size=bs, device=device, limit=lim, task_manager=tm,
            log_samples=False)
    except KeyError as e:
        raise ConfigError(f"lm-eval does not know task {e}", "list its tasks with `lm-eval ls tasks`") from None
    except Exception as e:
        if hub is not None and (hub.offline or _is_network_error(e)):
            why = hub.offline or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise KitError(f"lm-eval could not get the dataset of {', '.join(tasks)} from {hub.endpoint} ({why}), "
                           f"and the HF cache {hub.hf_home or '(default)'} does not hold it",
                           hub.hint()) from None
        raise
    if not isinstance(res, dict) or not isinstance(res.get("results"), dict):
        raise KitError("lm-eval returned no results", "re-run with KITCTL_DEBUG=1 and check lm-eval's own output")
    return res


def check_include_path(folder: Path) -> Path:
    """``--include-path``: a readable folder whose task YAMLs are regular files (a FIFO or a device named *.yaml would
    block lm-eval's reader, and kitctl's, forever). A ConfigError (exit 2) naming the path otherwise."""
    validate.readable_folder(folder, "--include-path")
    for path in Path(folder).rglob("*.yaml"):
        if not path.is_dir():
            check_regular(path, "--include-path task file")
    return Path(folder)


def task_folders(tasks_dir: Path, names: list[str]) -> dict[str, set[Path]]:
    """For each name, the top-level folders of a task tree (``lm_eval/tasks``, or ``--include-path``) whose YAML
    files name it as a whole word. A text search over lm-eval's ~14,000 files takes a fraction of a second; its
    own index parses every one of them (~8 s on one core)."""
    words = [(n, re.compile(rf"(?<![\w-]){re.escape(n)}(?![\w-])")) for n in names]
    found: dict[str, set[Path]] = {n: set() for n in names}
    for path in tasks_dir.rglob("*.yaml"):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for n, word in words:
            if n in text and word.search(text):
                found[n].add(tasks_dir / path.relative_to(tasks_dir).parts[0])
    return found


def narrow_task_manager(TaskManager: Any, tasks: list[str], include_path: Optional[Path],
                        tasks_dir: Optional[Path] = None) -> Any:
    """lm-eval's TaskManager over only the folders of its task tree that name ``tasks`` (plus ``--include-path``)
    when they define every task, each a plain task; else None, and the caller builds lm-eval's whole index. The
    same task YAMLs either way: left out are only folders lm-eval would have parsed and not used. Groups, tags and
    patterns (``mmlu_*``) take the whole index (their parts may live in folders that do not name them).
    ``tasks_dir``: the task tree (default: lm-eval's own)."""
    if any(set(n) & set("*?[]") for n in tasks):
        return None
    if tasks_dir is None:
        tasks_dir = Path(getattr(sys.modules.get(TaskManager.__module__), "__file__", None) or "/nonexistent").parent
    found = task_folders(tasks_dir, tasks) if tasks_dir.is_dir() else {n: set() for n in tasks}
    local = task_folders(include_path, tasks) if include_path else {}
    if not all(found[n] or local.get(n) for n in tasks):
        return None
    paths = sorted(set().union(*found.values())) + ([include_path] if include_path else [])
    try:
        tm = TaskManager(include_defaults=False, include_path=[str(p) for p in paths])
    except TypeError:                  # a TaskManager without include_defaults (lm-eval before 0.4.3)
        return None
    index = getattr(tm, "task_index", None) or {}
    # plain tasks only: a group's or tag's parts may live in folders that do not name it
    plain = all(getattr(getattr(index.get(t), "kind", None), "name", "") in ("TASK", "PY_TASK") for t in tasks)
    return tm if plain else None


def _is_network_error(e: BaseException) -> bool:
    """A connection failure from requests / httpx / huggingface_hub / datasets, anywhere in the chain."""
    seen = 0
    while e is not None and seen < 10:
        name, mod = type(e).__name__, type(e).__module__
        if name in ("ConnectionError", "ConnectTimeout", "ConnectError", "OfflineModeIsEnabled",
                    "LocalEntryNotFoundError", "MaxRetryError", "NameResolutionError", "ReadTimeout") or \
                isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if mod.startswith(("requests", "httpx", "urllib3")):
            return True
        e, seen = (e.__cause__ or e.__context__), seen + 1   # type: ignore[assignment]
    return False


def _metric_name(key: str) -> str:
    name, _, filt = key.partition(",")
    return name if filt in ("", "none") else f"{name}_{filt}"


def entries(res: dict[str, Any], *, step: Optional[int], checkpoint: Optional[Path], export: Path,
            limit: Optional[float]) -> list[dict]:
    """One run.json ``evals`` entry per task in the harness's results."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for task, vals in res["results"].items():
        metrics = {_metric_name(k): float(v) for k, v in vals.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        samples = (res.get("n-samples") or {}).get(task, {})
        out.append({
            "task": task,
            "metrics": metrics,
            "step": step,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "export": str(export),
            "harness": f"lm-eval {harness_version()}",
            "task_version": (res.get("versions") or {}).get(task),
            "num_fewshot": (res.get("n-shot") or {}).get(task),
            "samples": samples.get("effective") if isinstance(samples, dict) else None,
            "limit": limit,
            "time": now,
            "kit_version": __version__,
        })
    return out
