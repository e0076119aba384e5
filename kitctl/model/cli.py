"""Model commands: ``kitctl export-model``, ``kitctl sample``, ``kitctl eval`` (logic in export/sample/evaluate).

huggingface_hub (``--push``), transformers/torch (``sample --backend transformers``) and lm-eval (``eval``) are
imported where they are used, so every other command starts without them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from kitctl.core import validate
from kitctl.core.context import config, console, err_console
from kitctl.core.errors import ConfigError
from kitctl.core.validate import checked
from kitctl.model import evaluate, export, locate
from kitctl.model.checkpoint import open_checkpoint
from kitctl.model.push import check_repo_id, endpoint_for, push_folder
from kitctl.model.record import add_eval, check_recordable, headline
from kitctl.model.sample import sample as run_sample

DEFAULT_TOP_K = 40

app = typer.Typer()   # commands of this area; kitctl/cli.py builds one when it is asked for (COMMANDS lists them)


def _say(msg: str) -> None:
    err_console.print(msg, highlight=False, markup=False)


def _resolved(target: str, runs_dir: Path, step: Optional[int]) -> locate.Target:
    """The run, checkpoint or export ``target`` names (its note said)."""
    t = locate.resolve(target, runs_dir, step, allow_export=True)
    if t.note:
        _say(f"note: {t.note}")
    return t


def _exported(target: str, runs_dir: Path, step: Optional[int]) -> tuple[locate.Target, Path]:
    """The run, checkpoint or export ``target`` names, and its export folder (made on first use)."""
    t = _resolved(target, runs_dir, step)
    return t, export.ensure_export(t, say=_say)


def _plan_export(t: locate.Target, then: str) -> None:
    """What `sample` / `eval` would use on target ``t``, for --dry-run: the export folder, made first if it is
    missing or stale."""
    if t.export_dir is not None:
        folder, how = t.export_dir, "an export"
    else:
        assert t.checkpoint is not None
        folder = export.default_out(t.checkpoint)
        how = ("exported earlier" if export.export_matches(folder, t.checkpoint)
               else f"would be exported first from {t.checkpoint}")
    console.print(f"would {then} on {folder} ({how})", highlight=False, markup=False, soft_wrap=True)


@app.command("export-model")
def export_model(
    target: str = typer.Argument(..., metavar="RUN_OR_FILE",
                                 help="run name under <data_root>/runs, a run folder, or a model_NNNNNNNN.bin"),
    step: Optional[int] = typer.Option(None, "--step", callback=checked(validate.llmc_int, lo=0),
                                       help="checkpoint step (default: the newest complete one)"),
    fmt: str = typer.Option("hf", "--format", "-f", help="hf: a transformers GPT2LMHeadModel folder"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", callback=checked(validate.writable_folder), help="export folder (default <run>/hf/model_NNNNNNNN)"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 or bfloat16 (default: the checkpoint's)"),
    force: bool = typer.Option(False, "--force", help="replace an existing non-empty --out"),
    push: Optional[str] = typer.Option(None, "--push", metavar="REPO", help="then upload it to this Hub repo "
                                                                          "(user/name; HF_ENDPOINT honoured)"),
    private: bool = typer.Option(False, "--private", help="--push: create the repo private"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say which checkpoint would be exported where (and "
                                 "pushed where); write nothing"),
) -> None:
    """llm.c checkpoint -> HuggingFace transformers folder (model.safetensors, config.json, tokenizer), no PyTorch."""
    if fmt != "hf":
        raise ConfigError(f"--format {fmt}: the one export format is hf", "use --format hf")
    if private and not push:
        raise ConfigError("--private does nothing without --push: it makes the Hub repo that --push creates private",
                          "add --push USER/NAME, or leave out --private")
    if push:
        check_repo_id(push)
    cfg = config(writes=not dry_run)
    t = locate.resolve(target, cfg.runs_dir, step)
    assert t.checkpoint is not None
    ck = open_checkpoint(t.checkpoint)
    if t.note:
        _say(f"note: {t.note}")
    dest = out if out is not None else export.default_out(t.checkpoint)
    protect = (cfg.data_root, cfg.runs_dir)
    if dry_run:
        export.check_out(dest.absolute(), force, protect, ck.path)      # a --out it would refuse: refused now
        c = ck.config
        console.print(f"would export {t.checkpoint} (step {ck.step}, {c.num_layers} layers, C={c.channels}, "
                      f"{ck.dtype}) -> {dest}" + (f", then push it to {endpoint_for(cfg.mirrors.hf_endpoint)}/{push}"
                                                  if push else ""), highlight=False, markup=False, soft_wrap=True)
        return
    res = export.write_export(ck, dest, dtype=dtype, force=force, say=_say, protect=protect)
    c = ck.config
    console.print(f"exported {t.checkpoint} (step {ck.step}, {c.num_layers} layers, C={c.channels}, "
                  f"T={c.max_seq_len}, {ck.dtype}) -> {res.out} ({res.bytes / 1e6:,.1f} MB, {res.record.dtype})",
                  highlight=False, markup=False, soft_wrap=True)
    console.print(f"load it: AutoModelForCausalLM.from_pretrained({str(res.out)!r})", highlight=False, markup=False,
                  soft_wrap=True)
    if push:
        ep = endpoint_for(cfg.mirrors.hf_endpoint)
        _say(f"uploading {res.out} to {ep}/{push}")
        url = push_folder(res.out, push, endpoint=ep, private=private)
        console.print(f"pushed: {url}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def sample(
    target: str = typer.Argument(..., metavar="RUN", help="run name or folder, a model_NNNNNNNN.bin, or an export"),
    prompt: str = typer.Option("", "--prompt", "-p", help="text to continue (default: start from <|endoftext|>)"),
    n: int = typer.Option(64, "-n", callback=checked(validate.positive_int), help="tokens to generate"),
    top_k: Optional[int] = typer.Option(None, "--top-k", callback=checked(validate.int_range, lo=0, hi=validate.GPT2_VOCAB, why="GPT-2 has 50257 tokens; 0 = greedy"), help="sample from the k likeliest tokens (default 40; 0 = greedy, as --greedy)"),
    greedy: bool = typer.Option(False, "--greedy", help="always the likeliest token (same on every backend)"),
    temperature: Optional[float] = typer.Option(None, "--temperature", callback=checked(validate.positive_float),
                                                help="divides the logits before top-k sampling (default 1.0)"),
    seed: int = typer.Option(1337, "--seed", callback=checked(validate.seed)),
    step: Optional[int] = typer.Option(None, "--step", callback=checked(validate.llmc_int, lo=0),
                                       help="checkpoint step (default: the newest complete one)"),
    backend: str = typer.Option("auto", "--backend", callback=checked(validate.choice, choices=("auto", "transformers", "numpy")), help="auto (transformers if installed), transformers, numpy"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say which model would be used (and whether it is "
                                 "exported first); write and generate nothing"),
) -> None:
    """Generate text from a run's model (exported on first use to <run>/hf/model_NNNNNNNN)."""
    if greedy and (top_k is not None or temperature is not None):
        given = " and ".join(f for f, v in (("--top-k", top_k), ("--temperature", temperature)) if v is not None)
        raise ConfigError(f"--greedy takes the likeliest token every time: {given} does nothing with it",
                          f"leave out {given}, or leave out --greedy to sample")
    if top_k == 0 and temperature is not None:
        raise ConfigError("--top-k 0 is greedy (the likeliest token every time): --temperature does nothing with it",
                          "leave out --temperature, or pass --top-k N (N >= 1) to sample")
    top_k = DEFAULT_TOP_K if top_k is None else top_k
    temperature = 1.0 if temperature is None else temperature
    cfg = config()
    if dry_run:
        _plan_export(_resolved(target, cfg.runs_dir, step), f"sample {n} tokens with the {backend} backend")
        return
    t, folder = _exported(target, cfg.runs_dir, step)
    cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or cfg.layout.tiktoken_cache)
    s = run_sample(folder, prompt, n, cache_dir=cache, top_k=0 if greedy else top_k, temperature=temperature,
                   seed=seed, backend=backend, say=_say)
    _say(f"[{s.backend}, {'greedy' if greedy else f'top-k {top_k}, seed {seed}'}, {len(s.tokens)} tokens, {folder}]")
    console.print(s.prompt + s.text, highlight=False, markup=False, soft_wrap=True)


@app.command("eval")
def eval_cmd(
    target: str = typer.Argument(..., metavar="RUN", help="run name or folder, a model_NNNNNNNN.bin, or an export"),
    tasks: str = typer.Option("hellaswag", "--tasks", help="lm-eval task names, comma-separated"),
    step: Optional[int] = typer.Option(None, "--step", callback=checked(validate.llmc_int, lo=0),
                                       help="checkpoint step (default: the newest complete one)"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:0, cpu (default: lm-eval's choice)"),
    batch_size: str = typer.Option("auto", "--batch-size", help="lm-eval batch size, or auto"),
    limit: Optional[float] = typer.Option(None, "--limit", callback=checked(validate.bounded_float, lo=0, hi=validate.LLMC_INT_MAX, why="examples per task, or a fraction below 1", example="100"), help="examples per task (a fraction if < 1): quick "
                                                                "checks only, not a score to quote"),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", callback=checked(validate.int_range, lo=0, hi=validate.GPT2_CONTEXT, why="each example takes at least one of GPT-2's 1024 positions"), help="few-shot examples (default: the task's)"),
    include_path: Optional[Path] = typer.Option(None, "--include-path", help="folder of extra lm-eval task YAMLs"),
    record: bool = typer.Option(True, "--record/--no-record", help="append the results to the run's run.json"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say which model and tasks would be evaluated (and "
                                 "whether it is exported first); write and run nothing"),
) -> None:
    r"""Score a run's model with lm-evaluation-harness (extra: pip install 'llmc-kit\[eval]'); saved in run.json."""
    names = evaluate.parse_tasks(tasks)
    cfg = config(writes=record and not dry_run)
    hub = evaluate.prepare_hub(cfg.hf_cache, cfg.mirrors.hf_endpoint)   # before lm-eval reads the environment
    # the inputs first (file reads): a wrong run or a damaged run.json is said before seconds of importing
    # lm-eval, transformers and torch
    t = _resolved(target, cfg.runs_dir, step)
    if include_path is not None:
        evaluate.check_include_path(include_path)
    checkpoint, run_dir, st = t.checkpoint, t.run_dir, t.step
    if t.export_dir is not None:          # an export given directly: its record names the checkpoint
        rec = export.ExportRecord.read_optional(t.export_dir / export.RECORD)
        if rec is not None:
            checkpoint, st = Path(rec.source), rec.step
            run_dir = checkpoint.parent if checkpoint.parent.is_dir() else None
    if record and not dry_run and run_dir is not None:
        check_recordable(run_dir)         # a damaged run.json: say so now, not after the eval
    evaluate.load_harness()               # exit 2 with the install line before any export work
    evaluate.pick_device(device)          # exit 2 for --device cuda without CUDA, before any export work
    if dry_run:
        _plan_export(t, f"run lm-eval {', '.join(names)}"
                     + ("; the results are appended to the run's run.json" if record else " (--no-record)"))
        return
    folder = export.ensure_export(t, say=_say)
    _say(f"lm-eval {evaluate.harness_version()}: {', '.join(names)} on {folder}")
    res = evaluate.run_harness(folder, names, device=device, batch_size=batch_size, limit=limit,
                               num_fewshot=num_fewshot, include_path=include_path, hf_home=cfg.hf_cache,
                               hf_endpoint=cfg.mirrors.hf_endpoint, hub=hub)
    entries = evaluate.entries(res, step=st, checkpoint=checkpoint, export=folder, limit=limit)
    for e in entries:
        h = headline(e)
        shown = f"{h[0]} {h[1]:.4f}" if h else "no metric"
        console.print(f"{e['task']}: {shown}  ({', '.join(f'{k} {v:.4f}' for k, v in e['metrics'].items())})",
                      highlight=False, markup=False, soft_wrap=True)
    if record and run_dir is not None and entries:
        for e in entries:
            path = add_eval(run_dir, e)
        console.print(f"recorded in {path}", highlight=False, markup=False)
    elif record:
        _say("not recorded: this export names no run folder")
