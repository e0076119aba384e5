"""What ``kitctl train`` shows while llm.c runs: the kit's one progress bar (``kitctl.core.progress``) fed by
step lines (loss, tokens/s, MFU, ms/step, ETA); other notable lines are printed above it. Without a terminal:
a line every 10 steps."""
from __future__ import annotations

import contextlib
import statistics
from typing import Any, Optional

from rich.console import Console

from kitctl.core.progress import Bar, format_duration, progress_bar
from kitctl.train.plan import Plan
from kitctl.core.run_folder import Step, parse_step
from kitctl.train.steplog import fmt_mfu

NOTABLE = ("val loss", "HellaSwag", "Writing checkpoint", "WARNING", "Error", "ERROR", "error", "out of memory",
           "generating", "Fell back")


def step_info(steps: list[Step], total_batch: int) -> str:
    """loss | tok/s (total batch / median of the last 20 step times, step 1 left out) | MFU | ms/step | ETA."""
    s = steps[-1]
    recent = [x.ms for x in steps[-20:] if x.step > 1] or [s.ms]
    ms = statistics.median(recent)
    tok_s = total_batch / (ms / 1000) if ms > 0 else 0.0
    eta = max(0, s.total - s.step) * ms / 1000
    return (f"loss {s.loss:.4f} | {tok_s:,.0f} tok/s | MFU {fmt_mfu(s.mfu)} | {ms:.0f} ms/step | "
            f"ETA {format_duration(eta)}")


class Display:
    def __init__(self, console: Console, plan: Plan, quiet: bool = False):
        self.console, self.plan, self.quiet = console, plan, quiet
        self.bar: Optional[Bar] = None
        self.n = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Display:
        if not self.quiet and self.console.is_terminal:
            self.bar = self._stack.enter_context(progress_bar(
                "[bold]train[/] {task.fields[info]}", total=self.plan.decisions.schedule.steps, console=self.console,
                unit="steps", completed=self.plan.decisions.resumption.resume_step or 0, info="starting…"))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def line(self, text: str, steps: list[Step]) -> None:
        if self.quiet:
            return
        st = parse_step(text)
        if st is not None:
            self.n += 1
            info = step_info(steps, self.plan.decisions.total_batch)
            if self.bar is not None:
                self.bar.update(completed=st.step, info=info)
            elif self.n == 1 or st.step % 10 == 0 or st.step == st.total:
                self.console.print(f"step {st.step}/{st.total} | {info}", highlight=False)
            return
        if any(k in text for k in NOTABLE):
            self.console.print(text, markup=False, highlight=False)
