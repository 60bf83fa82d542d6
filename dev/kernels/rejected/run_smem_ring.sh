#!/usr/bin/env bash
# Session-14 candidate gemv_smem_ring.patch (rejected in session 15), tested and measured in one call
# Measured in session 15 (variants only: slower). Applies to commit 2c5f5db.
#   OUT=$OUT bash dev/kernels/rejected/run_smem_ring.sh [variants|tests|grid ...]
#     (default: variants tests grid; about 8-9 minutes: run `tests` in a call of its own if short)
# variants: variant_bench.py, the default build against the ring of 2 and 3 bodies (6 shapes,
#           M = 1 / 8, each checked against the float64 reference);
# tests:    the GEMV GPU tests with RESETFP4_GEMV_RING=2, then 3, as the package default;
# grid:     run_grid.sh head (NVFP4 head, gen 256) on the base tree, then with the ring of 2.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
root=$PWD; d=/tmp/ring_tree
if [[ ! -d $d/src ]]; then
  rm -rf "$d"; mkdir -p "$d"; cp -r src dev tests pyproject.toml "$d"/
  (cd "$d" && patch -p1 -s < "$root/dev/kernels/rejected/gemv_smem_ring.patch") \
    || { echo "patch failed"; rm -rf "$d"; exit 1; }
fi
for p in ${*:-variants tests grid}; do case $p in
  variants)
    (cd "$d" && PYTHONPATH=$d/src timeout 400 python3 dev/kernels/variant_bench.py \
      --variants d4b4p1c3 ring2 ring3 --m 1 8 --json "$OUT/ring_variants.json" 2>&1 | tail -4) ;;
  tests)  # the package default set to a ring of 2, then 3 (each its own tree and build)
    for k in 2 3; do
      r=/tmp/ring${k}_tree
      [[ -d $r ]] || { cp -r "$d" "$r" && sed -i "s/^#define RESETFP4_GEMV_RING 0$/#define RESETFP4_GEMV_RING $k/" \
        "$r/src/resetfp4/kernels/csrc/nvfp4_gemv.cu"; }
      echo "== ring $k: $(grep -c "define RESETFP4_GEMV_RING $k" "$r/src/resetfp4/kernels/csrc/nvfp4_gemv.cu") define"
      (cd "$r" && PYTHONPATH=$r/src TORCH_EXTENSIONS_DIR=/root/ext_ring$k timeout 300 python3 -m pytest -q -x \
        tests/kernels/test_nvfp4_gemv_gpu.py tests/kernels/test_swiglu_gemv_gpu.py 2>&1 | tail -2)
    done ;;
  grid)
    echo "== base"; OUT=$OUT/grid_base bash dev/engine/run_grid.sh head - 2>&1 | grep -E "^(bf16|nvfp4)"
    r=/tmp/ring2_tree
    [[ -d $r ]] || { cp -r "$d" "$r" && sed -i 's/^#define RESETFP4_GEMV_RING 0$/#define RESETFP4_GEMV_RING 2/' \
      "$r/src/resetfp4/kernels/csrc/nvfp4_gemv.cu"; }
    echo "== ring 2"; (cd "$r" && OUT=$OUT/grid_ring2 bash dev/engine/run_grid.sh head - 2>&1 | grep -E "^(bf16|nvfp4)") ;;
esac; done
