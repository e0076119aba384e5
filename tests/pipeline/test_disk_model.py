"""One disk model, one source: every disk figure doctor, kit.yaml's comments, README and docs/reproduce.md quote is
the forecast planner's (kitctl/pipeline/reference.py). Each check fails when a text disagrees with the planner."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import kitctl_proc

from kitctl.core.config import TEMPLATE, KitConfig
from kitctl.host import doctor
from kitctl.pipeline import forecast as fc
from kitctl.pipeline import reference

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "docs" / "reproduce.md"]
BLOCK = re.compile(r"<!-- disk-model -->(.*?)<!-- /disk-model -->", re.S)


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.slow
def test_the_reference_model_is_the_dry_run_of_the_seed_box(tmp_path):
    """The figures are the planner's own: the same numbers `kitctl reproduce --dry-run --json` prints."""
    m = reference.disk_model()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KIT_DATA_ROOT": str(tmp_path / "d")}
    r = kitctl_proc.run(["reproduce", "--dry-run", "--json", "--no-tune",
                         "--inventory", REPO / "docs" / "inventories" / "2080ti-3090.csv"], env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["total"]["disk_bytes"] == m.data_root_bytes
    assert j["total"]["docker_bytes"] == m.docker_bytes["nvidia"] == fc.costs().build["nvidia"].disk_bytes
    st = {s["name"]: s for s in j["stages"]}
    assert st["data"]["disk_bytes"] == m.hf_cache_bytes + m.shard_bytes
    assert "4 checkpoint(s) of 1.74 GB" in st["train"]["detail"] and m.checkpoints == 4


def test_readme_and_reproduce_doc_quote_the_planners_sentence():
    want = reference.disk_model().summary()
    for doc in DOCS:
        blocks = BLOCK.findall(doc.read_text(encoding="utf-8"))
        assert blocks, f"{doc.name}: no <!-- disk-model --> sentence"
        for b in blocks:
            assert _flat(b) == want, f"{doc.name} says {_flat(b)!r}; the planner says {want!r}"


def test_readme_requirements_and_plan_totals_agree_with_the_planner():
    m = reference.disk_model()
    text = _flat((REPO / "README.md").read_text(encoding="utf-8"))
    assert f"~{m.gb(m.data_root_bytes)} free on the big disk for the data root" in text
    # every FineWeb10B plan printed in the README has the planner's totals: data root + Docker's storage
    totals = re.findall(r"│ total\s+│\s+│\s+([\d.]+ GB)(?: \+ ([\d.]+ GB) \(docker\))?", text)
    assert len(totals) >= 3
    for disk, docker in totals:
        assert disk == f"{m.data_root_bytes / 1e9:,.1f} GB" and docker == f"{m.docker_bytes['nvidia'] / 1e9:,.1f} GB"


def test_kit_yaml_comments_quote_the_planner():
    m = reference.disk_model()
    t = _flat(TEMPLATE)
    assert f"kitctl reproduce gpt2-124m: ~{m.gb(m.data_root_bytes)}" in t
    assert f"FineWeb10B's parquet: {m.gb(m.hf_cache_bytes)}" in t
    assert f"~{m.gb(m.docker_bytes['nvidia'])} with nvidia, ~{m.gb(m.docker_bytes['wheels'])} with wheels" in t
    # no other size of the HF cache or the run anywhere in the template
    assert set(re.findall(r"~?[\d.]+ GB", t)) == {f"~{m.gb(m.data_root_bytes)}", m.gb(m.hf_cache_bytes),
                                                   f"~{m.gb(m.docker_bytes['nvidia'])}",
                                                   f"~{m.gb(m.docker_bytes['wheels'])}"}


def test_doctor_judges_and_quotes_with_the_planners_figures():
    m = reference.disk_model()
    need = reference.disk_need(KitConfig())
    assert need.data_root_bytes == m.data_root_bytes and need.docker_bytes == m.docker_bytes["nvidia"]
    assert reference.disk_need(KitConfig(provider="wheels")).docker_bytes == m.docker_bytes["wheels"]
    just_under = doctor.Facts(docker_cli=True, engine="28", buildx="0.2", free_bytes=m.data_root_bytes - 10**9,
                              shm_bytes=8 * 10**9)
    row = {f.check: f for f in doctor.evaluate(just_under, KitConfig(runtime="native"), need)}["data root space"]
    assert row.status == "warn" and m.summary() in row.meaning
    enough = doctor.Facts(docker_cli=True, engine="28", buildx="0.2", free_bytes=m.data_root_bytes + 10**9)
    assert {f.check: f for f in doctor.evaluate(enough, KitConfig(runtime="native"), need)}["data root space"].status == "ok"
    # the CLI hands the planner's figures to doctor when it loads `kitctl doctor` (kitctl/cli.py's hook)
    import typer.main

    from kitctl import cli
    typer.main.get_command(cli.app).commands["doctor"]    # noqa: B018  (looked up as `kitctl doctor` looks it up)
    assert doctor.disk_need(KitConfig()) == need
