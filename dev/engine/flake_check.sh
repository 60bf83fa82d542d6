#!/usr/bin/env bash
# Run one GPU test N times on several source trees, alternating, and count passes: for
# attributing a flaky test to a change (session 11: the continuous-vs-static decode test
# failed 2 of 4 times with two candidates applied and passed 5 of 5 without them).
# Usage (device, repository root):
#   OUT=$OUT bash dev/engine/flake_check.sh N TEST_SELECTOR NAME:SRC[:PATCH] ...
#   TEST_SELECTOR: a pytest node id or "file::k-expression" split as FILE -k EXPR with '@',
#   e.g. 'tests/engine/test_gpu_decode.py@continuous_graphs_equal_static and reset-nvfp4'.
#   SRC / PATCH as in ab_trees.sh (tests/ of the working tree are used for every tree).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
n=$1; sel=$2; shift 2
file=${sel%%@*}; expr=${sel#*@}
[[ "$expr" == "$sel" ]] && expr=""
root=$PWD
declare -A path pass
names=()
B='from resetfp4.kernels.build import load_extension as l; l(verbose=False)'
for spec in "$@"; do
  IFS=: read -r name src patch <<< "$spec"
  names+=("$name")
  if [[ -n "${patch:-}" ]]; then
    d=/tmp/flake_$name; rm -rf "$d"; mkdir -p "$d"; cp -r "$src" "$d/src"; cp -r "$root/tests" "$d/"
    (cd "$d" && patch -p1 -s < "$root/$patch") || { echo "patch $patch failed for $name"; exit 1; }
    path[$name]=$d/src
  else
    path[$name]=$(cd "$src" && pwd)
  fi
  pass[$name]=0
  TORCH_EXTENSIONS_DIR=/root/ext_$name PYTHONPATH=${path[$name]} python3 -c "$B" > "$OUT/build_$name.txt" 2>&1 &
done
wait
for i in $(seq 1 "$n"); do
  for t in "${names[@]}"; do
    log=$OUT/${t}_$i.txt
    TORCH_EXTENSIONS_DIR=/root/ext_$t PYTHONPATH=${path[$t]} timeout 300 python3 -m pytest -q -p no:cacheprovider \
      "$file" ${expr:+-k "$expr"} > "$log" 2>&1 && pass[$t]=$((pass[$t] + 1))
    echo "$t $i: $(grep -E 'passed|failed' "$log" | tail -1)"
  done
done
for t in "${names[@]}"; do echo "$t: ${pass[$t]} of $n runs passed"; done
