#!/usr/bin/env bash
# Session 17: the two-body L2 prefetch (RESETFP4_GEMV_PF2, on where a warp streams >= 7
# one-tile bodies), tested and measured in one device call.
#   OUT=$OUT bash dev/kernels/run_pf2.sh [tests] [bench] [full]   (default: tests bench)
# tests: the build-switch bit-identity tests (pf2 and wide); bench: `bench kernels` at M = 1, 8
# on the four shapes the rule picks plus two it does not, RESETFP4_GEMV_PF2 = 0, 1, 0, 1 in
# separate processes; full: both GEMV GPU test files.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
parts=${*:-tests bench}
export PYTHONPATH=$PWD/src
for p in $parts; do case $p in
  tests)
    timeout 400 python3 -m pytest -q -x tests/kernels/test_nvfp4_gemv_gpu.py -k same_bits 2>&1 | tail -2 ;;
  full)
    timeout 400 python3 -m pytest -q -x tests/kernels/test_nvfp4_gemv_gpu.py \
      tests/kernels/test_swiglu_gemv_gpu.py 2>&1 | tail -2 ;;
  bench)
    for w in 0 1 0 1; do
      RESETFP4_GEMV_PF2=$w timeout 200 python3 -m resetfp4.cli.main bench kernels --batches 20 \
        --m 1 8 --shapes 8B.down 14B.o 14B.gate_up 14B.down 32B.gate_up 32B.down \
        --json "$OUT/kernels_pf2_$w.$RANDOM.json" 2>&1 | grep -E "^(8B|14B|32B)\." | awk -v w=$w '{print "pf2=" w, $1, $2, $3, $4, $5, $6}'
    done ;;
esac; done
