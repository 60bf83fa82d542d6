"""Small file helpers shared across the package."""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in ``chunk``-byte pieces (model files are GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def what_is(path: Path) -> str:
    """What is at ``path`` when it is not a regular file, for error messages ("... is X, not a
    file")."""
    if path.is_dir():
        return "a directory"
    if path.is_symlink() and not path.exists():
        return "a broken symbolic link"
    return "a device, pipe or socket"


def check_new_folder_path(out_dir: str | Path, flag: str, give: str, choose: str) -> Path:
    """The checks every output folder flag shares, before any slow work: ``out_dir`` is not
    empty, not an existing file, and not under a file. ``give`` completes "``flag`` is empty;
    give ...", ``choose`` ends the existing-file message ("choose ..."). Nothing is written."""
    if not str(out_dir).strip():
        raise ValueError(f"{flag} is empty; give {give}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is an existing file, not a folder; choose {choose}")
    above = next((a for a in out.parents if a.exists()), None)
    if not out.exists() and above is not None and not above.is_dir():
        raise ValueError(f"{flag} {out} cannot be created: {above} is a file, not a folder; choose another")
    check_writable(out if out.is_dir() else above, flag, out)
    return out


def check_writable(folder: Path | None, flag: str, target: str | Path) -> None:
    """Raise unless a file can be created in ``folder`` (the nearest existing folder of a flag's
    ``target``): one probe file, created and removed. Permission bits alone would not tell (root
    passes them; read-only and virtual file systems refuse anyway)."""
    if folder is None:
        return
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".resetfp4-write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {target}: cannot write in {folder} ({e.strerror or e}); fix its "
                         "permissions or choose another path") from None


def make_folder(out_dir: str | Path, what: str) -> Path:
    """Create ``out_dir`` (and its parents); an OS refusal becomes an error naming ``what`` and
    the path."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the {what} {out} ({e.strerror or e}); choose another") from e
    return out


def finite_or_null(x: Any) -> Any:
    """``x`` with every NaN / inf float (in nested dicts, lists and tuples) replaced by ``None``:
    strict JSON has no NaN or Infinity (``json.dumps`` would write bare ``NaN``)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_null(v) for v in x]
    return x
