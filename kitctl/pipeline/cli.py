"""``kitctl demo`` (the README's first command, kitctl/pipeline/demo.py) and ``kitctl reproduce``
(kitctl/pipeline/reproduce.py): the journeys that use every area."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from kitctl.core import validate
from kitctl.core.bundle import dry_run_view, use_bundle
from kitctl.core.config import KitConfig, user_config_path
from kitctl.core.context import config, config_source, console, err_console
from kitctl.core.errors import ConfigError
from kitctl.core.validate import checked
from kitctl.data.plan import is_url
from kitctl.pipeline.demo import DEMO_STEPS, run_demo
from kitctl.pipeline.bundle import PackOptions, pack, pack_plan
from kitctl.pipeline.wheelhouse import WheelOptions, install_line
from kitctl.pipeline.inputs import ReproduceOptions, apply_bundle
from kitctl.pipeline.reproduce import make_forecast, run_pipeline
from kitctl.pipeline.view import outcome_table, plan_lines, plan_table

app = typer.Typer()   # commands of this area; kitctl/cli.py builds one when it is asked for (COMMANDS lists them)


@app.command()
def demo(
    data_root: Optional[Path] = typer.Option(None, callback=checked(validate.writable_folder), help="demo data root (default <data_root>/demo)"),
    steps: int = typer.Option(20, callback=checked(validate.llmc_int), help="training steps, where this machine can train"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the steps and the data root; run and write nothing"),
) -> None:
    """Run the kit end to end on embedded inputs, as far as this machine allows; say what was skipped."""
    cfg = config(writes=not dry_run and data_root is None)
    root = data_root or cfg.layout.demo
    if dry_run:
        console.print(f"kitctl demo would write under {root.absolute()} and run, each as its own kitctl command: "
                      f"{DEMO_STEPS}", highlight=False, markup=False, soft_wrap=True)
        return
    console.print(f"[bold]llmc-kit demo[/]: embedded tinyshakespeare + GPT-2 BPE, data root {escape(str(root))}")
    results = run_demo(root, lambda s: console.print(s, highlight=False), steps, provider=cfg.provider)
    table = Table(title="demo summary")
    for col in ("step", "status", "detail"):
        table.add_column(col, overflow="fold")      # whole paths, wrapped, never cut with "..."
    colour = {"done": "green", "skipped": "yellow", "failed": "red"}
    for r in results:
        table.add_row(r.name, f"[{colour[r.status]}]{r.status}[/]", r.detail)
    console.print(table)
    failed = [r.name for r in results if r.status == "failed"]
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)
    skipped = [r.name for r in results if r.status == "skipped"]
    console.print("all steps that this machine allows ran" + (f"; skipped: {', '.join(skipped)}" if skipped else ""))


_HELP_RUNTIME = "docker (the kit's images) or native (host CUDA/MPI + the native build); default: kit.yaml's"


def _with_bundle(cfg, opts: ReproduceOptions, bundle: Path, quiet: bool = False, dry_run: bool = False):
    """Verify and unpack the bundle (a dry run verifies it and writes nothing); its members become the inputs;
    nothing may touch the network."""
    ub = use_bundle(bundle.absolute(), cfg.data_root, err_console if quiet else console, dry_run=dry_run)
    if ub.pending:                    # a dry run of a bundle not unpacked yet: verified, nothing written there
        ub = dry_run_view(ub)
        err_console.print(f"dry run: the bundle {bundle} is verified (every member's sha256) and not unpacked: the "
                          "plan reads its inputs from a temporary copy (images left in the bundle), removed when "
                          "this command ends; nothing is written under the data root", markup=False,
                          highlight=False, soft_wrap=True)
    os.environ["HF_HUB_OFFLINE"] = "1"          # no HF library call may reach the hub
    if not quiet and not ub.pending:
        console.print(f"bundle {bundle}: {len(ub.manifest.members)} members verified, unpacked at {ub.root}",
                      highlight=False, markup=False, soft_wrap=True)
    cfg = cfg.model_copy(update={"tokenizer_dir": ub.tokenizer_dir or cfg.tokenizer_dir})
    return cfg, apply_bundle(opts, ub)


def hellaswag_arg(cfg: KitConfig, value: Optional[str]) -> tuple[KitConfig, Optional[Path]]:
    """``--hellaswag-source``: an http(s) URL is this run's HellaSwag mirror (as mirrors.hellaswag_url), anything
    else a local file."""
    if value is None or not is_url(value):
        return cfg, Path(value) if value is not None else None
    url = validate.url(value, "--hellaswag-source")
    return cfg.model_copy(update={"mirrors": cfg.mirrors.model_copy(update={"hellaswag_url": url})}), None


@app.command("bundle")
def bundle_cmd(
    out: Path = typer.Option(..., "--out", help="the bundle file to write (one uncompressed tar, manifest.json "
                             "first)"),
    preset: str = typer.Option("gpt2-124m", "--preset", help="the preset whose dataset is packed by default"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="a recipe or local parquet/jsonl/txt files "
                                          "(default: the preset's); local files are packed"),
    source: Optional[Path] = typer.Option(None, "--source", help="the recipe's input as local files (downloaded "
                                          "parquet, a folder of ready shards): packed"),
    hellaswag_source: Optional[str] = typer.Option(None, "--hellaswag-source", help="a local hellaswag_val.jsonl "
                                                   "or its URL on a mirror (default: <data_root>/hellaswag/"
                                                   "hellaswag_val.jsonl, else downloaded: mirrors.hellaswag_url, "
                                                   "else GitHub)"),
    llmc_src: Optional[str] = typer.Option(None, "--llmc-src", help="llm.c checkout, tarball or URL (default "
                                           "mirrors.llmc_src, else the pinned GitHub tarball)"),
    cudnn_frontend: Optional[Path] = typer.Option(None, "--cudnn-frontend", help="native builds: cudnn-frontend "
                                                  "include dir to pack"),
    images: bool = typer.Option(True, "--images/--no-images", help="pack the runtime (and data) image with docker "
                                "save"),
    wheels: bool = typer.Option(True, "--wheels/--no-wheels", help="pack the kit's wheelhouse (wheels/: kitctl "
                                "and every dependency at the locked version) so the offline box installs kitctl "
                                "from the bundle"),
    python_version: Optional[str] = typer.Option(None, "--python-version", help="wheels for the offline box's "
                                                 "Python, e.g. 3.12 (default: this one's)"),
    platform: Optional[List[str]] = typer.Option(None, "--platform", help="wheels for the offline box's platform, "
                                                 "e.g. manylinux_2_28_x86_64 (repeatable; default: this one's)"),
    extra: Optional[List[str]] = typer.Option(None, "--extra", help="an extra's wheels too: eval (lm-eval, torch)"),
    kit_wheel: Optional[Path] = typer.Option(None, "--kit-wheel", help="kitctl's own wheel to pack (default: "
                                             "built from this checkout)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be packed into --out and what would be "
                                 "downloaded from where; download, save and write nothing"),
    force: bool = typer.Option(False, "--force", help="replace --out even when it is a file that is not a bundle"),
) -> None:
    """Pack one file with what a box without network needs: the kit itself (a wheelhouse) and the inputs of
    `kitctl reproduce --bundle FILE`."""
    cfg, hs_path = hellaswag_arg(config(), hellaswag_source)
    wopts = WheelOptions(python_version=python_version, platforms=tuple(platform or ()), extras=tuple(extra or ()),
                         kit_wheel=kit_wheel.absolute() if kit_wheel else None) if wheels else None
    if not wheels and (python_version or platform or extra or kit_wheel):
        raise ConfigError("--python-version, --platform, --extra and --kit-wheel shape the wheelhouse: with "
                          "--no-wheels they do nothing", "leave them out, or leave --no-wheels out")
    opts = PackOptions(out=out, preset=preset, dataset=dataset, source=source, hellaswag_source=hs_path,
                       llmc_src=llmc_src, cudnn_frontend=cudnn_frontend, images=images, wheels=wopts,
                       force=force)
    say = lambda s: console.print(s, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    if dry_run:
        for line in pack_plan(cfg, opts):
            say(line)
        return
    pack(cfg, opts, console, say)
    if wopts is not None:
        say(f"on a box with nothing but python3: {install_line(out.name, wopts.extras)}")
    say(f"on the offline box: kitctl reproduce {preset} --bundle {out.name}")


@app.command(context_settings={"help_option_names": ["--help"]})
def reproduce(
    preset: str = typer.Argument("gpt2-124m", help="gpt2-124m (llm.c discussion #481) | gpt2-350m | gpt2-774m | "
                                                   "gpt2-1558m"),
    passthrough: Optional[List[str]] = typer.Argument(None, help="after `--` (with PRESET before it): extra "
                                                                  "train_gpt2cu flags, e.g. `gpt2-124m -- -n 1000`"),
    name: Optional[str] = typer.Option(None, "--name", callback=checked(validate.run_name), help="run folder <data_root>/runs/<name> (default: preset)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="a recipe (fineweb10B, fineweb10B-pretokenized, "
                                          "tinyshakespeare, ...) or local parquet/jsonl/txt files; default: the "
                                          "preset's"),
    source: Optional[Path] = typer.Option(None, "--source", help="the dataset recipe's input as local files "
                                          "(downloaded FineWeb parquet files; a folder of ready shards)"),
    hellaswag_source: Optional[str] = typer.Option(None, "--hellaswag-source", help="a local hellaswag_val.jsonl "
                                                   "or its URL on a mirror (default: downloaded from "
                                                   "mirrors.hellaswag_url, else the recipe's URL, GitHub)"),
    stream: bool = typer.Option(False, "--stream", help="read FineWeb over HTTP; no HF cache on disk"),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="tokens per shard (default 100,000,000)"),
    workers: Optional[int] = typer.Option(None, "--workers", callback=checked(validate.workers), help="tokenizer processes (default: all cores)"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help=_HELP_RUNTIME),
    gpus: str = typer.Option("all", "--gpus", help="all | N (a count: the first N GPUs) | 0,2 (these indices; one GPU by index: 0, with the comma)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="optimizer steps (default: the preset's; gpt2-124m: "
                                                              "one epoch of the shards)"),
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16 | fp32 (default: bf16 when every chosen "
                                            "GPU is sm_80+, else the faster choice, said in the plan)"),
    force_memory: bool = typer.Option(False, "--force-memory", help="run a -b (after --) that the memory model "
                                      "predicts cannot fit the GPU (default: refused, naming the largest B that "
                                      "fits)"),
    binary: Optional[Path] = typer.Option(None, "--binary", help="native: a built train_gpt2cu (skips the build)"),
    llmc_src: Optional[str] = typer.Option(None, "--llmc-src", callback=checked(validate.source_spec), help="llm.c checkout, tarball or URL for the build"),
    cudnn_frontend: Optional[Path] = typer.Option(None, "--cudnn-frontend", help="native build: cudnn-frontend "
                                                  "include dir"),
    mpirun: str = typer.Option("/usr/bin/mpirun", "--mpirun", help="host mpirun (native runtime)"),
    inventory: Optional[Path] = typer.Option(None, "--inventory", help="plan for another box: nvidia-smi "
                                             "--query-gpu=index,name,compute_cap,memory.total,driver_version "
                                             "--format=csv,noheader > box.csv"),
    cpus: Optional[int] = typer.Option(None, "--cpus", help="CPUs that tokenize (default: this machine's)"),
    net_mbps: float = typer.Option(200.0, "--net-mbps", help="download speed to plan with, Mbit/s"),
    price: Optional[float] = typer.Option(None, "--price-per-gpu-hour", help="adds the cost: GPUs x hours x price"),
    tune: Optional[bool] = typer.Option(None, "--tune/--no-tune", help="measure B x recompute first: default only "
                                        "without a tune cache and when it costs <= 2% of the training forecast"),
    image: Optional[str] = typer.Option(None, "--image", help="docker: REGISTRY/REPO[:TAG] pushed by `kitctl build "
                                        "--push`: the build stage pulls it instead of building (kit.yaml: "
                                        "pull_image)"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="an offline bundle (`kitctl bundle --out FILE`): "
                                          "verified, unpacked under <data_root>/bundles, its members used; nothing "
                                          "is downloaded"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (stages, disk, download, time); run nothing"),
    as_json: bool = typer.Option(False, "--json", help="with --dry-run: the plan as JSON"),
) -> None:
    """Reproduce GPT-2 end to end: preflight, build, data, HellaSwag, tune, train (-h 1), report. Resumable:
    re-run the same command after Ctrl-C, a crash or a reboot. The plan (disk, download, time) comes first."""
    if preset.startswith("-"):
        raise ConfigError(f"{preset!r} is not a preset: after `--` give the preset first",
                          "write e.g. `kitctl reproduce gpt2-124m -- -n 1000`")
    if as_json and not dry_run:
        raise ConfigError("--json prints the plan only", "add --dry-run")
    if inventory is not None and not dry_run:
        raise ConfigError(f"--inventory {inventory} describes another box: it plans, it cannot run there from here",
                          "add --dry-run to see the plan for that box; on the box itself, run without --inventory "
                          "(its own GPUs are used)")
    cfg = config()
    if not dry_run and not config_source().data_root_set:
        raise ConfigError("kitctl reproduce writes tens of GB under the data root, and none is configured (no "
                          f"kit.yaml in this folder, its parents or {user_config_path()}; no KIT_DATA_ROOT): it "
                          f"would fall back to {cfg.data_root}",
                          "set the data root on your big disk first: `kitctl init --data-root /big/disk` (kit.yaml "
                          "here) or `kitctl init --user --data-root /big/disk` (every folder); `kitctl reproduce "
                          "--dry-run` plans without one")
    cfg, hs_path = hellaswag_arg(config(writes=not dry_run), hellaswag_source)
    if image is not None:
        validate.docker_ref(image, "--image")
        cfg = cfg.model_copy(update={"pull_image": image})
    opts = ReproduceOptions(
        preset=preset, name=name, dataset=dataset, source=source.absolute() if source else None,
        hellaswag_source=hs_path.absolute() if hs_path else None, stream=stream,
        shard_size=shard_size, workers=workers, runtime=runtime or cfg.runtime, gpus=gpus, steps=steps,
        binary=binary.absolute() if binary else None, llmc_src=llmc_src, cudnn_frontend=cudnn_frontend,
        mpirun=mpirun, inventory=inventory, cpus=cpus, net_mbps=net_mbps, price_per_gpu_hour=price,
        tune={None: "auto", True: "on", False: "off"}[tune], passthrough=tuple(passthrough or ()),
        precision=precision, force_memory=force_memory)
    if image is not None and opts.runtime != "docker":
        raise ConfigError("--image is a docker image: with --runtime native it does nothing",
                          "leave --image out, or use --runtime docker")
    if bundle is not None and hellaswag_source is not None and hs_path is None:
        raise ConfigError(f"--hellaswag-source {hellaswag_source} with --bundle: a bundle run downloads nothing",
                          "leave --hellaswag-source out (the bundle's jsonl is used), or give a local file")
    if bundle is not None:
        cfg, opts = _with_bundle(cfg, opts, bundle, quiet=as_json, dry_run=dry_run)
    g, fc = make_forecast(cfg, opts, plan_only=dry_run)
    if as_json:
        sys.stdout.write(json.dumps(fc.as_json(), indent=2) + "\n")
        return
    console.print(plan_table(fc, f"kitctl reproduce {preset}: the plan ({g.run_dir})"))
    for line in plan_lines(fc):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if dry_run:
        return
    argv = ["kitctl", "reproduce", *sys.argv[sys.argv.index("reproduce") + 1:]] if "reproduce" in sys.argv else []
    state = run_pipeline(cfg, opts, console, argv, g, fc)
    console.print(outcome_table(state))
    console.print(f"report: {escape(str(g.run_dir / 'report.html'))}; `kitctl status {escape(g.run_dir.name)}` and "
                  f"`kitctl tensorboard {g.run_dir.name}` show the run", highlight=False)
