"""Eval results in a run's ``run.json`` (key ``"evals"``: a list, newest last), and the line ``kitctl report`` shows.

``add_eval`` reads, modifies and writes run.json atomically (the kit's one atomic writer) under an flock of
``.run.json.lock``, keeping every other key as it is. ``kitctl train`` owns the rest of run.json; until its typed
record (kitctl/train/record.py) carries ``evals`` itself, this module is the one place that writes them.
"""
from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any, Callable, Optional

from kitctl.core.errors import KitError
from kitctl.core.files import write_atomic

RUN_JSON = "run.json"
EVALS = "evals"
PREFERRED = ("acc_norm", "acc")          # what llm.c / #481 quote for HellaSwag (acc_norm), then plain accuracy
NOT_SCORES = ("sample_len",)            # lm-eval reports the example count among the metrics


def update_run_json(run_dir: Path, change: Callable[[dict], None]) -> dict:
    """Apply ``change`` to run.json's object (created if absent) and write it back atomically."""
    path = Path(run_dir) / RUN_JSON
    with open(Path(run_dir) / ".run.json.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rec: Any = {}
        if path.exists():
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise KitError(f"{path} is unreadable ({e}); the eval result was not recorded there",
                               f"fix or move {path} away and re-run the eval") from None
            if not isinstance(rec, dict):
                raise KitError(f"{path} is not a JSON object; the eval result was not recorded there",
                               f"fix or move {path} away and re-run the eval")
        change(rec)
        write_atomic(path, json.dumps(rec, indent=2, default=str) + "\n")
        return rec


def add_eval(run_dir: Path, entry: dict) -> Path:
    """Append one eval result (one task) to run.json's ``evals``."""
    def change(rec: dict) -> None:
        evals = rec.get(EVALS)
        rec[EVALS] = (evals if isinstance(evals, list) else []) + [entry]

    update_run_json(run_dir, change)
    return Path(run_dir) / RUN_JSON


def read_evals(run_dir: Path) -> list[dict]:
    """run.json's eval results (empty when none, or when run.json is missing or unreadable)."""
    try:
        rec = json.loads((Path(run_dir) / RUN_JSON).read_text())
    except (OSError, ValueError):
        return []
    evals = rec.get(EVALS) if isinstance(rec, dict) else None
    return [e for e in evals if isinstance(e, dict)] if isinstance(evals, list) else []


def headline(entry: dict) -> Optional[tuple[str, float]]:
    """(metric, value) to show for one eval result: acc_norm, else acc, else its first score."""
    metrics = entry.get("metrics") or {}
    if not isinstance(metrics, dict):
        return None
    scores = {k: v for k, v in metrics.items()
              if isinstance(v, (int, float)) and not k.endswith("_stderr") and k not in NOT_SCORES}
    for k in (*PREFERRED, *scores):
        if k in scores:
            return k, float(scores[k])
    return None


def eval_summary(run_dir: Path) -> str:
    """``hellaswag acc_norm 0.2945 (step 19560)``, the newest result per task, or "-" (for ``kitctl report``)."""
    latest: dict[str, dict] = {}
    for e in read_evals(run_dir):
        latest[str(e.get("task"))] = e
    parts = []
    for task, e in latest.items():
        h = headline(e)
        if h:
            step = f" (step {e['step']})" if e.get("step") is not None else ""
            parts.append(f"{task} {h[0]} {h[1]:.4f}{step}")
    return "; ".join(parts) or "-"
