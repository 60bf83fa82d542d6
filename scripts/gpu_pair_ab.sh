#!/usr/bin/env bash
# Pair-body A/B (session 8): GEMV GPU tests, then the decode benchmark with
# RESETFP4_GEMV_PAIR alternating over VALUES (default "0 1 0 1") on one machine. Logs -> $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/env.txt"
python3 -c "from resetfp4.kernels.build import load_extension as l; l(verbose=False)" 2>&1 | tail -3
timeout 300 python3 -m pytest tests/kernels/test_nvfp4_gemv_gpu.py tests/kernels/test_swiglu_gemv_gpu.py \
  -q -p no:cacheprovider -x 2>&1 | tee "$OUT/pytest.txt" | tail -2
i=0
for v in ${VALUES:-0 1 0 1}; do
  i=$((i + 1))
  RESETFP4_GEMV_PAIR=$v timeout 240 python3 -m resetfp4.cli.main bench decode --arch qwen3-8b \
    --random-weights ${BENCH_ARGS:---batch 8 --gen-len 128 --samplers fixed --precisions nvfp4-w4a16,nvfp4-w4a4} \
    --json "$OUT/d${i}_pair$v.json" > "$OUT/d${i}_pair$v.txt" 2>&1
  echo "== run $i PAIR=$v rc $?"; grep -E "^(bf16|nvfp4)" "$OUT/d${i}_pair$v.txt"
done
