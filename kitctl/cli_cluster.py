"""Cluster commands: ``kitctl export`` (image -> .sqsh / .sif / tar) and the Slurm launcher's options.

Logic lives in kitctl/export.py and kitctl/slurm.py; this module parses options and prints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kitctl.cli import app, config, console


@app.command("export")
def export_cmd(
    image: Optional[str] = typer.Argument(None, help="image to export (default: <image>:latest from kit.yaml)"),
    fmt: str = typer.Option("sqsh", "--format", "-f", help="sqsh (enroot/pyxis), sif (Apptainer) or tar (docker save)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="output file (default <data_root>/export/<image>.<format>)"),
    via_tar: bool = typer.Option(False, "--via-tar", help="sif: build from a docker save tar (docker-archive://)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the steps, run nothing"),
) -> None:
    """Turn the kit's image into what a cluster loads: enroot .sqsh, Apptainer .sif or a docker save tar."""
    from kitctl import export

    cfg = config()
    ref = image or f"{cfg.image}:latest"    # kitctl.images.runtime_ref: the tag `kitctl build` moves
    out = output if output is not None else export.default_output(ref, fmt, cfg.data_root / "export")
    plan = export.export_commands(ref, fmt, out.absolute(), via_tar=via_tar)
    if dry_run:
        for line in plan.describe():
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        return
    res = export.run_export(plan, console=console,
                            on_line=lambda s: console.print(s, highlight=False, markup=False))
    console.print(f"wrote {res.output} ({res.size / 1e9:.2f} GB)\nsha256 {res.sha256}  (also in "
                  f"{res.output.name}.sha256; check the copy on the cluster with `sha256sum -c`)", highlight=False)
