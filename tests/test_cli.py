"""The CLI's outer shell: every command listed, and failures rendered as one clear message (no traceback)."""
import errno
import subprocess
import sys

import pytest

from kitctl import cli

COMMANDS = ["init", "build", "render", "doctor", "smoke", "data", "train", "tune", "tensorboard", "status",
            "report", "export", "demo"]


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


@pytest.mark.parametrize("argv,needle", [
    (["build", "--dryrun"], "No such option: --dryrun"),
    (["data", "verify"], "Missing argument"),
    ([], "no command given"),
    (["train", "--steps", "many", "--dry-run"], "'--steps'"),
    (["trian"], "No such command 'trian'"),
])
def test_usage_errors_exit_2_from_the_real_entry_point(tmp_path, argv, needle):
    """The pinned typer raises its bundled click's exceptions; they must not become "internal error" exit 1."""
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
