#!/usr/bin/env bash
# Batch-16 decode (session 19): the M <= 16 plan refit (the tree) against the old factor
# (dev/engine/m16_refit.patch, commit 6488fea, reversed in a copy). One device call:
#   OUT=$OUT bash dev/engine/m16_plan_ab.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}
rm -rf /tmp/old && mkdir -p /tmp/old && cp -r src /tmp/old/ && (cd /tmp/old && patch -R -p1 -s < "$OLDPWD/dev/engine/m16_refit.patch") || exit 1
run() { timeout 250 python3 -m resetfp4.cli.main bench decode --arch qwen3-8b --random-weights \
  --prompt-len 512 --batch 16 --gen-len 256 --samplers fixed --lm-head nvfp4 \
  --precisions nvfp4-w4a16 --no-count-kernels "$@" 2>&1 | tail -4; }
for src in $PWD/src /tmp/old/src; do
  echo "== $src"; PYTHONPATH=$src python3 -c "from resetfp4.kernels import nvfp4_gemv as kg; print(kg.FEWER_CTAS_SLOWDOWN, kg.plan(6144,4096,132,8,16))"
  PYTHONPATH=$src run --json "$OUT/b16_$(basename $(dirname $src)).json"
done
