#!/usr/bin/env bash
# Device call 6 (1x H100/H200, native runtime, llm.c f1e2ace built here for sm_90): issue 17's shard-folder contract
# on a real `kitctl train` (a folder that disagrees with its manifest is refused before llm.c starts), issue 20's
# doctor verdict per purpose and the reproduce plan on a GPU box, and a regression run of today's HEAD.
set -u; set -m
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 COLUMNS=160
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KIT_DATA_ROOT=/tmp/kd KIT_RUNTIME=native
K="python3 -m kitctl"; O=$OUT/o6; mkdir -p $O
cp .devwork/head.txt $O/ 2>/dev/null; cat $O/head.txt
nvidia-smi --query-gpu=index,name,compute_cap,memory.total,driver_version --format=csv,noheader | tee $O/gpus.csv
python3 -c "import pyarrow; print('pyarrow', pyarrow.__version__)" 2>&1 | tail -1
run() { local name=$1; shift; local s=$(date +%s%N); "$@" > $O/$name.txt 2>&1; local rc=$?; echo "$name rc=$rc $(( ($(date +%s%N)-s)/1000000 )) ms"; tail -${TAILN:-3} $O/$name.txt | cut -c1-300; }
run build $K build --runtime native --arch 90 --llmc-src .llmc-src/llm.c --cudnn-frontend .devwork/cfe/include
run data $K data tinyshakespeare --runtime native
D=/tmp/kd/tinyshakespeare; ls -la $D > $O/ls_data.txt
T="$K train --gpus all --data $D --total-batch 65536 --name v6 --no-tune"
run train60 $T --steps 60 -- -n 30
echo "== tamper cases: each must exit 2 before llm.c starts (the run stays at step 60)"
cp -p $D/tinyshakespeare_train_000001.bin $D/tinyshakespeare_train_000002.bin
TAILN=6 run t_stray $T --steps 90 -- -n 30; rm $D/tinyshakespeare_train_000002.bin
mv $D/tinyshakespeare_train_000001.bin /tmp/keep.bin
TAILN=6 run t_missing $T --steps 90 -- -n 30
ln -s $D/tinyshakespeare_val_000000.bin $D/tinyshakespeare_train_000001.bin
TAILN=6 run t_symlink $T --steps 90 -- -n 30; rm $D/tinyshakespeare_train_000001.bin; mv /tmp/keep.bin $D/tinyshakespeare_train_000001.bin
truncate -s -2 $D/tinyshakespeare_train_000001.bin; TAILN=6 run t_size $T --steps 90 -- -n 30
run data_again $K data tinyshakespeare --runtime native
touch $D/tinyshakespeare_train_000001.bin
TAILN=6 run t_mtime $T --steps 90 -- -n 30
run verify $K data verify $D
ls /tmp/kd/runs/v6 > $O/run_files.txt; echo "checkpoints: $(ls /tmp/kd/runs/v6 | grep -c model_)"
echo "== after verify, the same command resumes and finishes"
run train90 $T --steps 90 -- -n 30
mv $D/manifest.json /tmp/manifest.keep
TAILN=8 run nomanifest_dry $T --steps 90 --dry-run -- -n 30; mv /tmp/manifest.keep $D/manifest.json
TAILN=12 run status $K status v6
python3 -c "import json;r=json.load(open('/tmp/kd/runs/v6/run.json'));s=r['session'];print('run.json: session',s['status'],'resumed_from',s.get('resumed_from'),'last_step',s.get('last_step'),'tok/s',s.get('tok_s_median'),'history',[h.get('last_step') for h in r.get('history',[])])"
echo "== doctor per purpose and the plan on a GPU box (issue 20)"
TAILN=12 run doctor_train $K doctor --for train
run reproduce_json $K reproduce --dry-run --json --runtime native
python3 -c "import json;j=json.load(open('$O/reproduce_json.txt'));t=[s for s in j['stages'] if s['name']=='train'][0];print('train stage:',t['seconds'],t['detail'][:200])" 2>&1 | tail -2
cp /tmp/kd/runs/v6/run.json /tmp/kd/runs/v6/main.log $D/manifest.json $O/ 2>/dev/null; ls $O
