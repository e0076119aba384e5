"""Shared fixtures: the offline inputs the kit ships, and engine / tool checks that skip with a reason."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["docker_fixtures"]   # session fixtures that build kit images (tests/docker_fixtures.py)

REPO = Path(__file__).resolve().parent.parent
# The kit ships these (no ../shared needed): a fresh clone runs every test that reads them.
GPT2_BPE = REPO / "kitctl" / "assets" / "gpt2-bpe"
TINYSHAKESPEARE = REPO / "datasets" / "files" / "tinyshakespeare.txt"
LLMC_SRC = Path(os.environ.get("LLMC_SRC", REPO / ".llmc-src" / "llm.c"))


def pytest_configure(config):
    """One matplotlib config/cache folder for the whole run (the xdist workers inherit it): matplotlib writes its
    font cache at first import under $HOME, and tests that point HOME at a temporary world (tests/hostile) would
    otherwise see that file appear, or not, by which test of a worker imported it first."""
    if "MPLCONFIGDIR" not in os.environ:
        os.environ["MPLCONFIGDIR"] = config._kit_mpl_dir = tempfile.mkdtemp(prefix="kit-tests-mpl-")
    import cli_once       # kitctl's click command built once per process for in-process CLI tests, as a real run

    cli_once.install()


def pytest_unconfigure(config):
    made = getattr(config, "_kit_mpl_dir", None)
    if made:
        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("MPLCONFIGDIR", None)


def pytest_xdist_auto_num_workers(config) -> int:
    """Workers for `-n auto` (pyproject's addopts): PYTEST_XDIST_AUTO_NUM_WORKERS if set; else one a core for the
    fast tier (`-m "not slow"`: pure CPU; 2 workers 23.9 s, 3 workers 30.9 s on this 2-core box, 2026-12-06), and
    one more for a run with the slow tests: their image builds, pip downloads and wheelhouse wait on the network
    and on Docker while a worker holds them (the CPUs were 52-100% busy during the two cold builds). Measured cold
    on a clean clone (`.ci/run`, Docker emptied first), 2026-12-08: 2 workers 275.3, 282.7 and 290.8 s; 3 workers
    258.2 s. `-n 0` runs in this process (no workers; --pdb does that by itself)."""
    env = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if env:
        return int(env)
    cores = os.cpu_count() or 1
    return cores if "not slow" in (config.option.markexpr or "") else cores + 1


# Tests that share one expensive thing run on one xdist worker (`--dist loadgroup`), so it is made once per run:
# the kit images (docker_fixtures.py) and the Slurm cluster (tests/cluster/test_slurm_cluster.py).
DOCKER_FIXTURES = {"data_image", "wheels_toolchain", "docker_base_image", "test_kit_config"}
# Tests that need an engine, a cluster or a browser are slow by nature: `pytest -m "not slow"` leaves them out.
SLOW_BY_NATURE = ("docker", "slurm", "chromium")


@pytest.hookimpl(tryfirst=True)      # before xdist's own, which turns xdist_group marks into the work units
def pytest_collection_modifyitems(config, items):
    from docker_fixtures import docker_engine_reason    # loaded by pytest_plugins above (asserts rewritten)

    for item in items:
        if "docker" in item.keywords:
            reason = docker_engine_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
        if "chromium" in item.keywords and shutil.which("chromium") is None:
            item.add_marker(pytest.mark.skip(reason="Debian's chromium is not installed (CI installs it)"))
        if "slurm" in item.keywords and shutil.which("slurmctld") is None:
            item.add_marker(pytest.mark.skip(reason="slurm-wlm is not installed (CI installs slurm-wlm and munge)"))
        fixtures = set(getattr(item, "fixturenames", ()))
        # the CUDA toolchain's chain of tests runs beside the data image's; the runtime image (llm.c's checkout) is
        # built FROM the toolchain stage, so it is in that chain: on the other worker its build would hold the
        # toolchain's steps while this chain rebuilds them (test_unchanged_inputs_rebuild_from_cache)
        if "wheels_toolchain" in fixtures or ("llmc_src" in fixtures and item.get_closest_marker("docker")):
            item.add_marker(pytest.mark.xdist_group("docker-toolchain"))
        elif item.get_closest_marker("docker") or DOCKER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.xdist_group("docker"))
        elif item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        if any(item.get_closest_marker(m) for m in SLOW_BY_NATURE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def gpt2_bpe_dir() -> Path:
    assert (GPT2_BPE / "vocab.bpe").is_file() and (GPT2_BPE / "encoder.json").is_file(), \
        f"the kit ships GPT-2's BPE files at {GPT2_BPE}"
    return GPT2_BPE


@pytest.fixture(scope="session")
def tinyshakespeare() -> Path:
    assert TINYSHAKESPEARE.is_file(), f"the kit ships tinyshakespeare at {TINYSHAKESPEARE}"
    return TINYSHAKESPEARE


@pytest.fixture(scope="session")
def llmc_src() -> Path:
    if not (LLMC_SRC / "train_gpt2.cu").exists():
        pytest.skip(f"no llm.c checkout at {LLMC_SRC} (set LLMC_SRC; GitHub is unreachable in CI)")
    return LLMC_SRC


@pytest.fixture(scope="session")
def tiktoken_cache(gpt2_bpe_dir, tmp_path_factory) -> Path:
    """TIKTOKEN_CACHE_DIR seeded from the kit's GPT-2 files (kitctl.data.tokenizer): no network."""
    from kitctl.data.tokenizer import setup_tiktoken

    cache = tmp_path_factory.mktemp("tiktoken")
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    setup_tiktoken(gpt2_bpe_dir, cache)
    yield cache
    if old is None:
        os.environ.pop("TIKTOKEN_CACHE_DIR", None)
    else:
        os.environ["TIKTOKEN_CACHE_DIR"] = old


@pytest.fixture
def restore_environ():
    """Undo what a test's code put in os.environ (kitctl data sets HF_HOME, TIKTOKEN_CACHE_DIR, ...)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def roomy_tmp_path(tmp_path):
    """``tmp_path`` on its own 1 TiB tmpfs (sparse: nothing is reserved), so a test of a verdict that also weighs
    free space (doctor's disk rows: FineWeb10B + the HF cache need ~56 GB on one disk) does not depend on how full
    this machine's disk is. CI's box had 53.9 GB free and failed two such tests. Root only: skips elsewhere."""
    from mounts import mount_tmpfs, unmount

    mount_tmpfs(tmp_path, "1t")
    yield tmp_path
    unmount(tmp_path)


@pytest.fixture(scope="session")
def once_per_run(tmp_path_factory, worker_id):
    """``once_per_run(name, make)`` -> a folder that ``make(folder)`` filled once for the whole test run.

    Under xdist each worker has its own base temp folder (``.../pytest-N/popen-gwK``); their parent is the run's.
    The first worker to ask makes the folder under a file lock, the others wait for it and reuse it (a folder
    left half-made by a failed ``make`` is made again). Without workers it is this process's base temp folder."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base if worker_id == "master" else base.parent

    def once(name: str, make) -> Path:
        folder = root / f"once-{name}"
        with FileLock(str(folder) + ".lock"):
            if not (folder / ".made").exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                make(folder)
                (folder / ".made").touch()
        return folder

    return once
