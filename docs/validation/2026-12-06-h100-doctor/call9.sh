#!/usr/bin/env bash
# Device call 9: what a binary built for other archs does on this GPU (sm_90): SASS for 90 vs PTX JIT from
# compute_80 / compute_86 (a lower arch: runs), and a binary for a higher arch only (100: no kernel image).
set -u
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=200
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"; O=$OUT/o9; mkdir -p $O
run() { local name=$1; shift; local s=$(date +%s%N); "$@" > $O/$name.txt 2>&1; local rc=$?; echo "$name rc=$rc $(( ($(date +%s%N)-s)/1000000 )) ms"; tail -${TAILN:-3} $O/$name.txt | cut -c1-300; }
run data $K data tinyshakespeare --runtime native
for a in 90 80 86 90 100; do
  rm -rf ~/.nv/ComputeCache
  run build$a $K build --runtime native --arch $a --llmc-src .llmc-src/llm.c --no-cudnn
  TAILN=4 run train$a $K train --gpus all --data /tmp/kd/tinyshakespeare --total-batch 65536 --name v9-$a-$RANDOM --no-tune --steps 20 -- -n 0
  TAILN=4 run doctor$a $K doctor --for train
done
