# Sourced by the calls here: the kit from the carried wheels (the device has no internet), the native runtime.
set -u
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=160
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site KIT_DATA_ROOT=$PWD/data KIT_RUNTIME=native
K="python3 -m kitctl"; BIN=$KIT_DATA_ROOT/native/bin
git_head() { cat .devwork/head.txt 2>/dev/null; }
step() { local name=$1; shift; local s=$(date +%s%N); "$@" > $O/$name.txt 2>&1; local rc=$?; echo "$name rc=$rc $(( ($(date +%s%N)-s)/1000000 )) ms"; tail -${TAILN:-3} $O/$name.txt | cut -c1-300; }
rand_shards() {  # random-token shards in llm.c's format (the sweep needs no real text)
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
}
# One bare-llm.c config: B r tag. tokens/s = 524288 / median step ms of steps 6..X (X=30 unless set) (llm.c's per-step ms, not its EMA).
sweep_run() {
  local s=$(date +%s)
  $BIN/train_gpt2cu -i '/tmp/rand/rand_train_*.bin' -j '/tmp/rand/rand_val_*.bin' -e d12 -b $1 -t 1024 -d 524288 \
    -r $2 -x ${X:-30} -v 100000 -m 1 -s 0 -h 0 -u 700 -l 0.0006 -z 1 -c 0.1 > $O/run_b$1_r$2_$3.txt 2>&1
  local rc=$?
  python3 - "$O/run_b$1_r$2_$3.txt" "$1" "$2" "$3" "$rc" "$(( $(date +%s)-s ))" <<'PY' | tee -a $O/sweep.txt
import re, statistics, sys
path, b, r, tag, rc, wall = sys.argv[1:]
text = open(path, errors="replace").read()
toks = [(int(m.group(1)), 524288 / (float(m.group(2)) / 1000)) for m in re.finditer(r"step\s+(\d+)/\d+ .*?\|\s*([\d.]+) ms \|", text)]
vals = [t for s, t in toks if s >= 6]
mem = re.findall(r"allocated (\d+) MiB", text)
med = statistics.median(vals) if vals else 0
print(f"B={b} r={r} run={tag} rc={rc} steps={len(toks)} median={med:.0f} mean={statistics.mean(vals) if vals else 0:.0f} min={min(vals) if vals else 0:.0f} max={max(vals) if vals else 0:.0f} mem={mem[-1] if mem else '?'}MiB wall={wall}s")
PY
}
sweep() {  # the two candidates for the default REPS times each, interleaved; then the rest once
  for rep in $(seq 1 ${REPS:-3}); do sweep_run 16 0 $rep; sweep_run 16 1 $rep; done
  for cfg in ${CFGS:-"8,0" "8,1" "32,0" "64,1"}; do sweep_run ${cfg%,*} ${cfg#*,} 1; done
}
# The sm_90 cuDNN build with the kit's build script (not kitctl build: 45 s instead of 67 s, one binary).
build_bf16() { [ -x $BIN/train_gpt2cu ] || step build bash native/build.sh --src .llmc-src/llm.c --out $BIN --arch 90 --cudnn 1 --cudnn-frontend .devwork/cfe/include; }
# The kit's untuned plan on this GPU, then 40 real steps of it (the check: within 1% of the sweep's best).
kit_default() {
  TAILN=25 step plan $K train --gpus all --data /tmp/rand --name t40 --no-tune --steps 40 --dry-run --binary $BIN/train_gpt2cu
  step train40 $K train --gpus all --data /tmp/rand --name t40 --no-tune --steps 40 --binary $BIN/train_gpt2cu
  python3 -c "import json;r=json.load(open('$KIT_DATA_ROOT/runs/t40/run.json'));s=r['session'];print('t40 run.json:',s.get('status'),'tok/s median',s.get('tok_s_median'),'argv',' '.join(r.get('argv') or r.get('command') or [])[:300])" 2>&1 | tee $O/t40.txt
  cp $KIT_DATA_ROOT/runs/t40/run.json $O/t40_run.json 2>/dev/null
}
