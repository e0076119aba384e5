"""Bad inputs to `kitctl build` / `render` are refused like a bad kit.yaml: exit 2, what is allowed, no tag."""
from __future__ import annotations

import subprocess
import sys

from kitctl.config import KNOWN_ARCHS


def kit(tmp_path, *args, config: str = ""):
    (tmp_path / "kit.yaml").write_text(config or "data_root: ./data\n")
    r = subprocess.run([sys.executable, "-m", "kitctl", "--config", str(tmp_path / "kit.yaml"), *args],
                       capture_output=True, text=True, cwd=tmp_path)
    r.stderr = " ".join(r.stderr.split())     # rich wraps long lines
    return r


def test_cli_arch_is_checked_like_kit_yaml(tmp_path):
    r = kit(tmp_path, "build", "--dry-run", "--arch", "99")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "unknown compute capability [99]" in r.stderr and str(list(KNOWN_ARCHS)) in r.stderr
    assert "sm99" not in r.stdout
    from_yaml = kit(tmp_path, "build", "--dry-run", config="data_root: ./data\narch: [99]\n")
    assert from_yaml.returncode == 2 and "unknown compute capability [99]" in from_yaml.stderr
    r = kit(tmp_path, "render", "--stdout", "--arch", "75,99")
    assert r.returncode == 2 and "unknown compute capability [99]" in r.stderr
