#!/usr/bin/env bash
# Device call 2 (1x H200, native runtime, prebuilt llm.c f1e2ace sm_90 binaries from call 1):
#  issue 14: untuned `kitctl train` (no tune cache: the throughput table's pick) vs `kitctl tune`'s best, same call;
#  issue 13: a short real run on tinyshakespeare, export-model, transformers' val loss vs llm.c's, sample.
set -u; set -m
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1 COLUMNS=160
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"; BIN=$PWD/.devwork/bin/train_gpt2cu; O=/tmp/o; mkdir -p $O
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $O/gpus.csv
python3 -c "import numpy as np,os;d='/tmp/kd/rand';os.makedirs(d,exist_ok=True)
def w(p,n):h=np.zeros(256,np.int32);h[:3]=[20240520,1,n];open(p,'wb').write(h.tobytes()+np.random.default_rng(n).integers(0,50257,n,dtype=np.uint16).tobytes())
w(d+'/rand_val_000000.bin',8_000_000);w(d+'/rand_train_000001.bin',40_000_000)"
echo "== 14: untuned train"
U="$K train --gpus all --data /tmp/kd/rand --steps 40 --name untuned --binary $BIN"
$U --dry-run > $O/untuned_plan.txt 2>&1; grep -iE "micro-batch|recompute|tokens/s|tune" $O/untuned_plan.txt | head -8
s=$(date +%s); $U > $O/untuned.txt 2>&1; echo "untuned rc=$? $(( $(date +%s)-s ))s"; tail -3 $O/untuned.txt
echo "untuned measured: $(python3 -m kitctl.train.steplog /tmp/kd/runs/untuned/stdout.log --warmup 5 2>&1 | tail -1)"
echo "== 14: kitctl tune (default sweep)"
s=$(date +%s); $K tune --gpus all --data /tmp/kd/rand --steps 14 --warmup 4 --binary $BIN > $O/tune.txt 2>&1; echo "tune rc=$? $(( $(date +%s)-s ))s"
grep -E "B=|tok/s|fastest|picked" $O/tune.txt | head -14
echo "== 13: short real run on tinyshakespeare, export, val loss, sample"
$K data make tinyshakespeare --source .devwork/tinyshakespeare.txt --tokenizer-dir .devwork/gpt2-bpe --runtime native 2>&1 | tail -1
V="$K train --gpus all --data /tmp/kd/tinyshakespeare --steps 300 --total-batch 65536 --name valcheck --binary $BIN --no-tune -- -n 300 -v 100"
$V > $O/valcheck_train.txt 2>&1; echo "valcheck train rc=$?"; tail -2 $O/valcheck_train.txt; grep -E "tel:" /tmp/kd/runs/valcheck/main.log | tail -3
s=$(date +%s); $K export-model valcheck --format hf --out /tmp/valcheck-hf > $O/export.txt 2>&1; echo "export rc=$? $(( $(date +%s)-s ))s"; tail -3 $O/export.txt
python3 -m kitctl.model.valloss /tmp/valcheck-hf --json $O/valloss.json > $O/valloss.txt 2>&1; echo "valloss rc=$?"; cat $O/valloss.txt | tail -8
$K sample valcheck --prompt "ROMEO:" -n 64 --seed 1 > $O/sample.txt 2>&1; echo "sample rc=$?"; tail -8 $O/sample.txt
cp /tmp/kd/runs/valcheck/main.log $O/valcheck_main.log; cp /tmp/kd/runs/untuned/stdout.log $O/untuned_stdout.log
cp /tmp/kd/runs/untuned/run.json $O/untuned_run.json 2>/dev/null
tar czf $OUT/call2.tgz -C /tmp o; ls -la $OUT
