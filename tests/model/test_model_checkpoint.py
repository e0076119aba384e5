"""Reading llm.c checkpoints: shapes and values as written, bf16 bits, and every kind of bad file refused (exit 2)."""
from __future__ import annotations

import numpy as np
import pytest

import llmc_ref
from kitctl.core.errors import KitError
from kitctl.model.checkpoint import bf16_to_f32, f32_to_bf16, open_checkpoint, read_header


@pytest.mark.slow
def test_reads_fp32_and_bf16_as_written(ckpt_dir, params):
    p, dims = params
    f32 = open_checkpoint(ckpt_dir / "model_00000010.bin")
    b16 = open_checkpoint(ckpt_dir / "model_00000020.bin")
    assert (f32.version, f32.dtype, f32.step) == (3, "float32", 10)
    assert (b16.version, b16.dtype, b16.step) == (5, "bfloat16", 20)
    c = f32.config
    assert (c.max_seq_len, c.vocab_size, c.num_layers, c.num_heads, c.channels, c.padded_vocab_size) == \
        (32, 50257, 2, 4, 64, 50304)
    assert list(f32.params) == list(llmc_ref.ORDER)
    for k in llmc_ref.ORDER:
        assert f32.params[k].shape == p[k].shape
        np.testing.assert_array_equal(f32.float32(k), p[k])
        np.testing.assert_array_equal(b16.float32(k), llmc_ref.from_bf16_bits(llmc_ref.to_bf16_bits(p[k])))
    assert c.num_parameters == sum(a.size for a in p.values())


@pytest.mark.slow
def test_bf16_rounding_matches_round_to_nearest_even():
    x = np.array([1.0, -2.5, 3.14159, 1e-30, 65504.0, 1.00390625, 1.01171875, np.inf, -np.inf], np.float32)
    bits = f32_to_bf16(x)
    np.testing.assert_array_equal(bits, llmc_ref.to_bf16_bits(x))
    # 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0); 1 + 3*2^-8 rounds up
    assert bf16_to_f32(bits)[5] == 1.0 and bf16_to_f32(bits)[6] == np.float32(1.015625)
    assert np.isnan(bf16_to_f32(f32_to_bf16(np.array([np.nan], np.float32))))[0]
    try:
        import torch
    except ImportError:
        return
    r = np.random.default_rng(3).standard_normal(10000).astype(np.float32) * 100
    want = torch.from_numpy(r).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(f32_to_bf16(r), want)


def _expect_bad(path, *words):
    with pytest.raises(KitError) as e:
        open_checkpoint(path)
    assert e.value.exit_code == 2 and e.value.hint
    for w in words:
        assert w in e.value.message + " " + e.value.hint
    return e.value


@pytest.mark.slow
def test_bad_files_exit_2(tmp_path, ckpt_dir):
    good = (ckpt_dir / "model_00000010.bin").read_bytes()
    (tmp_path / "text.bin").write_text("hello, not a checkpoint\n" * 100)
    _expect_bad(tmp_path / "text.bin", "magic")
    (tmp_path / "short.bin").write_bytes(good[:100])
    _expect_bad(tmp_path / "short.bin", "shorter than the 1024-byte header")
    (tmp_path / "trunc.bin").write_bytes(good[:-4])
    _expect_bad(tmp_path / "trunc.bin", "truncated", f"{len(good):,}")
    (tmp_path / "long.bin").write_bytes(good + b"\0" * 8)
    _expect_bad(tmp_path / "long.bin", "longer than its header says")
    hdr = np.frombuffer(good[:1024], "<i4").copy()
    for version in (1, 2, 4, 6):
        hdr[1] = version
        (tmp_path / f"v{version}.bin").write_bytes(hdr.tobytes() + good[1024:])
        _expect_bad(tmp_path / f"v{version}.bin", f"version {version}", "3 (fp32) and 5 (bf16)")
    shard = np.zeros(256, "<i4")
    shard[:3] = (20240520, 1, 4)
    (tmp_path / "shard.bin").write_bytes(shard.tobytes() + b"\0" * 8)
    _expect_bad(tmp_path / "shard.bin", "token shard")
    state = np.zeros(256, "<i4")
    state[0] = 20240527
    (tmp_path / "state.bin").write_bytes(state.tobytes())
    _expect_bad(tmp_path / "state.bin", "optimizer state")
    hdr = np.frombuffer(good[:1024], "<i4").copy()
    hdr[5] = 5      # 64 channels do not split into 5 heads
    (tmp_path / "heads.bin").write_bytes(hdr.tobytes() + good[1024:])
    _expect_bad(tmp_path / "heads.bin", "do not describe a GPT-2")
    _expect_bad(tmp_path / "missing.bin", "no checkpoint at")
    with pytest.raises(KitError, match="is a folder"):
        read_header(tmp_path)
