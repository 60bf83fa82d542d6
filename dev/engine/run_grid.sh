#!/usr/bin/env bash
# The decode grid of record (BENCHMARKS.md, docs/bench_decode.md), one device call per part:
#   main  gen 1024, batch 1, 4, 8; BF16, W4A16, W4A4; fixed and ReSET samplers
#   head  the NVFP4 lm_head rows: batch 1, 8; gen 256; fixed sampler; with their own BF16 rows
#   head1024  the same at gen 1024 (the benchmark length; attention up to 1,536 positions)
# PATCH (-p1 from the repository root; "-" for none) is applied to a copy in /tmp/grid_tree
# (kept for the second part while the machine stays warm); VAR=VALUE arguments are exported
# (e.g. RESETFP4_FUSED_MLP=1). Tables on stdout, JSON under $OUT.
# Usage (device, repository root): OUT=$OUT bash dev/engine/run_grid.sh main|head|head1024 [PATCH|-] [VAR=VALUE ...]
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
part=${1:?main, head or head1024}; patch_file=${2:--}; shift 2 || shift $#
src=$PWD/src
if [[ "$patch_file" != "-" ]]; then
  d=/tmp/grid_tree
  if [[ ! -d $d/src ]]; then
    mkdir -p "$d"; cp -r src "$d"/
    (cd "$d" && patch -p1 -s < "$OLDPWD/$patch_file") || { echo "patch failed"; rm -rf "$d"; exit 1; }
  fi
  src=$d/src
fi
for kv in "$@"; do export "${kv?}"; done
export PYTHONPATH=$src TORCH_EXTENSIONS_DIR=/root/ext_$(printf '%s' "$src" | md5sum | cut -c1-10)
python3 -c "import torch; print(torch.cuda.get_device_name(), torch.__version__)"
run() { timeout 560 python3 -m resetfp4.cli.main bench decode --arch qwen3-8b --random-weights \
  --prompt-len 512 "$@" 2>&1 | tail -16; }
case $part in
  main) run --batch 1,4,8 --gen-len 1024 --samplers fixed,reset --json "$OUT/decode_gen1024.json" ;;
  head) run --batch 1,8 --gen-len 256 --samplers fixed --lm-head nvfp4 --json "$OUT/decode_lmhead_nvfp4.json" ;;
  head1024) run --batch 1,8 --gen-len 1024 --samplers fixed --lm-head nvfp4 \
    --json "$OUT/decode_lmhead_nvfp4_gen1024.json" ;;
  *) echo "part must be main, head or head1024"; exit 2 ;;
esac
