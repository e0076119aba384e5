"""``kitctl tune``: measure tokens/s of micro-batch x recompute on the GPUs themselves, cache the result.

tokens/s is not monotonic in B (1x H200, d12: B=16 -r 0 538K tok/s, B=32 -r 1 472K, B=64 -r 1 481K), so the
biggest B that fits is not the fastest. Tune runs train_gpt2cu for a few optimizer steps per configuration on
the same GPUs, data and binary as the training run (same ranks, through mpirun for ranks > 1, so the
all-reduce is in the measurement), with eval, sampling and checkpoints off and a throw-away output folder:

    -x STEPS -v 1000000000 -m 1 -s 0 -h 0 -n 0 -y 0      (-v 0 would divide by zero in llm.c)

tokens/s = total_batch / median(step ms) over the steps after the warm-up ones. A configuration that runs
out of memory is recorded as ``oom``. The record is cached in ``<data_root>/tune/*.json`` per GPU model, rank
count, driver, runtime (image id or native binary sha256), preset, precision, T and total batch; the planner
uses the fastest ``ok`` entry that is allowed for the run, else the memory model.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Optional

from kitctl.host.gpus import GPU

DEFAULT_STEPS = 20
DEFAULT_WARMUP = 5
BENCH_FLAGS = ["-v", "1000000000", "-m", "1", "-s", "0", "-h", "0", "-n", "0"]


def cache_key(gpus: list[GPU], precision: str, preset: str, runtime_id: str, T: int, total_batch: int) -> dict:
    return {"gpus": sorted({g.name for g in gpus}), "ranks": len(gpus), "driver": sorted({g.driver for g in gpus}),
            "runtime_id": runtime_id, "preset": preset, "precision": precision, "seq_len": T,
            "total_batch": total_batch}


def cache_path(tune_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    gpu = "+".join(key["gpus"]).replace("NVIDIA ", "").replace(" ", "_").replace("/", "_")
    return tune_dir / f"{key['preset']}-{gpu}-x{key['ranks']}-{key['precision']}-{digest}.json"


def load_records(tune_dir: Path) -> tuple[dict, ...]:
    out = []
    if tune_dir.is_dir():
        for p in sorted(tune_dir.glob("*.json")):
            try:
                rec = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(rec, dict) and "key" in rec:
                rec["_path"] = str(p)
                out.append(rec)
    return tuple(out)


def write_record(tune_dir: Path, key: dict, results: list[dict], steps: int, warmup: int,
                 extra: Optional[dict] = None) -> Path:
    tune_dir.mkdir(parents=True, exist_ok=True)
    ok = [r for r in results if r.get("status") == "ok"]
    rec = {"key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": steps,
           "warmup": warmup, "results": results,
           "best": max(ok, key=lambda r: r["tok_s"]) if ok else None, **(extra or {})}
    path = cache_path(tune_dir, key)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=2) + "\n")
    tmp.replace(path)
    return path


def sweep_configs(allowed_b: list[int], fits, recomputes=(0, 1), min_b: int = 8) -> list[tuple[int, int]]:
    """(B, recompute) pairs to measure, largest B first: every allowed B >= min_b whose predicted peak fits
    the GPU (``fits(B, r)`` without the planner's headroom: a measurement settles the borderline ones); if
    none >= min_b fits, the largest that does."""
    out = []
    for r in recomputes:
        cands = [b for b in allowed_b if fits(b, r)]
        big = [b for b in cands if b >= min_b]
        out += [(b, r) for b in (big or cands[:1])]
    return sorted(out, key=lambda br: (-br[0], br[1]))


# --------------------------------------------------------------------------------------------------- runner
def run_tune(cfg, req, console, inventory=None, mpirun: str = "/usr/bin/mpirun", steps: int = DEFAULT_STEPS,
             warmup: int = DEFAULT_WARMUP, min_b: int = 8, full: bool = False, dry_run: bool = False) -> dict:
    """Measure every (B, recompute) worth trying on the picked GPUs; write and return the cache record.

    ``full``: every B >= ``min_b`` allowed by the divisibility / shard rules and recompute 0, 1, 2, whatever
    the memory model says (the reference sweep to check the default sweep against).
    While each configuration runs, nvidia-smi samples memory.used of the picked GPUs; the peaks are stored
    per result (``peak_mib``) and printed as a series ready for kitctl/memory_model.yaml."""
    import dataclasses
    import uuid

    from kitctl.core.errors import KitError
    from kitctl.train.memory import default_model
    from kitctl.train.steplog import throughput
    from kitctl.train.planner import MICRO_BATCHES, build_plan, gpu_spec
    from kitctl.train.facts import OutState
    from kitctl.train.runner import gather_facts, launch, preflight, prepare_out, remove_tree

    if steps <= warmup + 2:
        raise KitError(f"--steps {steps} leaves fewer than 3 timed steps after {warmup} warm-up steps",
                       "use more --steps or fewer --warmup", exit_code=2)
    tune_dir = cfg.data_root / "tune"
    scratch = tune_dir / f"scratch-{uuid.uuid4().hex[:8]}"
    base_req = dataclasses.replace(req, steps=steps, bench=True, no_tune=True, fresh=False, out=scratch,
                                   micro_batch=None, recompute=None)
    facts = gather_facts(cfg, base_req, inventory, mpirun)
    facts = dataclasses.replace(facts, out=OutState(scratch), tune_records=())
    base = build_plan(base_req, facts)
    mem = default_model()
    gpus, precision = base.gpus, base.precision
    spec = gpu_spec(gpus)
    min_gpu = min(g.memory_gb for g in gpus)

    def allowed(b: int) -> bool:
        try:
            build_plan(dataclasses.replace(base_req, micro_batch=b, gpus=spec,
                                           precision=precision), facts)
            return True
        except KitError:
            return False

    allowed_b = [b for b in MICRO_BATCHES if allowed(b)]
    if full:
        configs = [(b, r) for b in allowed_b if b >= min_b for r in (0, 1, 2)]
    else:
        def fits(b: int, r: int) -> bool:
            return mem.predict(base.preset.descriptor, b, base.seq_len, r, precision, len(gpus),
                               base.preset.zero_stage, precision == "bf16").peak_gb <= min_gpu
        configs = sweep_configs(allowed_b, fits, min_b=min_b)
    rid = facts.runtime_ids.get(precision)
    key = cache_key(gpus, precision, base.preset.name, rid or "unknown", base.seq_len, base.total_batch)
    console.print(f"tune: {len(configs)} configs x {steps} steps ({warmup} warm-up) on "
                  f"{len(gpus)}x {gpus[0].name} ({precision}): "
                  + ", ".join(f"B={b} -r {r}" for b, r in configs))
    if dry_run:
        p = build_plan(dataclasses.replace(base_req, micro_batch=configs[0][0], recompute=configs[0][1],
                                           gpus=spec, precision=precision), facts)
        console.print("first config:", style="bold")
        sys.stdout.write(p.command_line() + "\n")
        sys.stdout.flush()
        return {"key": key, "configs": configs}
    if rid is None:
        raise KitError("cannot identify the runtime for the tune cache key (no image id / no native binary)",
                       "build the image or native binary first (kitctl build)")
    results: list[dict] = []
    last_plan = base
    try:
        for b, r in configs:
            r_req = dataclasses.replace(base_req, micro_batch=b, recompute=r,
                                        gpus=spec, precision=precision)
            plan = build_plan(r_req, facts)
            preflight(plan)
            remove_tree(scratch)
            prepare_out(plan)
            with MemorySampler([g.index for g in gpus]) as sampler:
                out = launch(plan, lambda s: None)
            if out.interrupted:
                raise KitError("tune interrupted: all ranks stopped; nothing was cached", exit_code=130)
            tok_s = throughput(out.steps, plan.total_batch, warmup)
            if out.rc == 0 and tok_s:
                res = {"micro_batch": b, "recompute": r, "status": "ok", "tok_s": round(tok_s),
                       "ms_median": round(plan.total_batch / tok_s * 1000, 2), "steps": len(out.steps)}
            elif out.oom_before_first_step or any("out of memory" in t for t in out.tail):
                res = {"micro_batch": b, "recompute": r, "status": "oom"}
            else:
                res = {"micro_batch": b, "recompute": r, "status": "failed", "rc": out.rc,
                       "tail": out.tail[-8:]}
            if sampler.peak_mib is not None:
                res["peak_mib"] = sampler.peak_mib
            results.append(res)
            console.print(f"  B={b:<3} -r {r}: " + (f"{res['tok_s']:>12,} tok/s" if res["status"] == "ok"
                                                    else res["status"])
                          + (f", peak {res['peak_mib']:,} MiB" if "peak_mib" in res else ""), highlight=False)
            last_plan = plan
    finally:
        remove_tree(scratch)
    series = memory_series(results, gpus, precision, base, last_plan if results else base)
    path = write_record(tune_dir, key, results, steps, warmup,
                        {"gpu_indices": [g.index for g in gpus], "full": full, "memory_series": series})
    if series:
        import yaml
        console.print("memory measured (peak nvidia-smi memory.used of the picked GPUs, other processes "
                      "included) as series for kitctl/memory_model.yaml:", style="bold")
        sys.stdout.write(yaml.safe_dump(series, sort_keys=False, width=200))
        sys.stdout.flush()
    ok = [x for x in results if x["status"] == "ok"]
    if not ok:
        raise KitError(f"no configuration ran (results in {path})", "see the failures recorded there")
    best = max(ok, key=lambda x: x["tok_s"])
    console.print(f"fastest: B={best['micro_batch']} -r {best['recompute']} at {best['tok_s']:,} tok/s; "
                  f"cached in {path} (kitctl train uses it unless --no-tune)")
    return json.loads(path.read_text())


def memory_series(results: list[dict], gpus: list[GPU], precision: str, base, plan) -> list[dict]:
    """memory_model.yaml series (one per recompute) from the peaks of the ``ok`` results."""
    out = []
    by_r: dict[int, dict[int, int]] = {}
    for res in results:
        if res.get("status") == "ok" and res.get("peak_mib"):
            by_r.setdefault(res["recompute"], {})[res["micro_batch"]] = res["peak_mib"]
    g = gpus[0]
    for r, pts in sorted(by_r.items()):
        args = list(plan.llmc_args)
        args[args.index("-b") + 1] = "B"
        args[args.index("-r") + 1] = str(r)
        out.append({
            "device": f"{len(gpus)}x {g.name} ({g.memory_mib} MiB), driver {g.driver}",
            "source": f"kitctl tune {time.strftime('%Y-%m-%d', time.gmtime())} ({Path(plan.binary).name})",
            "precision": precision, "cudnn": precision == "bf16", "descriptor": base.preset.descriptor,
            "seq_len": base.seq_len, "ranks": len(gpus), "zero_stage": base.preset.zero_stage, "recompute": r,
            "command": " ".join([Path(plan.binary).name, *args]),
            "points_mib": dict(sorted(pts.items())),
        })
    return out


class MemorySampler:
    """Peak ``memory.used`` (MiB, max over the given GPUs) while the block runs, from ``nvidia-smi -lms``;
    ``peak_mib`` is None without nvidia-smi."""

    def __init__(self, indices: list[int], nvidia_smi: str = "nvidia-smi", interval_ms: int = 100):
        self.indices, self.nvidia_smi, self.interval_ms = indices, nvidia_smi, interval_ms
        self.peak_mib: Optional[int] = None
        self.proc = None
        self.thread = None

    def __enter__(self):
        import shutil
        import subprocess
        import threading

        exe = shutil.which(self.nvidia_smi)
        if exe is None:
            return self
        try:
            self.proc = subprocess.Popen([exe, "--query-gpu=index,memory.used", "--format=csv,noheader,nounits",
                                          "-lms", str(self.interval_ms), "-i", ",".join(map(str, self.indices))],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
            return self
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[1].isdigit():
                v = int(parts[1])
                self.peak_mib = v if self.peak_mib is None else max(self.peak_mib, v)

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
            if self.thread is not None:
                self.thread.join(timeout=10)
