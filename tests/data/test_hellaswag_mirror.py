"""HellaSwag behind a firewall (issue 27): mirrors.hellaswag_url and ``--source URL`` fetch the jsonl from a real
HTTP mirror on loopback; the dry run names the URL (and the HF endpoint for a hub recipe) before any download."""
from __future__ import annotations

import json
import os

import pytest

import kitctl_proc
from data_ref import read_eval_file
from loopback import file_server

from kitctl.core.config import KitConfig, Mirrors
from kitctl.core.errors import ConfigError
from kitctl.data.execute import execute
from kitctl.data.plan import make_plan

EXAMPLES = [{"ctx": "A man is sitting on a roof. he", "label": 3,
             "endings": ["is using wrap.", "is ripping tiles off.", "holds a cube.", "starts pulling up roofing."]},
            {"ctx": "She opens the door", "label": 0, "endings": ["and walks in.", "b", "c", "d"]}]


@pytest.fixture
def mirror(tmp_path):
    folder = tmp_path / "mirror" / "hellaswag" / "data"
    folder.mkdir(parents=True)
    (folder / "hellaswag_val.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    with file_server(tmp_path / "mirror") as (base, seen):
        yield f"{base}/hellaswag/data/hellaswag_val.jsonl", seen


def test_hellaswag_url_mirror_is_planned_and_downloaded_from(mirror, tmp_path, gpt2_bpe_dir, tiktoken_cache,
                                                            restore_environ):
    url, seen = mirror
    cfg = KitConfig(data_root=tmp_path / "root", tokenizer_dir=gpt2_bpe_dir, mirrors=Mirrors(hellaswag_url=url))
    plan = make_plan(cfg, "hellaswag")
    assert plan.downloads() == [url] and f"download     {url}" in plan.describe()
    assert execute(plan, log=lambda _: None) == 2
    assert seen == ["/hellaswag/data/hellaswag_val.jsonl"]
    assert read_eval_file(plan.hellaswag_bin)[0]["n"] == 2
    assert make_plan(cfg, "hellaswag").downloads() == []          # the jsonl is cached on the data root now


def test_source_url_is_a_mirror_of_the_jsonl_and_the_default_stays_github(tmp_path):
    cfg = KitConfig(data_root=tmp_path / "root", mirrors=Mirrors(hellaswag_url="https://m.example/hs.jsonl"))
    assert make_plan(cfg, "hellaswag", source="http://127.0.0.1:1/x.jsonl").url == "http://127.0.0.1:1/x.jsonl"
    assert make_plan(cfg, "hellaswag").url == "https://m.example/hs.jsonl"
    plain = make_plan(KitConfig(data_root=tmp_path / "root"), "hellaswag")
    assert plain.downloads() == ["https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"]
    with pytest.raises(ConfigError, match="--hellaswag-source"):
        make_plan(cfg, "hellaswag", source="http://bad host/x", source_flag="--hellaswag-source")


def test_data_dry_run_names_the_hf_endpoint_after_the_mirror(tmp_path):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "KIT_MIRRORS__HF_ENDPOINT": "https://hf-mirror.example"}
    r = kitctl_proc.run(["data", "fineweb10B", "--runtime", "native", "--dry-run"], env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "download     https://hf-mirror.example/datasets/HuggingFaceFW/fineweb" in r.stdout


def test_a_bad_hellaswag_mirror_exits_2_naming_the_key(tmp_path):
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "KIT_MIRRORS__HELLASWAG_URL": "ftp://m.example/x"}
    r = kitctl_proc.run(["data", "hellaswag", "--dry-run", "--runtime", "native"], env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "mirrors.hellaswag_url" in r.stderr, r.stderr


@pytest.mark.slow       # kitctl data in a subprocess: tokenizer set-up and the eval file
def test_data_hellaswag_source_url_downloads_from_the_mirror(mirror, tmp_path, gpt2_bpe_dir):
    url, seen = mirror
    env = {**os.environ, "KIT_DATA_ROOT": str(tmp_path / "root"), "KIT_TOKENIZER_DIR": str(gpt2_bpe_dir)}
    r = kitctl_proc.run(["data", "hellaswag", "--runtime", "native", "--source", url], env=env, cwd=tmp_path,
                        timeout=120)
    assert r.returncode == 0, r.stderr
    assert seen == ["/hellaswag/data/hellaswag_val.jsonl"]
    assert read_eval_file(tmp_path / "root" / "hellaswag" / "hellaswag_val.bin")[0]["n"] == 2


def test_the_data_container_gets_the_hellaswag_mirror(tmp_path):
    from kitctl.data.container import docker_spec

    cfg = KitConfig(data_root=tmp_path / "root", mirrors=Mirrors(hellaswag_url="https://m.example/hs.jsonl"))
    spec = docker_spec(make_plan(cfg, "hellaswag"), cfg)
    assert spec.env["KIT_MIRRORS__HELLASWAG_URL"] == "https://m.example/hs.jsonl"
