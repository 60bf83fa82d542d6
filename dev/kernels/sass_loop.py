"""Where the aligned loop's weight loads sit in the GEMV's SASS (session 14, no GPU needed).

    nvcc ... -cubin nvfp4_gemv.cu -o g.cubin && cuobjdump -sass g.cubin > g.sass
    python3 dev/kernels/sass_loop.py g.sass [FUNCTION_SUBSTRING]

The CUDA toolkit here has nvcc and ptxas but no cuobjdump. Its PyPI wheels work (session 17):

    pip download --no-deps -d /tmp/cu nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
    cd /tmp/cu && for w in *.whl; do python3 -m zipfile -e "$w" x; done
    chmod +x x/nvidia/cu13/bin/*; export PATH=/tmp/cu/x/nvidia/cu13/bin:$PATH

Compile as the package does: `nvcc -std=c++17 -O3 --expt-relaxed-constexpr
-gencode=arch=compute_90a,code=sm_90a -cubin -I src/resetfp4/kernels/csrc ...`.

For each matching function, finds the backward branches (loops), takes the one with the
most HMMAs per instruction (the aligned main loop), and prints its length and the position
(instruction index from the loop head) of every weight load (W: LDG.E.NA.128), scale load
(S: LDG.E.NA.U16), x load (X: LDG.E.128 without NA), HMMA (M) and L2 bulk prefetch (P), so
a change of the load placement can be checked before a GPU run.
"""

import re
import sys

path = sys.argv[1]
want = sys.argv[2] if len(sys.argv) > 2 else "gemv_kernelI13__nv_bfloat16Li8ELb0ELb0ELb0E"
funcs: dict[str, list[tuple[int, str]]] = {}
cur = None
for line in open(path):
    m = re.search(r"Function : (\S+)", line)
    if m:
        cur = m.group(1)
        funcs[cur] = []
        continue
    m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
    if m and cur:
        funcs[cur].append((int(m.group(1), 16), m.group(2).strip()))
for name, ins in funcs.items():
    if want not in name:
        continue
    addr_idx = {a: i for i, (a, _) in enumerate(ins)}
    loops = []
    for i, (a, text) in enumerate(ins):
        m = re.search(r"BRA (?:\S+ )?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < a and int(m.group(1), 16) in addr_idx:
            loops.append((i - addr_idx[int(m.group(1), 16)], addr_idx[int(m.group(1), 16)], i))
    if not loops:
        print(name, "no loop")
        continue
    # the aligned main loop: the loop with the most HMMAs per instruction (the largest loops
    # are the warp-divergence fallbacks that span several loops)
    def density(lp, ins=ins):
        n, h, t = lp
        return sum("HMMA" in ins[j][1] for j in range(h, t + 1)) / (n + 1)
    n, head, tail = max(loops, key=density)
    print(f"{name}\n  loop: {n + 1} instructions (SASS lines {head}..{tail})")
    kinds = {"W": "LDG.E.NA.128", "S": "LDG.E.NA.U16", "X": "LDG.E.128", "M": "HMMA", "P": "UBLKPF"}
    marks = []
    for j in range(head, tail + 1):
        t = ins[j][1]
        for k, op in kinds.items():
            if op in t and not (k == "X" and ".NA." in t):
                marks.append(f"{k}{j - head}")
                break
    print("  " + " ".join(marks))
