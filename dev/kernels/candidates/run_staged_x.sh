#!/usr/bin/env bash
# One device call for the staged-x GEMV candidate (gemv_staged_x.patch): the working tree as
# the base, a patched copy beside it with its own extension build, then
#   1. the GEMV GPU tests on the patched copy (float64 references, and the continuous-batching
#      bitwise test: M = 1, 2 take the staged path, M >= 3 not, the bits must agree),
#   2. post_wait_latency.py on both trees (the GEMVs' cost after their PDL wait),
#   3. the decode step (step_ms.py, batch 1 and 8) alternating base / staged / base / staged.
# Usage (on the device, repository root): OUT=$OUT bash dev/kernels/candidates/run_staged_x.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root=$PWD; cand=/tmp/staged_x
rm -rf "$cand"; mkdir -p "$cand"; cp -r src tests pyproject.toml "$cand"/ 2>/dev/null
(cd "$cand" && { patch -p1 -s < "$root/dev/kernels/candidates/gemv_staged_x.patch" || exit 1; })
B='from resetfp4.kernels.build import load_extension as l; l(verbose=False)'
PYTHONPATH=$root/src python3 -c "$B" > "$OUT/build_base.txt" 2>&1 &
TORCH_EXTENSIONS_DIR=/root/ext_xs PYTHONPATH=$cand/src python3 -c "$B" > "$OUT/build_xs.txt" 2>&1 &
wait
(cd "$cand" && TORCH_EXTENSIONS_DIR=/root/ext_xs PYTHONPATH=$cand/src python3 -m pytest -q -p no:cacheprovider \
  tests/kernels/test_nvfp4_gemv_gpu.py tests/kernels/test_swiglu_gemv_gpu.py 2>&1 | tail -3)
PYTHONPATH=$root/src python3 dev/kernels/post_wait_latency.py --json "$OUT/post_wait_base.json" 2>&1 | tail -9
TORCH_EXTENSIONS_DIR=/root/ext_xs PYTHONPATH=$cand/src python3 dev/kernels/post_wait_latency.py \
  --json "$OUT/post_wait_xs.json" 2>&1 | tail -9
for r in 1 2; do
  PYTHONPATH=$root/src python3 dev/engine/step_ms.py --batch 1,8 --json "$OUT/step_base_$r.json" 2>&1 | tail -1 | sed 's/^/base   /'
  TORCH_EXTENSIONS_DIR=/root/ext_xs PYTHONPATH=$cand/src python3 dev/engine/step_ms.py --batch 1,8 \
    --json "$OUT/step_xs_$r.json" 2>&1 | tail -1 | sed 's/^/staged /'
done
