"""How ``kitctl reproduce`` shows its plan and its outcome (rich tables; no logic beyond formatting)."""
from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table

from kitctl.core.pipeline_state import PipelineState
from kitctl.core.progress import format_duration
from kitctl.host import docker_disk
from kitctl.host import disks
from kitctl.pipeline.forecast import Forecast, filesystems, remaining_disk, remaining_docker


def size(n: float) -> str:
    if n <= 0:
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:,.1f} GB"
    if n >= 1e6:
        return f"{n / 1e6:,.0f} MB"
    return f"{n / 1e3:,.0f} KB"


def span(point: float, low: float, high: float) -> str:
    if not math.isfinite(point):
        return "?"
    if point <= 0:
        return "-"
    if abs(high - low) < 1:
        return format_duration(point)
    return f"{format_duration(point)} ({format_duration(low)} - {format_duration(high)})"


def plan_table(fc: Forecast, title: str) -> Table:
    t = Table(title=title, title_justify="left", show_lines=False)
    for col in ("stage", "status"):
        t.add_column(col)
    t.add_column("disk", justify="right")
    t.add_column("download", justify="right")
    t.add_column("time (range)")
    t.add_column("what", overflow="fold")
    if fc.price_per_gpu_hour is not None:
        t.add_column("cost", justify="right")
    for s in fc.stages:
        row = [s.name, s.status, size(s.disk_bytes) if s.on_data_root else size(s.docker_bytes) + " (docker)",
               size(s.download_bytes), span(s.seconds, s.low, s.high), escape(s.detail)]
        if fc.price_per_gpu_hour is not None:
            row.append(f"${s.cost:,.2f}" if s.cost is not None else "-")
        t.add_row(*row)
    disk = size(fc.disk_bytes) + (f" + {size(fc.docker_bytes)} (docker)" if fc.docker_bytes else "")
    when = span(fc.seconds, fc.low, fc.high)
    if not math.isfinite(fc.seconds):       # the train stage is not planned (no GPUs known): the rest is
        known = [s for s in fc.stages if math.isfinite(s.seconds)]
        when = span(sum(s.seconds for s in known), sum(s.low for s in known), sum(s.high for s in known)) + " + train"
    total = ["total", "", disk, size(fc.download_bytes), when,
             f"{fc.box.label}" + (f", {fc.box.cpus} CPUs, {fc.box.net_bytes_per_s * 8 / 1e6:.0f} Mbit/s assumed"
                                  if fc.stage("data").status not in ("done", "skipped") else "")]
    if fc.price_per_gpu_hour is not None:
        total.append(f"${fc.cost:,.2f}")
    t.add_row(*total, style="bold")
    return t


def plan_lines(fc: Forecast) -> list[str]:
    out = []
    if fc.price_per_gpu_hour is not None:
        out.append(f"cost: {fc.box.gpus} GPU(s) x ${fc.price_per_gpu_hour:g}/GPU-hour for the whole pipeline's time "
                   f"(the box is rented while it downloads and tokenizes too): ${fc.cost:,.2f}; training alone "
                   f"${fc.stage('train').cost or 0:,.2f}")
    if fc.stage("train").status != "done":
        out.append(f"time to the first training step: ~{format_duration(fc.first_step_seconds)}"
                   + (f" (the dataset download overlaps the build by ~{format_duration(fc.overlap[0])})"
                      if fc.overlap[0] else ""))
    need = remaining_disk(fc)
    if fc.box.free_bytes is not None:
        out.append(f"data root: {size(fc.box.free_bytes)} free, the stages still to run need {size(need)}")
    if fc.docker_bytes:
        where = fc.box.docker_root or "by default /var/lib/docker, often on the system disk"
        free = f"{size(fc.box.docker_free_bytes)} free, " if fc.box.docker_free_bytes is not None else ""
        out.append(f"Docker's storage ({where}): {free}the stages still to run put {size(remaining_docker(fc))} "
                   f"there (images and build cache: {size(fc.docker_bytes)} in all), apart from the data root; "
                   "`kitctl doctor` checks its free space")
        if fc.box.docker_free_bytes is not None and fc.box.docker_free_bytes < remaining_docker(fc):
            out.append("Docker's storage is too small for this plan: " + docker_disk.move_hint()
                       + "; or the smaller wheels provider (provider: wheels), or a prebuilt image (docs/images.md)")
    for f in filesystems(fc):
        if f.shared or f.ok is False:      # one disk for several purposes: their sum against its free space
            status, detail, meaning = disks.verdict(f, fc.build_kind or "nvidia")
            out.append(f"{'one disk' if f.shared else 'disk'}: {detail}" + (f": {meaning}" if meaning else " (ok)"))
    out += source_lines(fc)
    out += [f"note: {n}" for n in fc.notes]
    return out


def source_lines(fc: Forecast) -> list[str]:
    """Per stage still to run, where its downloads come from after mirrors (`kitctl doctor` probes them)."""
    rows = [f"  {s.name}: " + "; ".join(f"{what} {where}" for what, where in s.sources)
            for s in fc.stages if s.sources]
    if not rows:
        return ["downloads: none (every input is here)"]
    return ["downloads from (after mirrors; `kitctl doctor` checks each host):", *rows]


def outcome_table(state: PipelineState) -> Table:
    t = Table(title="kitctl reproduce", title_justify="left")
    for col in ("stage", "status", "time", "forecast", "detail"):
        t.add_column(col, overflow="fold")
    colour = {"done": "green", "skipped": "yellow", "failed": "red", "interrupted": "red", "running": "cyan"}
    for s in state.stages:
        fcast = "-"
        if s.forecast_seconds is not None and math.isfinite(s.forecast_seconds):
            fcast = format_duration(s.forecast_seconds)
            if s.seconds and s.forecast_seconds > 0 and s.status == "done":
                fcast += f" ({100 * (s.seconds - s.forecast_seconds) / s.forecast_seconds:+.0f}%)"
        t.add_row(s.name, f"[{colour.get(s.status, 'white')}]{s.status}[/]",
                  format_duration(s.seconds) if s.seconds else "-", fcast, escape(s.detail))
    return t
