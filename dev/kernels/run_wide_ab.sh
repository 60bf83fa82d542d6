#!/usr/bin/env bash
# Session 14: the wide (2 CTAs/SM) GEMV build, tested and measured in one device call. (The
# 112-register cap was measured against 128 with a patch of RESETFP4_GEMV_WIDE_REGS through
# run_grid.sh's PATCH argument; 112 is now the default.)
#   OUT=$OUT bash dev/kernels/run_wide_ab.sh [tests|quick|bench|grid|grid0|grid1 ...]
#   (default: tests bench grid)
# tests: the GEMV GPU tests (incl. the wide vs 3-CTA bit-identity test); bench: `bench kernels`
# at M = 1, 8 with RESETFP4_GEMV_WIDE = 0, 1, 0, 1 (separate processes); grid: the NVFP4-head
# decode rows (run_grid.sh head) with the wide build off, then on.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
parts=${*:-tests bench grid}
export PYTHONPATH=$PWD/src
for p in $parts; do case $p in
  tests)
    timeout 400 python3 -m pytest -q -x tests/kernels/test_nvfp4_gemv_gpu.py \
      tests/kernels/test_swiglu_gemv_gpu.py 2>&1 | tail -4 ;;
  bench)
    for w in 0 1 0 1; do
      RESETFP4_GEMV_WIDE=$w timeout 200 python3 -m resetfp4.cli.main bench kernels --batches 30 \
        --m 1 8 --json "$OUT/kernels_wide$w.json" 2>&1 | grep -E "^M=|^8B\.(o|down) " | sed "s/^/wide=$w /"
    done ;;
  grid)
    for w in 0 1; do
      echo "== RESETFP4_GEMV_WIDE=$w"
      OUT=$OUT/grid_wide$w bash dev/engine/run_grid.sh head - RESETFP4_GEMV_WIDE=$w 2>&1 \
        | grep -E "^(bf16|nvfp4)"
    done ;;
  grid0|grid1)  # one of the two
    w=${p#grid}; echo "== RESETFP4_GEMV_WIDE=$w"
    OUT=$OUT/grid_wide$w bash dev/engine/run_grid.sh head - RESETFP4_GEMV_WIDE=$w 2>&1 \
      | grep -E "^(bf16|nvfp4)" ;;
  quick)  # the wide-build tests only
    timeout 300 python3 -m pytest -q -x tests/kernels/test_nvfp4_gemv_gpu.py -k "wide or pair or split" \
      2>&1 | tail -2 ;;
esac; done
