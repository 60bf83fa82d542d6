"""The open issues' speed targets against one call's results (session 15; no GPU needed).

    python3 dev/check_targets.py DIR

DIR holds what `dev/check_targets.sh` writes: `decode_lmhead_nvfp4_gen1024.json` and
`decode_lmhead_nvfp4.json` (`dev/engine/run_grid.sh head1024` / `head`) and `kernels.json`
(`resetfp4 bench kernels --m 1 8`). Any of them may be missing; its rows are then skipped.
Prints one line per target: the figure, the target, met or not. The targets are defined for
an H100 (issues 4 and 6). On any other card the lines still print, marked as not the
target card.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import geometric_mean as geomean


def decode_lines(path: Path, label: str) -> list[tuple[str, float, str, bool | None]]:
    d = json.loads(path.read_text())
    ms = {(r["precision"], r["batch"]): r["ms_per_step"] for r in d["rows"] if r["sampler"] == "fixed"}
    out = []
    for batch, target in ((1, 3.0), (8, 2.5)):
        for prec in ("nvfp4-w4a16", "nvfp4-w4a4"):
            if (prec, batch) in ms and ("bf16", batch) in ms:
                ratio = ms[("bf16", batch)] / ms[(prec, batch)]
                tgt = f">= {target}x" if prec == "nvfp4-w4a16" else "(info)"
                out.append((f"decode {label}, batch {batch}, {prec} x BF16 (NVFP4 head)", ratio,
                            tgt, ratio >= target if prec == "nvfp4-w4a16" else None))
    return out


def kernel_lines(path: Path) -> list[tuple[str, float, str, bool | None]]:
    rows = json.loads(path.read_text())["rows"]
    out = []
    for m, target in ((1, 3.2), (8, 3.0)):
        sel = [r for r in rows if r["M"] == m]
        if sel:
            g = geomean([r["w4a16_speedup"] for r in sel])
            out.append((f"kernel M={m} W4A16 x BF16, geomean of {len(sel)} shapes", g, f">= {target}x",
                        g >= target))
            a4 = geomean([r["w4a4s_us"] / r["w4a16_us"] for r in sel])
            out.append((f"kernel M={m} static W4A4 / W4A16 time, op path (quantizer launch), geomean", a4,
                        "(info)", None))
            if all("eng_ratio" in r for r in sel):  # bench kernels from session 16 on
                e4 = geomean([r["eng_ratio"] for r in sel])
                out.append((f"kernel M={m} W4A4 / W4A16 time, engine form (quantization fused in the "
                            "producer), geomean", e4, "<= 1.05", e4 <= 1.05))
    big = [r for r in rows if r["M"] == 1 and r["weight_scale_bytes"] >= 28e6]
    if big:
        worst = min(big, key=lambda r: r["w4a16_pct_copy"])
        n_ok = sum(r["w4a16_pct_copy"] >= 90 for r in big)
        out.append((f"kernel M=1 % of copy, shapes >= 28 MB: lowest ({worst['shape']}); "
                    f"{n_ok} of {len(big)} at >= 90", worst["w4a16_pct_copy"], ">= 90", n_ok == len(big)))
    return out


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    d = Path(sys.argv[1])
    if not d.is_dir():
        raise SystemExit(f"{d} is not a directory; pass the folder check_targets.sh wrote into")
    lines, cards = [], set()
    for name, label in (("decode_lmhead_nvfp4_gen1024.json", "gen 1024"),
                        ("decode_lmhead_nvfp4.json", "gen 256")):
        if (d / name).exists():
            lines += decode_lines(d / name, label)
            cards.add(json.loads((d / name).read_text())["environment"]["gpu"])
    if (d / "kernels.json").exists():
        lines += kernel_lines(d / "kernels.json")
        cards.add(json.loads((d / "kernels.json").read_text())["env"]["gpu"])
    if not lines:
        raise SystemExit(f"no results in {d} (expected decode_lmhead_nvfp4*.json, kernels.json)")
    note = "" if cards and all("H100" in c for c in cards) else "  [not the target card: H100]"
    print(f"card: {', '.join(sorted(cards))}{note}")
    for what, value, target, ok in lines:
        flag = "    " if ok is None else ("met " if ok else "NOT ")
        print(f"{flag} {value:7.3f}  {target:8s} {what}")


if __name__ == "__main__":
    main()
