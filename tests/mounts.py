"""A tmpfs of a chosen size on a test's folder: a real full disk (a few KiB) or a roomy one (a sparse TiB) whose
free space does not depend on this machine's disk. Mounting needs root: elsewhere the test skips, saying why."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def mount_tmpfs(folder: Path, size: str) -> None:
    """Mount a tmpfs of ``size`` (mount(8)'s ``size=``: ``128k``, ``1t``) on ``folder``, or skip the test."""
    if os.geteuid() != 0:
        pytest.skip("a disk of a chosen size needs a tmpfs mount (root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)
