#!/usr/bin/env bash
# Device call D (issue 29, the 240 s of device time left on 2026-12-08): call A without its extras: the sm_90 cuDNN
# build with native/build.sh, then B=16 -r 0 / -r 1 twice each, interleaved, 14 steps (median of steps 6..14).
source docs/validation/2026-12-07-gpu/common.sh
O=$OUT/D; mkdir -p $O; git_head | tee $O/head.txt
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $O/gpus.csv
build_bf16
rand_shards
X=${X:-14} REPS=${REPS:-2} CFGS=${CFGS:-" "} sweep
