"""Issue 31: the identity gate of the fast BPE encoder. gigatoken must give tiktoken's ``encode_ordinary`` tokens,
token by token, on the kit's corpus (tinyshakespeare), on a generated adversarial set and on whole runs; a run
whose encoder disagrees on its own documents goes on with tiktoken, says so and records it. (The byte-identity
tests against llm.c's fineweb.py / tinyshakespeare.py run with both encoders: tests/data/test_data_upstream.py.)"""
from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from data_ref import EDGE_DOCS, read_dir, reference_files
from kitctl.core.errors import ConfigError
from kitctl.data import encoders
from kitctl.core.data_folder import DataFolder
from kitctl.core.data_manifest import MANIFEST
from kitctl.data.sources import MemorySource
from kitctl.data.tokenize import make_shards

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("tiktoken_cache")


@pytest.fixture(scope="module")
def ref(tiktoken_cache):
    import tiktoken

    return tiktoken.get_encoding("gpt2")       # tiktoken's own gpt2 Encoding: what llm.c's fineweb.py calls


@pytest.fixture(scope="module")
def fast(tiktoken_cache):
    return encoders.load(encoders.FAST)


def _want(ref, doc: str) -> list[int]:
    try:
        return ref.encode_ordinary(doc)
    except UnicodeEncodeError:       # never reached: tiktoken fixes lone surrogates itself; kept for clarity
        return ref.encode_ordinary(encoders._fix_surrogates(doc))


def _mismatches(enc, ref, docs: list[str]) -> list[int]:
    """Indices of documents whose tokens differ from tiktoken's encode_ordinary (plus the EOT framing)."""
    toks, lens = enc.encode_docs(docs)
    assert len(lens) == len(docs) and int(lens.sum()) == len(toks)
    bad, pos = [], 0
    for i, (d, n) in enumerate(zip(docs, lens, strict=True)):
        got = toks[pos:pos + int(n)]
        pos += int(n)
        if got[0] != encoders.EOT or got[1:].tolist() != _want(ref, d):
            bad.append(i)
    return bad


# ------------------------------------------------------------------------------------ the adversarial set
CONTRACTIONS = ["s", "t", "re", "ve", "m", "ll", "d"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2009", "\u3000", "\u200b", "\x0b", "\x0c", "\u2028", "\u2029"]
EMOJI = ["\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466", "\U0001F3F3\uFE0F\u200D\U0001F308",
         "\U0001F44D\U0001F3FD", "\U0001F1E9\U0001F1EA", "\u2764\ufe0f", "\U0001F9D1\u200D\U0001F4BB", "#\ufe0f\u20e3"]


def _by_category() -> dict[str, list[str]]:
    """A few characters of every Unicode general category (Cs: lone surrogates; Cn: unassigned)."""
    cats: dict[str, list[str]] = {}
    rnd = random.Random(7)
    for cp in rnd.sample(range(0x110000), 60_000) + list(range(0x250)):
        c = chr(cp)
        lst = cats.setdefault(unicodedata.category(c), [])
        if len(lst) < 40:
            lst.append(c)
    return cats


def adversarial(n: int, seed: int = 31, long: int = 20_000) -> list[str]:
    rnd = random.Random(seed)
    cats = _by_category()
    pool = [c for lst in cats.values() for c in lst]
    words = ["the", "The", "THE", "don", "I", "you", "x", "123", "4567", "3.14", "____", "--", "...", "<|endoftext|>",
             "<|endoftext", "naïve", "日本語", "тест", "עברית", "العربية", "\ufeff", "\x00", "\x1b[0m", "é", "e\u0301"]
    docs = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randint(0, 40)):
            k = rnd.random()
            if k < 0.2:
                w = rnd.choice(words)
                c = rnd.choice(CONTRACTIONS)
                c = "".join(ch.upper() if rnd.random() < 0.5 else ch for ch in c)      # 's 'S 'Ll 'lL ...
                parts.append(w + rnd.choice(["'", "\u2019"]) + c)
            elif k < 0.4:
                parts.append("".join(rnd.choice(SPACES) for _ in range(rnd.randint(1, 12))))
            elif k < 0.55:
                parts.append("".join(rnd.choice(pool) for _ in range(rnd.randint(1, 8))))
            elif k < 0.65:
                parts.append(rnd.choice(EMOJI) * rnd.randint(1, 3))
            elif k < 0.75:
                parts.append(chr(rnd.randrange(0, 0x20)) + chr(rnd.choice([0x7f, 0x85, 0x9f, 0xfeff, 0xfffd])))
            else:
                parts.append(rnd.choice(words))
        docs.append("".join(parts) if rnd.random() < 0.5 else " ".join(parts))
    # long words and long documents: the BPE's worst cases
    docs += ["a" * long, "ab" * (long // 4), "\u00e9" * (long // 6), "1" * (long // 20), " " * (long // 10) + "x",
             "\n" * (long // 40), "\U0001F600" * (long // 40), "".join(rnd.choice(pool) for _ in range(long // 10)),
             " ".join(rnd.choice(words) for _ in range(long // 2))]
    return docs


@pytest.fixture(scope="module")
def small_set() -> list[str]:
    return adversarial(1000)


def test_the_adversarial_set_covers_what_it_claims(small_set):
    cats = {unicodedata.category(c) for d in small_set for c in d}
    assert {"Lu", "Ll", "Lt", "Lo", "Mn", "Nd", "Po", "Sm", "So", "Zs", "Zl", "Cc", "Cf", "Co", "Cs", "Cn"} <= cats
    text = "".join(small_set)
    assert "\u200d" in text and "\u00a0" in text and "\ufeff" in text and "'lL" in text.replace("\u2019", "'")
    assert max(map(len, small_set)) >= 20_000


def test_fast_encoder_is_tiktoken_on_the_adversarial_set(fast, ref, small_set):
    assert _mismatches(fast, ref, small_set) == []


def test_arrow_input_gives_the_same_tokens_as_a_list(fast, small_set):
    """Parquet batches reach the fast encoder as pyarrow arrays, read in place (string and large_string)."""
    import pyarrow as pa

    docs = [d for d in small_set if not any(0xD800 <= ord(c) < 0xE000 for c in d)]
    want = fast.encode_docs(docs)
    for t in (pa.string(), pa.large_string()):
        got = fast.encode_docs(pa.array(docs, t).slice(3))
        assert np.array_equal(got[0], want[0][int(want[1][:3].sum()):]) and np.array_equal(got[1], want[1][3:])


@pytest.mark.slow
def test_fast_encoder_is_tiktoken_on_30000_adversarial_documents(fast, ref):
    """The issue's count, other random draws, and 200,000-character words."""
    docs = adversarial(30_000, seed=3131, long=200_000)
    assert _mismatches(fast, ref, docs) == []


def test_both_encoders_give_tiktoken_per_document_on_edge_docs(fast, ref):
    """Literal "<|endoftext|>", empty documents, lone surrogates: every encoder, batched, is encode_ordinary."""
    docs = [*EDGE_DOCS, "a\ud800b", "\udfff", "x<|endoftext|>y\ud83d", ""]
    assert _mismatches(fast, ref, docs) == []
    assert _mismatches(encoders.load(encoders.REFERENCE), ref, docs) == []


def test_fast_encoder_is_tiktoken_on_tinyshakespeare(fast, ref, tinyshakespeare):
    """The kit's corpus as the tinyshakespeare recipe cuts it (paragraphs), and as one document."""
    text = tinyshakespeare.read_text()
    docs = text.split("\n\n")
    assert _mismatches(fast, ref, docs) == []
    toks, lens = fast.encode_docs([text])
    assert toks[1:].tolist() == ref.encode_ordinary(text) and len(toks) == 338_025 + 1


def test_the_pin_is_the_lock_s_and_pyproject_s():
    lock = (REPO / "docker" / "requirements.lock").read_text().splitlines()
    assert f"{encoders.FAST}=={encoders.PINNED[encoders.FAST]}" in lock
    assert f'"{encoders.FAST}>=' in (REPO / "pyproject.toml").read_text()


def test_the_rank_file_is_openai_s_r50k_base(tmp_path):
    p = encoders.rank_file(tmp_path)
    assert p.read_bytes().count(b"\n") == encoders.EOT
    p.write_bytes(b"damaged")
    assert encoders.rank_file(tmp_path).stat().st_size > 100_000     # rewritten, sha256 checked again


def test_default_is_the_fast_encoder_only_at_the_pinned_version(monkeypatch):
    assert encoders.choose(None) == (encoders.FAST, None)
    assert encoders.choose("tiktoken") == ("tiktoken", None)
    monkeypatch.setitem(encoders.PINNED, encoders.FAST, "0.0.1")       # installed != pinned: not gated
    name, note = encoders.choose(None)
    assert name == "tiktoken" and "0.0.1" in note
    with pytest.raises(ConfigError) as e:
        encoders.choose(encoders.FAST)
    assert "0.0.1" in e.value.message and "--encoder tiktoken" in e.value.hint
    with pytest.raises(ConfigError):
        encoders.choose("sentencepiece")


# ------------------------------------------------------------------------------------ the run's own gate
class OffByOne:
    """A deliberately broken stand-in for the fast encoder: one token of every document with a space shifted."""

    name, version = encoders.FAST, "broken"

    def encode_docs(self, texts):
        toks, lens = encoders.load(encoders.REFERENCE).encode_docs(texts)
        toks = toks.copy()
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        for s, n in zip(starts, lens, strict=True):
            if n > 2:
                toks[s + 1] = (int(toks[s + 1]) + 1) % encoders.EOT
        return toks, lens


class OffByOneOnThreads(OffByOne):
    """The same, on the in-process threaded stream (as gigatoken runs): the run starts tokenizing with it while
    tiktoken checks the sample, so the gate's mismatch must drop those batches and start over."""

    threads_ok = True


class Crashes:
    name, version = encoders.FAST, "crashes"

    def encode_docs(self, texts):
        raise RuntimeError("simulated encoder bug")


@pytest.mark.parametrize("stand_in", [OffByOne(), OffByOneOnThreads(), Crashes()],
                         ids=["wrong-tokens", "wrong-tokens-threaded", "raises"])
def test_a_run_whose_encoder_disagrees_goes_on_with_tiktoken(stand_in, monkeypatch, tmp_path, ref):
    monkeypatch.setitem(encoders._CACHE, encoders.FAST, stand_in)
    said: list[str] = []
    docs = EDGE_DOCS * 4
    run = {"shard_size": 100, "source_fingerprint": "gate"}
    make_shards(MemorySource(docs), tmp_path, "g", run, workers=0, batch_rows=8, log=said.append,
                encoder=encoders.FAST)
    assert read_dir(tmp_path, "g") == reference_files(ref, docs, "g", 100)      # tiktoken's bytes, not the stand-in's
    e = DataFolder(tmp_path).manifest().run.encoder
    assert e.name == "tiktoken" and e.gate.startswith("fell back: gigatoken")
    assert any(s.startswith("warning: gigatoken") and "uses tiktoken" in s for s in said), said


def test_a_run_records_its_encoder_and_the_gate(tmp_path, ref):
    docs = EDGE_DOCS * 4
    make_shards(MemorySource(docs), tmp_path, "g", {"shard_size": 100, "source_fingerprint": "f"}, workers=0)
    e = DataFolder(tmp_path).manifest().run.encoder
    assert (e.name, e.version) == (encoders.FAST, encoders.PINNED[encoders.FAST])
    assert f"identical to tiktoken on the run's first {len(docs)} documents" in e.gate
    assert read_dir(tmp_path, "g") == reference_files(ref, docs, "g", 100)


def test_an_older_manifest_without_the_encoder_still_reads(tmp_path):
    make_shards(MemorySource(EDGE_DOCS), tmp_path, "o", {"shard_size": 100, "source_fingerprint": "f"}, workers=0,
                encoder="tiktoken")
    import json

    raw = json.loads((tmp_path / MANIFEST).read_text())
    assert raw["run"].pop("encoder")["name"] == "tiktoken"
    (tmp_path / MANIFEST).write_text(json.dumps(raw))
    m, problems = DataFolder(tmp_path).verify()
    assert problems == [] and m.run.encoder is None
    # and a re-run continues that folder (the encoder is not part of the run's identity)
    s = make_shards(MemorySource(EDGE_DOCS), tmp_path, "o", {"shard_size": 100, "source_fingerprint": "f"}, workers=0)
    assert s.already_complete


@pytest.mark.slow
def test_cli_encoder_flag_and_verify_report_it(env, tmp_path, tinyshakespeare):
    import kitctl_proc

    out = tmp_path / "ts"
    r = kitctl_proc.run(["data", "tinyshakespeare", "--source", tinyshakespeare, "--out", out, "--encoder",
                         "tiktoken"], env=env)
    assert r.returncode == 0, r.stderr
    r = kitctl_proc.run(["data", "verify", out], env=env)
    assert r.returncode == 0 and "encoder: tiktoken 0.14.0 (the reference)" in r.stdout, r.stdout
    r = kitctl_proc.run(["data", "tinyshakespeare", "--source", tinyshakespeare, "--encoder", "sentencepiece"],
                        env=env)
    assert r.returncode == 2 and "gigatoken" in r.stderr
    r = kitctl_proc.run(["data", "hellaswag", "--encoder", "tiktoken", "--dry-run"], env=env)
    assert r.returncode == 2 and "--encoder does nothing here" in r.stderr


def test_the_estimate_on_the_fast_encoder_is_tiktoken_s(fast, small_set, tmp_path):
    """The plan counts its token sample with the run's fast encoder when its rank file is cached (tiktoken then
    loads beside the stream, not before it): the figures are tiktoken's, exact (small input) and sampled."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kitctl.data import space
    from kitctl.data.sources import FilesSource

    docs = [d for d in small_set if not any(0xD800 <= ord(c) < 0xE000 for c in d)]     # parquet holds UTF-8 only
    f = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": docs * 3}), f, row_group_size=500)
    src = FilesSource([f])
    for kw in ({}, {"exact_up_to": 0, "budget": 64 << 10}):          # counted whole; measured on a sample
        got, want = space.estimate_tokens(src, encoder=fast, **kw), space.estimate_tokens(src, **kw)
        assert got == want and got.exact == (not kw), (got, want)
    assert encoders.ready_rank_file(tmp_path) is None                  # no cached rank file: the plan counts with tiktoken
    assert encoders.ready_rank_file(encoders.rank_file().parent) == encoders.rank_file()
