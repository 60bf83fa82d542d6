#!/usr/bin/env bash
# One device call: build, GPU tests, sanitizer, ncu, SASS/ptxas report, benchmark. Logs -> $OUT.
# STEPS (default "test bench") picks from: test sanitizer ncu bench plans nopdl.
# plans: dev/kernels/plan_sweep.py (the GEMV under several work splits per shape).
# NCU_CASES: "N K M[|N K M...]" (default: 8B.o M=1, 32B.gate_up M=1, 8B.o M=8).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STEPS=${STEPS:-test bench}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
has() { [[ " $STEPS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/build.txt"
t0=$(date +%s)
python3 -c "from resetfp4.kernels.build import load_extension as l; l(verbose=False)" 2>&1 | tail -5
echo "build_s=$(( $(date +%s) - t0 ))" | tee -a "$OUT/build.txt"
so=$(find ~/.cache/torch_extensions -name 'resetfp4_nvfp4_gemv*.so' | head -1)
cuobjdump -sass "$so" 2>/dev/null | grep -oE '(LDG[.A-Z0-9]*|LDS[.A-Z0-9]*|HMMA[.A-Z0-9]*|LDL|STL|HMUL2[.A-Z0-9]*|UCGABAR[_A-Z0-9]*|LD\.E[.A-Z0-9]*)' | sort | uniq -c >> "$OUT/build.txt"
if has test; then
  timeout 300 python3 -m pytest tests/kernels -q -p no:cacheprovider -x 2>&1 | tee "$OUT/pytest.txt" | tail -6
fi
if has sanitizer; then
  cat > /tmp/san.py <<'PY'
import torch
from resetfp4.nvfp4 import quantize
from resetfp4.ops import prepare_weight
for n, k in ((200, 4096), (72, 48)):
    pw = prepare_weight(quantize(torch.randn(n, k, device="cuda")))
    for act, s in (("bf16", None), ("fp4", None), ("fp4", 0.01)):  # 0.01: static W4A4
        for m in (1, 2, 9, 20):
            y = pw(torch.randn(m, k, device="cuda").to(torch.bfloat16), act=act, input_scale=s)
torch.cuda.synchronize(); print("sanitizer case done", y.shape)
PY
  timeout 240 compute-sanitizer --tool memcheck python3 /tmp/san.py 2>&1 | tail -4 | tee "$OUT/sanitizer.txt"
fi
if has ncu; then
  IFS='|' read -ra cases <<< "${NCU_CASES:-4096 4096 1|25600 5120 1|4096 4096 8}"
  for case in "${cases[@]}"; do
    timeout 120 ncu --clock-control none -k regex:gemv_kernel -c 1 -s 2 --metrics \
gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_barrier_per_warp_active.pct,smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_math_pipe_throttle_per_warp_active.pct,smsp__inst_executed.sum \
      python3 dev/kernels/ncu_case.py $case 2>&1 | grep -E "done|gemv_kernel|__|smsp|dram|gpu__" | tee -a "$OUT/ncu.txt"
  done
fi
if has bench; then
  timeout 300 python3 -m resetfp4.cli.main bench kernels ${BENCH_ARGS:-} --json "$OUT/bench_kernels.json" 2>&1 | tee "$OUT/bench.txt" | tail -70
fi
if has plans; then
  timeout 300 python3 dev/kernels/plan_sweep.py --json "$OUT/plan_sweep.json" 2>&1 | tee "$OUT/plan_sweep.txt" | tail -20
fi
if has nopdl; then
  RESETFP4_NO_PDL=1 python3 -m resetfp4.cli.main bench kernels --m 1 8 --json "$OUT/bench_nopdl.json" 2>&1 | tee "$OUT/bench_nopdl.txt" | tail -30
fi
