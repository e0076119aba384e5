"""HF export: files and tensors as transformers expects them, logits equal to an independent numpy forward of the
llm.c weights (fp32 and bf16), the tokenizer equal to tiktoken's GPT-2, and the folder written atomically."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import llmc_ref
from conftest import needs_transformers
from kitctl.core.errors import KitError
from kitctl.data import tokenizer as gpt2_bpe
from kitctl.model import export, hf
from kitctl.model.checkpoint import open_checkpoint
from kitctl.model.forward import NumpyGPT2, read_safetensors


def hf_names(cfg) -> list[str]:
    """The HF GPT-2 tensor names of a checkpoint's config, in order (the export must write exactly these)."""
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(cfg.num_layers):
        names += [f"transformer.h.{i}.{name}" for _, name, _ in hf.BLOCK_MAP]
    return names + ["transformer.ln_f.weight", "transformer.ln_f.bias"]


TOKENS = np.random.default_rng(7).integers(0, 50257, 32)     # a full context of T=32, ids up to V-1


@pytest.fixture(scope="module")
def exports(ckpt_dir, tmp_path_factory):
    """{"fp32": export of the version-3 checkpoint, "bf16": of the version-5 one, "bf16->fp32": ... as float32}."""
    d = tmp_path_factory.mktemp("exports")
    f32 = open_checkpoint(ckpt_dir / "model_00000010.bin")
    b16 = open_checkpoint(ckpt_dir / "model_00000020.bin")
    return {"fp32": export.write_export(f32, d / "fp32").out, "bf16": export.write_export(b16, d / "bf16").out,
            "bf16->fp32": export.write_export(b16, d / "bf16f", dtype="float32").out}


def reference_logits(params, kind):
    p, dims = params
    return llmc_ref.forward(p if kind == "fp32" else llmc_ref.bf16_round(p), dims, TOKENS)


def test_export_files(exports, params):
    p, dims = params
    out = exports["fp32"]
    assert sorted(f.name for f in out.iterdir()) == sorted([
        "model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json",
        "special_tokens_map.json", "vocab.json", "merges.txt", "README.md", "llmc_export.json"])
    assert not [f for f in out.parent.iterdir() if f.name.startswith(".")]      # no temp folder left
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["activation_function"] == "gelu_new"
    dims = (cfg["n_positions"], cfg["vocab_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"])
    assert dims == (32, 50257, 2, 4, 64)
    assert cfg["tie_word_embeddings"] is True and cfg["layer_norm_epsilon"] == 1e-5
    assert (out / "vocab.json").read_bytes() == (gpt2_bpe.EMBEDDED_DIR / "encoder.json").read_bytes()
    assert (out / "merges.txt").read_bytes() == (gpt2_bpe.EMBEDDED_DIR / "vocab.bpe").read_bytes()
    rec = json.loads((out / "llmc_export.json").read_text())
    assert rec["step"] == 10 and rec["checkpoint_dtype"] == "float32" and rec["source"].endswith("model_00000010.bin")
    # tensors: HF names, Conv1D (in, out) layout, the 47 padded vocab rows dropped, no lm_head (tied)
    from safetensors.numpy import load_file

    t = load_file(str(out / "model.safetensors"))
    assert set(t) == set(hf_names(open_checkpoint(rec["source"]).config))
    assert "lm_head.weight" not in t and t["transformer.wte.weight"].shape == (50257, 64)
    np.testing.assert_array_equal(t["transformer.wte.weight"], p["wte"][:50257])
    np.testing.assert_array_equal(t["transformer.h.1.attn.c_attn.weight"], p["qkvw"][1].T)
    np.testing.assert_array_equal(t["transformer.h.0.mlp.c_proj.weight"], p["fcprojw"][0].T)
    np.testing.assert_array_equal(t["transformer.h.1.ln_2.bias"], p["ln2b"][1])
    assert (out / "model.safetensors").stat().st_size == pytest.approx(hf.export_bytes(
        open_checkpoint(rec["source"]).config, "float32"), abs=20000)


def test_bf16_export_is_bf16(exports, params):
    p, _ = params
    t = read_safetensors(exports["bf16"] / "model.safetensors")
    header_len = int.from_bytes((exports["bf16"] / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((exports["bf16"] / "model.safetensors").read_bytes()[8:8 + header_len])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    assert header["__metadata__"] == {"format": "pt"}
    np.testing.assert_array_equal(t["transformer.h.0.attn.c_proj.weight"],
                                  llmc_ref.bf16_round(p)["attprojw"][0].T)
    assert json.loads((exports["bf16"] / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize("kind", ["fp32", "bf16", "bf16->fp32"])
def test_numpy_forward_matches_reference(exports, params, kind):
    want = reference_logits(params, kind)
    got, _ = NumpyGPT2.from_export(exports[kind]).forward(TOKENS)
    assert got.shape == (32, 50257)
    assert np.abs(want).max() > 1.0                       # logits that could tell a wrong mapping apart
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_numpy_kv_cache_equals_full_forward(exports):
    m = NumpyGPT2.from_export(exports["fp32"])
    full, _ = m.forward(TOKENS[:12])
    rows, cache = m.forward(TOKENS[:5])
    for i in range(5, 12):
        lg, cache = m.forward(TOKENS[i:i + 1], cache)
        rows = np.concatenate([rows, lg])
    step = rows
    np.testing.assert_allclose(step, full, atol=1e-5)
    with pytest.raises(KitError, match="exceed the model's context of 32"):
        m.forward(np.zeros(33, dtype=np.int64))


@pytest.mark.slow
@needs_transformers
@pytest.mark.parametrize("kind", ["fp32", "bf16", "bf16->fp32"])
def test_transformers_loads_export_and_matches_reference(exports, params, kind):
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(str(exports[kind]), dtype=torch.float32).eval()
    assert model.config.n_positions == 32 and model.lm_head.weight.data_ptr() == \
        model.transformer.wte.weight.data_ptr()                               # tied, as llm.c's model is
    with torch.no_grad():
        got = model(torch.from_numpy(TOKENS)[None]).logits[0].double().numpy()
    np.testing.assert_allclose(got, reference_logits(params, kind), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@needs_transformers
def test_greedy_generation_same_on_both_backends(exports, tiktoken_cache):
    from kitctl.model.sample import sample

    a = sample(exports["fp32"], "The quick brown", 12, cache_dir=tiktoken_cache, top_k=0, backend="numpy")
    b = sample(exports["fp32"], "The quick brown", 12, cache_dir=tiktoken_cache, top_k=0, backend="transformers")
    assert a.tokens == b.tokens and len(a.tokens) == 12 and a.text == b.text
    c = sample(exports["fp32"], "The quick brown", 12, cache_dir=tiktoken_cache, top_k=40, seed=5, backend="numpy")
    d = sample(exports["fp32"], "The quick brown", 12, cache_dir=tiktoken_cache, top_k=40, seed=5, backend="numpy")
    assert c.tokens == d.tokens and c.tokens != a.tokens
    with pytest.raises(KitError, match="more than the model's context of 32"):
        sample(exports["fp32"], "word " * 30, 10, cache_dir=tiktoken_cache, backend="numpy")


@pytest.mark.slow
@needs_transformers
def test_tokenizer_files_load_as_gpt2_tokenizer(exports, tiktoken_cache):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(exports["bf16"]))
    enc = gpt2_bpe.get_encoding()
    text = "Hello world, <|endoftext|> it's llm.c's GPT-2:  ünïcödé 1234\n\n\tend"
    assert tok.encode(text) == enc.encode(text, allowed_special="all")
    assert tok.decode(tok.encode(text)) == text
    assert tok.eos_token_id == 50256 and tok.model_max_length == 32


def test_out_refused_unless_force_and_replaced_whole(ckpt_dir, tmp_path):
    ck = open_checkpoint(ckpt_dir / "model_00000010.bin")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(KitError) as e:
        export.write_export(ck, out)
    assert e.value.exit_code == 2 and "--force" not in e.value.hint and (out / "mine.txt").exists()   # --force would be refused too
    (tmp_path / "afile").write_text("x")
    with pytest.raises(KitError, match="is a file"):
        export.write_export(ck, tmp_path / "afile")
    with pytest.raises(KitError) as e:          # --force replaces only an export: never a folder of other files
        export.write_export(ck, out, force=True)
    assert e.value.exit_code == 2 and "--force" not in (e.value.hint or "") and (out / "mine.txt").exists()
    (out / "mine.txt").unlink()
    export.write_export(ck, out)
    (out / "model.safetensors").write_bytes(b"old")
    with pytest.raises(KitError) as e:          # an earlier export: replaced only with --force
        export.write_export(ck, out)
    assert e.value.exit_code == 2 and "--force" in e.value.hint
    export.write_export(ck, out, force=True)
    assert (out / "model.safetensors").stat().st_size > 3
    empty = tmp_path / "empty"
    empty.mkdir()
    export.write_export(ck, empty)                           # an empty folder is fine without --force
    assert (empty / "config.json").is_file()
    with pytest.raises(KitError, match="--dtype float16"):
        export.write_export(ck, tmp_path / "x", dtype="float16")


def test_failed_export_leaves_nothing(ckpt_dir, tmp_path, monkeypatch):
    ck = open_checkpoint(ckpt_dir / "model_00000010.bin")
    out = tmp_path / "out"
    export.write_export(ck, out)
    before = (out / "model.safetensors").read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "write_atomic", boom)        # Ctrl-C after model.safetensors was written
    with pytest.raises(KeyboardInterrupt):
        export.write_export(ck, out, force=True)
    with pytest.raises(KeyboardInterrupt):
        export.write_export(ck, tmp_path / "new")
    assert (out / "model.safetensors").read_bytes() == before                # the old export is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]              # no partial "new", no temp folder


@pytest.mark.slow
def test_killed_export_temp_is_cleaned_next_time(ckpt_dir, tmp_path):
    """kill -9 in the middle: only a .tmp- folder is left; the next export removes it."""
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from kitctl.model import export, hf
        from kitctl.model.checkpoint import open_checkpoint

        def stop(*a, **k):
            os.kill(os.getpid(), 9)

        hf.write_safetensors = stop
        export.write_export(open_checkpoint({str(ckpt_dir / 'model_00000010.bin')!r}), Path({str(tmp_path / 'out')!r}))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".tmp-out.") and not (tmp_path / "out").exists()
    export.write_export(open_checkpoint(ckpt_dir / "model_00000010.bin"), tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_not_enough_space_refused_before_writing(ckpt_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "free_bytes", lambda p: 1000)
    with pytest.raises(KitError, match="not enough space"):
        export.write_export(open_checkpoint(ckpt_dir / "model_00000010.bin"), tmp_path / "out")
    assert not os.listdir(tmp_path)
