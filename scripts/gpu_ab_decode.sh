#!/usr/bin/env bash
# A/B of the decode engine on one machine: the working tree against a baseline source tree
# (BASE_SRC, e.g. .carry/base_src/src made with `git archive <rev> src`), same benchmark args.
# Optional GPU engine tests first (STEPS has "test"). Logs and JSON -> $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STEPS=${STEPS:-test ab}
ARGS=${BENCH_ARGS:---batch 1,8 --gen-len 256 --samplers fixed}
has() { [[ " $STEPS " == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/env.txt"
PYTHONPATH=$PWD/src python3 -c "from resetfp4.kernels.build import load_extension as l; l(verbose=False)" 2>&1 | tail -3
if has test; then
  PYTHONPATH=$PWD/src timeout ${TEST_TIMEOUT:-300} python3 -m pytest ${TESTS:-tests/engine} -m gpu -q \
    -p no:cacheprovider -x 2>&1 | tee "$OUT/pytest_engine.txt" | tail -8
fi
if has ab; then
  for side in new base; do
    src=$PWD/src; [[ $side == base ]] && src=$PWD/${BASE_SRC:-.carry/base_src/src}
    PYTHONPATH=$src timeout ${BENCH_TIMEOUT:-240} python3 -m resetfp4.cli.main bench decode --arch qwen3-8b \
      --random-weights $ARGS --json "$OUT/decode_$side.json" > "$OUT/decode_$side.txt" 2>&1
    echo "== $side (rc $?)"; tail -${TAIL:-14} "$OUT/decode_$side.txt"
  done
fi
