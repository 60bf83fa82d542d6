#!/usr/bin/env bash
# Session 18 candidate gemv_pf_cursor.patch (the L2 prefetch's address from a cursor advanced
# one body per body, unsigned body steps): the patched GEMV against the tree's own sources
# (variant `base`) in one call, W4A16 at M = 1, 8 on the layer kinds it touches.
#   OUT=$OUT bash dev/kernels/rejected/run_pf_cursor.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
rm -rf /tmp/base_csrc && cp -r src/resetfp4/kernels/csrc /tmp/base_csrc
patch -p1 -s < dev/kernels/rejected/gemv_pf_cursor.patch || { echo "patch failed"; exit 1; }
export PYTHONPATH=$PWD/src
timeout 400 python3 dev/kernels/variant_bench.py --variants base d4b4p1c3 --src-base /tmp/base_csrc \
  --m 1 8 --shapes 8B.qkv 8B.o 8B.gate_up 8B.down 14B.gate_up 32B.down \
  --json "$OUT/variants_pf_cursor.json" 2>&1 | tail -4
