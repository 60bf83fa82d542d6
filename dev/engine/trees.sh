# Source trees for device A/Bs; sourced by ab_trees.sh and flake_check.sh (needs $root, the
# repository root, and $OUT).
#   prepare_trees SPEC...   SPEC = NAME:SRC[:PATCH[:EXTRA]]
# fills `names`, `path[NAME]` (the package directory to put on PYTHONPATH), `ext[NAME]`
# (its TORCH_EXTENSIONS_DIR) and `extra[NAME]` (EXTRA with commas as spaces), and builds
# each extension in the background (`wait` afterwards; logs in $OUT/build_NAME.txt). A PATCH
# (-p1 from the repository root) is applied to a copy of SRC and tests/ in /tmp/tree_NAME;
# names that share a directory share one build (the extension directory is keyed by it).
declare -A path ext extra
names=()
prepare_trees() {
  local spec name src patch more d n
  local B='from resetfp4.kernels.build import load_extension as l; l(verbose=False)'
  for spec in "$@"; do
    IFS=: read -r name src patch more <<< "$spec"
    names+=("$name")
    if [[ -n "${patch:-}" ]]; then
      d=/tmp/tree_$name; rm -rf "$d"; mkdir -p "$d"; cp -r "$src" "$d/src"; cp -r "$root/tests" "$d/"
      (cd "$d" && patch -p1 -s < "$root/$patch") || { echo "patch $patch failed for $name"; exit 1; }
      path[$name]=$d/src
    else
      path[$name]=$(cd "$src" && pwd)
    fi
    extra[$name]=${more//,/ }
    ext[$name]=/root/ext_$(printf '%s' "${path[$name]}" | md5sum | cut -c1-10)
  done
  declare -A started=()
  for n in "${names[@]}"; do
    [[ -n "${started[${ext[$n]}]:-}" ]] && continue
    started[${ext[$n]}]=1
    TORCH_EXTENSIONS_DIR=${ext[$n]} PYTHONPATH=${path[$n]} python3 -c "$B" > "$OUT/build_$n.txt" 2>&1 &
  done
}
