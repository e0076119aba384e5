"""With no way to the HF hub, `kitctl data` names every way around it, whole: the endpoint it used (a garbage
HF_ENDPOINT by name and value), mirrors.hf_endpoint, --source and --bundle. Run in a network namespace with no
network (`unshare -n`, root) so the hub is really unreachable."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

UNSHARE = shutil.which("unshare")
pytestmark = [pytest.mark.skipif(UNSHARE is None or os.geteuid() != 0, reason="unshare -n needs root"),
              pytest.mark.slow]          # kitctl in a subprocess without a network


def _data(tmp_path, **env):
    e = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "400", "KIT_DATA_ROOT": str(tmp_path / "d"),
         **env}
    r = subprocess.run([UNSHARE, "-n", sys.executable, "-m", "kitctl", "data", "fineweb10B", "--runtime", "native"],
                       env={**e, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}, capture_output=True, text=True,
                       timeout=300)
    return r.returncode, " ".join(r.stderr.split())


def test_garbage_hf_endpoint_is_named_with_its_value(tmp_path):
    rc, err = _data(tmp_path, HF_ENDPOINT="garbage")
    assert rc == 1, err
    assert "HF_ENDPOINT is 'garbage'" in err and "mirrors.hf_endpoint" in err
    assert "--source" in err and "--bundle FILE" in err and err.rstrip().endswith(")")      # whole, not cut


def test_unreachable_hub_names_every_way_around(tmp_path):
    rc, err = _data(tmp_path)
    assert rc == 1, err
    assert "set HF_ENDPOINT or mirrors.hf_endpoint in kit.yaml to a mirror" in err
    assert "--source" in err and "kitctl bundle --out FILE" in err
