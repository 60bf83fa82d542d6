#!/usr/bin/env bash
# Decode-step A/B of several source trees in one device call (dev/engine/step_ms.py, each
# source directory with its own extension build, trees alternating for ROUNDS rounds).
# Usage (device, repository root):
#   OUT=$OUT bash dev/engine/ab_trees.sh ROUNDS NAME:SRC[:PATCH[:STEP_MS_ARGS]] ...
#   SRC: a directory holding the resetfp4 package (e.g. src, or dev/_old_src/src from
#   `git archive HEAD src | tar -x -C dev/_old_src`); PATCH (optional, -p1 from the
#   repository root, e.g. dev/kernels/rejected/gemv_staged_x.patch) is applied to a copy of
#   SRC and tests/; STEP_MS_ARGS (optional, spaces as commas) go to
#   step_ms.py, e.g. --set,resetfp4.engine.attention.PROGRAMS_PER_SM=1. Names that share a
#   SRC without PATCH share one extension build.
# Env: AB_BATCH (default 1,8), AB_GEN (default 128).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
rounds=$1; shift
root=$PWD
# shellcheck source=dev/engine/trees.sh
source "$root/dev/engine/trees.sh"
prepare_trees "$@"
wait
for r in $(seq 1 "$rounds"); do
  for n in "${names[@]}"; do
    # shellcheck disable=SC2086
    TORCH_EXTENSIONS_DIR=${ext[$n]} PYTHONPATH=${path[$n]} python3 dev/engine/step_ms.py \
      --batch "${AB_BATCH:-1,8}" --gen-len "${AB_GEN:-128}" ${extra[$n]} --json "$OUT/step_${n}_$r.json" 2>&1 \
      | tail -1 | sed "s/^/$(printf '%-10s' "$n") /"
  done
done
