#!/usr/bin/env bash
# Kernel GPU tests (GEMV + SwiGLU GEMV), then `resetfp4 bench kernels` (M from $MS). Logs -> $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/env.txt"
t0=$(date +%s)
python3 -c "from resetfp4.kernels.build import load_extension as l; l(verbose=False)" 2>&1 | tail -3
echo "build_s=$(( $(date +%s) - t0 ))"
timeout 300 python3 -m pytest tests/kernels/test_nvfp4_gemv_gpu.py tests/kernels/test_swiglu_gemv_gpu.py \
  -q -p no:cacheprovider -x 2>&1 | tee "$OUT/pytest.txt" | tail -4
timeout 200 python3 -m resetfp4.cli.main bench kernels --m ${MS:-1 8 16} --json "$OUT/kernels.json" \
  > "$OUT/kernels.txt" 2>&1
echo "bench rc $?"; grep -iE "geomean" "$OUT/kernels.txt"
