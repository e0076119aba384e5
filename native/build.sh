#!/usr/bin/env bash
# llmc-kit: THE build recipe for llm.c's train_gpt2cu. Used by the Dockerfile's build stage and by
# `kitctl build --runtime native` on hosts without Docker. Never edits the llm.c tree.
#
#   native/build.sh --src LLMC_DIR --out OUT_DIR --arch 75,86 [--precision BF16|FP32] [--cudnn 0|1]
#                   [--name train_gpt2cu] [--cuda-home DIR] [--nccl-include DIR] [--nccl-lib DIR]
#                   [--mpi-dir DIR] [--cudnn-frontend DIR] [--cudnn-include DIR] [--cudnn-lib DIR]
#                   [--dry-run]
#
# Why not `make train_gpt2cu`: llm.c's Makefile (at f1e2ace) takes ONE arch value (and picks the lowest
# GPU's), enables NCCL only if `dpkg -l | grep nccl` succeeds (false for wheel or tarball NCCL) and looks for
# cudnn-frontend only in ./cudnn-frontend/include or $HOME/cudnn-frontend/include. So this script runs
# nvcc itself with the Makefile's own flags (NVCC_FLAGS, PFLAGS, NVCC_LDFLAGS, NVCC_LDLIBS), adding:
#   * one `--generate-code arch=compute_XX,code=[compute_XX,sm_XX]` per requested arch (SASS for each
#     plus PTX for forward compatibility);
#   * -DMULTI_GPU -lnccl and -DUSE_MPI -lmpi with explicit include/lib dirs (OPENMPI_DIR layout);
#   * -include native/patches/cuda13_compat.h (CUDA 13 removed the cudaMemAdvise(int device) form);
#   * an rpath for every library dir given, so the binary runs without LD_LIBRARY_PATH.
# Every input can also come from the environment: CUDA_HOME, NCCL_INCLUDE, NCCL_LIB, OPENMPI_DIR,
# CUDNN_FRONTEND_PATH, CUDNN_INCLUDE, CUDNN_LIB.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "native/build.sh: error: $*" >&2; exit 2; }
log() { echo "[native/build.sh] $*" >&2; }

src="" out="" arch="" precision=BF16 cudnn=0 name="" dry=0
cuda_home=${CUDA_HOME:-} nccl_inc=${NCCL_INCLUDE:-} nccl_lib=${NCCL_LIB:-}
mpi_dir=${OPENMPI_DIR:-/usr/lib/x86_64-linux-gnu/openmpi}
cfe=${CUDNN_FRONTEND_PATH:-} cudnn_inc=${CUDNN_INCLUDE:-} cudnn_lib=${CUDNN_LIB:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --src) src=$2; shift 2;;
    --out) out=$2; shift 2;;
    --arch) arch=$2; shift 2;;
    --precision) precision=$2; shift 2;;
    --cudnn) cudnn=$2; shift 2;;
    --name) name=$2; shift 2;;
    --cuda-home) cuda_home=$2; shift 2;;
    --nccl-include) nccl_inc=$2; shift 2;;
    --nccl-lib) nccl_lib=$2; shift 2;;
    --mpi-dir) mpi_dir=$2; shift 2;;
    --cudnn-frontend) cfe=$2; shift 2;;
    --cudnn-include) cudnn_inc=$2; shift 2;;
    --cudnn-lib) cudnn_lib=$2; shift 2;;
    --dry-run) dry=1; shift;;
    -h|--help) sed -n '2,25p' "$0"; exit 0;;
    *) die "unknown option $1 (see --help)";;
  esac
done
[ -n "$src" ] || die "--src LLMC_DIR is required"
[ -f "$src/train_gpt2.cu" ] || die "$src has no train_gpt2.cu (not an llm.c checkout)"
[ -n "$out" ] || die "--out DIR is required"
[ -n "$arch" ] || die "--arch is required, e.g. --arch 75,86"
case "$precision" in BF16|FP32|FP16) ;; *) die "--precision must be BF16, FP32 or FP16";; esac
case "$cudnn" in 0|1) ;; *) die "--cudnn must be 0 or 1";; esac
[ "$cudnn" = 1 ] && [ "$precision" = FP32 ] && die "cuDNN attention needs BF16/FP16 (llm.c refuses FP32 with cuDNN)"
if [ -z "$name" ]; then name=train_gpt2cu; [ "$precision" = FP32 ] && name=train_gpt2cu_fp32; fi

# CUDA
if [ -z "$cuda_home" ]; then
  if command -v nvcc >/dev/null; then cuda_home=$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)
  else cuda_home=/usr/local/cuda; fi
fi
nvcc="$cuda_home/bin/nvcc"
[ -x "$nvcc" ] || die "no nvcc at $nvcc (give --cuda-home)"

# one --generate-code per arch
gencode=()
IFS=', ' read -r -a archs <<< "$arch"
for a in "${archs[@]}"; do
  [ -z "$a" ] && continue
  a=${a#sm_}; a=${a//./}
  [[ "$a" =~ ^[0-9]+$ ]] || die "bad arch '$a'"
  gencode+=("--generate-code" "arch=compute_$a,code=[compute_$a,sm_$a]")
done
[ ${#gencode[@]} -gt 0 ] || die "empty arch list"

# The Makefile's flags (llm.c f1e2ace), verbatim where possible.
flags=(--threads=0 -t=0 --use_fast_math -std=c++17 -O3 "${gencode[@]}")
case "$precision" in FP32) pflags=(-DENABLE_FP32);; FP16) pflags=(-DENABLE_FP16);; *) pflags=(-DENABLE_BF16);; esac
inc=() ldf=(-lcublas -lcublasLt) libs=() rpath=()
add_lib_dir() { ldf+=("-L$1"); case "$1" in /usr/lib|/usr/lib64|/usr/lib/x86_64-linux-gnu) ;; *) rpath+=("-Xlinker" "-rpath,$1");; esac; }
# CUDA libraries (wheel layouts have lib/, toolkits lib64/)
for d in "$cuda_home/lib64" "$cuda_home/lib"; do [ -d "$d" ] && { add_lib_dir "$d"; break; }; done
# The Makefile links NVML when it is found (llmc/mfu.h uses it if <nvml.h> is on the include path).
if [ -f "$cuda_home/include/nvml.h" ]; then ldf+=(-lnvidia-ml); fi
# NCCL (multi-GPU)
if [ -z "$nccl_inc" ]; then
  for d in "$cuda_home/include" /usr/include /usr/local/include; do [ -f "$d/nccl.h" ] && { nccl_inc=$d; break; }; done
fi
[ -n "$nccl_inc" ] && [ -f "$nccl_inc/nccl.h" ] || die "nccl.h not found (give --nccl-include DIR; apt libnccl-dev or pip nvidia-nccl-cu13)"
inc+=("-I$nccl_inc")
[ -n "$nccl_lib" ] && add_lib_dir "$nccl_lib"
flags+=(-DMULTI_GPU); libs+=(-lnccl)
# MPI (the Makefile's OPENMPI_DIR layout: $OPENMPI_DIR/include, $OPENMPI_DIR/lib)
[ -d "$mpi_dir/include" ] && [ -d "$mpi_dir/lib" ] || die "no Open MPI at $mpi_dir (want include/ and lib/; apt libopenmpi-dev or give --mpi-dir)"
inc+=("-I$mpi_dir/include/"); add_lib_dir "$mpi_dir/lib"; libs+=(-lmpi); flags+=(-DUSE_MPI)
# compat patches, forced in
compat=(-include "$here/patches/cuda13_compat.h")

work=$(mktemp -d "${TMPDIR:-/tmp}/llmc-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
objs=()
run() { echo "+ $*" >&2; [ "$dry" = 1 ] || "$@"; }
if [ "$cudnn" = 1 ]; then
  if [ -z "$cfe" ]; then
    for d in "$src/cudnn-frontend/include" "$HOME/cudnn-frontend/include"; do [ -d "$d" ] && { cfe=$d; break; }; done
  fi
  [ -n "$cfe" ] && [ -f "$cfe/cudnn_frontend.h" ] || die "cudnn-frontend headers not found (give --cudnn-frontend DIR holding cudnn_frontend.h)"
  inc+=("-I$cfe")
  [ -n "$cudnn_inc" ] && inc+=("-I$cudnn_inc")
  [ -n "$cudnn_lib" ] && add_lib_dir "$cudnn_lib"
  flags+=(-DENABLE_CUDNN); ldf+=(-lcudnn)
  log "compiling cudnn_att.o (cuDNN flash attention; takes minutes)"
  run "$nvcc" -c "${flags[@]}" "${pflags[@]}" "$src/llmc/cudnn_att.cpp" "${inc[@]}" -o "$work/cudnn_att.o"
  objs+=("$work/cudnn_att.o")
fi
mkdir -p "$out"
log "building $out/$name: precision $precision, cuDNN $cudnn, archs ${archs[*]}, CUDA $cuda_home"
run "$nvcc" "${flags[@]}" "${pflags[@]}" "${compat[@]}" "$src/train_gpt2.cu" "${objs[@]}" \
    "${ldf[@]}" "${inc[@]}" "${libs[@]}" "${rpath[@]}" -o "$out/$name"
# nvcc names its temp files tmpxft_<its PID>_..., and the host compiler keeps one such name per compiled file in
# the binary's symbol table (an STT_FILE symbol): PIDs differ from build to build, so the same source, toolchain and
# flags gave another file each time. Blank the PID (same length: nothing in the file moves): one sha256 per input.
run perl -0777 -pi -e 's/tmpxft_[0-9a-f]{8}_/tmpxft_00000000_/g' "$out/$name"
[ "$dry" = 1 ] || chmod 0755 "$out/$name"
log "done: $out/$name"
