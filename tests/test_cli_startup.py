"""How commands load (kitctl/cli.py, docs/architecture.md "How commands load"): `kitctl --help` imports no area,
`kitctl data` imports its own and nothing of train, cluster, images, pipeline; every listed command resolves with
the help line it is listed with; and the hooks a lower area offers are filled when the commands that use them load."""
from __future__ import annotations


import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from kitctl import cli
from kitctl.core.config import KitConfig

ROOT = Path(__file__).resolve().parent.parent
AREAS = ("images", "data", "train", "observe", "cluster", "model", "pipeline")

# in a fresh interpreter: `kitctl --help` through the entry point, then `kitctl data` looked up as `kitctl data ...`
# looks it up, then `kitctl data tinyshakespeare --dry-run` on the default docker runtime (it asks whether the
# data image is there); the modules loaded after each
_PROBE = """
import contextlib, io, json, sys
from kitctl import cli
def kitctl(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli.main(list(argv))
        except SystemExit as e:
            assert e.code in (0, None), (e.code, out.getvalue())
    return out.getvalue()
help = kitctl("--help")
after_help = sorted(sys.modules)
import typer.main
typer.main.get_command(cli.app).commands["data"]
after_data = sorted(sys.modules)
import os
threads_after_data, blas_env_after_data = len(os.listdir("/proc/self/task")), os.environ.get("OPENBLAS_NUM_THREADS")
plan = kitctl("--config", sys.argv[1], "data", "tinyshakespeare", "--dry-run")
print(json.dumps({"help": help, "after_help": after_help, "after_data": after_data, "plan": plan,
                  "after_dry_run": sorted(sys.modules), "threads_after_data": threads_after_data,
                  "blas_env_after_data": blas_env_after_data}))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("startup")
    (tmp / "kit.yaml").write_text(f"data_root: {tmp / 'data'}\nruntime: docker\n")
    r = subprocess.run([sys.executable, "-c", _PROBE, str(tmp / "kit.yaml")], capture_output=True, text=True,
                       cwd=tmp, timeout=60, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(tmp),
                                                 "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _areas(modules: list[str]) -> set[str]:
    return {m.split(".")[1] for m in modules if m.startswith("kitctl.") and m.split(".")[1] in AREAS}


def test_help_imports_no_area_and_lists_every_command(probe):
    assert _areas(probe["after_help"]) == set()
    assert "numpy" not in probe["after_help"]
    rows = [line[2:].split()[0] for line in probe["help"].splitlines() if line[:2] == "│ " and line[2:3] != " "]
    listed = [name for name in rows if not name.startswith("-")]      # the options panel comes first
    assert listed == ["init", *cli.COMMANDS], listed


def test_kitctl_data_imports_only_the_data_area(probe):
    """The laziness cannot regress silently: an import of train, cluster, images, pipeline (or their heavy
    libraries) from the data area's command line, or from kitctl/cli.py at load time, fails here."""
    assert _areas(probe["after_data"]) == {"data"}, sorted(_areas(probe["after_data"]))
    heavy = {"python_on_whales", "jinja2", "matplotlib", "datasets", "pyarrow", "huggingface_hub", "torch"}
    assert not heavy & set(probe["after_data"]), sorted(heavy & set(probe["after_data"]))
    # ... and planning it, with the question whether the data image is there, loads no more of them
    assert "tinyshakespeare" in probe["plan"] and "tokenize into llm.c shards" in probe["plan"], probe["plan"]
    assert _areas(probe["after_dry_run"]) == {"data"}, sorted(_areas(probe["after_dry_run"]))
    assert not heavy & set(probe["after_dry_run"]), sorted(heavy & set(probe["after_dry_run"]))


def test_kitctl_data_loads_numpy_without_blas_threads(probe):
    """OpenBLAS starts a thread per core when numpy is imported (~0.07 CPU-s of the data stage's start-up); the
    data command imports it with one (it does no BLAS math), and leaves the environment as it was."""
    assert "numpy" in probe["after_data"]
    assert probe["threads_after_data"] == 1, probe["threads_after_data"]
    assert probe["blas_env_after_data"] is None


def _help_line(command) -> str:
    return " ".join((command.help or "").split("\n\n")[0].split())


def test_every_listed_command_resolves_with_its_own_help_line():
    group = typer.main.get_command(cli.app)
    ctx = group.make_context("kitctl", ["--config", "x"])    # not run: the context a lookup gets
    assert group.list_commands(ctx) == ["init", *cli.COMMANDS]
    for name, entry in cli.COMMANDS.items():
        command = group.get_command(ctx, name)
        assert command is not None and command.name == name, name
        assert _help_line(command) == " ".join(entry.help.split()), name
    # every command an area defines is listed, under the loader that builds it (none is left out of --help)
    for load in {e.load for e in cli.COMMANDS.values()}:
        defined = typer.main.get_group(load()).commands
        assert {n for n, e in cli.COMMANDS.items() if e.load is load} == set(defined), load.__name__
    assert group.get_command(ctx, "no-such-command") is None


def test_a_mistyped_command_is_still_suggested(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduc"])
    assert e.value.code == 2
    assert "Did you mean 'reproduce'?" in " ".join(capsys.readouterr().err.split())


def test_the_cli_fills_every_hook_a_lower_area_offers(monkeypatch):
    """kitctl/cli.py registers, from above both layers, what a lower area asks a higher one for, when the commands
    that use it load: the eval column of `kitctl report` (observe <- model), doctor's disk model and the hosts it
    probes (host <- pipeline), train's planned data for a dry run before the data exists (train <- pipeline), the
    data image's recipe hash (data <- images), the Slurm launcher of `kitctl train` (train <- cluster). Each
    behaviour is tested in its area; this is the wiring, once. A filler from a heavier area is imported when
    called: it answers what that area's function answers."""
    from kitctl.cluster import cli as cluster_cli
    from kitctl.data import container
    from kitctl.host import doctor
    from kitctl.images import build
    from kitctl.model.record import eval_summary
    from kitctl.observe import report
    from kitctl.pipeline import reference, sources
    from kitctl.pipeline.inputs import planned_data
    from kitctl.train import cli as train_cli

    monkeypatch.setattr(report, "_RUN_COLUMNS", {})
    monkeypatch.setattr(doctor, "_disk_model", None)
    monkeypatch.setattr(doctor, "_endpoints", None)
    monkeypatch.setattr(train_cli, "_planned", None)
    monkeypatch.setattr(train_cli, "LAUNCHERS", {})
    monkeypatch.setattr(container, "_expected_data_hash", None)
    fresh = getattr(typer.main.get_command, "__wrapped__", typer.main.get_command)   # a fresh build, not tests/cli_once's
    commands = fresh(cli.app).commands
    for name in ("report", "doctor", "train", "data"):
        commands[name]        # noqa: B018  (looked up as `kitctl NAME ...` looks it up)

    assert report._RUN_COLUMNS["evals (kitctl eval)"] is eval_summary
    cfg = KitConfig()
    assert doctor._disk_model is not None and doctor._disk_model(cfg) == reference.disk_need(cfg)
    assert doctor._endpoints is not None and doctor._endpoints(cfg) == sources.endpoints(cfg)
    assert train_cli._planned is not None and train_cli._planned(cfg, "gpt2-124m") == planned_data(cfg, "gpt2-124m")
    assert container._expected_data_hash is not None
    assert container._expected_data_hash(cfg) == build.data_recipe_hash(cfg)
    assert train_cli.LAUNCHERS == {"slurm": cluster_cli.SLURM}
    assert "--nodes" in {o for p in commands["train"].params for o in getattr(p, "opts", ())}


@pytest.mark.parametrize("script,expected", [
    ('echo sha256:abc; exit 0', True),
    ('echo "Error response from daemon: No such image: $5" >&2; exit 1', False),
    ('echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2; exit 1', None),
    (None, None),                                                    # no docker CLI on PATH
])
def test_image_present_asks_the_docker_cli(tmp_path, monkeypatch, script, expected):
    """`kitctl data` asks whether the data image is there with one `docker image inspect` (python-on-whales cost
    0.4 s of CPU to import for it): present, absent, or Docker cannot be asked (the command falls back to native)."""
    from kitctl.host import registry

    if script is not None:
        (tmp_path / "docker").write_text(f'#!/bin/sh\n[ "$1 $2 $3 $4" = "image inspect --format {{{{.Id}}}}" ] || '
                                         f'exit 9\n{script}\n')
        (tmp_path / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert registry.image_present("llmc-kit-data:latest") is expected
