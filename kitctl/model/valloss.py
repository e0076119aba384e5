"""Device check of an export: transformers' loss on llm.c's val shard vs the val loss llm.c printed at that step.

    python -m kitctl.model.valloss EXPORT_DIR [--shard <data>/fineweb_val_000000.bin] [--run RUN_DIR]

Needs numpy, torch and transformers; run.json and main.log are read through the run folder
(``kitctl.core.run_folder.RunFolder``: the typed ``RunRecord``, the one main.log parser), llmc_export.json as its
writer's typed record (``kitctl.model.export.ExportRecord``).
It reproduces llm.c's validation exactly as train_gpt2.cu (f1e2ace) does it: the val loader is not shuffled, batch
i of rank r reads B*T+1 tokens at token offset (i*P + r)*B*T of the shard (P = number of processes), targets are
the inputs shifted by one, and the loss is the mean over all val_num_batches*P*B*T positions (softmax over the
real vocab V, not the padded Vp). B, T, P and val_num_batches default to what the run's stdout.log table says
(``| micro batch size B``, ``| sequence length T``, ``| num_processes``, ``| val_num_batches``); llm.c's loss at
the checkpoint's step comes from main.log (``s:<step> tel:<loss>``). The run folder and step default to the
export's llmc_export.json (written by ``kitctl export-model``), the shard to the data folder in the run's run.json.
Exit 0 when |difference| <= --tol (0.01), 1 when not.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from kitctl.core.errors import KitError
from kitctl.core.llmc_files import HEADER_BYTES, MAIN_LOG, TOKEN_DTYPE, HeaderError, shard_filename, unpack_shard_header
from kitctl.core.run_folder import MAIN_TAGS, RunFolder, read_main_log, table_values
from kitctl.model.export import RECORD as EXPORT_RECORD
from kitctl.model.export import ExportRecord

TABLE = {"B": "micro batch size B", "T": "sequence length T", "P": "num_processes", "batches": "val_num_batches"}


def read_shard(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
    try:
        n = unpack_shard_header(head)
    except HeaderError as e:
        raise SystemExit(f"error: {path} is not an llm.c token shard ({e})") from None
    toks = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES)
    if len(toks) != n:
        raise SystemExit(f"error: {path}: header says {n} tokens, file has {len(toks)} (truncated?)")
    return toks


def llmc_rows(tokens: np.ndarray, B: int, T: int, P: int, batches: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each (batches*P*B, T), in llm.c's val loader order (wrapping like dataloader_reset)."""
    per_batch = P * B * T
    samples = (len(tokens) - 1) // per_batch          # llm.c's shard_num_samples
    if samples < 1:
        raise SystemExit(f"error: the shard holds {len(tokens)} tokens, fewer than one batch of {per_batch + 1}")
    xs, ys = [], []
    for i in range(batches):
        base = (i % samples) * per_batch              # past the end llm.c starts the (single) val shard again
        for r in range(P):
            buf = np.asarray(tokens[base + r * B * T: base + (r + 1) * B * T + 1], dtype=np.int64)
            xs.append(buf[:-1].reshape(B, T))
            ys.append(buf[1:].reshape(B, T))
    return np.concatenate(xs), np.concatenate(ys)


def table_value(stdout_log: Path, label: str) -> Optional[int]:
    if not stdout_log.is_file():
        return None
    found = [v for v in table_values(stdout_log.read_text(errors="replace"), label) if re.fullmatch(r"-?\d+", v)]
    return int(found[-1]) if found else None          # the last run's table (a resumed run prints it again)


def llmc_val_loss(main_log: Path, step: int) -> Optional[float]:
    """llm.c's val loss at ``step`` (main.log's ``s:<step> tel:<loss>``, the last logged): None when it has none
    or it is not a finite number."""
    if not main_log.is_file():
        return None
    val = read_main_log(main_log)[0].get(MAIN_TAGS["tel"], {}).get(step)
    return val if val is not None and math.isfinite(val) else None


def val_shard_of(run: Optional[Path]) -> Optional[Path]:
    """``<dir>/<prefix>_val_000000.bin`` of the shards the run trained on, as ``kitctl train`` records them."""
    if run is None:
        return None
    rec, _ = RunFolder(run).load()     # a missing or damaged run.json: no default (--shard gives it)
    data = rec.data if rec is not None else None
    if data is None or not data.dir or not data.prefix:
        return None
    return Path(data.dir) / shard_filename(data.prefix, 0)


def hf_val_loss(export: Path, x: np.ndarray, y: np.ndarray, device: str, chunk: int, dtype: str) -> float:
    import torch     # torch/transformers: optional (the test-model/eval extras), and seconds to import
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(str(export), dtype=getattr(torch, dtype))
    model = model.to(device).eval()  # type: ignore[arg-type]   # transformers' stubs wrap .to oddly
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(x), chunk):
            xi = torch.from_numpy(x[s:s + chunk]).to(device)
            yi = torch.from_numpy(y[s:s + chunk]).to(device)
            logits = model(xi).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), yi.reshape(-1),
                                                     reduction="sum")
            total += float(loss)
            count += yi.numel()
    return total / count


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", type=Path, help="export folder (kitctl export-model)")
    ap.add_argument("--shard", type=Path, help="llm.c's val shard (default: <data dir>/<prefix>_val_000000.bin "
                                              "from the run's run.json)")
    ap.add_argument("--run", type=Path, help="run folder with main.log + stdout.log (default: the checkpoint's)")
    ap.add_argument("--step", type=int, help="step of llm.c's val loss (default: the checkpoint's)")
    ap.add_argument("-B", type=int, help="micro batch size (default: the run's stdout.log)")
    ap.add_argument("-T", type=int, help="sequence length (default: the run's stdout.log)")
    ap.add_argument("-P", "--procs", type=int, dest="P", help="number of processes (default: stdout.log, else 1)")
    ap.add_argument("--batches", type=int, help="val_num_batches (default: stdout.log, else llm.c's 20)")
    ap.add_argument("--llmc-loss", type=float, help="llm.c's val loss (default: main.log at --step)")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    ap.add_argument("--chunk", type=int, default=8, help="rows per forward pass")
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    a = ap.parse_args(argv)

    rec: Optional[ExportRecord] = None
    if (a.export / EXPORT_RECORD).is_file():
        try:
            rec = ExportRecord.read(a.export / EXPORT_RECORD)
        except KitError as e:
            raise SystemExit(f"error: {e.message}") from None
    run = a.run or (Path(rec.source).parent if rec is not None else None)
    step = a.step if a.step is not None else (rec.step if rec is not None else None)
    out_log = RunFolder(run).stdout_log if run else Path("/nonexistent")
    found: dict[str, Optional[int]] = {k: getattr(a, k) if getattr(a, k) is not None else table_value(out_log, lab)
                                       for k, lab in TABLE.items()}
    missing = [k for k in ("B", "T") if not found[k]]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} unknown: pass {' '.join('-' + k for k in missing)} "
                         "(or --run with the run's stdout.log)")
    dims: dict[str, int] = {"B": found["B"] or 0, "T": found["T"] or 0, "P": found["P"] or 1,
                            "batches": found["batches"] or 20}       # llm.c's defaults: 1 process, -m 20
    want = a.llmc_loss
    if want is None and run is not None and step is not None:
        want = llmc_val_loss(RunFolder(run).main_log, step)
    if want is None:
        raise SystemExit(f"error: no llm.c val loss for step {step} in {run}/{MAIN_LOG}: pass --llmc-loss "
                         "(and --run / --step), or check the run logged a val loss at that step (-v)")

    shard = a.shard or val_shard_of(run)
    if shard is None:
        raise SystemExit(f"error: no --shard given and {run}/run.json names no data folder: pass --shard")

    import torch     # optional, as above: only after the arguments and files are checked

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    toks = read_shard(shard)
    x, y = llmc_rows(toks, dims["B"], dims["T"], dims["P"], dims["batches"])
    t0 = time.time()
    got = hf_val_loss(a.export, x, y, device, a.chunk, a.dtype)
    diff = got - want
    res = {"export": str(a.export), "shard": str(shard), "run": str(run), "step": step, **dims,
           "tokens": int(x.size), "transformers_loss": round(got, 6), "llmc_loss": want,
           "difference": round(diff, 6), "tol": a.tol, "ok": abs(diff) <= a.tol, "device": device,
           "dtype": a.dtype, "seconds": round(time.time() - t0, 1)}
    print(f"step {step}: transformers val loss {got:.4f} vs llm.c {want:.4f} (difference {diff:+.4f}, "
          f"tolerance {a.tol}) over {x.size:,} tokens [B={dims['B']} T={dims['T']} P={dims['P']} "
          f"batches={dims['batches']}, {device}, {a.dtype}]: {'OK' if res['ok'] else 'MISMATCH'}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
