#!/usr/bin/env bash
# One device call for gemv_l2_prefetch_down.patch (README.md here): GPU tests of the patched
# tree, then the decode-step A/B (dev/engine/ab_trees.sh): the base tree, the patched tree
# with the prefetch off (the cost of the code alone: the kernels it does not use are
# SASS-identical to the base's) and on with 1 and 2 bodies per down warp (the three share the
# patched tree and its build). ~7 minutes; the result lines on stdout are the record (at most
# 8 files come back from $OUT).
# Usage (device, repository root): OUT=$OUT bash dev/kernels/rejected/run_l2_prefetch_down.sh [ROUNDS]
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
P=dev/kernels/rejected/gemv_l2_prefetch_down.patch
d=/tmp/pf_tests; rm -rf "$d"; mkdir -p "$d"; cp -r src tests pyproject.toml "$d"/
(cd "$d" && patch -p1 -s < "$OLDPWD/$P") || { echo "patch failed"; exit 1; }
(cd "$d" && TORCH_EXTENSIONS_DIR=/root/ext_$(printf '%s' "$d/src" | md5sum | cut -c1-10) PYTHONPATH=src timeout 300 python3 -m pytest -q -p no:cacheprovider \
  tests/kernels/test_next_prefetch.py tests/kernels/test_swiglu_gemv_gpu.py tests/kernels/test_nvfp4_gemv_gpu.py \
  tests/engine/test_gpu_decode.py 2>&1 | tail -3)
S=resetfp4.engine.decode.L2_PF_DOWN
AB_BATCH=${AB_BATCH:-1,8} bash dev/engine/ab_trees.sh "${1:-2}" base:src "pf0:$d/src" "pf1:$d/src::--set,$S=1" \
  "pf2:$d/src::--set,$S=2"
