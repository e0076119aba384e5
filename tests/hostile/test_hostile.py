"""Hostile input to every verb: exit 2 with what/why/fix, never "internal error", the file system untouched.

The table is tests/hostile/cases.py; the world and the checks are tests/hostile/harness.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cases import CASES  # noqa: E402
from harness import play, undo_mounts  # noqa: E402


# cases that draw the whole report (matplotlib, ~0.3-1.2 s each) before the write is judged: slow tier
DRAWS_THE_REPORT = {"report-out-read-only", "report-out-under-a-file", "report-ok", "full-disk-report-png",
                    "full-disk-report-html"}


def _param(case):
    marks = [pytest.mark.xfail(strict=True, reason=f"area: {case.area}")] if case.area else []
    if case.id in DRAWS_THE_REPORT:
        marks.append(pytest.mark.slow)
    return pytest.param(case, id=case.id, marks=marks)


def test_the_slow_report_cases_exist():
    assert {c.id for c in CASES} >= DRAWS_THE_REPORT


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_hostile(case, tmp_path, capsys, monkeypatch):
    try:
        play(case, tmp_path, capsys, monkeypatch)
    finally:           # after the checks: they may look inside a mounted (read-only / full) folder
        undo_mounts()


def _option(command: str, name: str):
    import typer.main

    from kitctl.cli import app

    cmd = typer.main.get_command(app).commands[command]
    return next(p for p in cmd.params if name in getattr(p, "opts", ()))


def test_tensorboard_binds_this_machine_only_by_default():
    """Secure default (issue 11): TensorBoard is reachable from other machines only with --host 0.0.0.0."""
    from kitctl.observe.tensorboard import tensorboard_argv

    default = _option("tensorboard", "--host").default
    assert default == "127.0.0.1"
    argv = tensorboard_argv(Path("/x"), 6006, default)
    assert "--bind_all" not in argv and argv[-2:] == ["--host", "127.0.0.1"]


def test_every_verb_has_a_hostile_case():
    from cases import CASES as cases

    verbs = {"init", "doctor", "build", "render", "smoke", "export", "data", "train", "tune", "tensorboard",
             "status", "report", "demo", "reproduce", "export-model", "sample", "eval"}
    seen = {next((a for a in c.argv if not a.startswith("-") and a in verbs), None) for c in cases}
    assert verbs <= seen, verbs - seen
    data_verbs = {c.argv[1] for c in cases if c.argv[:1] == ["data"] and len(c.argv) > 1}
    assert {"verify", "recipes", "hellaswag"} <= data_verbs
