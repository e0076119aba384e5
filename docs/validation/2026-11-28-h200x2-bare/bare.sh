#!/usr/bin/env bash
# bare llm.c measurements on the device (no kit): build, memory + tok/s sweep on 1 GPU, 2-GPU mpirun
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
REPO=$PWD
{ nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader; nvcc --version | tail -2; dpkg -l | grep -i -E "nccl|cudnn" | awk '{print $2,$3}'; mpirun --version | head -1; nproc; } > $OUT/env.txt 2>&1
cat $OUT/env.txt
W=/tmp/w; mkdir -p $W; cp -r .llmc-src/llm.c $W/llm.c; cd $W/llm.c
ln -sfn $REPO/.devwork/cfe cudnn-frontend; s=$(date +%s)
make train_gpt2cu USE_CUDNN=1 GPU_COMPUTE_CAPABILITY=90 NVCC="/usr/local/cuda/bin/nvcc -include $REPO/.devwork/cuda13_compat.h" CUDNN_FRONTEND_PATH=$REPO/.devwork/cfe/include > $OUT/build.log 2>&1
echo "build rc=$? secs=$(( $(date +%s) - s ))"; ls -la train_gpt2cu || { tail -30 $OUT/build.log; exit 1; }
mkdir -p dev/data/rand
python3 -c "
import numpy as np
def w(p,n):
    h=np.zeros(256,np.int32); h[0]=20240520; h[1]=1; h[2]=n
    t=np.random.default_rng(n).integers(0,50257,n,dtype=np.uint16)
    open(p,'wb').write(h.tobytes()+t.tobytes())
w('dev/data/rand/rand_val_000000.bin', 8_000_000); w('dev/data/rand/rand_train_000001.bin', 40_000_000)"
A="-i dev/data/rand/rand_train_*.bin -j dev/data/rand/rand_val_*.bin -e d12 -t 1024 -d 524288 -z 1 -c 0.1 -l 0.0006 -q 0.0 -u 700 -v 100000 -s 0 -h 0"
echo "cfg peak_mib mean_toks" > $OUT/sweep.txt
for r in 0 1; do for B in 8 16 32 64 128; do
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 > /tmp/mem.txt &
  mp=$!
  timeout 120 ./train_gpt2cu $A -b $B -r $r -x 14 > $OUT/sweep_b${B}_r${r}.log 2>&1
  kill $mp; sleep 0.3
  peak=$(sort -n /tmp/mem.txt | tail -1)
  toks=$(grep -E "^step +[0-9]+/" $OUT/sweep_b${B}_r${r}.log | tail -n +5 | sed -E 's/.* ([0-9]+) tok\/s.*/\1/' | awk '{s+=$1;n++} END {if(n) printf "%.0f", s/n}')
  echo "B=$B r=$r $peak $toks" | tee -a $OUT/sweep.txt
done; done
for cfg in "32 1" "16 0"; do set -- $cfg
  /usr/bin/mpirun --allow-run-as-root --bind-to none -x NCCL_NVLS_ENABLE -np 2 ./train_gpt2cu $A -b $1 -r $2 -x 20 > $OUT/mpi2_b$1_r$2.log 2>&1
  echo "2gpu B=$1 r=$2 rc=$? toks=$(grep -E "^step +[0-9]+/" $OUT/mpi2_b$1_r$2.log | tail -n +5 | sed -E 's/.* ([0-9]+) tok\/s.*/\1/' | awk '{s+=$1;n++} END {if(n) printf "%.0f", s/n}')" | tee -a $OUT/sweep.txt
done
