#!/usr/bin/env bash
# Device call B (the same warm H100 after A; builds again if cold): issue 28 on a real llm.c.
# 1. two trainers on one run folder; 2. llm.c never reads a decoy folder that its unescaped glob would match.
source docs/validation/2026-12-07-gpu/common.sh
O=$OUT/B; mkdir -p $O; git_head | tee $O/head.txt
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee $O/gpus.csv
build_bf16
R=$KIT_DATA_ROOT; step data $K data tinyshakespeare --runtime native
D=$R/tinyshakespeare; T="$K train --gpus all --data $D --total-batch 65536 --name lockcheck --no-tune"
echo "== 1. two trainers on one run folder"
$T --steps 300 -- -n 50 > $O/first.txt 2>&1 & P=$!
for i in $(seq 1 120); do grep -qE "step +2[0-9]/300" $R/runs/lockcheck/stdout.log 2>/dev/null && break; sleep 0.5; done
echo "first pid $P; at: $(grep -oE 'step +[0-9]+/300' $R/runs/lockcheck/stdout.log | tail -1)"
TAILN=6 step second $T --steps 300 -- -n 50
wait $P; echo "first rc=$?"; tail -3 $O/first.txt | cut -c1-300
ls $R/runs/lockcheck | tee $O/lockcheck_files.txt | tr '\n' ' '; echo
echo "'# kitctl' headers in stdout.log: $(grep -c '^# kitctl' $R/runs/lockcheck/stdout.log)"
python3 -c "import json;s=json.load(open('$R/runs/lockcheck/run.json'))['session'];print('run.json session.pid',s.get('pid'),'status',s.get('status'),'last_step',s.get('last_step'),'(first pid $P)')"
echo "== 2. a decoy folder that the unescaped glob would match"
step data_g1 $K data tinyshakespeare --runtime native --out "$R/g[1]"
rm -rf $R/g1; cp -r "$R/g[1]" $R/g1
for f in $R/g1/tinyshakespeare_train_000001.bin $R/g1/tinyshakespeare_val_000000.bin; do printf '\x00\x00\x00\x00' | dd of=$f conv=notrunc status=none; done
TAILN=4 step decoy $K train --gpus all --data "$R/g[1]" --total-batch 65536 --name decoy --steps 20 --no-tune
python3 -c "import json;d=json.load(open('$R/runs/decoy/run.json')).get('data',{});print('run.json data.train_pattern',d.get('train_pattern'),'val_pattern',d.get('val_pattern'))"
TAILN=4 step control $BIN/train_gpt2cu -i "$R/g[1]/tinyshakespeare_train_*.bin" -j "$R/g[1]/tinyshakespeare_val_*.bin" -e d12 -b 4 -t 1024 -d 4096 -x 2 -v 100000 -s 0 -h 0
cp $R/runs/lockcheck/run.json $O/lockcheck_run.json; cp $R/runs/decoy/run.json $O/decoy_run.json 2>/dev/null
