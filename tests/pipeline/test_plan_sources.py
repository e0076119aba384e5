"""The plan names its sources (issue 27): per stage, where each download comes from after every mirror -- the
dry run's text, ``--json``'s ``sources`` -- and a registry mirror leaves no Docker Hub image in the wheels plan."""
from __future__ import annotations

import json
import os

import kitctl_proc

HS = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"


def _plan(tmp_path, *args, **env_extra):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "COLUMNS": "200", **env_extra}
    r = kitctl_proc.run(["reproduce", "--dry-run", *args], env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def test_json_sources_per_stage_after_every_mirror(tmp_path):
    r = _plan(tmp_path, "--json", "--hellaswag-source", "http://127.0.0.1:8/hs.jsonl",
              KIT_PROVIDER="wheels", KIT_MIRRORS__REGISTRY="m.example:5000",
              KIT_MIRRORS__HF_ENDPOINT="https://hf-mirror.example", KIT_MIRRORS__PIP_INDEX="https://pypi.m.example/simple",
              KIT_MIRRORS__LLMC_SRC="https://git.m.example/llm.c.tar.gz")
    stages = {s["name"]: {(x["what"], x["from"]) for x in s["sources"]} for s in json.loads(r.stdout)["stages"]}
    assert stages["build"] == {("base image", "m.example:5000/library/debian:bookworm"),
                               ("apt", "http://deb.debian.org/debian"), ("pip", "https://pypi.m.example/simple"),
                               ("llm.c", "https://git.m.example/llm.c.tar.gz")}
    assert stages["data"] == {("dataset", "https://hf-mirror.example/datasets/HuggingFaceFW/fineweb")}
    assert stages["hellaswag"] == {("HellaSwag", "http://127.0.0.1:8/hs.jsonl")}      # --hellaswag-source URL
    assert stages["train"] == stages["report"] == set()


def test_text_plan_lists_the_hosts_and_the_defaults_without_mirrors(tmp_path):
    out = _plan(tmp_path).stdout
    assert "downloads from (after mirrors" in out
    assert "  build: base image nvidia/cuda:" in out and "pip https://pypi.org/simple" in out
    assert "  data: dataset https://huggingface.co/datasets/HuggingFaceFW/fineweb" in out
    assert f"  hellaswag: HellaSwag {HS}" in out
