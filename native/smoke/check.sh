#!/usr/bin/env bash
# llmc-kit image smoke checks, run INSIDE an image (by `kitctl smoke` and the CI tests):
#   1. if nvcc is there (toolchain image): build native/smoke for --arch; else use /opt/llmc/bin/llmc_smoke
#   2. `cuobjdump --list-elf` of the smoke binary and of every /opt/llmc/bin/train_gpt2cu* shows sm_XX for
#      every requested arch
#   3. `mpirun -np 2` of the smoke binary: both ranks report; the GPU part runs (NCCL allreduce) when
#      GPUs are visible, else says it is skipped.
# Prints one "CHECK <name>: OK|FAIL ..." line per check; exit code 0 only if all pass.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
arch="" np=2
while [ $# -gt 0 ]; do
  case "$1" in --arch) arch=$2; shift 2;; --np) np=$2; shift 2;; *) echo "unknown option $1" >&2; exit 2;; esac
done
fails=0
ok()   { echo "CHECK $1: OK $2"; }
fail() { echo "CHECK $1: FAIL $2"; fails=$((fails + 1)); }
work=$(mktemp -d)
cuobjdump=$(command -v cuobjdump || true)
[ -z "$cuobjdump" ] && [ -x /opt/llmc/tools/cuobjdump ] && cuobjdump=/opt/llmc/tools/cuobjdump
smoke=""
if command -v nvcc >/dev/null || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
  [ -n "$arch" ] || { echo "--arch is required to compile" >&2; exit 2; }
  if bash "$here/build.sh" --arch "$arch" --out "$work/llmc_smoke" > "$work/build.log" 2>&1; then
    ok compile "native/smoke built for $arch"; smoke=$work/llmc_smoke
  else
    cat "$work/build.log"; fail compile "nvcc could not build native/smoke"
  fi
elif [ -x /opt/llmc/bin/llmc_smoke ]; then
  smoke=/opt/llmc/bin/llmc_smoke; ok compile "no nvcc here (runtime image): using $smoke"
else
  fail compile "no nvcc and no /opt/llmc/bin/llmc_smoke in this image"
fi
if [ -n "$arch" ]; then
  if [ -z "$cuobjdump" ]; then
    fail sass "no cuobjdump in this image"
  else
    for bin in $smoke /opt/llmc/bin/train_gpt2cu*; do
      [ -f "$bin" ] || continue
      elfs=$("$cuobjdump" --list-elf "$bin" 2>&1)
      missing=()
      IFS=', ' read -r -a archs <<< "$arch"
      for a in "${archs[@]}"; do [ -n "$a" ] && ! grep -q "sm_$a" <<< "$elfs" && missing+=("sm_$a"); done
      found=$(grep -o 'sm_[0-9]*' <<< "$elfs" | sort -u | tr '\n' ' ')
      if [ ${#missing[@]} -eq 0 ]; then ok sass "$bin holds SASS for: $found"
      else fail sass "$bin lacks ${missing[*]} (has: $found)"; fi
    done
  fi
fi
if [ -n "$smoke" ]; then
  out=$(mpirun --oversubscribe -np "$np" "$smoke" 2>&1); rc=$?
  echo "$out"
  ranks=$(grep -c 'MPI rank [0-9]* of '"$np"'.*OK' <<< "$out")
  if [ $rc -eq 0 ] && [ "$ranks" -eq "$np" ]; then ok mpi "mpirun -np $np: $ranks ranks reported (as $(id -un 2>/dev/null || id -u))"
  else fail mpi "mpirun -np $np exited $rc with $ranks/$np ranks reporting"; fi
  if grep -q 'GPU part SKIPPED' <<< "$out"; then echo "CHECK gpu: SKIPPED no CUDA device visible in this container"
  elif grep -q 'allreduce.*OK' <<< "$out" && [ $rc -eq 0 ]; then ok gpu "NCCL allreduce across $np ranks"
  else fail gpu "GPU part did not pass"; fi
fi
rm -rf "$work"
echo "SMOKE: $([ $fails -eq 0 ] && echo PASSED || echo "FAILED ($fails)")"
exit $([ $fails -eq 0 ] && echo 0 || echo 1)
