"""``kitctl demo``: the README's first command (see kitctl/demo.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from kitctl.core.context import config, console
from kitctl.core import validate
from kitctl.core.validate import checked

app = typer.Typer()   # commands of this area; kitctl/cli.py merges them into the kitctl app


@app.command()
def demo(
    data_root: Optional[Path] = typer.Option(None, callback=checked(validate.writable_folder), help="demo data root (default <data_root>/demo)"),
    steps: int = typer.Option(20, callback=checked(validate.positive_int), help="training steps, where this machine can train"),
) -> None:
    """Run the kit end to end on embedded inputs, as far as this machine allows; say what was skipped."""
    from kitctl.pipeline.demo import run_demo

    root = data_root or config().data_root / "demo"
    console.print(f"[bold]llmc-kit demo[/]: embedded tinyshakespeare + GPT-2 BPE, data root {root}")
    results = run_demo(root, lambda s: console.print(s, highlight=False), steps)
    table = Table(title="demo summary")
    for col in ("step", "status", "detail"):
        table.add_column(col)
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
