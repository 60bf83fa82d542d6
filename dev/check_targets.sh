#!/usr/bin/env bash
# Every figure the open issues' speed targets name, on the lent card, in one device call
# (about 6-8 minutes on a cold machine; session 15, not run yet as a whole: its parts are
# run_grid.sh head1024 / head and `bench kernels`, each run in sessions 13-15):
#   OUT=$OUT bash dev/check_targets.sh
# Writes decode_lmhead_nvfp4_gen1024.json, decode_lmhead_nvfp4.json, kernels.json and the
# logs under $OUT, then prints dev/check_targets.py's table (targets are H100 ones).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem --format=csv,noheader
OUT=$OUT bash dev/engine/run_grid.sh head1024 - > "$OUT/grid_head1024.txt" 2>&1
OUT=$OUT bash dev/engine/run_grid.sh head - > "$OUT/grid_head.txt" 2>&1
PYTHONPATH=$PWD/src timeout 280 python3 -m resetfp4.cli.main bench kernels --batches 30 --m 1 8 \
  --json "$OUT/kernels.json" > "$OUT/kernels.txt" 2>&1 || echo "bench kernels failed: see kernels.txt"
python3 dev/check_targets.py "$OUT"
