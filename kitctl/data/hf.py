"""HuggingFace dataset repositories (FineWeb, FineWeb-Edu): the parquet files of one config at a pinned
revision, downloaded into the HF cache on the data root or read in place over HTTP (``--stream``)."""
from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Optional

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.net import hf_endpoint, probe_endpoint
from kitctl.core.records import error_text
from kitctl.data.recipes import Recipe
from kitctl.data.sources import FilesSource


def offline_hint() -> str:
    """Every way around an unreachable hub, naming the endpoint actually used (a garbage HF_ENDPOINT shows)."""
    ep = os.environ.get("HF_ENDPOINT")
    where = (f"HF_ENDPOINT is {ep!r} (from the environment or mirrors.hf_endpoint in kit.yaml): check that it is "
             "a reachable HuggingFace mirror URL, or unset it; " if ep else
             "huggingface.co unreachable? set HF_ENDPOINT or mirrors.hf_endpoint in kit.yaml to a mirror (e.g. "
             "https://hf-mirror.com); ")
    return (where + "offline: give the downloaded parquet files with --source (or as DATASET), or bring them in "
            "a bundle (`kitctl bundle --out FILE --source FILES` on a box with network, then --bundle FILE)")


def _cannot_list(repo: str, revision: str, why: str) -> KitError:
    return KitError(f"cannot list {repo}@{revision[:12]} on the HuggingFace hub: {why}", offline_hint())


def resolve_revision(repo: str, rev: str) -> str:
    """A branch name -> the commit it points at now (what the manifest records); a commit stays as is.

    An unreachable hub is said here, once: the listing that follows would probe again (up to
    ``PROBE_SECONDS`` more on a network that drops packets) only to say the same."""
    if re.fullmatch(r"[0-9a-f]{40}", rev):
        return rev
    unreachable = probe_endpoint(hf_endpoint())
    if unreachable is not None:
        raise _cannot_list(repo, rev, unreachable)
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo, revision=rev).sha or rev
    except Exception:   # offline: keep the name; the download says what is wrong
        return rev


def hf_parquet_files(repo: str, revision: str, pattern: str, list_files=None) -> list[str]:
    """The parquet files of one dataset config at a revision (repo-relative paths, sorted)."""
    if list_files is None:
        from huggingface_hub import HfApi

        unreachable = probe_endpoint(hf_endpoint())     # at once, not after the hub library's retries
        if unreachable is not None:
            raise _cannot_list(repo, revision, unreachable)

        def list_files(repo, revision):
            return HfApi().list_repo_files(repo, repo_type="dataset", revision=revision)
    try:
        names = list_files(repo, revision)
    except Exception as e:
        raise _cannot_list(repo, revision, error_text(e)) from None
    files = sorted(n for n in names if fnmatch.fnmatch(n, pattern) and n.endswith(".parquet"))
    if not files:
        raise KitError(f"{repo}@{revision[:12]} has no parquet files matching {pattern}")
    return files


def hf_source(recipe: Recipe, stream: bool, list_files=None, download=None,
              revision: Optional[str] = None) -> FilesSource:
    """FineWeb-style recipes: download the config's parquet files into the HF cache (HF_HOME, on the data
    root) at the pinned revision (or ``revision``, e.g. a resolved commit), or with ``stream`` read them over
    HTTP without any cache."""
    rev = revision or recipe.revision() or "main"
    if not recipe.repo or not recipe.data_files:
        raise ConfigError(f"recipe {recipe.name} has no repo or data_files", "a hf_parquet recipe needs both")
    files = hf_parquet_files(recipe.repo, rev, recipe.data_files, list_files)
    fp = f"{recipe.repo}@{rev}:{recipe.data_files}"
    desc = f"{recipe.repo}@{rev[:12]} {recipe.config} ({len(files)} parquet files" + \
        (", streamed)" if stream else ")")
    if stream:
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem()
        paths = [f"datasets/{recipe.repo}@{rev}/{f}" for f in files]
        return FilesSource(paths, filesystem=fs, description=desc, fingerprint_extra=fp, hash_content=False)
    if download is None:
        from huggingface_hub import snapshot_download

        def download(repo, revision, patterns):
            return snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=patterns)
    try:
        root = Path(download(recipe.repo, rev, [recipe.data_files]))
    except Exception as e:
        raise KitError(f"download of {recipe.repo}@{rev[:12]} failed: {error_text(e)}",
                       "re-run the same command to continue the download; " + offline_hint()) from None
    return FilesSource([root / f for f in files], description=desc, fingerprint_extra=fp, hash_content=False)
