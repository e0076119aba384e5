#!/usr/bin/env bash
# Device call 10: the error a binary built only for a newer arch (sm_100) gives on this GPU (sm_90).
set -u
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=200
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"
$K data tinyshakespeare --runtime native > /dev/null 2>&1; echo data rc=$?
$K build --runtime native --arch 100 --llmc-src .llmc-src/llm.c --no-cudnn > /tmp/b.txt 2>&1; echo build rc=$?; tail -1 /tmp/b.txt
$K train --gpus all --data /tmp/kd/tinyshakespeare --total-batch 65536 --name v10 --no-tune --steps 5 -- -n 0 > /tmp/t.txt 2>&1; echo train rc=$?
grep -i -m5 "error\|kernel image" /tmp/kd/runs/v10/stdout.log
$K doctor --for train 2>&1 | grep -i "arch list\|^train"
