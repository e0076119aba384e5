#!/usr/bin/env bash
# Device call D (2 GPUs): llm.c ranks started the Slurm way (-pi fs, no mpirun) with the MPI_Finalize shim;
# native/smoke NCCL allreduce on both GPUs; kitctl doctor on real GPUs.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
B=/tmp/bin; mkdir -p $B
s=$(date +%s); bash native/build.sh --src .llmc-src/llm.c --out $B --arch 90 --precision BF16 --cudnn 0 --cuda-home /usr/local/cuda > /tmp/b.log 2>&1; echo "build rc=$? $(( $(date +%s)-s ))s"
CUDA_HOME=/usr/local/cuda bash native/smoke/build.sh --arch 90 --out $B/llmc_smoke > /tmp/s.log 2>&1; echo "smoke build rc=$?"
echo "== smoke: mpirun -np 2"; /usr/bin/mpirun --allow-run-as-root -np 2 -x NCCL_NVLS_ENABLE $B/llmc_smoke 2>&1 | tail -8; echo "rc=${PIPESTATUS[0]}"
python3 -m kitctl data make tinyshakespeare --source .devwork/tinyshakespeare.txt --tokenizer-dir .devwork/gpt2-bpe --runtime native > /dev/null 2>&1
echo "== two ranks, -pi fs (as the Slurm script starts them), no mpirun"
mkdir -p /tmp/sync /tmp/fsrun; D=/tmp/kd/tinyshakespeare
for r in 0 1; do
  CUDA_VISIBLE_DEVICES=0,1 $B/train_gpt2cu -i "$D/tinyshakespeare_train_*.bin" -j "$D/tinyshakespeare_val_*.bin" -o /tmp/fsrun -e d12 -b 8 -t 1024 -d 524288 -r 1 -z 1 -c 0.1 -l 0.0006 -q 0.0 -u 700 -n 20 -v 250 -s 0 -h 0 -x 20 -pn 2 -pr $r -pg 2 -pi fs -pf /tmp/sync > $OUT/fs_rank$r.log 2>&1 &
done
wait %1; r0=$?; wait %2; r1=$?; echo "rank0 rc=$r0 rank1 rc=$r1"; ls /tmp/fsrun | tr '\n' ' '; echo
grep -E "num_processes|process_rank|step +20/" $OUT/fs_rank0.log | head -5; tail -2 $OUT/fs_rank1.log
echo "== doctor"; python3 -m kitctl doctor 2>&1 | tail -30
