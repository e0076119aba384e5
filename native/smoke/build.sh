#!/usr/bin/env bash
# Build native/smoke/smoke.cu -> OUT (default ./llmc_smoke) for an arch list, with the same inputs as
# native/build.sh: CUDA_HOME, NCCL_INCLUDE/NCCL_LIB, OPENMPI_DIR.
#   native/smoke/build.sh --arch 75,86 [--out FILE]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
arch="" out=./llmc_smoke
while [ $# -gt 0 ]; do
  case "$1" in --arch) arch=$2; shift 2;; --out) out=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;; esac
done
[ -n "$arch" ] || { echo "--arch is required" >&2; exit 2; }
cuda_home=${CUDA_HOME:-/usr/local/cuda}
mpi=${OPENMPI_DIR:-/usr/lib/x86_64-linux-gnu/openmpi}
gencode=()
IFS=', ' read -r -a archs <<< "$arch"
for a in "${archs[@]}"; do [ -n "$a" ] && gencode+=("--generate-code" "arch=compute_$a,code=[compute_$a,sm_$a]"); done
inc=("-I$mpi/include") lib=("-L$mpi/lib")
[ -n "${NCCL_INCLUDE:-}" ] && inc+=("-I$NCCL_INCLUDE")
[ -n "${NCCL_LIB:-}" ] && lib+=("-L$NCCL_LIB" "-Xlinker" "-rpath,$NCCL_LIB")
for d in "$cuda_home/lib64" "$cuda_home/lib"; do [ -d "$d" ] && { lib+=("-L$d"); break; }; done
set -x
"$cuda_home/bin/nvcc" -O2 -std=c++17 "${gencode[@]}" "$here/smoke.cu" "${inc[@]}" "${lib[@]}" -lnccl -lmpi -o "$out"
perl -0777 -pi -e 's/tmpxft_[0-9a-f]{8}_/tmpxft_00000000_/g' "$out"   # nvcc's PID in a temp name: see native/build.sh
