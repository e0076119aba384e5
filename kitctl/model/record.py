"""Eval results in a run's ``run.json`` (``RunRecord.evals``: a list, newest last), and the line ``kitctl report`` shows.

``add_eval`` changes run.json through the run folder's own read-modify-write (kitctl.core.run_folder.RunFolder.update:
the typed record, the kit's one atomic writer, under the flock ``kitctl train`` holds too), so every other key stays
as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from kitctl.core.errors import ConfigError
from kitctl.core.run_folder import RunFolder
from kitctl.core.run_record import RunRecord

PREFERRED = ("acc_norm", "acc")          # what llm.c / #481 quote for HellaSwag (acc_norm), then plain accuracy
NOT_SCORES = ("sample_len",)            # lm-eval reports the example count among the metrics


def check_recordable(run_dir: Path) -> None:
    """Before a long eval: exit 2 when the run's run.json exists but cannot be read back (results could not be
    recorded there); say how to go on (move it away, or --no-record)."""
    run = RunFolder(run_dir)
    path = run.run_json
    _, why = run.load()
    if why:
        raise ConfigError(f"{why}; the eval's results could not be recorded there",
                          f"fix or move it away (mv {path} {path}.bad), or pass --no-record")


def add_eval(run_dir: Path, entry: dict[str, Any]) -> Path:
    """Append one eval result (one task) to run.json's ``evals``."""
    def change(rec: RunRecord) -> None:
        rec.evals = [*rec.evals, entry]

    run = RunFolder(run_dir)
    path = run.run_json
    run.update(change, hint=f"the eval result was not recorded there; fix or move {path} away and re-run the eval")
    return path


def read_evals(run_dir: Path) -> list[dict[str, Any]]:
    """run.json's eval results (empty when none, or when run.json is missing or unreadable)."""
    rec, _ = RunFolder(run_dir).load()
    return [e for e in rec.evals if isinstance(e, dict)] if rec else []


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
