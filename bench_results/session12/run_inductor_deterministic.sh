#!/usr/bin/env bash
# One device call: does Inductor's deterministic mode (no on-device benchmarking of reduction
# configs, torch._inductor.config.deterministic) settle the flaky continuous-vs-static test,
# and what does it cost per decode step?
#  1. the test N times on the two candidate trees that failed it (gemv_scales_smem 1 of 5,
#     gemv_l2_prefetch_down 2 of 6; the base tree passed 10 of 10) with
#     TORCHINDUCTOR_DETERMINISTIC=1;
#  2. decode-step A/B (dev/engine/ab_trees.sh): base vs the deterministic mode.
# Ran (device, repository root, session 12) as dev/engine/candidates/run_inductor_deterministic.sh 4 2;
# kept here as the record: the two candidate patches it applies have since landed / been rejected.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
TORCHINDUCTOR_DETERMINISTIC=1 bash dev/engine/flake_check.sh "${1:-4}" \
  'tests/engine/test_gpu_decode.py@continuous_graphs_equal_static and reset-nvfp4' \
  smem:src:dev/kernels/candidates/gemv_scales_smem.patch pf0:src:dev/kernels/candidates/gemv_l2_prefetch_down.patch \
  | grep -E "runs passed|failed"
AB_BATCH=${AB_BATCH:-1,8} bash dev/engine/ab_trees.sh "${2:-2}" base:src \
  "det:src::--set,torch._inductor.config.deterministic=True"
