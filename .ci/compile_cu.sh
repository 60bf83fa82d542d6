#!/usr/bin/env bash
# Compile every .cu under src/ for sm_90a so kernel code cannot rot (no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find src -name '*.cu' | sort)
if [ ${#files[@]} -eq 0 ]; then echo "compile_cu: no .cu files"; exit 0; fi
NVCC=${NVCC:-nvcc}
incs=$(python3 -c "import sysconfig, torch.utils.cpp_extension as c; print(' '.join('-I'+p for p in c.include_paths() + [sysconfig.get_paths()['include']]))")
out=$(mktemp -d)
for f in "${files[@]}"; do
  echo "nvcc sm_90a: $f"
  $NVCC -std=c++17 -gencode=arch=compute_90a,code=sm_90a $incs -c "$f" -o "$out/$(basename "$f").o"
done
echo "compile_cu: ${#files[@]} file(s) OK"
