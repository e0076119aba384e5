#!/usr/bin/env bash
# Device call 5 (1x H200, native, prebuilt llm.c f1e2ace sm_90 binary): regression of today's HEAD on a real run:
# run.json written under the lock by train, read back by status (RunRecord), a resumed session moves to history,
# export-model + sample + report on the same run.
set -u; set -m
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=160
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"; BIN=$PWD/.devwork/bin/train_gpt2cu; O=/tmp/o5; mkdir -p $O
cp .devwork/head.txt $O/head.txt; cat $O/head.txt
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $O/gpus.csv
$K data make tinyshakespeare --source .devwork/tinyshakespeare.txt --tokenizer-dir .devwork/gpt2-bpe --runtime native 2>&1 | tail -1
T="$K train --gpus all --data /tmp/kd/tinyshakespeare --total-batch 65536 --name reg --binary $BIN --no-tune"
s=$(date +%s); $T --steps 60 -- -n 30 > $O/train1.txt 2>&1; echo "train 60 rc=$? $(( $(date +%s)-s ))s"; tail -2 $O/train1.txt
s=$(date +%s); $T --steps 90 -- -n 30 > $O/train2.txt 2>&1; echo "train 90 (resume) rc=$? $(( $(date +%s)-s ))s"; tail -2 $O/train2.txt
$K status reg > $O/status.txt 2>&1; echo "status rc=$?"; cat $O/status.txt | head -30
python3 -c "import json;r=json.load(open('/tmp/kd/runs/reg/run.json'));s=r['session'];print('run.json: schema',r['schema_version'],'session',s['status'],s['resumed_from'],s['last_step'],'history',[h['last_step'] for h in r['history']],'tok/s',s['tok_s_median'])"
s=$(date +%s); $K export-model reg --format hf > $O/export.txt 2>&1; echo "export rc=$? $(( $(date +%s)-s ))s"; tail -2 $O/export.txt
$K sample reg --prompt "ROMEO:" -n 32 --seed 1 > $O/sample.txt 2>&1; echo "sample rc=$?"; tail -4 $O/sample.txt
$K report reg --out $O/report.html > $O/report.txt 2>&1; echo "report rc=$? $(ls -la $O/report.html | awk '{print $5}') bytes"
cp /tmp/kd/runs/reg/run.json /tmp/kd/runs/reg/main.log $O/
tar czf $OUT/call5.tgz -C /tmp o5; ls -la $OUT
