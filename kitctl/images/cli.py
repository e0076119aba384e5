"""CLI of the images area: ``kitctl build``, ``render``, ``doctor``, ``smoke``. Thin: parse, call, print."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from kitctl.core import native_build_record as build_record, pins
from kitctl.core.context import announcement, config, config_source, console, err_console
from kitctl.core.errors import ConfigError, KitError
from kitctl.core import validate
from kitctl.host import registry
from kitctl.core.validate import checked
from kitctl.host import compose, docker_disk, doctor as doc
from kitctl.host.gpus import GPU, driver_cuda, load_inventory, query
from kitctl.host.runtimes import NativeRuntime, data_image_ref, runtime_image_ref, shell_line
from kitctl.core.bundle import use_bundle
from kitctl.images import build as builder
from kitctl.images import move as images_move
from kitctl.images import inputs, llmc_source, native_build
from kitctl.images import lock as lk
from kitctl.images import lock_resolve
from kitctl.images import smoke as sm
from kitctl.images.context import prepare_context
from kitctl.images.render import lock_gaps, render as render_dockerfile
from kitctl.images.request import BuildRequest, resolve_archs

app = typer.Typer()   # commands of this area; kitctl/cli.py builds one when it is asked for (COMMANDS lists them)


def _archs(arch: Optional[str], gpus: list[GPU]) -> list[int]:
    """--arch (strict: 75,86 / 7.5,8.6 / auto), else kit.yaml's arch; auto takes the GPUs' capabilities."""
    if arch is None:
        spec: object = config().arch
    elif arch.strip() == "auto":
        spec = "auto"
    else:
        spec = inputs.parse_archs(arch)
    return resolve_archs(spec, gpus)


def _notes(req: BuildRequest) -> None:
    for note in req.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)


@app.command()
def build(
    cli_ctx: typer.Context,
    arch: Optional[str] = typer.Option(None, "--arch", help="compute capabilities: 75,86 | auto (nvidia-smi)"),
    provider: Optional[str] = typer.Option(None, "--provider", help="nvidia | wheels (default: kit.yaml)"),
    cuda: Optional[str] = typer.Option(None, "--cuda", help="CUDA version (default: the provider's pin)"),
    base_image: Optional[str] = typer.Option(None, "--base-image",
                                             help="Debian/Ubuntu base for wheels + data; nvidia with a --cuda "
                                                  "the kit does not know: the nvidia/cuda ...-devel- image"),
    target: str = typer.Option("all", "--target", help="toolchain | build | runtime | data | all (runtime+data)"),
    llmc_src: Optional[str] = typer.Option(None, "--llmc-src", callback=checked(validate.source_spec), help="llm.c checkout, tarball or URL"),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="extra CA bundle (BuildKit secret)"),
    cudnn: Optional[bool] = typer.Option(None, "--cudnn/--no-cudnn", help="cuDNN flash attention in the BF16 binary"),
    runtime: Optional[str] = typer.Option(None, "--runtime", callback=checked(validate.choice, choices=("docker", "native")),
                                          help="docker | native (default: kit.yaml)"),
    out: Optional[Path] = typer.Option(None, "--out", callback=checked(validate.writable_folder),
                                       help="native: binaries dir (default <data_root>/native/bin)"),
    cudnn_frontend: Optional[Path] = typer.Option(None, "--cudnn-frontend", help="native: cudnn-frontend include dir"),
    build_dir: Path = typer.Option(Path(".kit/build"), "--build-dir", help="where the build context is written"),
    inventory: Optional[Path] = typer.Option(None, "--inventory", help="nvidia-smi CSV of the target machine: --arch auto and its driver's CUDA"),
    no_cache: bool = typer.Option(False, "--no-cache", help="ignore the layer cache (downloads stay cached)"),
    lock_file: Optional[Path] = typer.Option(None, "--lock", help="the image lock (default: images.lock beside kit.yaml, else the kit's own; "
                                             "used when present)"),
    update_lock: bool = typer.Option(False, "--update-lock", help="resolve base digests and apt versions anew "
                                     "and write them into the lock before building"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the exact commands, build nothing"),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="an offline bundle (`kitctl bundle`): load its "
                                          "images (docker), or build from its llm.c source (native); no network"),
    push: Optional[str] = typer.Option(None, "--push", help="REGISTRY/REPO: push the built images there (their "
                                       "recipe tags); the digests go to <data_root>/images/pushed.json"),
    image: Optional[str] = typer.Option(None, "--image", help="REGISTRY/REPO[:TAG]: pull this image instead of "
                                        "building (its recipe labels are checked); kit.yaml: pull_image"),
) -> None:
    """Build the images (or, with --runtime native, llm.c's binaries on this host)."""
    _check_moves(push, image)
    cfg = config(writes=not dry_run)
    native = (runtime or cfg.runtime) == "native"
    if native:
        validate.refuse_unused(cli_ctx, {"provider": "--provider", "cuda": "--cuda", "base_image": "--base-image",
                                     "target": "--target", "build_dir": "--build-dir", "no_cache": "--no-cache"},
                               "with --runtime native: it sets up the Docker image build (native builds llm.c "
                               "with this host's CUDA toolkit)",
                               "leave out {flags}, or build the images with --runtime docker")
    else:
        validate.refuse_unused(cli_ctx, {"out": "--out", "cudnn_frontend": "--cudnn-frontend"},
                               "with --runtime docker: it is for the native build on this host (the image has "
                               "its own)", "leave out {flags}, or pass --runtime native")
    gpus = load_inventory(inventory)       # this box (nvidia-smi) or the one described: archs auto, its driver
    archs = _archs(arch, gpus)
    ub = use_bundle(bundle.absolute(), cfg.data_root, console, dry_run=dry_run) if bundle is not None else None
    if ub is not None and ub.pending:        # a dry run of a bundle not unpacked yet: verified, nothing written
        err_console.print(ub.pending_note(), markup=False, highlight=False, soft_wrap=True)
        return
    if ub is not None:
        llmc_src, cudnn_frontend = _bundle_inputs(ub, llmc_src, cudnn_frontend)
    pull_ref = image or cfg.pull_image
    if (runtime or cfg.runtime) == "native" and (push is not None or pull_ref):
        raise ConfigError("--push / --image move images: with --runtime native there is none",
                          "leave them out, or build with --runtime docker")
    if (runtime or cfg.runtime) == "native":
        if lock_file or update_lock:
            raise ConfigError("--lock / --update-lock lock the Docker images; a native build uses this host's "
                              "toolchain", "leave them out with --runtime native")
        _build_native(archs, llmc_src, out, cudnn, cudnn_frontend, dry_run, ca_cert)
        return
    targets = ["runtime", "data"] if target == "all" else [target]
    req = BuildRequest.from_config(cfg, provider=provider, cuda=cuda, archs=archs, target=targets[0],
                                   base_image=base_image, llmc_src=llmc_src, ca_cert=ca_cert, cudnn=cudnn,
                                   build_dir=build_dir, driver_cuda=driver_cuda(gpus))
    _notes(req)
    _say_kit_yaml_lines(cfg, req, provider, cuda, base_image)
    req.lock = lk.load(lock_file)
    stages = lock_resolve.stages_of(targets)
    epoch = builder.source_date_epoch()
    rewrite = bool(epoch) and (builder.buildkit_version() or (0, 0)) >= builder.REWRITE_TIMESTAMP_SINCE
    if epoch and not rewrite:
        err_console.print(f"note: SOURCE_DATE_EPOCH={epoch} goes in as a build arg; this builder's BuildKit "
                          f"cannot rewrite layer timestamps (needs >= 0.13): the package set is locked, the image "
                          "digest still differs between builds (docs/images.md)", markup=False, highlight=False)
    if update_lock and (pull_ref or (ub is not None and ub.image("runtime"))):
        raise ConfigError("--update-lock with --image/--bundle: nothing is built here to lock",
                          "lock on the box that builds (`kitctl lock`, or `kitctl build --update-lock`)")
    lock_path = lk.write_path(lock_file) if update_lock else None
    if lock_path is not None:
        if dry_run:
            _lock_dry_run(req, stages, lock_path)
        else:
            lock = lock_resolve.update_lock(req, stages, lock_path, "kitctl build --update-lock",
                                            on_line=_stderr_line, cache=not no_cache)
            console.print(f"wrote {lock_path} ({lock.short()})", highlight=False)
    elif req.lock is not None and not pull_ref:
        lock_resolve.check_bases(req, stages)
        console.print(f"building from {req.lock.path} ({req.lock.short()})", highlight=False)
    would_download = (dry_run or bool(pull_ref)) and not (llmc_src or cfg.mirrors.llmc_src)
    ctx = prepare_context(req, fetch_source=False if would_download else None)
    _say_context(req, ctx, would_download and not pull_ref)
    if pull_ref or (ub is not None and ub.image("runtime")):
        if push is not None:
            raise ConfigError("--push with --image/--bundle: nothing is built here to push",
                              "push from the box that builds (`kitctl build --push REGISTRY/REPO`)")
        _fetch_images(req, ctx, targets, pull_ref, ub, dry_run)
    elif dry_run:
        _dry_run_lines(req, ctx, targets, push, no_cache, epoch, rewrite)
    else:
        _build_and_push(cfg, req, ctx, targets, push, no_cache, len(gpus), epoch, rewrite)


def _lock_row(cfg) -> doc.Finding:
    """doctor's image-lock row; a lock that cannot be read (a FIFO, a damaged file) is a failed row naming it, not
    the end of the report."""
    try:
        lock = lk.load()
    except ConfigError as e:
        return doc.Finding("image lock", "fail", e.message, e.hint or "re-make it with `kitctl lock`")
    st, detail, meaning = lock_resolve.lock_finding(lock, [runtime_image_ref(cfg), data_image_ref(cfg)])
    return doc.Finding("image lock", st, detail, meaning)


def _check_moves(push: Optional[str], image: Optional[str]) -> None:
    """--push and --image, validated before anything is built or pulled (exit 2 naming the rule)."""
    if push is not None:
        registry.check_push_repo(push.rstrip("/") or push, "--push")
    if image is not None:
        validate.docker_ref(image, "--image")
def kit_yaml_lines(cfg, req: BuildRequest, provider: Optional[str], cuda: Optional[str],
                   base_image: Optional[str]) -> list[str]:
    """The kit.yaml lines that make later commands on this box (data, train, reproduce: they judge images by
    kit.yaml) expect the recipe these command-line flags build; [] when kit.yaml says it already."""
    out = []
    if provider and provider != cfg.provider:
        out.append(f"provider: {req.provider}")
    if cuda and req.cuda != (cfg.cuda or ""):
        out.append(f'cuda: "{req.cuda}"')
    if base_image and base_image != cfg.base_image:
        out.append(f"base_image: {req.base_image}")
    return out


def _say_kit_yaml_lines(cfg, req: BuildRequest, provider: Optional[str], cuda: Optional[str],
                        base_image: Optional[str]) -> None:
    lines = kit_yaml_lines(cfg, req, provider, cuda, base_image)
    if lines:
        err_console.print("note: this build's recipe comes from command-line flags; `kitctl data`, `train` and "
                          "`reproduce` on this box judge images by kit.yaml and would take it for another recipe: "
                          f"set in kit.yaml {'; '.join(lines)}", markup=False, highlight=False, soft_wrap=True)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _bundle_inputs(ub, llmc_src: Optional[str], cudnn_frontend: Optional[Path]) -> tuple:
    """--bundle: the llm.c source and cudnn-frontend it holds (a flag that gives them too is refused)."""
    for flag, mine, packed in (("--llmc-src", llmc_src, ub.llmc_src),
                               ("--cudnn-frontend", cudnn_frontend, ub.cudnn_frontend)):
        if mine is not None and packed is not None:
            raise ConfigError(f"{flag} with --bundle: the bundle holds that input already",
                              f"leave {flag} out, or leave --bundle out")
    return llmc_src or ub.llmc_src, cudnn_frontend or ub.cudnn_frontend


def _say_context(req: BuildRequest, ctx, llmc_not_fetched: bool) -> None:
    if llmc_not_fetched:   # a dry run never downloads; the tag's hash then lacks the llm.c digest
        pin = pins.load().llmc
        console.print(f"dry run: llm.c {pin.commit[:7]} would be downloaded from "
                      f"{pin.tarball_url.format(commit=pin.commit)} (sha256 {pin.tarball_sha256[:12]}…) "
                      "when building; the tags below are computed without it", highlight=False)
    console.print(f"[bold]context[/] {ctx.path}  (provider {req.provider}, CUDA {req.cuda}, "
                  f"archs {req.arch_csv}, cuDNN {'on' if req.cudnn else 'off'}"
                  + (f", llm.c {ctx.llmc_label}" if ctx.llmc_label else "") + ")", highlight=False)
    if ctx.llmc_left_out:
        err_console.print(f"note: {len(ctx.llmc_left_out)} entries of the llm.c checkout were left out of the "
                          f"build context (only sources and scripts enter it): {', '.join(ctx.llmc_left_out[:6])}"
                          + (" ..." if len(ctx.llmc_left_out) > 6 else ""), markup=False, highlight=False)


def _fetch_images(req: BuildRequest, ctx, targets: list[str], pull_ref: Optional[str], ub, dry_run: bool) -> None:
    """--image / kit.yaml pull_image: pull and check each target; --bundle: load it from the bundle."""
    for t in targets:
        if pull_ref:
            got = images_move.pull_checked(req, ctx, t, pull_ref, dry_run=dry_run, on_line=_stderr_line)
        else:
            assert ub is not None
            got = images_move.load_checked(req, ctx, t, ub, dry_run=dry_run, on_line=_stderr_line)
        console.print(got, highlight=False, markup=False, soft_wrap=True)


def _dry_run_lines(req: BuildRequest, ctx, targets: list[str], push: Optional[str], no_cache: bool,
                   epoch: Optional[str], rewrite: bool) -> None:
    for t in targets:
        print(shell_line(builder.build_argv(req, ctx, t, cache=not no_cache, epoch=epoch, rewrite=rewrite)))
    if push:
        for t in targets:
            for local, remote in images_move.push_refs(req, ctx, t, push):
                print(shell_line(["docker", "tag", local, remote]))
                print(shell_line(["docker", "push", remote]))


def _build_and_push(cfg, req: BuildRequest, ctx, targets: list[str], push: Optional[str], no_cache: bool,
                    n_gpus: int, epoch: Optional[str], rewrite: bool) -> None:
    if push:                 # the record and the registry are checked before the first build, not after it
        registry.read_pushed(cfg.layout.pushed_images)
        host = registry.registry_host(push)
        if host:
            registry.probe(host)
    for t in targets:
        start = time.monotonic()
        print(f"building {t}: "
              f"{shell_line(builder.build_argv(req, ctx, t, cache=not no_cache, epoch=epoch, rewrite=rewrite))}",
              file=sys.stderr, flush=True)
        tags = lock_resolve.build_locked(req, ctx, t, on_line=_stderr_line, cache=not no_cache, epoch=epoch,
                                         rewrite=rewrite)
        console.print(f"[green]built {t}[/] in {time.monotonic() - start:.0f} s: {' '.join(tags)}", highlight=False)
        if push:
            for pushed, digest in images_move.push(cfg, req, ctx, t, push, on_line=_stderr_line):
                console.print(f"pushed {pushed} ({digest})", highlight=False, markup=False, soft_wrap=True)
    console.print(docker_disk.build_report(docker_disk.query()), highlight=False, markup=False, soft_wrap=True)
    env = compose.write_env(cfg, gpus=n_gpus)
    console.print(f"wrote {env} for docker compose, e.g.:", highlight=False)
    print("  " + shell_line([*compose.compose_base_argv(env), "run", "--rm", "data", "kitctl", "data", "--help"]))
    console.print("next: kitctl smoke, kitctl data", highlight=False)


def _build_native(archs: list[int], llmc_src: Optional[str], out: Optional[Path], cudnn: Optional[bool],
                  cudnn_frontend: Optional[Path], dry_run: bool, ca_cert: Optional[Path] = None) -> None:
    cfg = config()
    spec = llmc_src or cfg.mirrors.llmc_src
    src = Path(spec).expanduser() if spec and Path(spec).expanduser().is_dir() else None
    commit = llmc_source.git_head(src) if src is not None else None
    if src is None and not dry_run:
        src = cfg.layout.native_src
        got = llmc_source.fetch(spec, src, inputs.check_ca_bundle(ca_cert, "--ca-cert") if ca_cert else
                                inputs.check_ca_bundle(cfg.ca_cert, "ca_cert"))
        commit = got.commit
        console.print(f"llm.c source: {got.label()} -> {src}", highlight=False)
    elif src is None:
        src = cfg.layout.native_src
    dest = out or cfg.layout.native_bin
    tc = native_build.discover(cudnn_frontend=cudnn_frontend, src=src)
    cmds = native_build.plan(src, dest, archs, tc, cudnn, strict=not dry_run)
    for note in tc.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    for lack in native_build.missing(tc, cudnn) if dry_run else []:
        err_console.print(f"[yellow]warning:[/] missing {lack}", highlight=False)
    record = build_record.record_path(dest)
    if not dry_run:                        # a build that stops half way leaves no record of the previous one
        if record.is_dir():
            raise ConfigError(f"{record} is a folder: the native build writes its record there",
                              f"remove it (rm -r {record}), or build into another --out")
        record.unlink(missing_ok=True)
    for argv in cmds:
        print(shell_line(argv))
        if not dry_run:
            rc = NativeRuntime().run(argv, on_line=lambda line: err_console.print(line, markup=False, highlight=False))
            if rc != 0:
                raise KitError(f"native build failed (exit {rc})", "read the nvcc error above; docs/images.md")
    if not dry_run:
        native_build.build_record(archs, tc, cudnn, commit, dest).write(record)
        console.print(f"[green]built[/] {', '.join(str(dest / b) for b in native_build.BINARIES)} "
                      f"(sm_{', sm_'.join(map(str, archs))}; recorded in {record})", highlight=False)


def _lock_dry_run(req: BuildRequest, stages: tuple[str, ...], path: Path) -> None:
    """What `kitctl lock` would do: the resolved bases (read from the engine), the packages, the probe build."""
    for s in lock_resolve.plan(req, stages):
        print(f"[{s['name']}] base {s['ref']} -> {s['digest']} ({s['source']}); apt: {' '.join(s['packages'])}")  # type: ignore[arg-type]
    print(shell_line(lock_resolve.probe_argv(req, lock_resolve.probe_dir(req))))
    console.print(f"dry run: would read the packages from that build and write {path}", highlight=False)


@app.command()
def lock(
    provider: Optional[str] = typer.Option(None, "--provider", help="nvidia | wheels (default: kit.yaml)"),
    cuda: Optional[str] = typer.Option(None, "--cuda", help="CUDA version (default: the provider's pin)"),
    base_image: Optional[str] = typer.Option(None, "--base-image", help="as for kitctl build"),
    target: str = typer.Option("all", "--target", help="toolchain | runtime | data | all: the stages to lock"),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="extra CA bundle (BuildKit secret)"),
    build_dir: Path = typer.Option(Path(".kit/build"), "--build-dir", help="where the probe build is written"),
    lock_file: Optional[Path] = typer.Option(None, "--lock", help="the lock to write (default: images.lock beside "
                                             "the kit.yaml in use)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="resolve apt from today's archive, not cached layers"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the resolution and the probe build, write nothing"),
) -> None:
    """Lock what the images are built from: each base image's digest and every apt package's version, in
    docker/images.lock (other stages already in it are kept). Builds then use it."""
    cfg = config(writes=not dry_run)
    if target not in ("all", "toolchain", "runtime", "data", "build"):
        raise ConfigError(f"--target {target!r}: allowed are toolchain, runtime, data, all",
                          "all = the stages `kitctl build` builds (toolchain, runtime, data)")
    targets = ["runtime", "data"] if target == "all" else [target]
    req = BuildRequest.from_config(cfg, provider=provider, cuda=cuda, archs=[75], target=targets[0],
                                   base_image=base_image, ca_cert=ca_cert, build_dir=build_dir)
    _notes(req)
    stages = lock_resolve.stages_of(targets)
    path = lk.write_path(lock_file)
    if dry_run:
        _lock_dry_run(req, stages, path)
        return
    argv = ["kitctl", "lock", "--provider", req.provider, "--target", target]
    if base_image:
        argv += ["--base-image", base_image]
    new = lock_resolve.update_lock(req, stages, path, shell_line(argv),
                                   on_line=lambda line: print(line, file=sys.stderr, flush=True), cache=not no_cache)
    for sid in (lk.stage_id(req.provider, s) for s in stages):
        e = new.stages[sid]
        console.print(f"[{sid}] {e.base} -> {e.digest} ({e.source}), {len(e.apt)} apt packages", highlight=False,
                      markup=False)
    console.print(f"wrote {path} ({new.short()}); builds use it from now on (commit it)", highlight=False)


@app.command()
def render(
    out: Optional[Path] = typer.Option(None, "--out", help="folder for the Dockerfile and its context "
                                       "(default .kit/render)"),
    arch: Optional[str] = typer.Option(None, "--arch", help="compute capabilities, e.g. 75,86"),
    provider: Optional[str] = typer.Option(None, "--provider", help="nvidia | wheels"),
    cuda: Optional[str] = typer.Option(None, "--cuda"),
    base_image: Optional[str] = typer.Option(None, "--base-image"),
    cudnn: Optional[bool] = typer.Option(None, "--cudnn/--no-cudnn"),
    llmc_src: Optional[str] = typer.Option(None, "--llmc-src", callback=checked(validate.source_spec),
                                           help="also put llm.c's source into the context"),
    lock_file: Optional[Path] = typer.Option(None, "--lock", help="the image lock (default: images.lock beside kit.yaml, else the kit's own; "
                                             "used when present)"),
    stdout: bool = typer.Option(False, "--stdout", help="print the Dockerfile only"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would be written where; write nothing "
                                 "(--stdout prints the Dockerfile)"),
) -> None:
    """Write the Dockerfile and its build context, for plain `docker buildx build`.

    --out must be a new or empty folder, or one an earlier `kitctl render` wrote (it is refreshed); any other
    folder is refused, never emptied."""
    if stdout and out is not None:
        raise ConfigError("--stdout prints the Dockerfile and writes no folder: --out does nothing with it",
                          "leave out --out to print, or --stdout to write the Dockerfile and its context there")
    if stdout and llmc_src:
        raise ConfigError("--stdout prints the Dockerfile only: --llmc-src (which puts llm.c's source into the "
                          "context folder) does nothing with it", "leave out --llmc-src, or --stdout")
    out = out if out is not None else Path(".kit/render")
    cfg = config()
    req = BuildRequest.from_config(cfg, provider=provider, cuda=cuda, archs=_archs(arch, []),
                                   base_image=base_image, cudnn=cudnn, llmc_src=llmc_src)
    _notes(req)
    req.lock = lk.load(lock_file)
    for gap in lock_gaps(req):
        err_console.print(f"note: {gap}: that stage is rendered unpinned (`kitctl lock` covers it)",
                          markup=False, highlight=False)
    if stdout:
        print(render_dockerfile(req), end="")
        return
    if dry_run:
        lines = render_dockerfile(req).count("\n")       # renders: a template error shows now, not later
        console.print(f"would write {out.absolute() / 'Dockerfile'} ({lines} lines, provider {req.provider}, sm "
                      f"{','.join(map(str, req.archs)) or 'from kit.yaml'}) and its build context in {out.absolute()}"
                      + (f", with llm.c's source from {llmc_src}" if llmc_src else ""), highlight=False, markup=False,
                      soft_wrap=True)
        return
    ctx = prepare_context(req, out, fetch_source=bool(llmc_src))
    console.print(f"wrote {ctx.dockerfile} and its context. Build with:", highlight=False)
    for t in ("runtime", "data"):
        print("  " + shell_line(builder.build_argv(req, ctx, t)))
    if not llmc_src:
        console.print(f"[yellow]note:[/] put llm.c's source (commit {pins.llmc_commit()[:12]}) into "
                      f"{ctx.path / 'llmc'} before building runtime, or re-run with --llmc-src", highlight=False)


@app.command()
def doctor(
    inventory: Optional[Path] = typer.Option(None, "--inventory", help="nvidia-smi CSV instead of this box's GPUs"),
    purpose: Optional[str] = typer.Option(None, "--for", help="exit by one purpose: data | build | train | "
                                          "multi-node (0 ready, 1 not ready); default: all of them"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable findings"),
    network: bool = typer.Option(True, "--network/--no-network", help="probe each host the plan downloads from "
                                 f"(HF endpoint, registry, PyPI index, llm.c, HellaSwag; after mirrors; "
                                 f"{doc.NET_PROBE_SECONDS:g} s at most; not with --inventory)"),
) -> None:
    """Check Docker and its storage, the NVIDIA runtime, GPUs, driver, disks and shared memory, and the hosts the
    plan downloads from; say what the box is ready for (data, build, train, multi-node with Slurm) and what each
    finding means."""
    if purpose is not None and purpose not in doc.PURPOSES:
        raise ConfigError(f"--for {purpose!r}: doctor judges the purposes {', '.join(doc.PURPOSES)}",
                          "e.g. `kitctl doctor --for train`")
    cfg = config()
    if not config_source().data_root_set:     # the data root doctor judges is a fallback: say so, and how to set one
        err_console.print(announcement(config_source(), cfg.data_root), markup=False, highlight=False, soft_wrap=True)
    facts = doc.gather(cfg, inventory)
    findings = doc.evaluate(facts, cfg, doc.disk_need(cfg))
    if network and inventory is None:       # --inventory judges another box: this box's network says nothing of it
        findings += doc.network_findings(doc.endpoints(cfg), cfg.ca_cert)
    if facts.engine:                          # the images against the image lock (no engine: nothing to compare)
        findings.append(_lock_row(cfg))
    verdicts = doc.verdicts(findings, facts, cfg)
    if purpose == "multi-node" and not any(v.purpose == purpose for v in verdicts):
        verdicts.append(doc.Verdict("multi-node", False, "no Slurm here (sbatch not on PATH): docs/cluster.md"))
    chosen = [v for v in verdicts if purpose in (None, v.purpose)]
    ok = all(v.ready for v in chosen)
    if as_json:
        print(json.dumps({"ready": ok, "purposes": {v.purpose: {"ready": v.ready, "reason": v.reason}
                                                    for v in verdicts},
                          "findings": [f.__dict__ for f in findings]}, indent=2))
    else:

        colour = {"ok": "green", "warn": "yellow", "fail": "red", "info": "cyan"}
        table = Table(show_header=True, header_style="bold", show_lines=False)
        for col in ("check", "status", "finding", "what it means"):
            table.add_column(col, overflow="fold")
        for f in findings:
            table.add_row(f.check, f"[{colour[f.status]}]{f.status}[/]", escape(f.detail), escape(f.meaning))
        console.print(table)
        for v in verdicts:
            mark = "[green]ready[/]" if v.ready else "[red]not ready[/]"
            console.print(f"{v.purpose:10} {mark}: {escape(v.reason)}", highlight=False)
        if purpose:
            console.print(f"--for {purpose}: " + ("[green]ready[/]" if ok else "[red]not ready[/]"))
    raise typer.Exit(0 if ok else 1)


@app.command()
def smoke(
    image: Optional[str] = typer.Argument(None, help="image to check (default: the runtime image, <image>:latest)"),
    arch: Optional[str] = typer.Option(None, "--arch", help="archs to expect (default: the image's label)"),
    np: int = typer.Option(2, "--np", help="MPI ranks"),
    gpus: Optional[bool] = typer.Option(None, "--gpus/--no-gpus", help="pass the GPUs in (default: if any)"),
) -> None:
    """Run the image smoke checks: SASS per arch (cuobjdump), mpirun -np 2, NCCL allreduce on GPUs."""
    cfg = config()
    ref = pins.check_image_ref(image, "IMAGE") if image else runtime_image_ref(cfg)
    if not 1 <= np <= 64:
        raise ConfigError(f"--np {np}: the smoke check runs 1 to 64 ranks", "e.g. --np 2")
    want = ",".join(map(str, inputs.parse_archs(arch))) if arch else None
    use_gpus = bool(query()) if gpus is None else gpus
    res = sm.run(ref, want, np, use_gpus, on_line=lambda line: print(line, flush=True))
    raise typer.Exit(0 if res.rc == 0 else 1)
