#!/usr/bin/env bash
# Device call 7 (issue 21): is train_gpt2cu the same file from two builds? native/build.sh (blanks nvcc's PID in
# tmpxft_ names) twice, and the script before that change once, for llm.c f1e2ace on this machine's CUDA 13 nvcc.
set -u
O=$OUT/o7; mkdir -p $O
nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader | tee $O/gpu.txt
nvcc --version | tail -2 | tee $O/nvcc.txt
nproc
S=.llmc-src/llm.c
B() { local tag=$1 script=$2; shift 2; local s=$(date +%s); bash $script --src $S --out /tmp/b-$tag --arch 90 "$@" > $O/build-$tag.log 2>&1; echo "build $tag rc=$? $(( $(date +%s)-s )) s"; }
B new1 native/build.sh --cudnn 0
B new2 native/build.sh --cudnn 0
B old1 .devwork/build_before.sh --cudnn 0
B old2 .devwork/build_before.sh --cudnn 0
for t in new1 new2 old1 old2; do for f in /tmp/b-$t/*; do echo "$t $(sha256sum $f | cut -c1-64) $(stat -c %s $f) $(readelf -Ws $f | grep -o 'tmpxft_[0-9a-f]*_[0-9a-f]*' | sort -u | tr '\n' ' ')"; done; done | tee $O/sums.txt
( B cud1 native/build.sh --cudnn 1 --cudnn-frontend .devwork/cfe/include ) &
( B cud2 native/build.sh --cudnn 1 --cudnn-frontend .devwork/cfe/include ) &
wait
for t in cud1 cud2; do for f in /tmp/b-$t/*; do echo "$t $(sha256sum $f | cut -c1-64) $(stat -c %s $f) $(readelf -Ws $f | grep -o 'tmpxft_[0-9a-f]*_[0-9a-f]*' | sort -u | tr '\n' ' ')"; done; done | tee -a $O/sums.txt
/tmp/b-new1/train_gpt2cu 2>&1 | head -3 | tee $O/run_head.txt
tar czf $OUT/o7.tgz -C $OUT o7
