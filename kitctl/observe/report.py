"""``kitctl report``: loss and HellaSwag curves of one or more runs against the GPT-2 / GPT-3 reference numbers.

Plots with matplotlib's Agg backend (no display needed). ``.png`` writes the figure; ``.html`` writes one
self-contained page (the PNG embedded as base64, plus a table of each run's numbers and the references).

Reference lines, each labelled with where the number comes from:

* OpenAI GPT-2 124M checkpoint, val loss on FineWeb as llm.c measures it: 3.424958, the ``loss_baseline["124M"]``
  of llm.c's ``dev/vislog.ipynb`` at the pinned commit f1e2ace. (That is FineWeb "classic" val, shard 0 of
  ``kitctl data``'s fineweb10B; on FineWeb-Edu the same checkpoint scores differently, so the line is only a
  like-for-like target for FineWeb runs.)
* OpenAI GPT-2 124M checkpoint, HellaSwag acc_norm 0.294463 (29.4%): ``hella2_baseline`` in the same notebook,
  quoted in llm.c discussion #481.
* GPT-3 124M (Small), HellaSwag 0.337 (33.7%): ``hella3_baseline`` in the same notebook, from the GPT-3 paper
  (Brown et al. 2020, zero-shot HellaSwag of GPT-3 Small).
"""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from kitctl.core.errors import ConfigError, KitError
from kitctl.core.files import is_disk_full, open_regular, write_atomic
from kitctl.core.llmc_files import MAIN_LOG, STDOUT_LOG
from kitctl.core.run_folder import RunFolder, last_logged, table_values
from kitctl.observe.logs import RunLogs, read_run

VISLOG = "llm.c dev/vislog.ipynb @f1e2ace"


@dataclass(frozen=True)
class Reference:
    value: float
    label: str
    source: str


GPT2_124M_VAL_LOSS = Reference(3.424958, "OpenAI GPT-2 124M checkpoint val loss (FineWeb)", f"{VISLOG}, loss_baseline['124M']")
GPT2_124M_HELLASWAG = Reference(0.294463, "OpenAI GPT-2 124M checkpoint HellaSwag 29.4%",
                                f"{VISLOG}, hella2_baseline['124M']; llm.c discussion #481")
GPT3_124M_HELLASWAG = Reference(0.337, "OpenAI GPT-3 124M HellaSwag 33.7%",
                                f"{VISLOG}, hella3_baseline['124M']; GPT-3 paper (Brown et al. 2020)")
REFERENCES = (GPT2_124M_VAL_LOSS, GPT2_124M_HELLASWAG, GPT3_124M_HELLASWAG)

# More columns of the runs table: name -> (run folder -> text), from areas observe does not import
_RUN_COLUMNS: dict[str, Callable[[Path], str]] = {}


def add_run_column(name: str, column: Callable[[Path], str]) -> None:
    """The hook: a column of the runs table that an area above observe computes (kitctl/cli.py adds `kitctl
    eval`'s results, kitctl.model.record.eval_summary: model is observe's sibling). Adding a name again replaces
    its column."""
    _RUN_COLUMNS[name] = column


def _plain(text: str) -> str:
    """A run name as literal matplotlib text: a ``$`` would otherwise start mathtext (and a stray one fail)."""
    return text.replace("$", r"\$")


# values beyond this are off any loss or accuracy chart (and near float's limit matplotlib's axis arithmetic
# overflows): they are left out of the curves, like NaN and inf; the table and the divergence mark say so
PLOT_LIMIT = 1e30


def _plottable(v: float) -> bool:
    return math.isfinite(v) and abs(v) <= PLOT_LIMIT


def _xy(series: dict[int, float]) -> tuple[list[int], list[float]]:
    steps = sorted(s for s in series if _plottable(series[s]))
    return steps, [series[s] for s in steps]


# the shard prefix of the dataset each reference line belongs to (datasets/fineweb10B.yaml's prefix: FineWeb
# "classic"; edu_fineweb is another dataset): the val-loss line is drawn only over runs trained on it
FINEWEB_PREFIX = "fineweb"
HEAD_BYTES = 64 << 10


def data_prefix(r: RunLogs) -> Optional[str]:
    """The shard prefix of the data a run trained on (llm.c's "train data pattern" line at the top of stdout.log:
    ``.../fineweb_train_*.bin`` -> ``fineweb``); None when the run's stdout.log does not say."""
    try:
        with open_regular(RunFolder(r.run_dir).stdout_log, STDOUT_LOG) as f:
            head = f.read(HEAD_BYTES).decode("utf-8", "replace")
    except (OSError, KitError):
        return None
    found = table_values(head, "train data pattern")
    if found:
        name = Path(found[0].split()[0]).name
        return name.split("_train_")[0] if "_train_" in name else None
    return None


def val_loss_reference(runs: list[RunLogs]) -> Optional[Reference]:
    """The GPT-2 val-loss line when a plotted run trained on its dataset (FineWeb), else None: FineWeb's number
    over a tinyshakespeare run compares nothing."""
    return GPT2_124M_VAL_LOSS if any(data_prefix(r) == FINEWEB_PREFIX for r in runs) else None
def _mark_divergence(ax, r: RunLogs, colour: str, name: str) -> None:
    """A vertical line at the step since which the run's loss is NaN/inf, labelled with it."""
    d = r.diverged
    if d is not None:
        ax.axvline(d.step, color=colour, linestyle=":", linewidth=2, label=f"{name}: {d.describe()}")


def figure(runs: list[RunLogs]):
    import matplotlib      # third party, imported on first use: ~0.25 s that other commands should not pay

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 6), dpi=100, layout="constrained")
    ax_loss, ax_hs = fig.subplots(1, 2)
    colours = [f"C{i}" for i in range(10)]
    for i, r in enumerate(runs):
        c = colours[i % len(colours)]
        name = _plain(r.name)
        trl, tel = r.streams.get("loss/train"), r.streams.get("loss/val")
        if trl:
            noisy = len(trl) > 300      # long runs: a faint band under the val curve; short runs: a clear line
            xs, ys = _xy(trl)
            ax_loss.plot(xs, ys, color=c, alpha=0.35 if noisy else 0.7, linewidth=0.8 if noisy else 1.2,
                         label=f"{name} train loss")
        if tel:
            xs, vals = _xy(tel)
            ax_loss.plot(xs, vals, color=c, linewidth=2, marker="." if len(tel) < 60 else None,
                         label=f"{name} val loss")
        _mark_divergence(ax_loss, r, c, name)
        hs = r.streams.get("eval/hellaswag_acc")
        if hs:
            ax_hs.plot(*_xy(hs), color=c, linewidth=2, marker="." if len(hs) < 60 else None, label=name)
    ref = val_loss_reference(runs)
    if ref is not None:
        ax_loss.axhline(ref.value, color="r", linestyle="--",
                        label=f"{ref.label}: {ref.value:.4f}\n  source: {ref.source}")
    ax_loss.set_xlabel("step")
    # the whole curve (from ~11 at step 0), on a log axis so the part near the reference stays readable
    # (a log axis needs a positive value to show: a log of only NaN/inf or 0 keeps the linear axis)
    curves = [ln for ln in ax_loss.get_lines() if ln.get_label().endswith(("train loss", "val loss"))]
    if any(y > 0 for ln in curves for y in ln.get_ydata()):
        ax_loss.set_yscale("log")
        from matplotlib.ticker import FormatStrFormatter
        for set_formatter in (ax_loss.yaxis.set_major_formatter, ax_loss.yaxis.set_minor_formatter):
            set_formatter(FormatStrFormatter("%g"))      # 3 4 5 6 ... 10, not 3x10^0
    ax_loss.set_ylabel("loss (log scale)" if ax_loss.get_yscale() == "log" else "loss")
    ax_loss.set_title("Loss" + ("" if ref is not None else " (no FineWeb run: no GPT-2 val-loss reference)"))
    ax_loss.grid(True, alpha=0.3, which="both")
    # legends below the plots: they never cover a curve or a reference line
    ax_loss.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    for ref, colour in ((GPT2_124M_HELLASWAG, "r"), (GPT3_124M_HELLASWAG, "g")):
        ax_hs.axhline(ref.value, color=colour, linestyle="--", label=f"{ref.label}\n  source: {ref.source}")
    ax_hs.set_xlabel("step")
    ax_hs.set_ylabel("HellaSwag accuracy (acc_norm)")
    ax_hs.set_title("HellaSwag eval")
    ax_hs.grid(True, alpha=0.3)
    if not any(r.streams.get("eval/hellaswag_acc") for r in runs):
        ax_hs.text(0.5, 0.85, "no HellaSwag evals logged\n(llm.c logs them with -h 1)", ha="center",
                   va="center", transform=ax_hs.transAxes, color="0.4")
        ax_hs.set_xlim(ax_loss.get_xlim())
        ax_hs.set_ylim(0.2, 0.4)
    ax_hs.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    fig.suptitle("llm.c GPT-2 (124M): " + ", ".join(_plain(r.name) for r in runs), fontsize=11)
    return fig


def png_bytes(runs: list[RunLogs]) -> bytes:
    buf = io.BytesIO()
    figure(runs).savefig(buf, format="png")
    return buf.getvalue()


def _last(r: RunLogs, tag: str, fmt: str) -> str:
    v = r.last(tag)
    return f"{fmt.format(v[1])} (step {v[0]})" if v else "-"


def _best(r: RunLogs, tag: str, fmt: str, fn=min) -> str:
    s = {k: v for k, v in (r.streams.get(tag) or {}).items() if math.isfinite(v)}
    if not s:
        return "-"
    k = fn(s, key=s.__getitem__)
    return f"{fmt.format(s[k])} (step {k})"


def summary_rows(runs: list[RunLogs]) -> list[dict[str, str]]:
    rows = []
    for r in runs:
        tok = r.streams.get("perf/tokens_per_sec") or {}
        rows.append({
            "run": r.name,
            "steps": f"{r.steps_done or 0}" + (f" / {r.total_steps}" if r.total_steps else ""),
            "last train loss": _last(r, "loss/train", "{:.4f}"),
            "last val loss": _last(r, "loss/val", "{:.4f}"),
            "min val loss": _best(r, "loss/val", "{:.4f}", min),
            "last HellaSwag": _last(r, "eval/hellaswag_acc", "{:.4f}"),
            "best HellaSwag": _best(r, "eval/hellaswag_acc", "{:.4f}", max),
            "tok/s (last)": f"{tok[last_logged(tok)]:,.0f}" if tok else "-",
            "diverged": r.diverged.describe() if r.diverged else "-",
            **{name: column(r.run_dir) for name, column in _RUN_COLUMNS.items()},
        })
    return rows


def html_page(runs: list[RunLogs], png: bytes) -> str:
    rows = summary_rows(runs)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    shown = [r for r in REFERENCES if r is not GPT2_124M_VAL_LOSS or val_loss_reference(runs) is not None]
    refs = "".join(f"<tr><td>{html.escape(r.label)}</td><td>{r.value}</td><td>{html.escape(r.source)}</td></tr>"
                   for r in shown)
    folders = "".join(f"<li><code>{html.escape(str(r.run_dir))}</code></li>" for r in runs)
    b64 = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>llm.c runs: {html.escape(", ".join(r["run"] for r in rows))}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>llm.c training report</h1>
<img alt="loss and HellaSwag curves" src="data:image/png;base64,{b64}">
<h2>Runs</h2><table><tr>{head}</tr>{body}</table>
<h2>Reference lines</h2><table><tr><th>reference</th><th>value</th><th>source</th></tr>{refs}</table>
<p>Run folders:</p><ul>{folders}</ul>
<p>Made by <code>kitctl report</code>; values are the last logged for each step of <code>{MAIN_LOG}</code>.</p>
</body></html>
"""


def check_out(out: Path) -> str:
    """The report's format from ``--out`` (png or html); a ConfigError for anything else or a folder."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise ConfigError(f"--out {out}: the report is written as .png or .html", "e.g. --out report.png")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder", f"name the file to write, e.g. --out {out / ('report' + suffix)}")
    return "png" if suffix == ".png" else "html"


class NothingToPlot(KitError):
    """No run has a loss logged yet (a state, not a failure: `kitctl report` says so and exits 0)."""


def write_report(runs_in: list[Path], out: Path, labels: Optional[list[str]] = None,
                 ) -> tuple[list[RunLogs], list[Path]]:
    """Write the report atomically (a temp file renamed onto ``out``: never a partial report under its name);
    returns (the runs plotted, runs skipped because they logged no loss yet).

    A run is a run folder or a main.log file; ``labels`` (one per run) replace the names in the legend."""
    fmt = check_out(out)
    labels = list(labels or [])
    if labels and len(labels) != len(runs_in):
        raise ConfigError(f"{len(labels)} --label for {len(runs_in)} run(s)", "give one --label per run, in order")
    read = [read_run(d, labels[i] if labels else "") for i, d in enumerate(runs_in)]
    has_loss = [bool(r.streams.get("loss/train") or r.streams.get("loss/val")) for r in read]
    if not any(has_loss):
        where = ", ".join(str(p if p.is_file() else p / MAIN_LOG) for p in runs_in)
        raise NothingToPlot(f"nothing to plot yet: no loss logged in {where}",
                       "llm.c writes main.log from its first step (train with an output dir, `-o`); "
                       "check the run with `kitctl status`")
    runs = [r for r, ok in zip(read, has_loss, strict=True) if ok]
    png = png_bytes(runs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, png if fmt == "png" else html_page(runs, png))
    except OSError as e:
        if is_disk_full(e):
            raise
        raise ConfigError(f"cannot write the report to {out}: {e.strerror or e}",
                          "pass --out with a path in a folder you can write, e.g. --out ./report.png") from None
    return runs, [p for p, ok in zip(runs_in, has_loss, strict=True) if not ok]
