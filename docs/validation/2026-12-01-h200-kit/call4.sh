#!/usr/bin/env bash
# Device call 4 (1x H200): after Ctrl-C of `kitctl train` (mpirun -np 1), is any train_gpt2cu left? (proc.stop fix)
set -u; set -m
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=160
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"; BIN=$PWD/.devwork/bin/train_gpt2cu
$K data make tinyshakespeare --source .devwork/tinyshakespeare.txt --tokenizer-dir .devwork/gpt2-bpe --runtime native 2>&1 | tail -1
for rep in 1; do
  $K train --gpus all --data /tmp/kd/tinyshakespeare --steps 400 --total-batch 65536 --name dd$rep --binary $BIN --no-tune -- -n 50 > /tmp/cc$rep.txt 2>&1 & k=$!
  for i in $(seq 600); do grep -q "step   60/" /tmp/kd/runs/dd$rep/stdout.log 2>/dev/null && break; sleep 0.2; done
  echo "rep $rep while running:"; ps -eo pid,ppid,pgid,sid,comm | grep -E "mpirun|train_gpt2cu|python3" | grep -v grep
  kill -INT $k; wait $k; echo "kitctl rc=$?"; tail -2 /tmp/cc$rep.txt
  for t in 0 1 2 3 4 5 6 7 8 9; do echo "t+0.$t s: $(ps -eo pid,ppid,stat,comm | grep -E 'train_gpt2cu|mpirun' | grep -v grep | tr '\n' ';') gpu apps: $(nvidia-smi --query-compute-apps=pid --format=csv,noheader | tr '\n' ' ')"; sleep 0.25; done
  ps -o pid,comm,stat 1
done
