#!/usr/bin/env bash
# One device call for the GEMV candidates of dev/kernels/candidates (see README.md there):
# the working tree is the base; each candidate is a patched copy with its own extension
# build. Then
#   1. the GEMV GPU tests on each patched copy (float64 references; the continuous-batching
#      bitwise test compares M = 1, 2 (staged x) with M >= 3 (not));
#   2. post_wait_latency.py on the base and each copy (each GEMV's cost after its PDL wait);
#   3. the decode step (step_ms.py, batch 1 and 8), base and candidates in turn, twice.
# Usage (device, repository root): OUT=$OUT bash dev/kernels/candidates/run_candidates.sh [names]
# names: any of staged_x scales_smem both (default: all three).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root=$PWD
names=${*:-staged_x scales_smem both}
declare -A patchfile=([staged_x]=gemv_staged_x.patch [scales_smem]=gemv_scales_smem.patch [both]=gemv_both.patch)
B='from resetfp4.kernels.build import load_extension as l; l(verbose=False)'
PYTHONPATH=$root/src python3 -c "$B" > "$OUT/build_base.txt" 2>&1 &
for v in $names; do
  d=/tmp/cand_$v; rm -rf "$d"; mkdir -p "$d"; cp -r src tests pyproject.toml "$d"/
  (cd "$d" && patch -p1 -s < "$root/dev/kernels/candidates/${patchfile[$v]}") || { echo "patch $v failed"; exit 1; }
  TORCH_EXTENSIONS_DIR=/root/ext_$v PYTHONPATH=$d/src python3 -c "$B" > "$OUT/build_$v.txt" 2>&1 &
done
wait
for v in $names; do
  echo "== tests $v"
  (cd /tmp/cand_$v && TORCH_EXTENSIONS_DIR=/root/ext_$v PYTHONPATH=/tmp/cand_$v/src timeout 300 python3 -m pytest -q \
    -p no:cacheprovider tests/kernels/test_nvfp4_gemv_gpu.py tests/kernels/test_swiglu_gemv_gpu.py 2>&1 | tail -2)
done
echo "== post-wait latency: base"
PYTHONPATH=$root/src python3 dev/kernels/post_wait_latency.py --json "$OUT/post_wait_base.json" 2>&1 | tail -9
for v in $names; do
  echo "== post-wait latency: $v"
  TORCH_EXTENSIONS_DIR=/root/ext_$v PYTHONPATH=/tmp/cand_$v/src python3 dev/kernels/post_wait_latency.py \
    --json "$OUT/post_wait_$v.json" 2>&1 | tail -9
done
for r in 1 2; do
  PYTHONPATH=$root/src python3 dev/engine/step_ms.py --batch 1,8 --json "$OUT/step_base_$r.json" 2>&1 | tail -1 | sed 's/^/base        /'
  for v in $names; do
    TORCH_EXTENSIONS_DIR=/root/ext_$v PYTHONPATH=/tmp/cand_$v/src python3 dev/engine/step_ms.py --batch 1,8 \
      --json "$OUT/step_${v}_$r.json" 2>&1 | tail -1 | sed "s/^/$(printf '%-11s' $v) /"
  done
done
