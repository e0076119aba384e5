#!/usr/bin/env bash
# Device call 1: probe the machine, native build of llm.c (pinned f1e2ace) for sm_90 with the kit, binaries back.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $OUT/gpus.csv
python3 -m pip list 2>/dev/null > $OUT/piplist.txt; grep -iE "^(pyarrow|pandas|datasets|tensorboard|matplotlib|tiktoken|transformers|torch|safetensors|numpy|huggingface)" $OUT/piplist.txt
nproc; nvcc --version | tail -2
s=$(date +%s)
python3 -m kitctl build --runtime native --arch 90 --llmc-src .llmc-src/llm.c --cudnn-frontend .devwork/cfe/include > $OUT/build.txt 2>&1
echo "build rc=$? $(( $(date +%s)-s ))s"; tail -5 $OUT/build.txt
ls -la /tmp/kd/native/bin/
for b in train_gpt2cu train_gpt2cu_fp32; do echo "$b: $(cuobjdump --list-elf /tmp/kd/native/bin/$b | grep -o 'sm_[0-9]*' | sort -u | tr '\n' ' ')"; cp /tmp/kd/native/bin/$b $OUT/; done
ls /tmp/kd/native/bin/ /tmp/kd/native 
