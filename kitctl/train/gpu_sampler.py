"""Peak GPU memory while something runs: ``nvidia-smi --query-gpu=index,memory.used -lms N`` in the background."""
from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Any, Optional

from kitctl.core import proc


class MemorySampler:
    """Peak ``memory.used`` (MiB, max over the given GPUs) while the block runs; ``peak_mib`` is None without
    nvidia-smi. The sampler is started through the one process runner (its own process group, stopped on exit)."""

    def __init__(self, indices: list[int], nvidia_smi: str = "nvidia-smi", interval_ms: int = 100):
        self.indices, self.nvidia_smi, self.interval_ms = indices, nvidia_smi, interval_ms
        self.peak_mib: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.thread: Optional[threading.Thread] = None

    def __enter__(self) -> MemorySampler:
        exe = shutil.which(self.nvidia_smi)
        if exe is None:
            return self
        self.proc = proc.start([exe, "--query-gpu=index,memory.used", "--format=csv,noheader,nounits",
                                "-lms", str(self.interval_ms), "-i", ",".join(map(str, self.indices))])
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[1].isdigit():       # other lines (errors, merged stderr) are skipped
                v = int(parts[1])
                self.peak_mib = v if self.peak_mib is None else max(self.peak_mib, v)

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            proc.stop(self.proc, grace_s=5)
            if self.thread is not None:
                self.thread.join(timeout=10)
