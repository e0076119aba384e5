"""The GPT-2 BPE encoders ``kitctl data`` can tokenize with, behind one small interface (issue 31).

An :class:`Encoder` has a ``name``, a ``version`` and one call, :meth:`Encoder.encode_docs`: a batch of documents
-> the token stream llm.c's fineweb.py writes for them (``[EOT] + encode_ordinary(doc)`` each, uint16) and the
tokens per document (incl. its EOT). Two exist:

- ``tiktoken``: the reference (what llm.c's fineweb.py calls) and the fallback. Always available.
- ``gigatoken``: a Rust BPE (MIT) loaded from tiktoken's own r50k rank file (written here from the verified
  GPT-2 files; byte-identical to OpenAI's ``r50k_base.tiktoken``, sha256 checked) with GPT-2's pretokenizer and
  no special tokens, so a literal "<|endoftext|>" in a document is plain text as in ``encode_ordinary``.
  Measured ~18x tiktoken per core (docs/data.md "Encoders").

Which one runs (:func:`choose`): ``--encoder NAME``, else the fast one when it is installed at the version the
kit pinned (:data:`PINNED`, equal to docker/requirements.lock's pin: tested) -- and, in every run, only after it
encoded a sample of that run's own documents exactly like tiktoken (:func:`start_gate`, :func:`finish_gate`; a mismatch: the run goes on
with tiktoken, says so and records it in the manifest). CI compares the two token by token on the kit's corpora
and an adversarial set (tests/data/test_encoders.py).
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np

from kitctl.core.errors import ConfigError
from kitctl.core.files import sha256_file, write_atomic
from kitctl.core.llmc_files import EOT

REFERENCE = "tiktoken"
FAST = "gigatoken"
NAMES = (REFERENCE, FAST)
# the fast encoder's version the identity gate was run with; docker/requirements.lock pins the same (tested)
PINNED = {FAST: "0.10.0"}
# tiktoken's r50k_base.tiktoken (its tiktoken_ext expected_hash): GPT-2's ranks, one "base64 rank" line each
R50K_FILE = "kitctl-r50k_base.tiktoken"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GATE_DOCS = 256                 # documents of a run's first batch encoded both ways before its first shard,
GATE_DOC_CHARS = 8192           # ... each cut to its first 8,192 characters (any string is valid BPE input; a long
GATE_CHARS = 65_536             # word costs tiktoken quadratic time), 64 Ki characters in all: ~20-50 ms

TokenBatch = tuple[np.ndarray, np.ndarray]   # (uint16 tokens, int64 tokens per document incl. its EOT)


class Encoder(Protocol):
    name: str
    version: str

    def encode_docs(self, texts: list[str]) -> TokenBatch:
        """``[EOT] + encode_ordinary(doc)`` for every document, concatenated (uint16), and each one's length.
        An encoder with ``takes_arrow`` also takes a pyarrow string array (no null) without a copy."""
        ...


def _fix_surrogates(t: str) -> str:
    """A lone surrogate cannot be UTF-8: the same fix-up tiktoken's encode_ordinary applies."""
    return t.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def with_eot(flat: np.ndarray, offsets: np.ndarray) -> TokenBatch:
    """Per-document token arrays (``flat[offsets[i]:offsets[i+1]]``) -> the uint16 stream with an EOT before each
    document, in one pass (no Python loop over documents), and the lengths incl. the EOT."""
    n = len(offsets) - 1
    lens = np.diff(offsets).astype(np.int64) + 1
    out = np.empty(len(flat) + n, dtype=np.uint16)
    at = offsets[:-1] - offsets[0] + np.arange(n)        # where each document's EOT goes
    keep = np.ones(len(out), dtype=bool)
    keep[at] = False
    out[at] = EOT
    out[keep] = flat
    return out, lens


SEP = "<|endoftext|>"
_ALLOW_EOT = frozenset({SEP})


class TiktokenEncoder:
    """The reference: tiktoken's GPT-2 Encoding (kitctl.data.tokenizer.get_encoding), one call per batch."""

    name = REFERENCE

    def __init__(self) -> None:
        from kitctl.data.tokenizer import get_encoding

        self.enc = get_encoding()
        self.version = importlib.metadata.version("tiktoken")

    def encode(self, text: str) -> np.ndarray:
        """== encode_ordinary(text) as a uint32 array: nothing allowed or disallowed, "<|endoftext|>" is text."""
        return self.enc.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    def encode_docs(self, texts: list[str]) -> TokenBatch:
        """One tiktoken call per batch: the documents joined by "<|endoftext|>" (allowed as the special token)
        encode to exactly ``[EOT] + encode_ordinary(doc)`` each -- the special token splits the text, every piece
        is encoded on its own -- and the EOT positions give the lengths (ordinary text never encodes to 50256).
        That keeps the GIL free for the whole batch. A batch in which a document holds a literal
        "<|endoftext|>" (plain text for llm.c) or a lone surrogate goes one by one."""
        if not texts:
            return np.empty(0, np.uint16), np.empty(0, np.int64)
        joined = SEP + SEP.join(texts)
        if joined.count(SEP) == len(texts):      # no document holds the literal (a match never straddles two)
            try:
                toks = self.enc.encode_to_numpy(joined, allowed_special=_ALLOW_EOT, disallowed_special=())
            except UnicodeEncodeError:
                return self._one_by_one(texts)
            starts = np.flatnonzero(toks == EOT)
            lens = np.diff(starts, append=len(toks)).astype(np.int64)
            return toks.astype(np.uint16), lens
        return self._one_by_one(texts)

    def _one_by_one(self, texts: list[str]) -> TokenBatch:
        parts = []
        for t in texts:
            try:
                parts.append(self.encode(t))
            except UnicodeEncodeError:
                parts.append(self.encode(_fix_surrogates(t)))
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in parts], out=offsets[1:])
        return with_eot(np.concatenate(parts) if parts else np.empty(0, np.uint32), offsets)


def _large_string(texts: Any) -> Any:
    """A pyarrow string array as a large_string one (int64 offsets, what awkward hands gigatoken) on the same
    UTF-8 buffer: the offsets widened with numpy -- not ``cast``, whose first call imports pyarrow.compute
    (~0.06 s of every run's start-up)."""
    import pyarrow as pa

    if pa.types.is_large_string(texts.type) or texts.null_count or not pa.types.is_string(texts.type):
        return texts if pa.types.is_large_string(texts.type) else texts.cast(pa.large_string())
    _, offsets, data = texts.buffers()
    wide = np.frombuffer(offsets, np.int32, count=len(texts) + 1, offset=4 * texts.offset).astype(np.int64)
    return pa.Array.from_buffers(pa.large_string(), len(texts),
                                 [None, pa.py_buffer(wide), data if data is not None else pa.py_buffer(b"")])


class GigatokenEncoder:
    """gigatoken's BPE on tiktoken's r50k rank file, GPT-2's pretokenizer, no special tokens; one call per batch
    on the calling thread (``parallel=False``: kitctl runs one process per core, measured faster than its
    threads on 2 cores)."""

    name = FAST
    takes_arrow = True
    threads_ok = True       # releases the GIL, full speed off the main thread (kitctl.data.pool.iter_tokens)

    def __init__(self, rank_file: Path):
        import gigatoken

        self.version = importlib.metadata.version("gigatoken")
        self.tok = gigatoken.Tokenizer.from_tiktoken(str(rank_file), pretokenizer="gpt2", special_tokens={})

    def encode_docs(self, texts: list[str]) -> TokenBatch:
        if not len(texts):
            return np.empty(0, np.uint16), np.empty(0, np.int64)
        if not isinstance(texts, list):      # pyarrow: its UTF-8 buffer read in place (measured 1.5x the list path)
            import awkward as ak

            texts = _large_string(texts)
            arr = self.tok.encode_batch(ak.from_arrow(texts, generate_bitmasks=False), parallel=False)
            return with_eot(np.asarray(arr.layout.content.data), np.asarray(arr.layout.offsets.data))
        try:
            arr = self.tok.encode_batch(texts, parallel=False)
        except TypeError:        # a lone surrogate (not UTF-8): fixed up like tiktoken's encode_ordinary
            arr = self.tok.encode_batch([_fix_surrogates(t) for t in texts], parallel=False)
        layout = arr.layout
        return with_eot(np.asarray(layout.content.data), np.asarray(layout.offsets.data))


def rank_file(cache_dir: Optional[Path] = None) -> Path:
    """tiktoken's r50k_base.tiktoken, made from the verified GPT-2 Encoding (its 50,256 tokens' bytes, in rank
    order) and checked against OpenAI's sha256; kept in the tiktoken cache folder (rewritten when damaged)."""
    import base64
    import os
    import tempfile

    from kitctl.data.tokenizer import get_encoding

    folder = Path(cache_dir or os.environ.get("TIKTOKEN_CACHE_DIR") or tempfile.gettempdir())
    ready = ready_rank_file(folder)
    if ready is not None:
        return ready
    path = folder / R50K_FILE
    enc = get_encoding()
    data = b"".join(base64.b64encode(enc.decode_single_token_bytes(i)) + b" %d\n" % i for i in range(EOT))
    import hashlib

    got = hashlib.sha256(data).hexdigest()
    if got != R50K_SHA256:      # cannot happen with GPT-2's verified files; never load other ranks into it
        raise ConfigError(f"GPT-2's ranks written as a .tiktoken file have sha256 {got}, not r50k_base's {R50K_SHA256}",
                          "use GPT-2's vocab.bpe and encoder.json (--tokenizer-dir), or --encoder tiktoken")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return path


def ready_rank_file(cache_dir: Path) -> Optional[Path]:
    """The rank file :func:`rank_file` keeps in ``cache_dir``, when it is there and intact (nothing written)."""
    path = Path(cache_dir) / R50K_FILE
    try:
        return path if path.is_file() and sha256_file(path) == R50K_SHA256 else None
    except OSError:
        return None


def installed_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


_CACHE: dict[str, Any] = {}


def load(name: str, ranks: Optional[Path] = None) -> Encoder:
    """The encoder ``name``, built once per process (forked tokenizer workers inherit it); the fast one from
    ``ranks`` (default: :func:`rank_file`)."""
    if name not in _CACHE:
        if name == REFERENCE:
            _CACHE[name] = TiktokenEncoder()
        elif name == FAST:
            _CACHE[name] = GigatokenEncoder(ranks or rank_file())
        else:
            raise ConfigError(f"--encoder {name}: unknown encoder", f"use one of: {', '.join(NAMES)}")
    enc: Encoder = _CACHE[name]
    return enc


def choose(requested: Optional[str] = None) -> tuple[str, Optional[str]]:
    """The encoder a run uses, and a note when the default could not be the fast one. ``requested`` (--encoder)
    is refused (exit 2) when it is not installed at the pinned version; the default takes the fast encoder only
    when it is."""
    if requested == REFERENCE:
        return REFERENCE, None
    if requested is not None and requested not in NAMES:
        raise ConfigError(f"--encoder {requested}: unknown encoder", f"use one of: {', '.join(NAMES)}")
    have, pin = installed_version(FAST), PINNED[FAST]
    if have == pin:
        return FAST, None
    why = f"{FAST} is not installed" if have is None else f"{FAST} {have} is installed, the kit gated and pinned {pin}"
    if requested == FAST:
        raise ConfigError(f"--encoder {FAST}: {why}",
                          f"pip install {FAST}=={pin} (docker/requirements.lock's pin), or use --encoder tiktoken")
    return REFERENCE, f"encoder tiktoken ({why}; `pip install {FAST}=={pin}` tokenizes ~18x faster per core)"


@dataclass
class GateResult:
    encoder: str                 # the encoder the run uses after the gate
    docs: int                    # documents compared
    tokens: int                  # tokens compared
    mismatch: Optional[str] = None   # what differed (then ``encoder`` is the reference)


def _as_arrow(texts: list[str]) -> Any:
    """The sample as the run hands it over (a pyarrow array: the path parquet input takes), when it can be one."""
    import pyarrow as pa

    try:
        raw = [t.encode() for t in texts]
    except UnicodeEncodeError:           # a lone surrogate is not UTF-8: the list path
        return texts
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in raw], out=offsets[1:])
    # from buffers, not pa.array(list): that imports pandas (~1.4 s) to check for pandas objects
    return pa.Array.from_buffers(pa.large_string(), len(raw), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(raw))])


@dataclass
class PendingGate:
    """A gate whose candidate side has run (:func:`start_gate`); :func:`finish_gate` runs tiktoken's side. A run
    starts its stream with the candidate in between (tiktoken's load and encode overlap the first batches'
    encode) and writes nothing until the gate has finished and passed."""

    name: str
    sample: list[str]
    got: Optional[TokenBatch] = None
    failed: Optional[str] = None     # the candidate raised: no need for tiktoken's side
    version: str = "?"


def start_gate(name: str, texts: list[Any], candidate: Optional[Encoder] = None) -> PendingGate:
    """The candidate's side of the identity gate: the sample (up to GATE_DOCS documents of the run's first, each cut
    to GATE_DOC_CHARS, GATE_CHARS in all) encoded by ``name`` as the run hands it over."""
    sample: list[str] = []
    size = 0
    for t in texts[:GATE_DOCS]:
        t = ("" if t is None else t)[:GATE_DOC_CHARS]
        if sample and size + len(t) > GATE_CHARS:
            break
        sample.append(t)
        size += len(t)
    p = PendingGate(name, sample)
    if name == REFERENCE:
        return p
    try:
        cand = candidate or load(name)
        p.version = getattr(cand, "version", "?")
        p.got = cand.encode_docs(_as_arrow(sample) if getattr(cand, "takes_arrow", False) else sample)
    except Exception as e:      # noqa: BLE001 - any failure of the candidate means: not this one
        p.failed = f"{name} failed on the sample: {type(e).__name__}: {e}"
    return p


def finish_gate(p: PendingGate, reference: Optional[Encoder] = None) -> GateResult:
    """tiktoken's side of the identity gate and the comparison, token by token: any difference (or an error in
    the candidate) sends the run to tiktoken. The reference itself needs no gate."""
    if p.name == REFERENCE:
        return GateResult(REFERENCE, 0, 0)
    if p.failed is not None or p.got is None:
        return GateResult(REFERENCE, len(p.sample), 0, p.failed or f"{p.name} gave nothing")
    got, got_lens = p.got
    want, want_lens = (reference or load(REFERENCE)).encode_docs(p.sample)
    if np.array_equal(got_lens, want_lens) and np.array_equal(got, want):
        return GateResult(p.name, len(p.sample), len(want))
    bad = next((i for i, (a, b) in enumerate(zip(got_lens, want_lens, strict=False)) if a != b), None)
    if bad is None:
        first = int(np.flatnonzero(got[:len(want)] != want[:len(got)])[0]) if len(got) == len(want) else 0
        bad = int(np.searchsorted(np.cumsum(want_lens), first, side="right"))
    return GateResult(REFERENCE, len(p.sample), len(want),
                      f"{p.name} {p.version} differs from tiktoken on document {bad} of the run's "
                      f"first {len(p.sample)}")

