"""Is decode_word's operation count (9 ALU operations per code word) the floor? (session 15)

    python3 dev/kernels/decode_tiling.py      # no GPU; about a second

decode_word (csrc/nvfp4_common.cuh) turns a 32-bit code word into the 4 bf16x2 A registers
of one mma K step. In each register the 8 code bits must sit at P = {6, 7, 8, 15} + {0, 16}
(three magnitude bits at the bottom of the exponent, the sign at bit 15, per half); the
repack may put the 32 code bits of a word anywhere. With shifts / rotates and masks a
register costs one LOP3 per distinct shift it takes bits from, and each distinct nonzero
shift of the word costs one SHF (or IMAD.SHL). Today: h1 = q & M (1), h0 = (q << 6) & M (2),
h2 = rot(q, 4) & M (2), h3 from two more shifts (4): 9.

* Every position p of P is needed by all 4 registers, from 4 different input bits p + s, so
  the word is shifted by at least 4 distinct amounts (one may be 0): >= 3 shifts + 4 masks.
* 7 would need every register to be a single shifted copy: four disjoint translates of P
  covering all 32 bits. `tiles(32)` finds none (nor over the 128 bits of a unit's four
  words with funnel shifts, `tiles(128)`).
* 8 would need 4 shifts with exactly one register taking bits from two of them (3 shifts + 5
  LOP3); `one_mixed()` finds no such layout either.

So 9 is the floor for shift-and-mask decodes; what is left of the aligned loop's ~339
instructions per 4-unit body is 16 words x (9 ALU + 4 HMUL2), 16 HMMA, the loads and the loop.
"""

import itertools

P = [6, 7, 8, 15, 22, 23, 24, 31]


def tiles(n: int) -> list[int] | None:
    """Translates t of P (mod n) that cover 0..n-1 exactly once, or None."""
    base = [p - P[0] for p in P]
    covered = [False] * n
    chosen: list[int] = []

    def search() -> bool:
        if all(covered):
            return True
        p = covered.index(False)  # the lowest uncovered bit must be covered by some translate
        for b in base:
            t = (p - b) % n
            cells = [(t + c) % n for c in base]
            if not any(covered[c] for c in cells):
                for c in cells:
                    covered[c] = True
                chosen.append(t)
                if search():
                    return True
                chosen.pop()
                for c in cells:
                    covered[c] = False
        return False

    return sorted(chosen) if search() else None


def one_mixed() -> list[tuple]:
    """Layouts with shifts {0, a, b, c}: three registers each one rotated copy of the word
    (rotate right by 0, a, b), the fourth taking its 8 bits from the rotations by 0, a, b
    or c (output bit p = input bit p + s mod 32) with the 32 input bits used once each."""
    found = []
    for a, b in itertools.combinations(range(1, 32), 2):
        used: set[int] = set()
        for s in (0, a, b):
            bits = {(p + s) % 32 for p in P}
            if bits & used:
                break
            used |= bits
        else:
            rest = set(range(32)) - used
            for c in range(1, 32):
                if c in (a, b):
                    continue
                opts = [[s for s in (0, a, b, c) if (p + s) % 32 in rest] for p in P]
                for choice in itertools.product(*opts):
                    if len({(p + s) % 32 for p, s in zip(P, choice, strict=True)}) == 8:
                        found.append((a, b, c, choice))
    return found


if __name__ == "__main__":
    for n in (32, 128):
        t = tiles(n)
        print(f"single-shift registers over {n} bits: {'layout ' + str(t) if t else 'none'}")
    m = one_mixed()
    print(f"4 shifts, one register mixing two: {len(m)} layouts" + (f", e.g. {m[0]}" if m else ""))
