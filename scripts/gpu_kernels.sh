#!/usr/bin/env bash
# One device call: build, GPU tests, sanitizer, SASS/ptxas report, benchmark. Logs -> $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/env.txt"
t0=$(date +%s)
python3 -c "from resetfp4.kernels.build import load_extension as l; l(verbose=False)" 2>&1 | tail -5
echo "build_s=$(( $(date +%s) - t0 ))" | tee -a "$OUT/env.txt"
so=$(find ~/.cache/torch_extensions -name 'resetfp4_nvfp4_gemv*.so' | head -1)
cuobjdump -sass "$so" 2>/dev/null | grep -oE '(LDG[.A-Z0-9]*|HMMA[.A-Z0-9]*|LDL|STL|HMUL2[.A-Z0-9]*)' | sort | uniq -c > "$OUT/sass_summary.txt"
cat "$OUT/sass_summary.txt"
python3 -m pytest tests/kernels -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt" | tail -15
cat > /tmp/san.py <<'PY'
import torch
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight
w = quantize(torch.randn(200, 4096, device="cuda")); pw = prepare_weight(w)
for act in ("bf16", "fp4"):
    for m in (1, 9, 20):
        y = pw(torch.randn(m, 4096, device="cuda").to(torch.bfloat16), act=act)
torch.cuda.synchronize(); print("sanitizer case done", y.shape)
PY
compute-sanitizer --tool memcheck python3 /tmp/san.py 2>&1 | tail -4 | tee "$OUT/sanitizer.txt"
python3 -m resetfp4.cli.main bench kernels ${BENCH_ARGS:-} --json "$OUT/bench_kernels.json" 2>&1 | tee "$OUT/bench.txt" | tail -80
