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
import time
from pathlib import Path
from typing import Any, Optional

from kitctl import __version__
from kitctl.core.errors import KitError

INSTALL_HINT = "pip install 'llmc-kit[eval]'   (lm-eval + torch + transformers; on a GPU box install torch for CUDA)"


def load_harness():
    """The ``lm_eval`` module and its TaskManager; KitError (exit 2) when the extra is not installed."""
    try:
        import lm_eval   # optional extra: imported only when `kitctl eval` runs
        from lm_eval.tasks import TaskManager
    except ModuleNotFoundError as e:
        raise KitError(f"lm-evaluation-harness is not installed (import of {e.name!r} failed)", INSTALL_HINT,
                       exit_code=2) from None
    return lm_eval, TaskManager


def harness_version() -> str:
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def parse_tasks(tasks: str) -> list[str]:
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise KitError("--tasks is empty", "e.g. --tasks hellaswag (comma-separated for several)", exit_code=2)
    return names


def run_harness(export: Path, tasks: list[str], *, device: Optional[str] = None, batch_size: str = "auto",
                limit: Optional[float] = None, num_fewshot: Optional[int] = None,
                include_path: Optional[Path] = None, hf_home: Optional[Path] = None,
                hf_endpoint: Optional[str] = None) -> dict[str, Any]:
    """Run the harness; returns its result dict (``results``, ``versions``, ``n-shot``, ``n-samples``...)."""
    lm_eval, TaskManager = load_harness()
    if hf_home is not None:           # the task's dataset (HellaSwag: ~50 MB) lands on the data root
        os.environ.setdefault("HF_HOME", str(hf_home))
    if hf_endpoint:
        os.environ.setdefault("HF_ENDPOINT", hf_endpoint)
    tm = TaskManager(include_path=str(include_path)) if include_path else None
    bs: Any = int(batch_size) if str(batch_size).isdigit() else batch_size
    lim: Any = int(limit) if limit is not None and limit >= 1 else limit
    try:
        res = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(export), "dtype": "float32"}, tasks=tasks,
            num_fewshot=num_fewshot, batch_size=bs, device=device, limit=lim, task_manager=tm,
            log_samples=False)
    except KeyError as e:
        raise KitError(f"lm-eval does not know task {e}", "list its tasks with `lm-eval ls tasks`",
                       exit_code=2) from None
    if not isinstance(res, dict) or not isinstance(res.get("results"), dict):
        raise KitError("lm-eval returned no results", "re-run with KITCTL_DEBUG=1 and check lm-eval's own output")
    return res


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
