#!/usr/bin/env bash
# Device call C (1x H200): the same sweep and the kit's untuned plan + 40 steps, with call A's sm_90 build carried
# (data/native/bin: the same llm.c f1e2ace binaries and their llmc_build.json).
source docs/validation/2026-12-07-gpu/common.sh
O=$OUT/C; mkdir -p $O; git_head | tee $O/head.txt
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $O/gpus.csv
build_bf16
ls -la $BIN; rand_shards
sweep
kit_default
