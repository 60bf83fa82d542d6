#!/usr/bin/env bash
# Device calls for fused_mlp.patch (README.md here), on a patched copy in /tmp/fm_tree (kept
# between calls while the machine stays warm; one extension build shared by both modes).
#   tests  GPU tests of the fused kernel and the decode step with it, then the kernel
#          microbenchmark dev/kernels/mlp_bench.py (Qwen3-8B MLP, 12 layers, M = 1 and 8)
#   ab     decode-step A/B (dev/engine/ab_trees.sh): base, patched with the fusion off, on
#   sanitize  compute-sanitizer memcheck / racecheck on one small test case
# Usage (device, repository root): OUT=$OUT bash dev/kernels/rejected/run_fused_mlp.sh tests|ab|sanitize [ROUNDS]
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
P=dev/kernels/rejected/fused_mlp.patch
d=/tmp/fm_tree
if [[ ! -d $d/src ]]; then
  rm -rf "$d"; mkdir -p "$d"; cp -r src tests dev pyproject.toml "$d"/
  (cd "$d" && patch -p1 -s < "$OLDPWD/$P") || { echo "patch failed"; rm -rf "$d"; exit 1; }
fi
ext=/root/ext_$(printf '%s' "$d/src" | md5sum | cut -c1-10)
case ${1:-tests} in
  tests)
    # a deadlocked barrier would hang: every step has a timeout
    (cd "$d" && TORCH_EXTENSIONS_DIR=$ext PYTHONPATH=src timeout 420 python3 -m pytest -q -x -p no:cacheprovider \
      tests/kernels/test_mlp_gpu.py tests/engine/test_gpu_decode.py -k "mlp or graph_decode" 2>&1 | tail -15)
    (cd "$d" && TORCH_EXTENSIONS_DIR=$ext PYTHONPATH=src timeout 150 python3 dev/kernels/mlp_bench.py \
      --json "$OUT/mlp_bench.json" 2>&1 | tail -4) ;;
  sanitize)  # if the tests fail: memcheck and racecheck on one small case (~2 min; a trap or
    # timeout here may be the tools serializing CTAs under the software grid barrier)
    for tool in memcheck racecheck; do
      (cd "$d" && TORCH_EXTENSIONS_DIR=$ext PYTHONPATH=src timeout 240 compute-sanitizer --tool $tool \
        --kernel-name regex:mlp_kernel python3 -m pytest -q -x -p no:cacheprovider \
        "tests/kernels/test_mlp_gpu.py::test_fused_mlp_equals_two_launches[False-256-256-256-2-1-dtype0]" \
        2>&1 | tail -8)
    done ;;
  ab)
    AB_BATCH=${AB_BATCH:-1,8} bash dev/engine/ab_trees.sh "${2:-2}" base:src "fm0:$d/src" \
      "fm1:$d/src::--set,resetfp4.engine.decode.FUSED_MLP=True" ;;
  *) echo "usage: $0 tests|ab|sanitize [ROUNDS]"; exit 2 ;;
esac
