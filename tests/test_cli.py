"""The CLI's outer shell: every command listed, and failures rendered as one clear message (no traceback)."""
import errno
import subprocess
import sys

import pytest

from kitctl import cli

COMMANDS = ["init", "build", "render", "lock", "doctor", "smoke", "data", "train", "tune", "tensorboard", "status",
            "report", "export", "demo"]


@pytest.mark.slow
def test_help_lists_every_command():
    r = subprocess.run([sys.executable, "-m", "kitctl", "--help"], capture_output=True, text=True,
                       env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    for c in COMMANDS:
        assert f" {c} " in r.stdout, c


@pytest.mark.parametrize("exc,needle", [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
    (RuntimeError("boom"), "internal error: RuntimeError: boom"),
])
def test_unexpected_errors_are_one_message(monkeypatch, capsys, exc, needle):
    def explode(*a, **k):
        raise exc

    monkeypatch.setattr(cli, "app", explode)
    monkeypatch.delenv("KITCTL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and "hint" in err


def test_ctrl_c_is_exit_130_with_a_message(monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("argv,needle", [
    (["build", "--dryrun"], "No such option: --dryrun"),
])
def test_usage_errors_exit_2_from_the_real_entry_point(tmp_path, argv, needle):
    """The pinned typer raises its bundled click's exceptions; they must not become "internal error" exit 1.

    One usage error through both real entry points (`python -m kitctl` and the console script), cold; the others
    run in-process through the same cli.main in tests/hostile/cases.py (bare-kitctl "no command given",
    data-verify-no-dir "missing argument", train-steps-many "--steps", unknown-verb "no such command"), whose
    harness also fails on "internal error", a traceback or the last-resort handlers."""
    import shutil
    from pathlib import Path

    exe = shutil.which("kitctl", path=str(Path(sys.executable).parent))     # the installed console script
    for cmd in ([sys.executable, "-m", "kitctl"], [exe] if exe and argv == ["build", "--dryrun"] else []):
        if not cmd:
            continue
        r = subprocess.run([*cmd, *argv], capture_output=True, text=True, cwd=tmp_path,
                           env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"})
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert needle in r.stderr and "hint:" in r.stderr and "--help" in r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr


def test_exit_130_from_typer_says_interrupted(monkeypatch, capsys):
    """typer turns Ctrl-C inside a command into Exit(130), returned as the code in non-standalone mode."""
    monkeypatch.setattr(cli, "app", lambda **kw: 130)
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 130 and "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("exc,code,needle", [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y"), 2, "cannot use /x/y"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"), 2, "is a file, not a folder"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/x"), 2, "read-only file system"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/q/x"), 1, "quota"),
    (OSError(errno.EIO, "Input/output error"), 1, "internal error"),
])
def test_os_errors_are_one_message(monkeypatch, capsys, exc, code, needle):
    def explode(**kw):
        raise exc

    monkeypatch.setattr(cli, "app", explode)
    monkeypatch.delenv("KITCTL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == code and needle in err and "hint:" in err and "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_while_importing_exits_130_without_a_traceback(tmp_path):
    """Seen on the H200: SIGINT while python -m kitctl was still importing printed a traceback and exited 1."""
    import signal
    import subprocess
    import sys
    import time

    # a sitecustomize that sleeps during kitctl's import gives the signal a window to land in
    hook = tmp_path / "sitecustomize.py"
    hook.write_text("import builtins, time\n_imp = builtins.__import__\n"
                    "def slow(name, *a, **k):\n"
                    "    if name == 'kitctl.cli':\n        time.sleep(5)\n    return _imp(name, *a, **k)\n"
                    "builtins.__import__ = slow\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-m", "kitctl", "--version"], env=env, stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err


# Every command that writes or starts something takes --dry-run (README "Every command that changes something");
# these only read (smoke runs its checks in throw-away containers and writes nothing).
READ_ONLY = {"doctor", "status", "smoke", "data verify", "data recipes"}


def _leaf_commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(cli.app)
    out = []
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        out += [f"{name} {s}" for s in subs] if subs else [name]
    return out


def test_every_command_that_changes_something_takes_dry_run():
    import typer.main

    group = typer.main.get_command(cli.app)
    leaves = _leaf_commands()
    assert {"init", "render", "tensorboard", "report", "export-model", "sample", "eval", "demo",
            "data make"} <= set(leaves)
    for leaf in leaves:
        parts = leaf.split()
        cmd = group.commands[parts[0]]
        if len(parts) > 1:
            cmd = cmd.commands[parts[1]]
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if leaf in READ_ONLY:
            continue
        assert "--dry-run" in opts, f"kitctl {leaf} changes something but has no --dry-run"


@pytest.mark.slow
def test_help_texts_keep_their_brackets():
    """Rich markup must not eat `[eval]` (the pip extra) or `[options]`."""
    env = {"COLUMNS": "250", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "kitctl", "eval", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "pip install 'llmc-kit[eval]'" in r.stdout, r.stdout
    r = subprocess.run([sys.executable, "-m", "kitctl", "--help"], capture_output=True, text=True, env=env)
    assert "llmc-kit[eval]" in r.stdout and "kitctl data [DATASET] [options]" in r.stdout


@pytest.mark.slow
def test_init_dry_run_writes_nothing_and_the_checkout_ignores_kit_yaml(tmp_path):
    from pathlib import Path

    r = subprocess.run([sys.executable, "-m", "kitctl", "init", str(tmp_path / "kit.yaml"), "--dry-run"],
                       capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and "would write" in r.stdout and not (tmp_path / "kit.yaml").exists(), r.stderr
    repo = Path(__file__).resolve().parents[1]
    lines = (repo / ".gitignore").read_text().splitlines()
    assert "/kit.yaml" in lines and "/data/" in lines      # `kitctl init` in the checkout: kit.yaml, ./data


@pytest.mark.slow
@pytest.mark.parametrize("argv,env", [
    (["--version"], {}),
    (["status", "nowhere"], {"COLUMNS": "70"}),                       # a bad input, folded at 70 columns
    (["data", "--no-such-option"], {"COLUMNS": "200"}),               # a usage error
    (["init", "--stdout", "--data-root", "/big"], {"NO_COLOR": "1"}),
])
def test_forked_commands_say_what_a_cold_start_says(tmp_path, argv, env):
    """tests/kitctl_proc.py forks most of the suite's commands from a preloaded server: each must be the same
    process to its caller as `python -m kitctl` started cold (exit code, stdout, stderr, its own environment and
    folder), or the tests that use it would test something else."""
    import kitctl_proc

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env}
    cold = subprocess.run([sys.executable, "-m", "kitctl", *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    forked = kitctl_proc.run(argv, env=env, cwd=tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (cold.returncode, cold.stdout, cold.stderr)


def test_forked_commands_get_only_their_own_environment_and_folder(tmp_path, monkeypatch):
    import kitctl_proc

    monkeypatch.setenv("KIT_DATA_ROOT", str(tmp_path / "from-the-test-process"))
    monkeypatch.setenv("COLUMNS", "500")
    r = kitctl_proc.run(["status", "x"], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "500"},
                        cwd=tmp_path)
    assert r.returncode == 2 and "from-the-test-process" not in r.stderr
    assert str(tmp_path / "data" / "runs") in " ".join(r.stderr.split())    # the fallback data root: cwd/data
    r = kitctl_proc.run(["status", "x"], cwd=tmp_path)                       # env=None: this process's, like Popen
    assert r.returncode == 2 and "from-the-test-process" in r.stderr
