"""Which folders are runs: the RUN arguments of ``kitctl tensorboard`` / ``status`` / ``report`` -> run folders.

A run is a folder with llm.c's ``main.log``, its ``stdout.log`` or kitctl's ``run.json``. A RUN argument is

* a run **name**: a folder under ``<data_root>/runs``. A name is one path component: no ``/``, not ``.`` or
  ``..``, so a name can never point outside ``runs/`` (``kitctl tensorboard ../../x`` does not write ``tb/``
  two levels above the runs);
* a run **folder** given as a path (any hand-made ``log124M``); it must look like a run (one of the files
  above), so ``kitctl tensorboard /etc`` does not start writing ``/etc/tb``;
* a run's ``main.log`` / ``stdout.log`` / ``run.json`` (names its folder), or, for ``kitctl report``, any file
  read as a main.log.

Anything else is bad input: exit 2, saying what was looked for and which runs exist.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import check_regular
from kitctl.core.llmc_files import MAIN_LOG, RUN_JSON, STDOUT_LOG
from kitctl.core.run_folder import MARKERS

RUN_FILES = (*MARKERS, "reproduce.json")   # reproduce.json: `kitctl reproduce` before training


def is_run_name(name: str) -> bool:
    """One path component that stays inside runs/: not empty, not . or .., no path separator."""
    seps = {"/", os.sep, *([os.altsep] if os.altsep else []), "\\"}
    return name not in ("", ".", "..") and not any(s in name for s in seps) and "\0" not in name


def looks_like_run(folder: Path) -> bool:
    return any((folder / f).exists() for f in RUN_FILES)


def _bad_runs_dir(runs_dir: Path, why: str) -> KitError:
    return ConfigError(f"cannot list the runs in {runs_dir}: {why}",
                       "check data_root in kit.yaml (or KIT_DATA_ROOT): runs live in <data_root>/runs, a folder")


def list_runs(runs_dir: Path) -> list[Path]:
    """Run folders under runs_dir (those with a main.log, stdout.log or run.json); [] when it does not exist."""
    if not runs_dir.exists():
        return []
    if not runs_dir.is_dir():
        raise _bad_runs_dir(runs_dir, "it is a file, not a folder")
    try:
        entries = list(runs_dir.iterdir())
    except PermissionError:
        raise _bad_runs_dir(runs_dir, "permission denied") from None
    except OSError as e:
        raise _bad_runs_dir(runs_dir, str(e.strerror or e)) from None
    return sorted(p for p in entries if p.is_dir() and looks_like_run(p))


def _have(runs_dir: Path) -> str:
    try:
        return ", ".join(r.name for r in list_runs(runs_dir)) or "none"
    except KitError:
        return "none"


def _not_found(n: str, runs_dir: Path, why: str) -> KitError:
    return ConfigError(f"run {n!r} not found ({why})", f"runs under {runs_dir}: {_have(runs_dir)}")


def resolve_run(n: str, runs_dir: Path, *, files: bool = False) -> Path:
    """One RUN argument -> an absolute run folder (or, with ``files``, a log file to read as a main.log)."""
    p = Path(n)
    if p.exists() and not p.is_dir():
        check_regular(p, MAIN_LOG if files else "run")      # a device, FIFO or socket: exit 2 naming it
    if p.is_file():
        if files:
            return p.absolute()
        if p.name not in RUN_FILES:
            raise ConfigError(f"{n} is a file, not a run folder",
                              f"name the run folder (the folder llm.c writes with -o), its {MAIN_LOG}, or a run under "
                              f"{runs_dir}")
        return p.parent.absolute()                 # a run's log or run.json names its folder
    if p.is_dir() and (looks_like_run(p) or p.absolute().parent == runs_dir.absolute()):
        return p.absolute()
    if is_run_name(n):
        cand = runs_dir / n
        if cand.is_dir():
            return cand.absolute()
        if cand.exists():
            raise ConfigError(f"{cand} is a file, not a run folder", f"runs are folders under {runs_dir}")
    if p.is_dir():
        raise ConfigError(f"{p} is not a run folder: it has no {MAIN_LOG}, {STDOUT_LOG} or {RUN_JSON}",
                          "name the folder llm.c writes (-o), once it has logged a step, or a run under "
                          f"{runs_dir}")
    if not is_run_name(n):
        raise _not_found(n, runs_dir, "no such folder; a run name is one folder name under "
                                      f"{runs_dir}, without / and not . or ..")
    raise _not_found(n, runs_dir, f"neither a folder here nor a run under {runs_dir}")


def resolve_runs(names: Iterable[str], runs_dir: Path, *, allow_empty: bool = False,
                 files: bool = False, command: str = "report") -> list[Path]:
    """RUN arguments -> run folders (see the module docstring); none -> every run under runs_dir.

    ``command``: the kitctl command whose hint names a run folder."""
    names = list(names)
    if not names:
        runs = list_runs(runs_dir)
        if not runs and not allow_empty:
            raise KitError(f"no runs under {runs_dir} (a run is a folder with main.log, stdout.log or run.json)",
                           f"start one with `kitctl train`, or name a run folder, e.g. "
                           f"`kitctl {command} path/to/log124M`")     # nothing to show yet: exit 1, not bad input
        return runs
    return [resolve_run(n, runs_dir, files=files) for n in names]


def latest_run(runs_dir: Path) -> Path:
    """The run whose logs (or run.json) changed last."""
    runs = list_runs(runs_dir)
    if not runs:
        raise KitError(f"no runs under {runs_dir}",
                       "start one with `kitctl train`, or name a run folder: `kitctl status path/to/run`")

    def mtime(p: Path) -> float:
        times = []
        for f in (*RUN_FILES, "."):
            try:
                times.append((p / f).stat().st_mtime)
            except OSError:
                pass
        return max(times, default=0.0)

    return max(runs, key=mtime)
