"""Cluster commands: ``kitctl export`` (image -> .sqsh / .sif / tar) and the Slurm launcher's options.

Logic lives in kitctl/cluster/export.py and kitctl/cluster/slurm*.py; this module parses options and prints.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from kitctl.cluster import export
from kitctl.cluster.slurm import SlurmOptions
from kitctl.cluster.slurm_run import train_on_slurm
from kitctl.core.context import config, console
from kitctl.core import validate
from kitctl.core.validate import checked
from kitctl.core.errors import ConfigError
from kitctl.host.runtimes import runtime_image_ref
from kitctl.train.cli import Launcher

app = typer.Typer()   # commands of this area; kitctl/cli.py builds one when it is asked for (COMMANDS lists them)


@app.command("export")
def export_cmd(
    image: Optional[str] = typer.Argument(None, help="image to export (default: <image>:latest from kit.yaml)"),
    fmt: str = typer.Option("sqsh", "--format", "-f", help="sqsh (enroot/pyxis), sif (Apptainer) or tar (docker save)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", callback=checked(validate.writable_file),
                                          help="output file (default <data_root>/export/<image>.<format>)"),
    via_tar: bool = typer.Option(False, "--via-tar", help="sif: build from a docker save tar (docker-archive://)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the steps, run nothing"),
) -> None:
    """Turn the kit's image into what a cluster loads: enroot .sqsh, Apptainer .sif or a docker save tar."""
    cfg = config(writes=not dry_run)
    ref = image or runtime_image_ref(cfg)    # the tag `kitctl build` moves
    out = output if output is not None else export.default_output(ref, fmt, cfg.layout.exports)
    plan = export.export_commands(ref, fmt, out.absolute(), via_tar=via_tar)
    if dry_run:
        for line in plan.describe():
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        return
    res = export.run_export(plan, console=console,
                            on_line=lambda s: console.print(s, highlight=False, markup=False))
    console.print(f"wrote {res.output} ({res.size / 1e9:.2f} GB)\nsha256 {res.sha256}  (also in "
                  f"{res.output.name}.sha256; check the copy on the cluster with `sha256sum -c`)", highlight=False,
                  markup=False)


# ------------------------------------------------------------------------------------------------------------
# `kitctl train --launcher slurm ...`: the options this launcher adds to `train`, and the one call it makes


class SlurmCli:
    """Typer options of the Slurm launcher (:data:`SLURM`, which kitctl/cli.py registers on `kitctl train`)."""

    nodes = typer.Option(1, "--nodes", help="slurm: number of nodes")
    gpus_per_node = typer.Option(None, "--gpus-per-node", help="slurm: GPUs (ranks) per node (default: the GPUs "
                                                              "--gpus picks from --inventory, one compute node)")
    partition = typer.Option(None, "--partition", help="slurm: partition (sbatch --partition)")
    time = typer.Option(None, "--time", help="slurm: time limit, e.g. 2-00:00:00 (sbatch --time)")
    account = typer.Option(None, "--account", help="slurm: account to charge (sbatch --account)")
    container = typer.Option("pyxis", "--container", help="slurm: pyxis (srun --container-image), apptainer "
                                                          "(apptainer exec --nv) or none (a binary on a shared path)")
    image = typer.Option(None, "--image", help="slurm+pyxis: an enroot .sqsh on the shared filesystem "
                                               "(`kitctl export --format sqsh`) or a registry image")
    sif = typer.Option(None, "--sif", help="slurm+apptainer: the .sif (`kitctl export --format sif`)")
    shared_dir = typer.Option(None, "--shared-dir", help="slurm: a folder every node sees at the same path "
                                                         "(llm.c's NCCL-id rendezvous, -pi fs -pf)")
    init = typer.Option("fs", "--init", help="slurm: llm.c multi-node init: fs (through --shared-dir) or tcp "
                                             "(rank 0 on the first node, port 12345)")
    sbatch_opt = typer.Option(None, "--sbatch-opt", help="slurm: extra #SBATCH option, repeatable "
                                                         "(e.g. --sbatch-opt=--qos=high)")
    submit = typer.Option(False, "--submit", help="slurm: submit the script with sbatch (default: write it only)")


def train_with_launcher(cfg, req, *, inventory: Optional[Path], mpirun: str, dry_run: bool, show_plan,
                        launcher: str, nodes: int, gpus_per_node: Optional[int], partition: Optional[str],
                        time: Optional[str], account: Optional[str], container: str, image: Optional[str],
                        sif: Optional[Path], shared_dir: Optional[Path], init: str,
                        sbatch_opt: Optional[list], submit: bool) -> None:
    """`kitctl train --launcher slurm`: plan for nodes x GPUs, write <run>/sbatch.sh, submit with --submit."""
    if launcher != "slurm":
        raise ConfigError(f"--launcher {launcher!r} is not one of local, slurm", "pass --launcher slurm or leave it out")
    if submit and dry_run:
        raise ConfigError("--submit and --dry-run together", "pick one: --dry-run prints the script, --submit sends it")
    opts = SlurmOptions(nodes=nodes, gpus_per_node=gpus_per_node, shared_dir=shared_dir, container=container,
                        image=image, sif=sif, partition=partition, time=time, account=account, init=init,
                        sbatch_extra=tuple(sbatch_opt or ()))
    train_on_slurm(cfg, req, opts, inventory=inventory, mpirun=mpirun, submit=submit, dry_run=dry_run,
                   console=console, show_plan=show_plan)


# registered on `kitctl train` by kitctl/cli.py (train never imports cluster)
SLURM = Launcher("slurm", "sbatch/srun on --nodes nodes", run=train_with_launcher, options={
    "nodes": (int, SlurmCli.nodes), "gpus_per_node": (Optional[int], SlurmCli.gpus_per_node),
    "partition": (Optional[str], SlurmCli.partition), "time": (Optional[str], SlurmCli.time),
    "account": (Optional[str], SlurmCli.account), "container": (str, SlurmCli.container),
    "image": (Optional[str], SlurmCli.image), "sif": (Optional[Path], SlurmCli.sif),
    "shared_dir": (Optional[Path], SlurmCli.shared_dir), "init": (str, SlurmCli.init),
    "sbatch_opt": (Optional[List[str]], SlurmCli.sbatch_opt), "submit": (bool, SlurmCli.submit)})
