#!/usr/bin/env bash
# ncu SASS-level stall sampling of the GEMV (session 14): for each case, a report with the
# SourceCounters + WarpStateStats sections and the per-instruction CSV (stall reasons per SASS
# line), so the waits can be placed on the instructions that cause them.
#   CASES="N K M|N K M" OUT=$OUT bash dev/kernels/ncu_source.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
IFS='|' read -ra cases <<< "${CASES:-25600 5120 1|4096 12288 1}"
for c in "${cases[@]}"; do
  tag=$(echo "$c" | tr ' ' '_')
  timeout 200 ncu --clock-control none -k regex:gemv_kernel -c 1 -s 2 \
    --section SourceCounters --section WarpStateStats --section SchedulerStats \
    --section LaunchStats --section Occupancy \
    -f -o "/tmp/ncu_$tag" python3 dev/kernels/ncu_case.py $c > "/tmp/ncu_$tag.log" 2>&1
  tail -2 "/tmp/ncu_$tag.log"
  ncu -i "/tmp/ncu_$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/sass_$tag.csv" 2>&1
  ncu -i "/tmp/ncu_$tag.ncu-rep" --page details > "$OUT/details_$tag.txt" 2>&1
  head -c 600 "$OUT/sass_$tag.csv"; echo
  grep -E "Issue Slots Busy|Warp Cycles Per Issued|Achieved Active Warps|Registers Per|No Eligible|Active Warps Per Scheduler|Eligible Warps" "$OUT/details_$tag.txt"
done
