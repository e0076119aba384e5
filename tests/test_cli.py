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
