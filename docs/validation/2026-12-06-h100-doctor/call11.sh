#!/usr/bin/env bash
# Device call 11: kitctl train's arch check on a real GPU (sm_90): an sm_100-only build is refused before llm.c
# starts (exit 2); an sm_86 build passes the check and trains (compute_86 PTX).
set -u
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=200
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"; cat .devwork/head.txt
nvidia-smi --query-gpu=index,name,compute_cap,driver_version --format=csv,noheader
$K data tinyshakespeare --runtime native > /dev/null 2>&1; echo data rc=$?
for a in 100 86; do
  $K build --runtime native --arch $a --llmc-src .llmc-src/llm.c --no-cudnn > /tmp/b$a.txt 2>&1; echo build$a rc=$?
  s=$(date +%s%N); $K train --gpus all --data /tmp/kd/tinyshakespeare --total-batch 65536 --name v11-$a --no-tune --steps 10 -- -n 0 > /tmp/t$a.txt 2>&1; rc=$?
  echo "train$a rc=$rc $(( ($(date +%s%N)-s)/1000000 )) ms"; grep -E "^error|^hint|^done" /tmp/t$a.txt | cut -c1-400
  ls /tmp/kd/runs/v11-$a 2>/dev/null | head -5
done
