"""``kitctl sample``: text from an export, with transformers when it is installed, else the numpy forward.

The prompt is tokenized with the kit's GPT-2 BPE (tiktoken, seeded from kitctl/assets/gpt2-bpe: no network);
an empty prompt starts from <|endoftext|>, as llm.c's own sampler does. Greedy decoding gives the same tokens on
both backends; top-k sampling is seeded (``--seed``) but each backend has its own random numbers.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kitctl.core.errors import ConfigError
from kitctl.core.llmc_files import EOT
from kitctl.core.optional import import_optional
from kitctl.data import tokenizer as gpt2_bpe
from kitctl.model.forward import NumpyGPT2

BACKENDS = ("auto", "transformers", "numpy")
INSTALL_HINT = "pip install torch transformers (or use --backend numpy)"


@dataclass(frozen=True)
class Sample:
    prompt: str
    text: str                # the generated continuation only
    tokens: list[int]
    backend: str


def have_transformers() -> bool:
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("transformers") is not None


def pick_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend}: not one of {', '.join(BACKENDS)}", "use auto, transformers or numpy")
    if backend == "auto":
        return "transformers" if have_transformers() else "numpy"
    if backend == "transformers" and not have_transformers():
        raise ConfigError("--backend transformers: torch and transformers are not installed",
                          "pip install torch transformers (or use --backend numpy)")
    return backend


def encoding(cache_dir: Path):
    gpt2_bpe.setup_tiktoken(None, cache_dir)
    return gpt2_bpe.get_encoding()


def _transformers_generate(export: Path, prompt: list[int], n: int, top_k: int, temperature: float,
                           seed: int) -> list[int]:
    # torch/transformers are optional (the `eval`/test extras): imported only on this path
    torch = import_optional("torch", purpose="sample --backend transformers", install=INSTALL_HINT)
    transformers = import_optional("transformers", purpose="sample --backend transformers", install=INSTALL_HINT)
    AutoModelForCausalLM = transformers.AutoModelForCausalLM
    hf_logging = transformers.utils.logging

    hf_logging.disable_progress_bar()      # no "Loading weights" bar around the sample
    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(export), dtype=torch.float32)
    refuse_not_finite(export, [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())])
    model = model.to(device).eval()  # type: ignore[arg-type]   # transformers' stubs wrap .to oddly
    ids = torch.tensor([prompt], device=device)
    kw = dict(do_sample=True, top_k=top_k, temperature=temperature) if top_k > 0 else dict(do_sample=False)
    try:
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 pad_token_id=EOT, top_p=1.0, **kw)
    except RuntimeError as e:          # torch.multinomial: "probability tensor contains either `inf`, `nan` ..."
        if "nan" not in str(e).lower() and "inf" not in str(e).lower():
            raise
        refuse_not_finite(export, [], f"its outputs are not finite ({str(e).splitlines()[0]})")
    return out[0, len(prompt):].tolist()


def n_positions(export: Path) -> int:
    try:
        return int(json.loads((export / "config.json").read_text())["n_positions"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{export}/config.json is not a GPT-2 config ({e})",
                          "re-export the model with `kitctl export-model ... --force`") from None


def sample(export: Path, prompt: str, n: int, *, cache_dir: Path, top_k: int = 40, temperature: float = 1.0,
           seed: int = 1337, backend: str = "auto", say: Callable[[str], None] = lambda s: None) -> Sample:
    """``say`` hears what takes time before the text comes (loading torch takes tens of seconds)."""
    if n < 1:
        raise ConfigError(f"-n {n}: generate at least one token", "e.g. -n 64")
    if top_k < 0 or temperature <= 0:
        raise ConfigError("--top-k must be >= 0 (0 = greedy) and --temperature > 0", "e.g. --top-k 40")
    backend = pick_backend(backend)
    enc = encoding(cache_dir)
    ids = enc.encode_ordinary(prompt) if prompt else [EOT]
    ctx = n_positions(export)
    if len(ids) + n > ctx:
        room = ctx - len(ids)
        # the hint names only values that are accepted: -n N needs room >= 1, else the prompt itself must shrink
        fix = (f"shorten the prompt or pass -n {room} or less" if room >= 1 else
               f"shorten the prompt to at most {ctx - 1} tokens (it is {len(ids)}): -n must be at least 1")
        raise ConfigError(f"the prompt ({len(ids)} tokens) + -n {n} is more than the model's context of {ctx} tokens",
                          fix)
    if backend == "transformers":
        say(f"loading torch + transformers and {export.name} (tens of seconds on a first run; --backend numpy "
            "starts at once) ...")
        toks = _transformers_generate(export, ids, n, top_k, temperature, seed)
    else:
        say(f"sampling {n} tokens with the numpy GPT-2 (CPU) ...")
        model = NumpyGPT2.from_export(export)
        refuse_not_finite(export, [k for k, v in model.w.items() if not np.isfinite(v).all()])
        try:
            toks = model.generate(ids, n, top_k=top_k, temperature=temperature, seed=seed)
        except FloatingPointError as e:
            refuse_not_finite(export, [], str(e))
    return Sample(prompt, enc.decode(toks), toks, backend)


def refuse_not_finite(export: Path, tensors: list[str], detail: str = "") -> None:
    """Weights (or the outputs they give) that are NaN or infinite cannot be sampled: say so, with the way out."""
    if not tensors and not detail:
        return
    what = (f"{len(tensors)} weight tensor(s) hold NaN or infinite values ({', '.join(tensors[:3])}"
            f"{', ...' if len(tensors) > 3 else ''})" if tensors else detail)
    raise ConfigError(f"cannot sample from {export}: {what}; the run diverged, or the checkpoint is damaged",
                      "sample an earlier checkpoint with --step N (steps with a checkpoint: ls <run>/DONE_*), and look "
                      "at the loss in the run's main.log (`kitctl status`) for where it went wrong")
