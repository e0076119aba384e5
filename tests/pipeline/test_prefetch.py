"""The dataset download runs while the image builds (kitctl.pipeline.stages.Prefetch): started, it returns at once
and downloads in another thread into the HF cache on the data root; the data stage waits for it. The hub is
replaced by local functions (list and download) -- the same hooks kitctl.data.hf.hf_source takes."""
from __future__ import annotations

import os
import threading

from kitctl.core.config import KitConfig
from kitctl.data.plan import make_plan
from kitctl.pipeline.stages import Prefetch


def _clean_env(monkeypatch) -> None:
    """Prefetch points the HF and tiktoken caches at the data root (os.environ): restored after the test."""
    for k in ("HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_CACHE", "TIKTOKEN_CACHE_DIR", "HF_ENDPOINT"):
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)


def test_download_runs_beside_the_caller_and_the_data_stage_waits(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    plan = make_plan(KitConfig(data_root=tmp_path), "fineweb10B")
    release, seen, said = threading.Event(), {}, []

    def download(repo, revision, patterns):
        seen.update(thread=threading.current_thread().name, hf_home=os.environ.get("HF_HOME"), repo=repo)
        assert release.wait(10)
        return str(tmp_path / "snap")

    pf = Prefetch(plan, list_files=lambda repo, rev: ["sample/10BT/000_00000.parquet"], download=download)
    assert pf.wanted()
    pf.start(said.append)
    assert pf.thread is not None and pf.thread.is_alive()           # the build would run now, beside it
    release.set()
    pf.wait(said.append)
    assert not pf.thread.is_alive() and pf.error is None
    assert seen == {"thread": "kitctl-prefetch", "hf_home": str(plan.hf_home), "repo": plan.recipe.repo}
    assert said[0].startswith("downloading HuggingFaceFW/fineweb") and str(plan.hf_home) in said[0]


def test_a_failed_download_is_said_and_left_to_the_data_stage(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    plan = make_plan(KitConfig(data_root=tmp_path), "fineweb10B")

    def download(repo, revision, patterns):
        raise OSError("no route to host")

    pf = Prefetch(plan, list_files=lambda repo, rev: ["sample/10BT/000_00000.parquet"], download=download)
    said: list[str] = []
    pf.start(said.append)
    pf.wait(said.append)
    assert "no route to host" in said[-1] and "the data stage downloads again" in said[-1]


def test_nothing_to_prefetch_for_local_or_streamed_input(tmp_path):
    cfg = KitConfig(data_root=tmp_path)
    assert not Prefetch(make_plan(cfg, "fineweb10B", stream=True)).wanted()
    assert not Prefetch(make_plan(cfg, "tinyshakespeare")).wanted()
