#!/usr/bin/env bash
# One decode benchmark per value of an environment knob, same machine and call:
#   VAR=RESETFP4_GEMV_L2_PREFETCH_MB VALUES="0 16" BENCH_ARGS="..." bash scripts/gpu_env_sweep.sh
# Optional GPU tests first (TESTS). Logs and JSON -> $OUT; prints one table row per value.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/env.txt"
python3 -c "from resetfp4.kernels.build import load_extension as l; l(verbose=False)" 2>&1 | tail -3
if [[ -n "${TESTS:-}" ]]; then
  timeout ${TEST_TIMEOUT:-300} python3 -m pytest $TESTS -m gpu -q -p no:cacheprovider -x 2>&1 \
    | tee "$OUT/pytest.txt" | tail -3
fi
for v in $VALUES; do
  env "$VAR=$v" timeout ${BENCH_TIMEOUT:-240} python3 -m resetfp4.cli.main bench decode \
    --arch qwen3-8b --random-weights ${BENCH_ARGS:---batch 1,8 --gen-len 128 --samplers fixed} \
    --json "$OUT/decode_$v.json" > "$OUT/decode_$v.txt" 2>&1
  echo "== $VAR=$v (rc $?)"; grep -E "^(bf16|nvfp4)" "$OUT/decode_$v.txt"
done
