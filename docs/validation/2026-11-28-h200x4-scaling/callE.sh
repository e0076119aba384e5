#!/usr/bin/env bash
# Device call E (4 GPUs): scaling 1/2/4 GPUs through kitctl train (native), and bare mpirun -np 4 with the identical argv.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
B=/tmp/kd/native/bin; mkdir -p $B
bash native/build.sh --src .llmc-src/llm.c --out $B --arch 90 --precision BF16 --cudnn 0 --cuda-home /usr/local/cuda > /tmp/b.log 2>&1; echo "build rc=$?"
python3 -c "import numpy as np,os;d='/tmp/kd/rand';os.makedirs(d,exist_ok=True)
def w(p,n):h=np.zeros(256,np.int32);h[:3]=[20240520,1,n];open(p,'wb').write(h.tobytes()+np.random.default_rng(n).integers(0,50257,n,dtype=np.uint16).tobytes())
w(d+'/rand_val_000000.bin',2_000_000);w(d+'/rand_train_000001.bin',20_000_000)"
O="python3 -m kitctl train --data /tmp/kd/rand --steps 14 --micro-batch 16 --recompute 0 --no-tune"
for n in 1 2 4; do $O --gpus $n --name s$n > /dev/null 2>&1; echo "kit ${n} GPU rc=$?: $(python3 -m kitctl.steplog /tmp/kd/runs/s$n/stdout.log --warmup 4 | tail -1)"; done
line=$($O --gpus 4 --name s4b --dry-run 2>/dev/null | grep -E "^cd .*mpirun"); echo "$line" > $OUT/bare4_cmd.txt
mkdir -p /tmp/kd/runs/s4b/.llmc-cwd; bl=$(echo "$line" | sed -e "s#-o /tmp/kd/runs/s4b #-o /tmp/bare4 #"); (eval "$bl") > $OUT/bare4.log 2>&1
echo "bare 4 GPU rc=$?: $(python3 -m kitctl.steplog $OUT/bare4.log --warmup 4 | tail -1)"
cp /tmp/kd/runs/s4/stdout.log $OUT/kit4_stdout.log
