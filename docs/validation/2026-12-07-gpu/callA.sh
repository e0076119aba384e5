#!/usr/bin/env bash
# Device call A (1x H100 or H200, whichever is lent): build llm.c f1e2ace with the kit's native/build.sh (sm_90,
# cuDNN), the B x -r sweep of bare llm.c (issue 29; 20 steps, B=16 -r 0/-r 1 twice, B=8 -r 0), then the kit's untuned plan and 40 steps of it. Run as `bash docs/validation/2026-12-07-gpu/callA.sh`.
source docs/validation/2026-12-07-gpu/common.sh
O=$OUT/A; mkdir -p $O; git_head | tee $O/head.txt
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $O/gpus.csv
nvcc --version | tail -1
build_bf16
ls -la $BIN; rand_shards
X=${X:-20} REPS=${REPS:-2} CFGS=${CFGS:-8,0} sweep
kit_default
mkdir -p $OUT/bin && cp -a $BIN/. $OUT/bin/
