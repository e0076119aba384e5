#!/usr/bin/env bash
# Device call: bare llm.c f1e2ace (BF16 + cuDNN, sm_90), a B x recompute sweep at -d 524288 T=1024 d12 on 1 GPU,
# each config 30 steps, tokens/s = 524288 / median step time of steps 6..30 (llm.c's per-step ms, not its EMA); configs interleaved and the
# two candidates for the default (B=16 -r 0 / -r 1) run three times each, to see the run-to-run spread.
set -u
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
O=$OUT; nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $O/gpus.csv
nvcc --version | tail -1; python3 -m pip list 2>/dev/null > $O/piplist.txt; python3 --version
s=$(date +%s)
bash native/build.sh --src .llmc-src/llm.c --out /tmp/bin --arch 90 --cudnn 1 --cudnn-frontend .devwork/cfe/include > $O/build.txt 2>&1
echo "build rc=$? $(( $(date +%s)-s ))s"; tail -2 $O/build.txt; ls -la /tmp/bin
python3 - <<'PY'
import numpy as np, os
os.makedirs("/tmp/rand", exist_ok=True)
rng = np.random.default_rng(0)
for name, n in (("rand_val_000000.bin", 1 << 20), ("rand_train_000001.bin", 30_000_000)):
    h = np.zeros(256, np.int32); h[0], h[1], h[2] = 20240520, 1, n
    with open(f"/tmp/rand/{name}", "wb") as f:
        f.write(h.tobytes()); f.write(rng.integers(0, 50257, n, dtype=np.uint16).tobytes())
print("shards ok")
PY
run() {  # B r tag
  /tmp/bin/train_gpt2cu -i '/tmp/rand/rand_train_*.bin' -j '/tmp/rand/rand_val_*.bin' -e d12 -b $1 -t 1024 -d 524288 \
    -r $2 -x 30 -v 100000 -m 1 -s 0 -h 0 -u 700 -l 0.0006 -z 1 -c 0.1 > $O/run_b$1_r$2_$3.txt 2>&1
  local rc=$?
  python3 - "$O/run_b$1_r$2_$3.txt" "$1" "$2" "$3" "$rc" <<'PY'
import re, statistics, sys
path, b, r, tag, rc = sys.argv[1:]
toks = [(int(m.group(1)), 524288 / (float(m.group(2)) / 1000)) for m in re.finditer(r"step\s+(\d+)/\d+ .*?\|\s*([\d.]+) ms \|", open(path, errors="replace").read())]
vals = [t for s, t in toks if s >= 6]
mem = re.findall(r"allocated (\d+) MiB", open(path, errors="replace").read())
print(f"B={b} r={r} run={tag} rc={rc} steps={len(toks)} median={statistics.median(vals) if vals else 0:.0f} mean={statistics.mean(vals) if vals else 0:.0f} mem={mem[-1] if mem else '?'}MiB")
PY
}
for rep in 1 2 3; do run 16 0 $rep; run 16 1 $rep; done
for cfg in "8 0" "8 1" "32 0" "64 1"; do run $cfg 1; done
