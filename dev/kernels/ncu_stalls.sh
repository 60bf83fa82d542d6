#!/usr/bin/env bash
# ncu stall breakdown of the GEMV (session 4): one line per metric per case.
#   CASES="N K M|N K M" bash dev/kernels/ncu_stalls.sh > out.txt
set -uo pipefail
m=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sector_hit_rate.pct
m=$m,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active
m=$m,smsp__inst_executed.sum
for s in long_scoreboard lg_throttle tex_throttle mio_throttle wait not_selected selected math_pipe_throttle short_scoreboard no_instruction barrier dispatch_stall branch_resolving drain membar; do
  m=$m,smsp__warp_issue_stalled_${s}_per_warp_active.pct
done
IFS='|' read -ra cases <<< "${CASES:-25600 5120 1|6144 4096 1|24576 4096 8}"
for c in "${cases[@]}"; do
  timeout 120 ncu --clock-control none -k regex:gemv_kernel -c 1 -s 2 --metrics "$m" \
    python3 dev/kernels/ncu_case.py $c 2>&1 | grep -E "done|gemv_kernel|__|smsp|dram|gpu__|lts"
done
