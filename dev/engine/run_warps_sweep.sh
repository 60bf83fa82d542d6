#!/usr/bin/env bash
# num_warps sweep of the decode step's Triton kernels (session 13 found -80 µs per batch-1
# step from 8 warps in the one-tile attention split kernel; no other launch's num_warps was
# ever swept). Decode-step A/Bs through dev/engine/ab_trees.sh (W4A16 + NVFP4 head), every
# variant a module constant set with step_ms.py --set; defaults are the base.
#   b1    batch 1, gen 128: producers (add + RMSNorm), sampler kernels, the one-tile split
#         kernel at 16 warps (128 registers, 68 bytes of spill: dev/engine/triton_regs.py),
#         the attention combine at 8 warps (1 and 2 lost in session 13); ROUNDS (default 1;
#         9 variants, ~5 min a round)
#   b8    the same variants at batch 8
#   long  batch 1, gen 1024 (attention buckets 1024 and 2048): at bucket 2048 the split kernel
#         has 256 one-tile programs, more than the SMs, so it keeps SPLIT_WARPS (4). Variants:
#         8 warps there (long8); 128 two-tile programs (PROGRAMS_PER_SM=1) with 4 or 8 warps;
#         two rounds (~6 min)
# Usage (device, repository root): OUT=$OUT bash dev/engine/run_warps_sweep.sh b1|b8|long [ROUNDS]
# Any variant that wins: rerun it against base for two more rounds before changing a default.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
aq=resetfp4.engine.act_quant_kernels
sk=resetfp4.sampling.kernels
at=resetfp4.engine.attention
variants=(
  base:src
  "norm8:src::--set,$aq.NORM_WARPS=8"
  "norm2:src::--set,$aq.NORM_WARPS=2"
  "stats8:src::--set,$sk.STATS_WARPS=8"
  "hc8:src::--set,$sk.HIST_WARPS=8,--set,$sk.COMPACT_WARPS=8"
  "fin4:src::--set,$sk.FINALIZE_WARPS=4"
  "samp8:src::--set,$sk.SAMPLE_WARPS=8"
  "split16:src::--set,$at.SPLIT_WARPS_ONE_TILE=16"
  "comb8:src::--set,resetfp4.engine.attention_kernels.COMBINE_WARPS=8"
)
case ${1:-b1} in
  b1) AB_BATCH=1 AB_GEN=128 bash dev/engine/ab_trees.sh "${2:-1}" "${variants[@]}" ;;
  b8) AB_BATCH=8 AB_GEN=128 bash dev/engine/ab_trees.sh "${2:-1}" "${variants[@]}" ;;
  long) AB_BATCH=1 AB_GEN=1024 bash dev/engine/ab_trees.sh "${2:-2}" base:src \
          "long8:src::--set,$at.SPLIT_WARPS=8" \
          "pps1:src::--set,$at.PROGRAMS_PER_SM=1" \
          "pps1w8:src::--set,$at.PROGRAMS_PER_SM=1,--set,$at.SPLIT_WARPS=8" ;;
  *) echo "usage: $0 b1|b8|long [ROUNDS]"; exit 2 ;;
esac
