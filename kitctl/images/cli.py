"""CLI of the images area: ``kitctl build``, ``render``, ``doctor``, ``smoke``. Thin: parse, call, print."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from kitctl.core.context import config, console, err_console
from kitctl.core.config import check_arch_list, parse_arch_list
from kitctl.core.errors import ConfigError, KitError
from kitctl.core import validate
from kitctl.core.validate import checked
from kitctl.host.runtimes import shell_line

app = typer.Typer()   # commands of this area; kitctl/cli.py merges them into the kitctl app


def _archs(arch: Optional[str], inventory: Optional[Path]) -> list[int]:
    from kitctl.images import render as images
    from kitctl.host.gpus import load_inventory

    cfg = config()
    if arch is None:
        spec: object = cfg.arch
    elif arch.strip() == "auto":
        spec = "auto"
    else:
        try:
            spec = check_arch_list(parse_arch_list(arch))
        except ValueError as e:
            raise ConfigError(f"--arch {arch}: {e}") from None
    gpus = load_inventory(inventory) if spec == "auto" else []
    return images.resolve_archs(spec, gpus)


@app.command()
def build(
    arch: Optional[str] = typer.Option(None, "--arch", help="compute capabilities: 75,86 | auto (nvidia-smi)",
                                       callback=checked(validate.arch_spec)),
    provider: Optional[str] = typer.Option(None, "--provider", help="nvidia | wheels (default: kit.yaml)",
                                           callback=checked(validate.choice, choices=("nvidia", "wheels"))),
    cuda: Optional[str] = typer.Option(None, "--cuda", help="CUDA version (default: the provider's pin)"),
    base_image: Optional[str] = typer.Option(None, "--base-image",
                                             help="Debian/Ubuntu base for wheels + data; nvidia with a --cuda "
                                                  "the kit does not know: the nvidia/cuda ...-devel- image",
                                             callback=checked(validate.docker_ref)),
    target: str = typer.Option("all", "--target", help="toolchain | build | runtime | data | all (runtime+data)",
                               callback=checked(validate.choice, choices=("all", "toolchain", "build", "runtime", "data"))),
    llmc_src: Optional[str] = typer.Option(None, "--llmc-src", help="llm.c checkout, tarball or URL"),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="extra CA bundle (BuildKit secret)",
                                           callback=checked(validate.pem_bundle)),
    cudnn: Optional[bool] = typer.Option(None, "--cudnn/--no-cudnn", help="cuDNN flash attention in the BF16 binary"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="docker | native (default: kit.yaml)",
                                          callback=checked(validate.choice, choices=("docker", "native"))),
    out: Optional[Path] = typer.Option(None, "--out", help="native: binaries dir (default <data_root>/native/bin)",
                                       callback=checked(validate.writable_folder)),
    cudnn_frontend: Optional[Path] = typer.Option(None, "--cudnn-frontend", help="native: cudnn-frontend include dir"),
    build_dir: Path = typer.Option(Path(".kit/build"), "--build-dir", help="where the build context is written",
                                   callback=checked(validate.writable_folder)),
    inventory: Optional[Path] = typer.Option(None, "--inventory", help="nvidia-smi CSV for --arch auto",
                                             callback=checked(validate.readable_file, text=True)),
    no_cache: bool = typer.Option(False, "--no-cache", help="ignore the layer cache (downloads stay cached)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the exact commands, build nothing"),
) -> None:
    """Build the images (or, with --runtime native, llm.c's binaries on this host)."""
    cfg = config()
    archs = _archs(arch, inventory)
    if (runtime or cfg.runtime) == "native":
        _build_native(archs, llmc_src, out, cudnn, cudnn_frontend, dry_run)
        return
    from kitctl.images import render as images

    targets = ["runtime", "data"] if target == "all" else [target]
    req = images.BuildRequest.from_config(cfg, provider=provider, cuda=cuda, archs=archs, target=targets[0],
                                          base_image=base_image, llmc_src=llmc_src, ca_cert=ca_cert, cudnn=cudnn,
                                          build_dir=build_dir)
    would_download = dry_run and not (llmc_src or cfg.mirrors.llmc_src)
    ctx = images.prepare_context(req, fetch_source=False if would_download else None)
    if would_download:   # a dry run never downloads; the tag's hash then lacks the llm.c digest
        from kitctl.core import pins as versions

        pin = versions.pins()["llmc"]
        console.print(f"dry run: llm.c {pin['commit'][:7]} would be downloaded from "
                      f"{pin['tarball_url'].format(commit=pin['commit'])} (sha256 {pin['tarball_sha256'][:12]}…) "
                      "when building; the tags below are computed without it", highlight=False)
    console.print(f"[bold]context[/] {ctx.path}  (provider {req.provider}, CUDA {req.cuda}, "
                  f"archs {req.arch_csv}, cuDNN {'on' if req.cudnn else 'off'}"
                  + (f", llm.c {ctx.llmc_label}" if ctx.llmc_label else "") + ")", highlight=False)
    if dry_run:
        for t in targets:
            print(shell_line(images.build_argv(req, ctx, t, cache=not no_cache)))
        return
    for t in targets:
        start = time.monotonic()
        print(f"building {t}: {shell_line(images.build_argv(req, ctx, t, cache=not no_cache))}",
              file=sys.stderr, flush=True)
        tags = images.build(req, ctx, t, on_line=lambda line: print(line, file=sys.stderr, flush=True),
                            cache=not no_cache)
        console.print(f"[green]built {t}[/] in {time.monotonic() - start:.0f} s: {' '.join(tags)}", highlight=False)
    from kitctl.host.runtimes import COMPOSE_FILE

    env = images.write_env(cfg, COMPOSE_FILE.parent / ".env")   # compose reads .env next to compose.yaml
    console.print(f"wrote {env} for docker compose; next: kitctl smoke, kitctl data", highlight=False)


def _build_native(archs: list[int], llmc_src: Optional[str], out: Optional[Path], cudnn: Optional[bool],
                  cudnn_frontend: Optional[Path], dry_run: bool) -> None:
    from kitctl.images import llmc_source
    from kitctl.images import native_build
    from kitctl.host.runtimes import NativeRuntime

    cfg = config()
    spec = llmc_src or cfg.mirrors.llmc_src
    src = Path(spec).expanduser() if spec and Path(spec).expanduser().is_dir() else None
    if src is None and not dry_run:
        src = cfg.data_root / "native" / "llm.c"
        got = llmc_source.fetch(spec, src, cfg.ca_cert)
        console.print(f"llm.c source: {got.label()} -> {src}", highlight=False)
    elif src is None:
        src = cfg.data_root / "native" / "llm.c"
    dest = out or native_build.default_out(cfg.data_root)
    tc = native_build.discover(cudnn_frontend=cudnn_frontend, src=src)
    cmds = native_build.plan(src, dest, archs, tc, cudnn, strict=not dry_run)
    for note in tc.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    for lack in native_build.missing(tc, cudnn) if dry_run else []:
        err_console.print(f"[yellow]warning:[/] missing {lack}", highlight=False)
    for argv in cmds:
        print(shell_line(argv))
        if not dry_run:
            rc = NativeRuntime().run(argv, on_line=lambda line: err_console.print(line, markup=False, highlight=False))
            if rc != 0:
                raise KitError(f"native build failed (exit {rc})", "read the nvcc error above; docs/images.md")
    if not dry_run:
        console.print(f"[green]built[/] {', '.join(str(dest / b) for b in native_build.BINARIES)}", highlight=False)


@app.command()
def render(
    out: Path = typer.Option(Path(".kit/render"), "--out", help="folder for the Dockerfile and its context",
                             callback=checked(validate.writable_folder)),
    arch: Optional[str] = typer.Option(None, "--arch", help="compute capabilities, e.g. 75,86",
                                       callback=checked(validate.arch_spec)),
    provider: Optional[str] = typer.Option(None, "--provider", help="nvidia | wheels",
                                           callback=checked(validate.choice, choices=("nvidia", "wheels"))),
    cuda: Optional[str] = typer.Option(None, "--cuda"),
    base_image: Optional[str] = typer.Option(None, "--base-image", callback=checked(validate.docker_ref)),
    cudnn: Optional[bool] = typer.Option(None, "--cudnn/--no-cudnn"),
    llmc_src: Optional[str] = typer.Option(None, "--llmc-src", help="also put llm.c's source into the context"),
    stdout: bool = typer.Option(False, "--stdout", help="print the Dockerfile only"),
) -> None:
    """Write the Dockerfile and its build context, for plain `docker buildx build`."""
    from kitctl.images import render as images

    cfg = config()
    req = images.BuildRequest.from_config(cfg, provider=provider, cuda=cuda, archs=_archs(arch, None),
                                          base_image=base_image, cudnn=cudnn, llmc_src=llmc_src)
    if stdout:
        print(images.render(req), end="")
        return
    ctx = images.prepare_context(req, out, fetch_source=bool(llmc_src))
    console.print(f"wrote {ctx.dockerfile} and its context. Build with:", highlight=False)
    for t in ("runtime", "data"):
        print("  " + shell_line(images.build_argv(req, ctx, t)))
    if not llmc_src:
        console.print(f"[yellow]note:[/] put llm.c's source (commit {images.versions.llmc_commit()[:12]}) into "
                      f"{ctx.path / 'llmc'} before building runtime, or re-run with --llmc-src", highlight=False)


@app.command()
def doctor(
    inventory: Optional[Path] = typer.Option(None, "--inventory", help="nvidia-smi CSV instead of this box's GPUs",
                                             callback=checked(validate.readable_file, text=True)),
    as_json: bool = typer.Option(False, "--json", help="machine-readable findings"),
) -> None:
    """Check Docker, the NVIDIA runtime, GPUs, driver, disk and shared memory; explain what they mean."""
    from kitctl.host import doctor as doc

    cfg = config()
    findings = doc.evaluate(doc.gather(cfg, inventory), cfg)
    ok = doc.ready(findings)
    if as_json:
        print(json.dumps({"ready": ok, "findings": [f.__dict__ for f in findings]}, indent=2))
    else:
        from rich.table import Table

        colour = {"ok": "green", "warn": "yellow", "fail": "red", "info": "cyan"}
        table = Table(show_header=True, header_style="bold", show_lines=False)
        for col in ("check", "status", "finding", "what it means"):
            table.add_column(col, overflow="fold")
        for f in findings:
            table.add_row(f.check, f"[{colour[f.status]}]{f.status}[/]", f.detail, f.meaning)
        console.print(table)
        console.print("[green]ready[/]" if ok else "[red]not ready[/]: fix the 'fail' rows above")
    raise typer.Exit(0 if ok else 1)


@app.command()
def smoke(
    image: Optional[str] = typer.Argument(None, help="image to check (default: the runtime image, <image>:latest)",
                                         callback=checked(validate.docker_ref)),
    arch: Optional[str] = typer.Option(None, "--arch", help="archs to expect (default: the image's label)",
                                       callback=checked(validate.arch_spec)),
    np: int = typer.Option(2, "--np", help="MPI ranks", callback=checked(validate.positive_int)),
    gpus: Optional[bool] = typer.Option(None, "--gpus/--no-gpus", help="pass the GPUs in (default: if any)"),
) -> None:
    """Run the image smoke checks: SASS per arch (cuobjdump), mpirun -np 2, NCCL allreduce on GPUs."""
    from kitctl.images import render as images
    from kitctl.images import smoke as sm
    from kitctl.host.gpus import query

    cfg = config()
    ref = image or images.runtime_ref(cfg)
    use_gpus = bool(query()) if gpus is None else gpus
    res = sm.run(ref, arch, np, use_gpus, on_line=lambda line: print(line, flush=True))
    raise typer.Exit(0 if res.rc == 0 else 1)
