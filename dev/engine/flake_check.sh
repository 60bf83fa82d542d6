#!/usr/bin/env bash
# Run one GPU test N times on several source trees, alternating, and count passes: for
# attributing a flaky test to a change (session 11: the continuous-vs-static decode test
# failed 2 of 4 times with two candidates applied and passed 5 of 5 without them).
# Usage (device, repository root):
#   OUT=$OUT bash dev/engine/flake_check.sh N TEST_SELECTOR NAME:SRC[:PATCH] ...
#   TEST_SELECTOR: a pytest node id or "file::k-expression" split as FILE -k EXPR with '@',
#   e.g. 'tests/engine/test_gpu_decode.py@continuous_graphs_equal_static and reset-nvfp4'.
#   SRC / PATCH as in ab_trees.sh (tests/ of the working tree are used for every tree; the
#   per-run logs exceed what the device returns, the stdout lines are the record).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
n=$1; sel=$2; shift 2
file=${sel%%@*}; expr=${sel#*@}
[[ "$expr" == "$sel" ]] && expr=""
root=$PWD
# shellcheck source=dev/engine/trees.sh
source "$root/dev/engine/trees.sh"
prepare_trees "$@"
wait
declare -A pass
for t in "${names[@]}"; do pass[$t]=0; done
for i in $(seq 1 "$n"); do
  for t in "${names[@]}"; do
    log=$OUT/${t}_$i.txt
    TORCH_EXTENSIONS_DIR=${ext[$t]} PYTHONPATH=${path[$t]} timeout 300 python3 -m pytest -q -p no:cacheprovider \
      "$file" ${expr:+-k "$expr"} > "$log" 2>&1 && pass[$t]=$((pass[$t] + 1))
    echo "$t $i: $(grep -E 'passed|failed' "$log" | tail -1)"
  done
done
for t in "${names[@]}"; do echo "$t: ${pass[$t]} of $n runs passed"; done
