#!/usr/bin/env bash
# Device call 8 (1x H100/H200, native runtime, llm.c f1e2ace): doctor's "arch list" judges the built binaries
# (their llmc_build.json), not kit.yaml's arch list; an unreachable HF hub is probed once.
set -u
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=200
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"; O=$OUT/o8; mkdir -p $O
cp .devwork/head.txt $O/; cat $O/head.txt
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $O/gpus.csv
run() { local name=$1; shift; local s=$(date +%s%N); "$@" > $O/$name.txt 2>&1; local rc=$?; echo "$name rc=$rc $(( ($(date +%s%N)-s)/1000000 )) ms"; tail -${TAILN:-3} $O/$name.txt | cut -c1-400; }
echo "== kit.yaml says nothing (default arch list 75,86); nothing built yet"
TAILN=30 run doctor_nothing $K doctor --for train
grep -i "arch list" $O/doctor_nothing.txt
echo "== built for 90 (this GPU)"
run build90 $K build --runtime native --arch 90 --llmc-src .llmc-src/llm.c --no-cudnn
cat /tmp/kd/native/bin/llmc_build.json | tee $O/record90.json; echo
TAILN=30 run doctor_90 $K doctor --for train
grep -i "arch list\|train" $O/doctor_90.txt | cut -c1-300
echo "== built for 80 only (not this GPU)"
run build80 $K build --runtime native --arch 80 --llmc-src .llmc-src/llm.c --no-cudnn
cat /tmp/kd/native/bin/llmc_build.json | tee $O/record80.json; echo
TAILN=30 run doctor_80 $K doctor --for train
grep -i "arch list\|train" $O/doctor_80.txt | cut -c1-400
echo "== the sm_80-only binary on this GPU (what doctor warns of)"
run data $K data tinyshakespeare --runtime native
TAILN=8 run train80 $K train --gpus all --data /tmp/kd/tinyshakespeare --total-batch 65536 --name v8 --no-tune --steps 5 -- -n 0
echo "== an unreachable HF hub (no network here), a branch revision (edu_fineweb10B: main)"
TAILN=6 run hf_offline $K data edu_fineweb10B --runtime native
tar czf $OUT/o8.tgz -C $OUT o8
