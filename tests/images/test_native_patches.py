"""native/patches/cuda13_compat.h, the part a CPU can check: MPI_Finalize without MPI_Init.

llm.c @ f1e2ace calls MPI_Finalize() at exit even when its ranks were started by srun with -pi fs|tcp (no
MPI_Init). The forced-include shim must turn that into a no-op while a real MPI program is unaffected.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "native" / "patches" / "cuda13_compat.h"
MPI_DIR = Path("/usr/lib/x86_64-linux-gnu/openmpi")

pytestmark = pytest.mark.skipif(
    shutil.which("g++") is None or not (MPI_DIR / "include" / "mpi.h").exists() or shutil.which("mpirun") is None,
    reason="needs g++ and Open MPI headers + mpirun (apt install g++ libopenmpi-dev openmpi-bin; CI installs them)")

PROGRAM = """
#include <cstdio>
#include <cstring>
#include <mpi.h>
int main(int argc, char** argv) {
    if (argc > 1 && !strcmp(argv[1], "init")) MPI_Init(&argc, &argv);
    int rc = MPI_Finalize();
    printf("finalize rc=%d\\n", rc);
    return rc;
}
"""


def _build(tmp_path, name, shim):
    src = tmp_path / "fin.cpp"
    src.write_text(PROGRAM)
    exe = tmp_path / name
    cmd = ["g++", "-DUSE_MPI", "-DOMPI_SKIP_MPICXX=1", *(["-include", str(SHIM)] if shim else []),
           f"-I{MPI_DIR}/include", str(src), f"-L{MPI_DIR}/lib", "-lmpi", "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True)
    return exe


def test_finalize_without_init_is_a_no_op_with_the_shim(tmp_path):
    patched = _build(tmp_path, "patched", shim=True)
    r = subprocess.run([str(patched)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "finalize rc=0" in r.stdout, r.stdout + r.stderr


def test_without_the_shim_open_mpi_aborts(tmp_path):
    """The bug the shim exists for (so the test above can fail)."""
    plain = _build(tmp_path, "plain", shim=False)
    r = subprocess.run([str(plain)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "MPI_Finalize" in r.stderr + r.stdout


@pytest.mark.slow
def test_real_mpi_programs_still_finalize(tmp_path):
    patched = _build(tmp_path, "patched", shim=True)
    r = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", str(patched), "init"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("finalize rc=0") == 2
