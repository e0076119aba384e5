#!/usr/bin/env bash
# Device call 13: the plan of a no-cuDNN BF16 build (its llmc_build.json says cudnn: false) against the run.
set -u
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=200
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"; cat .devwork/head.txt
nvidia-smi --query-gpu=index,name,compute_cap,driver_version --format=csv,noheader
$K data tinyshakespeare --runtime native > /dev/null 2>&1; echo data rc=$?
$K build --runtime native --arch 90 --llmc-src .llmc-src/llm.c --no-cudnn > /tmp/b.txt 2>&1; echo build rc=$?
A="--gpus all --data /tmp/kd/tinyshakespeare --total-batch 65536 --no-tune --steps 20"
$K train $A --name v13 --dry-run -- -n 0 2>&1 | grep -iE "cudnn|tok/s|micro|memory" | cut -c1-250 | head -8
$K train $A --name v13 -- -n 0 > /tmp/t.txt 2>&1; echo train rc=$?; grep -E "^done" /tmp/t.txt
