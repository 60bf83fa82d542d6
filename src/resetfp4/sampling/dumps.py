"""Entropy dumps (JSONL) and ReSET calibration helpers.

One JSON object per line: ``{"id": str, "correct": bool | null, "entropies": [float],
"temperatures": [float], "starts": [bool]}``, one entry per generated token (nats). The file
is strict JSON: a non-finite value (the NaN entropy of a token whose logits were invalid) is
written as ``null`` and read back as NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from resetfp4.fileutil import finite_or_null

DUMP_KEYS = ("id", "correct", "entropies", "temperatures", "starts")


@dataclass
class EntropyRecord:
    """Per-token trace of one generation."""

    id: str
    correct: bool | None
    entropies: list[float]
    temperatures: list[float] = field(default_factory=list)
    starts: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.entropies)
        for name in ("temperatures", "starts"):
            m = len(getattr(self, name))
            if m not in (0, n):
                raise ValueError(f"record {self.id!r}: {name} has {m} entries, entropies {n}")


def write_entropy_dump(path: str | Path, records: Iterable[EntropyRecord]) -> int:
    """Write records as JSONL (overwrites ``path``); returns how many were written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(finite_or_null(asdict(r)), allow_nan=False) + "\n")
            n += 1
    return n


def iter_entropy_dump(path: str | Path) -> Iterator[EntropyRecord]:
    """Read a JSONL dump lazily; a malformed line raises ``ValueError`` naming the line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                missing = [k for k in ("id", "entropies") if k not in obj]
                if missing:
                    raise KeyError(", ".join(missing))
                yield EntropyRecord(
                    id=str(obj["id"]), correct=obj.get("correct"),
                    entropies=[_float(x) for x in obj["entropies"]],
                    temperatures=[_float(x) for x in obj.get("temperatures", [])],
                    starts=[bool(x) for x in obj.get("starts", [])],
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: not an entropy record ({e}); keys are {DUMP_KEYS}") from e


def _float(x: object) -> float:
    """A dump value: ``null`` (a non-finite value when written) reads as NaN."""
    return math.nan if x is None else float(x)  # type: ignore[arg-type]


def read_entropy_dump(path: str | Path) -> list[EntropyRecord]:
    """All records of a JSONL dump."""
    return list(iter_entropy_dump(path))


def calibrate_tau0(
    entropies: Iterable[Sequence[float] | EntropyRecord | float], percentile: float = 80
) -> float:
    """``tau0`` = the ``percentile``-th percentile (linear interpolation) of all token entropies.

    ``entropies``: records, per-generation sequences, or plain numbers (nats; Python, numpy or
    0-d torch values; a sequence may be a numpy array or a torch tensor on any device), e.g.
    from NVFP4 runs on held-out problems. Non-finite values are an error (they mark invalid
    logits).
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100), got {percentile}")
    flat: list[float] = []
    for item in entropies:
        if isinstance(item, EntropyRecord):
            flat.extend(item.entropies)
            continue
        if hasattr(item, "detach"):  # a torch tensor, possibly on a GPU
            item = item.detach().cpu().double().numpy()
        try:
            flat.extend(np.asarray(item, dtype=np.float64).ravel().tolist())
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"calibrate_tau0 takes EntropyRecords, sequences of entropies or numbers; got "
                f"{type(item).__name__} ({e})"
            ) from None
    if not flat:
        raise ValueError("no entropies to calibrate tau0 on; generate traces first")
    if not all(math.isfinite(x) for x in flat):
        raise ValueError("entropies contain NaN/inf; drop tokens whose logits were invalid")
    return float(np.percentile(np.asarray(flat, dtype=np.float64), percentile))
