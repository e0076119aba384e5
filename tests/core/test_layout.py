"""kitctl.core.layout: one object names every place under the data root; kit.yaml's hf_home moves the HF cache."""
from __future__ import annotations

from pathlib import Path

from kitctl.core.config import KitConfig
from kitctl.core.layout import DataLayout


def test_every_place_is_under_the_data_root(tmp_path):
    w = DataLayout(tmp_path)
    assert w.shards("fineweb10B") == tmp_path / "fineweb10B"
    assert w.hf_cache == tmp_path / "hf"
    assert w.tiktoken_cache == tmp_path / "tiktoken"
    assert w.tokenizer_bin == tmp_path / "gpt2_tokenizer.bin"
    assert (w.hellaswag_bin, w.hellaswag_jsonl) == (tmp_path / "hellaswag" / "hellaswag_val.bin",
                                                    tmp_path / "hellaswag" / "hellaswag_val.jsonl")
    assert w.run("gpt2-124m") == tmp_path / "runs" / "gpt2-124m" and w.runs == tmp_path / "runs"
    assert w.tune_cache == tmp_path / "tune"
    assert (w.native_src, w.native_bin) == (tmp_path / "native" / "llm.c", tmp_path / "native" / "bin")
    assert (w.exports, w.demo, w.compose_env) == (tmp_path / "export", tmp_path / "demo", tmp_path / "compose.env")
    assert not any(tmp_path.iterdir())          # paths only: nothing is created


def test_kit_config_gives_the_layout_and_honours_hf_home(tmp_path):
    cfg = KitConfig(data_root=tmp_path / "big", hf_home=tmp_path / "hf-elsewhere")
    assert cfg.layout.root == tmp_path / "big"
    assert cfg.layout.hf_cache == cfg.hf_cache == tmp_path / "hf-elsewhere"
    assert cfg.runs_dir == cfg.layout.runs == tmp_path / "big" / "runs"
    assert KitConfig(data_root=Path("rel")).layout.tokenizer_bin == Path("rel") / "gpt2_tokenizer.bin"


def test_no_data_root_literal_left_outside_core():
    """Readers and writers ask the layout: no `data_root / "runs"`-style path is spelled in the areas."""
    import re

    import kitctl

    pkg = Path(kitctl.__file__).parent
    spelled = re.compile(r"""data_root\)? / ["']""")
    offenders = [f"{p.relative_to(pkg)}:{i}" for p in pkg.rglob("*.py") if p.parent.name != "core"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if spelled.search(line)]
    assert not offenders, offenders
