#!/usr/bin/env bash
# One device call for the engine (issue 4): build the kernels, GPU engine tests, decode benchmark with a
# per-kernel-category profile. Logs and JSON -> $OUT.
# STEPS (default "test bench") picks from: test bench real.
#   BENCH_ARGS   extra args for `resetfp4 bench decode` (default: batch 1,8, gen 256, fixed sampler)
#   REAL_MODEL   a GGUF for the real-weights sanity row (step "real")
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STEPS=${STEPS:-test bench}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
has() { [[ " $STEPS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/env.txt"
git rev-parse --short HEAD 2>/dev/null | tee -a "$OUT/env.txt"
t0=$(date +%s)
python3 -c "from resetfp4.kernels.build import load_extension as l; l(verbose=False)" 2>&1 | tail -3
echo "build_s=$(( $(date +%s) - t0 ))" | tee -a "$OUT/env.txt"
if has test; then
  timeout 420 python3 -m pytest ${TESTS:-tests/engine} -m gpu -q -p no:cacheprovider -x 2>&1 \
    | tee "$OUT/pytest_engine.txt" | tail -8
fi
if has bench; then
  timeout 480 python3 -m resetfp4.cli.main bench decode --arch qwen3-8b --random-weights \
    ${BENCH_ARGS:---batch 1,8 --gen-len 256 --samplers fixed} --json "$OUT/bench_decode.json" 2>&1 \
    | tee "$OUT/bench_decode.txt" | tail -30
fi
if has real; then
  timeout 300 python3 -m resetfp4.cli.main bench decode --model "$REAL_MODEL" \
    ${REAL_ARGS:---batch 1,8 --gen-len 256 --prompt-len 512} --json "$OUT/bench_decode_real.json" 2>&1 \
    | tee "$OUT/bench_decode_real.txt" | tail -20
fi
