#!/usr/bin/env bash
# Device validation of `kitctl reproduce` (issue 12), 1 GPU, native runtime, no network:
#   a local FineWeb-format parquet (made here from the kit's embedded tinyshakespeare) + a local HellaSwag jsonl,
#   every stage, SIGINT during training (after the step-INT_AT checkpoint), the same command again, report.html;
#   then the train stage's forecast vs its measured time (from <run>/reproduce.json).
# Needs (carried into the device's working tree): .whl/*.whl (the kit + its pinned wheels), .llmc-src/llm.c
# (or the tarball), .devwork/cfe/include (cudnn-frontend headers), as in docs/validation/2026-11-28-h200x2-kit.
# Usage: bash docs/validation/reproduce-1gpu/run.sh   (writes into $OUT, default ./out)
set -u; set -m
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=160
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
export KIT_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)   # build for this GPU only
STEPS=${STEPS:-300} EVERY=${EVERY:-100} INT_AT=${INT_AT:-200}       # train steps, -n, the checkpoint to interrupt after
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpus.csv"

# inputs: ~50 M tokens of FineWeb-shaped parquet (text + FineWeb's other columns), 2,000 HellaSwag-shaped examples
python3 - <<'PY'
import json, numpy as np, pyarrow as pa, pyarrow.parquet as pq
from kitctl.core import resources
paras = [p for p in resources.share("datasets", "files", "tinyshakespeare.txt").read_text().split("\n\n") if p.strip()]
rng = np.random.default_rng(0)
docs = ["\n\n".join(paras[j] for j in rng.integers(0, len(paras), rng.integers(4, 40))) for _ in range(60_000)]
t = pa.table({"text": docs, "id": [f"<urn:uuid:{i}>" for i in range(len(docs))], "dump": ["CC-MAIN-2024-10"] * len(docs),
              "url": [f"https://example.org/{i}" for i in range(len(docs))], "language": ["en"] * len(docs)})
pq.write_table(t, "/tmp/fineweb_local.parquet", row_group_size=2000)
E = ["went home.", "sat down on the chair.", "began to sing loudly.", "opened the window."]
with open("/tmp/hellaswag_val.jsonl", "w") as f:
    for i in range(2000):
        f.write(json.dumps({"ctx": paras[i % len(paras)][:200], "endings": E[i % 4:] + E[:i % 4], "label": i % 4}) + "\n")
print("parquet", sum(len(d) for d in docs) / 1e6, "MB of text")
PY
R="python3 -m kitctl reproduce gpt2-124m --runtime native --dataset /tmp/fineweb_local.parquet \
   --hellaswag-source /tmp/hellaswag_val.jsonl --llmc-src .llmc-src/llm.c --cudnn-frontend .devwork/cfe/include \
   --shard-size 10000000 --steps $STEPS -- -n $EVERY"
$R --dry-run > "$OUT/plan.txt" 2>&1; cat "$OUT/plan.txt"
$R --dry-run --json > "$OUT/plan.json" 2>&1
echo "== session 1 (SIGINT after the step-$INT_AT checkpoint)"; s=$(date +%s)
$R > "$OUT/session1.txt" 2>&1 & k=$!
D=/tmp/kd/runs/gpt2-124m/$(printf 'DONE_%08d' $INT_AT)
for i in $(seq 3000); do [ -e $D ] && break; kill -0 $k 2>/dev/null || break; sleep 0.2; done
kill -INT $k; wait $k; echo "session 1 rc=$? $(( $(date +%s)-s ))s"; tail -4 "$OUT/session1.txt"
sleep 1; echo "left running: $(pgrep -c train_gpt2cu)"
python3 -m kitctl status gpt2-124m > "$OUT/status_interrupted.txt" 2>&1; cat "$OUT/status_interrupted.txt"
echo "== session 2 (the same command)"; s=$(date +%s)
$R > "$OUT/session2.txt" 2>&1; echo "session 2 rc=$? $(( $(date +%s)-s ))s"; tail -14 "$OUT/session2.txt"
cp /tmp/kd/runs/gpt2-124m/{reproduce.json,report.html,main.log,run.json} "$OUT/"; cp -r /tmp/kd/runs/gpt2-124m/logs "$OUT/"
python3 - <<'PY'
import json; s = json.load(open("/tmp/kd/runs/gpt2-124m/reproduce.json"))
for st in s["stages"]:
    f = st.get("forecast_seconds"); m = st["seconds"]
    print(f"{st['name']:10s} {st['status']:8s} sessions {st['sessions']}  measured {m:8.1f} s  forecast "
          + (f"{f:8.1f} s [{st['forecast_low']:.0f}-{st['forecast_high']:.0f}]  {100 * (m - f) / f:+.1f}%" if f else "-"))
PY
