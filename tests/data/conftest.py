"""Fixtures shared by the data tests."""
import os

import pytest


@pytest.fixture
def env(tmp_path, gpt2_bpe_dir):
    """The environment of a `kitctl data` subprocess: native runtime, offline, the BPE files the kit ships."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "HF_", "TIKTOKEN"))}
    e.update(KIT_DATA_ROOT=str(tmp_path / "root"), KIT_RUNTIME="native", KIT_TOKENIZER_DIR=str(gpt2_bpe_dir),
             HF_HUB_OFFLINE="1", COLUMNS="200")
    return e
