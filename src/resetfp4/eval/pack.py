"""Pack a study's run folders into a few files that fit the device machine's return limits.

The GPU machine returns at most 8 files of at most 16 MiB each (64 MiB together) from
``$OUT``. A study writes tens of run folders with large per-token dumps, so
:func:`pack_runs` converts every ``tokens.jsonl`` to a compact ``tokens.npz``
(:func:`resetfp4.eval.analysis.write_tokens_npz`), tars the folder without the JSONL dumps,
gzips it and splits it into ``study.tgz.000``, ``.001``, ... parts. If the parts would be
too many, it drops the ``tokens.npz`` files (the analysis JSON written on the machine
keeps their statistics) and tries again. Unpack with::

    cat study.tgz.* | tar xz -C runs/
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from resetfp4.eval.analysis import TOKENS_NPZ, write_tokens_npz
from resetfp4.eval.runner import TOKENS_FILE

PART_PREFIX = "study.tgz."
MIB = 1 << 20


def _tar_bytes(src: Path, keep_npz: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(src.rglob("*")):
            if not path.is_file() or path.name == TOKENS_FILE or path.name.startswith(PART_PREFIX):
                continue
            if path.name == TOKENS_NPZ and not keep_npz:
                continue
            tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    return buf.getvalue()


def pack_runs(src: str | Path, dest: str | Path, *, part_mib: float = 15.0, max_parts: int = 4) -> dict:
    """Write ``dest/study.tgz.NNN`` parts of ``src``; returns what was packed.

    ``part_mib``: size of each part; ``max_parts``: the most parts allowed (with 15 MiB
    parts, 4 stay under a 64 MiB total and leave room for a few small files).
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder of run folders")
    if part_mib <= 0 or max_parts < 1:
        raise ValueError(f"part_mib must be > 0 and max_parts >= 1, got {part_mib}, {max_parts}")
    for dump in sorted(src.rglob(TOKENS_FILE)):
        npz = dump.with_name(TOKENS_NPZ)
        if not npz.exists() or npz.stat().st_mtime_ns < dump.stat().st_mtime_ns:
            write_tokens_npz(dump.parent)  # not yet packed by analyze_run(write_npz=True)
    part = int(part_mib * MIB)
    data = _tar_bytes(src, keep_npz=True)
    kept_npz = True
    if -(-len(data) // part) > max_parts:
        data, kept_npz = _tar_bytes(src, keep_npz=False), False
    n = -(-len(data) // part)
    if n > max_parts:
        raise RuntimeError(
            f"{src} packs to {len(data) / MIB:.1f} MiB even without token dumps, more than "
            f"{max_parts} parts of {part_mib} MiB; copy fewer runs"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(PART_PREFIX + "*"):
        old.unlink()
    parts = []
    for i in range(n):
        p = dest / f"{PART_PREFIX}{i:03d}"
        p.write_bytes(data[i * part : (i + 1) * part])
        parts.append(p.name)
    return {"parts": parts, "bytes": len(data), "kept_tokens_npz": kept_npz}
