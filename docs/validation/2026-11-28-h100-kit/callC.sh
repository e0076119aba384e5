#!/usr/bin/env bash
# Device call C (1x H100): H100 check of the memory table, d24 + FP32 memory points, a 150-step tinyshakespeare run for the report.
set -u; set -m
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $OUT/gpus.csv
s=$(date +%s); $K build --runtime native --arch 90 --llmc-src .llmc-src/llm.c --cudnn-frontend .devwork/cfe/include > /tmp/build.txt 2>&1; echo "build rc=$? $(( $(date +%s)-s ))s"
$K data make tinyshakespeare --source .devwork/tinyshakespeare.txt --tokenizer-dir .devwork/gpt2-bpe --runtime native 2>&1 | tail -1
python3 -c "import numpy as np,os;d='/tmp/kd/rand';os.makedirs(d,exist_ok=True)
def w(p,n):h=np.zeros(256,np.int32);h[:3]=[20240520,1,n];open(p,'wb').write(h.tobytes()+np.random.default_rng(n).integers(0,50257,n,dtype=np.uint16).tobytes())
w(d+'/rand_val_000000.bin',4_000_000);w(d+'/rand_train_000001.bin',20_000_000)"
echo "bin e r B peak_mib median_tok_s" | tee $OUT/mem.txt
m() { # bin e r B steps dtotal
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 > /tmp/mem.txt & mp=$!
  timeout 100 /tmp/kd/native/bin/$1 -i '/tmp/kd/rand/rand_train_*.bin' -j '/tmp/kd/rand/rand_val_*.bin' -e $2 -t 1024 -d $6 -z 1 -c 0.1 -l 0.0006 -q 0.0 -u 700 -v 1000000 -s 0 -h 0 -b $4 -r $3 -x $5 -m 1 > /tmp/m.log 2>&1
  kill $mp; sleep 0.3
  echo "$1 $2 $3 $4 $(sort -n /tmp/mem.txt | tail -1) $(python3 -m kitctl.steplog /tmp/m.log --warmup 3 --total-batch $6 2>&1 | tail -1)" | tee -a $OUT/mem.txt
}
for B in 16 64; do for r in 0 1; do m train_gpt2cu d12 $r $B 10 524288; done; done
for B in 8 16; do m train_gpt2cu d24 1 $B 6 $((B*1024)); done
for B in 8 16; do m train_gpt2cu_fp32 d12 1 $B 6 $((B*1024)); done
echo "== 150-step tinyshakespeare run (val every 25, 1 GPU)"
$K train --gpus all --data /tmp/kd/tinyshakespeare --steps 150 --name ts150 --no-tune -- -v 10 -u 30 -n 0 > $OUT/ts150_kit.txt 2>&1; echo "rc=$?"; tail -3 $OUT/ts150_kit.txt
grep -E "micro|recompute" $OUT/ts150_kit.txt | head -3
cp /tmp/kd/runs/ts150/main.log $OUT/ts150_main.log; cp /tmp/kd/runs/ts150/stdout.log $OUT/ts150_stdout.log; cp /tmp/kd/runs/ts150/run.json $OUT/ts150_run.json
