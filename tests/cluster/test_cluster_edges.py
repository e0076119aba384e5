"""Hostile input to the cluster verbs: `kitctl export` and `kitctl train --launcher slurm`.

Each bad value is refused with exit 2 and a what/why/fix message before anything is written; nothing lands
outside runs/; sbatch.sh and export outputs are never left partial (a temp file, renamed when complete); the
printed shell lines are quoted."""
from __future__ import annotations

import errno
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import kitctl_proc

from test_slurm import render
from test_slurm_plan import _shards

from kitctl.cluster import export, slurm_checks, slurm_run
from kitctl.cluster.slurm import SlurmOptions
from kitctl.cluster.slurm_run import train_on_slurm
from kitctl.core.config import KitConfig
from kitctl.core.errors import ConfigError, KitError
from kitctl.train import TrainRequest


def tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}



def _inventory(tmp_path: Path) -> Path:
    inv = tmp_path / "node.csv"
    inv.write_text("\n".join(f"{i}, NVIDIA H100 80GB HBM3, 9.0, 81559 MiB, 570.124.06" for i in range(2)))
    return inv


def _slurm(tmp_path: Path, data_root: Path, name="tiny", **opts):
    cfg = KitConfig(data_root=data_root)
    data = _shards(data_root / "tiny") if not (data_root / "tiny").exists() else data_root / "tiny"
    req = TrainRequest(data=data, name=name, seq_len=64, total_batch=16384, steps=10)
    o = SlurmOptions(**{"nodes": 2, "shared_dir": tmp_path / "shared", "container": "none", **opts})
    return cfg, req, o


# ------------------------------------------------------------------------------------------ run names
@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "/etc", "a\\b", "x\ny", ""])
def test_slurm_run_name_never_leaves_runs(tmp_path, shared, name):
    cfg, req, opts = _slurm(tmp_path, tmp_path / "data", name=name)
    before = tree(tmp_path)
    with pytest.raises(ConfigError) as e:
        train_on_slurm(cfg, req, opts, inventory=_inventory(tmp_path))
    assert e.value.exit_code == 2 and "is not a run name" in e.value.message and "--name" in e.value.hint
    after = tree(tmp_path)
    assert {k for k in after if k not in before} == {"node.csv"}     # nothing else written, anywhere


def test_slurm_hint_is_shell_quoted(tmp_path, capsys):
    root = tmp_path / "d$(id>pwned);x'y&z"        # a data root a shell would run a command in
    (tmp_path / "shared").mkdir()
    cfg, req, opts = _slurm(tmp_path, root)
    launch = train_on_slurm(cfg, req, opts, inventory=_inventory(tmp_path))
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "submit it with:" in ln)
    cmd = line.split("submit it with:", 1)[1].split("(or re-run")[0]
    assert shlex.split(cmd) == ["sbatch", str(launch.path)]
    # and pasting it into a shell runs sbatch on that file, nothing else
    r = subprocess.run(["bash", "-c", "sbatch() { printf '%s\\n' \"$@\"; }; " + cmd], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.stdout.splitlines() == [str(launch.path)] and not (tmp_path / "pwned").exists()


def test_run_folder_that_is_a_file(tmp_path, shared):
    cfg, req, opts = _slurm(tmp_path, tmp_path / "data")
    (tmp_path / "data" / "runs").write_text("a file where the runs folder goes")
    with pytest.raises(KitError) as e:
        train_on_slurm(cfg, req, opts, inventory=_inventory(tmp_path))
    assert e.value.exit_code == 2 and e.value.hint


# ------------------------------------------------------------------------------------------ sbatch.sh
def test_sbatch_script_never_left_partial(tmp_path, monkeypatch):
    run = tmp_path / "run"
    old = slurm_run.write_script("#!/bin/bash\necho the previous script\n", run)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:     # a full disk reaches the CLI's one disk-full message (exit 1)
        slurm_run.write_script("#!/bin/bash\necho new\n" * 1000, run)
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC
    assert old.read_text() == "#!/bin/bash\necho the previous script\n"
    assert [p.name for p in run.iterdir()] == ["sbatch.sh"] and old.stat().st_mode & 0o111


@pytest.mark.parametrize("extra", ["--qos=high\nrm -rf ~", "--qos=high\rx", "--comment=\x1b[2J", "qos=high"])
def test_sbatch_extra_with_control_characters_refused(shared, extra):
    with pytest.raises(ConfigError) as e:
        render(shared, sbatch_extra=[extra])
    assert "is not an option" in e.value.message and e.value.hint


def test_plan_summary_stays_one_comment_line(shared, tmp_path):
    s = render(shared, summary="preset x\necho injected; B=1")
    lines = s.text.splitlines()
    assert not any(ln.startswith("echo injected") for ln in lines)
    assert any(ln.startswith("# Plan: preset x echo injected; B=1") for ln in lines)
    f = tmp_path / "s.sh"
    f.write_text(s.text)
    assert subprocess.run(["bash", "-n", str(f)]).returncode == 0


def test_run_folder_with_a_percent_sign_refused(shared):
    with pytest.raises(ConfigError) as e:
        render(shared, run_dir="/lustre/runs/100%j")
    assert "contains %" in e.value.message and e.value.hint


def test_check_run_name():
    assert slurm_checks.check_run_name(None) is None
    assert slurm_checks.check_run_name("gpt2-124m.2node") == "gpt2-124m.2node"


# ------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("image", ["--help", "-o/etc/x", "a b", "img;rm -rf /", "img\nRUN x", "$(id)", ""])
def test_export_image_reference_refused(tmp_path, image):
    with pytest.raises(ConfigError) as e:
        export.export_commands(image, "tar", tmp_path / "x.tar")
    assert "is not an image reference" in e.value.message and "docker images" in e.value.hint


def test_export_output_that_is_a_folder_or_inside_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a folder"):
        export.export_commands("llmc-kit:latest", "sqsh", tmp_path)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        export.export_commands("llmc-kit:latest", "sqsh", tmp_path / "f" / "deeper" / "k.sqsh")


def _fake_tool(tmp_path: Path, body: str) -> Path:
    fake = tmp_path / "bin" / "enroot"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\n" + body)
    fake.chmod(0o755)
    return fake


class _NoDocker:
    def __getattr__(self, name):
        raise AssertionError(f"docker.{name} used")


@pytest.mark.parametrize("body,msg", [
    ('printf "half a squashfs" > "$3"\necho "enroot: No space left on device"\nexit 1\n', "failed (exit 1)"),
    ('echo "nothing written"\nexit 0\n', "wrote no k.sqsh"),
])
def test_failed_export_keeps_the_old_output_and_leaves_no_temp(tmp_path, body, msg):
    out = tmp_path / "out" / "k.sqsh"
    out.parent.mkdir()
    out.write_bytes(b"the previous image")
    (tmp_path / "out" / "k.sqsh.sha256").write_text("old  k.sqsh\n")
    fake = _fake_tool(tmp_path, body)
    plan = export.export_commands("llmc-kit:latest", "sqsh", out)
    with pytest.raises(KitError) as e:
        export.run_export(plan, docker=_NoDocker(), which=lambda n: str(fake) if n == "enroot" else None,
                          on_line=lambda s: None)
    assert msg in e.value.message
    assert out.read_bytes() == b"the previous image"
    assert sorted(p.name for p in out.parent.iterdir()) == ["k.sqsh", "k.sqsh.sha256"]


def test_tool_writes_a_temp_file_renamed_when_complete(tmp_path):
    out = tmp_path / "k.sqsh"
    fake = _fake_tool(tmp_path, '[ -e "' + str(out) + '" ] && exit 7\nprintf "image" > "$3"\necho "$3"\n')
    lines: list[str] = []
    plan = export.export_commands("llmc-kit:latest", "sqsh", out)
    export.run_export(plan, docker=_NoDocker(), which=lambda n: str(fake) if n == "enroot" else None,
                      on_line=lines.append)
    assert Path(lines[0]).parent == tmp_path and Path(lines[0]).name.startswith(".tmp-")
    assert Path(lines[0]).name.endswith("k.sqsh")      # enroot/apptainer still see the format's suffix
    assert out.read_bytes() == b"image" and not Path(lines[0]).exists()


def wait_for(fn, what: str, deadline_s: float = 60):
    """Poll fn() until truthy (bounded; not a timing assertion)."""
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if fn():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def _cli(*args, data_root: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")}
    env["KIT_DATA_ROOT"] = str(data_root)
    return kitctl_proc.run(args, env=env, cwd=data_root, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("argv,needle", [
    (["export", "--format", "zip"], "is not one of tar, sqsh, sif"),
    (["export", "--format", "tar", "--dry-run", "--", "-oops"], "is not an image reference"),
    (["export", "--format", "tar", "llmc-kit:latest", "-o", "."], "is a folder"),
    (["export", "--format", "sqsh", "--via-tar"], "does not apply to sqsh"),
])
def test_export_cli_refuses_with_exit_2(tmp_path, argv, needle):
    before = tree(tmp_path)
    r = _cli(*argv, data_root=tmp_path)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and needle in err and "hint:" in err and "internal error" not in err, r.stderr
    assert tree(tmp_path) == before


SAVE_SCRIPT = """
import sys, types
from pathlib import Path
from kitctl.cluster import export
from kitctl.core.errors import KitError
fake_client = types.SimpleNamespace(image=types.SimpleNamespace(inspect=lambda ref: types.SimpleNamespace(size=10**6)))
try:
    export.save_tar("llmc-kit:latest", Path(sys.argv[1]), docker=fake_client, docker_cmd=sys.argv[2])
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


@pytest.mark.slow
def test_docker_save_stopped_by_sigterm_leaves_nothing(tmp_path):
    """`docker save` runs in its own process group through core.proc: SIGTERM to kitctl stops it, and the
    half-written temp tar is removed (the output name never appears)."""
    import signal
    import time

    fake = tmp_path / "docker"
    pidfile = tmp_path / "docker.pid"
    fake.write_text(f'#!/bin/sh\necho $$ > {pidfile}\nprintf "partial tar" > "$3"\nexec sleep 300\n')
    fake.chmod(0o755)
    out = tmp_path / "out" / "k.tar"
    out.parent.mkdir()
    p = subprocess.Popen([sys.executable, "-c", SAVE_SCRIPT, str(out), str(fake)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    wait_for(lambda: pidfile.exists() and any(out.parent.iterdir()), "the fake docker save to start writing", 60)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in stdout, stderr
    assert list(out.parent.iterdir()) == []                     # no temp tar, no k.tar
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "docker save outlived kitctl"


def test_docker_save_failure_names_the_image(tmp_path):
    import types

    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\nprintf "x" > "$3"\necho "Error response from daemon: reference does not exist" >&2\n'
                    'exit 1\n')
    fake.chmod(0o755)
    client = types.SimpleNamespace(image=types.SimpleNamespace(inspect=lambda ref: types.SimpleNamespace(size=1)))
    with pytest.raises(KitError) as e:
        export.save_tar("gone:1", tmp_path / "k.tar", docker=client, docker_cmd=str(fake), say=lambda s: None)
    assert e.value.message == "no local image gone:1" and e.value.exit_code == 2
    assert list(tmp_path.iterdir()) == [fake]
