#!/usr/bin/env bash
# Device call B: kitctl tune (default sweep) vs a full B x recompute sweep in the same call; Ctrl-C leaves nothing running.
set -u; set -m
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader
$K build --runtime native --arch 90 --llmc-src .llmc-src/llm.c --cudnn-frontend .devwork/cfe/include > $OUT/build.txt 2>&1; echo "build rc=$?"
$K data make tinyshakespeare --source .devwork/tinyshakespeare.txt --tokenizer-dir .devwork/gpt2-bpe --runtime native 2>&1 | tail -1
echo "== Ctrl-C: what is left"
$K train --gpus all --data /tmp/kd/tinyshakespeare --steps 60 --name ts -- -n 20 > $OUT/ctrlc.txt 2>&1 & k=$!
for i in $(seq 600); do grep -q "step   25/" /tmp/kd/runs/ts/stdout.log 2>/dev/null && break; kill -0 $k 2>/dev/null || break; sleep 0.4; done
kill -INT $k; wait $k; echo "rc=$?"; tail -2 $OUT/ctrlc.txt; sleep 1
echo "ps after stop:"; ps -eo pid,ppid,stat,cmd | grep -E "train_gpt2cu|mpirun" | grep -v grep; nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader; echo "(end)"
python3 -c "import numpy as np,os;d='/tmp/kd/rand';os.makedirs(d,exist_ok=True)
def w(p,n):h=np.zeros(256,np.int32);h[:3]=[20240520,1,n];open(p,'wb').write(h.tobytes()+np.random.default_rng(n).integers(0,50257,n,dtype=np.uint16).tobytes())
w(d+'/rand_val_000000.bin',8_000_000);w(d+'/rand_train_000001.bin',40_000_000)"
echo "== tune (default sweep)"; s=$(date +%s)
$K tune --gpus all --data /tmp/kd/rand --steps 14 --warmup 4 > $OUT/tune_default.txt 2>&1; echo "tune rc=$? $(( $(date +%s)-s ))s"
tail -25 $OUT/tune_default.txt
mkdir -p /tmp/keep; cp /tmp/kd/tune/*.json /tmp/keep/ 2>/dev/null
$K train --gpus all --data /tmp/kd/rand --steps 40 --name tuned --dry-run 2>&1 | grep -E "micro-batch|recompute|differs|tune" | head -8
echo "== full sweep"; s=$(date +%s)
$K tune --gpus all --data /tmp/kd/rand --steps 14 --warmup 4 --full > $OUT/tune_full.txt 2>&1; echo "full rc=$? $(( $(date +%s)-s ))s"
tail -30 $OUT/tune_full.txt
cp /tmp/keep/*.json $OUT/tune_default_cache.json 2>/dev/null
