#!/usr/bin/env bash
# Device call A: kit native build, kitctl data, kitctl train 2 GPUs + Ctrl-C + resume, kit vs bare overhead.
set -u; set -m
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $OUT/gpus.csv
echo "== build"; s=$(date +%s)
$K build --runtime native --arch 90 --llmc-src .llmc-src/llm.c --cudnn-frontend .devwork/cfe/include > $OUT/build.txt 2>&1
echo "build rc=$? $(( $(date +%s)-s ))s"; tail -4 $OUT/build.txt
for b in train_gpt2cu train_gpt2cu_fp32; do echo "$b: $(cuobjdump --list-elf /tmp/kd/native/bin/$b | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')"; done
echo "== data"; $K data make tinyshakespeare --source .devwork/tinyshakespeare.txt --tokenizer-dir .devwork/gpt2-bpe --runtime native 2>&1 | tail -2
echo "== train (interrupt at step 45)"
T="$K train --gpus all --data /tmp/kd/tinyshakespeare --steps 60 --name ts"
$T -- -n 20 > $OUT/train1.txt 2>&1 & k=$!
for i in $(seq 600); do grep -q "step   45/" /tmp/kd/runs/ts/stdout.log 2>/dev/null && break; kill -0 $k 2>/dev/null || break; sleep 0.4; done
kill -INT $k; wait $k; echo "first run rc=$?"; tail -3 $OUT/train1.txt
sleep 1; echo "left running: $(pgrep -c train_gpt2cu)"; ls /tmp/kd/runs/ts | tr '\n' ' '; echo
$T -- -n 20 > $OUT/train2.txt 2>&1; echo "resume rc=$?"; tail -4 $OUT/train2.txt
grep -E "^step +(41|42|60)/" /tmp/kd/runs/ts/stdout.log | head; cp /tmp/kd/runs/ts/main.log $OUT/ts_main.log
python3 -c "import json;d=json.load(open('/tmp/kd/runs/ts/run.json'));print({k:d[k] for k in list(d)[:40] if k not in ('plan','history')})" | cut -c1-1500
echo "== overhead (kit vs bare, identical argv, 2 GPUs, B=16 r=0, random shards)"
python3 -c "import numpy as np,os;d='/tmp/kd/rand';os.makedirs(d,exist_ok=True)
def w(p,n):h=np.zeros(256,np.int32);h[:3]=[20240520,1,n];open(p,'wb').write(h.tobytes()+np.random.default_rng(n).integers(0,50257,n,dtype=np.uint16).tobytes())
w(d+'/rand_val_000000.bin',8_000_000);w(d+'/rand_train_000001.bin',40_000_000)"
O="$K train --gpus all --data /tmp/kd/rand --steps 40 --micro-batch 16 --recompute 0 --no-tune"
for rep in 1 2; do
  line=$($O --name ovh$rep --dry-run 2>/dev/null | grep -E "^cd .*mpirun"); echo "$line" >> $OUT/ovh_cmd.txt
  $O --name ovh$rep > /dev/null 2>&1; echo "kit$rep rc=$?"
  bl=$(echo "$line" | sed -e "s#-o /tmp/kd/runs/ovh$rep #-o /tmp/bare$rep #")
  (eval "$bl") > /tmp/bare$rep.log 2>&1; echo "bare$rep rc=$?"
  echo "kit$rep:  $(python3 -m kitctl.steplog /tmp/kd/runs/ovh$rep/stdout.log --warmup 5 2>&1 | tail -1)"
  echo "bare$rep: $(python3 -m kitctl.steplog /tmp/bare$rep.log --warmup 5 2>&1 | tail -1)"
done
cp /tmp/bare1.log $OUT/bare1.log; cp /tmp/kd/runs/ovh1/stdout.log $OUT/kit1_stdout.log
