"""The ReSET params file written by ``resetfp4 calibrate`` and read by ``generate``/``eval``.

JSON object, entropies in nats::

    {"format": "resetfp4.reset-params.v1", "t_low": 0.2, "tau0": 0.61, "t_high": 1.0,
     "window": 32, "model": "...", "precision": "nvfp4-w4a4", "source": "resetfp4 calibrate",
     "calibration": {...how it was obtained...}}

Only ``t_low`` and ``tau0`` are required; ``t_high`` and ``window`` default to those of
:class:`~resetfp4.sampling.config.ReSETParams` (the paper's 1.0 and 32).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

from resetfp4.fileutil import what_is
from resetfp4.sampling.config import ReSETParams
from resetfp4.sampling.policy import check_reset_params

PARAMS_FORMAT = "resetfp4.reset-params.v1"
_FIELDS = {f.name: f for f in dataclasses.fields(ReSETParams)}
DEFAULT_T_HIGH: float = _FIELDS["t_high"].default  # the one place these defaults are written
DEFAULT_WINDOW: int = _FIELDS["window"].default


def note_other_precision(path: str | Path, engine: object) -> None:
    """Print a one-line note on stderr when the params file (already read by
    :func:`load_params`) records a precision other than ``engine.precision``: tau0 is an
    entropy threshold, and entropies shift with quantization, so calibrated values carry over
    only to the precision they came from. Nothing when either side has no precision."""
    run = getattr(engine, "precision", None)
    rec = json.loads(Path(path).read_text()).get("precision")
    if isinstance(run, str) and isinstance(rec, str) and rec != run:
        print(f"note: {path} was calibrated at precision {rec}, this run uses {run}; its tau0 may "
              f"not fit (recalibrate with `resetfp4 calibrate --precision {run}`)", file=sys.stderr)


def load_params(path: str | Path) -> ReSETParams:
    """Read and validate a params file; errors name the file and the bad field."""
    path = Path(path)
    if not path.is_file():
        raise _params_file_error(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object with t_low and tau0")
    if d.get("format", PARAMS_FORMAT) != PARAMS_FORMAT:
        raise ValueError(f"{path}: unknown params format {d.get('format')!r}, expected {PARAMS_FORMAT}")
    missing = [k for k in ("t_low", "tau0") if k not in d]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    for key in ("t_low", "tau0", "t_high"):
        v = d.get(key, DEFAULT_T_HIGH)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or (key != "tau0" and v <= 0):
            raise ValueError(
                f"{path}: {key} must be a finite number{' > 0' if key != 'tau0' else ''}, got {v!r}"
            )
    window = d.get("window", DEFAULT_WINDOW)
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"{path}: window must be an integer >= 1, got {window!r}")
    try:  # what the policy itself refuses (t_low <= t_high, tau0 >= 0, ...)
        check_reset_params(d["t_low"], d.get("t_high", DEFAULT_T_HIGH), d["tau0"], window)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return ReSETParams(
        t_low=float(d["t_low"]),
        tau0=float(d["tau0"]),
        t_high=float(d.get("t_high", DEFAULT_T_HIGH)),
        window=window,
        source=str(d.get("source", str(path))),
    )


def _params_file_error(path: Path) -> Exception:
    """The error for a params path that is not a regular file: what is there and what to give (a
    calibrate --out folder, which holds its params.json, gets that file's path)."""
    want = ("give the path of a params JSON file: the params.json that `resetfp4 calibrate` writes in its "
            "--out folder (or copies to --params-out)")
    if not path.exists() and not path.is_symlink():
        return FileNotFoundError(f"params file {path} does not exist; {want}")
    if path.is_dir() and (path / "params.json").is_file():
        return ValueError(f"params file {path} is a directory, not a file; give {path / 'params.json'}, the "
                          "params file in it (a `resetfp4 calibrate` --out folder?)")
    inside = sorted(f.name for f in path.glob("*.json")) if path.is_dir() else []
    holds = f" (it holds {', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})" if inside else ""
    return ValueError(f"params file {path} is {what_is(path)}, not a file{holds}; {want}")


def write_params(path: str | Path, params: ReSETParams, **extra: object) -> None:
    """Write ``params`` (plus ``extra`` keys such as model, precision, calibration)."""
    d = {
        "format": PARAMS_FORMAT,
        "t_low": params.t_low,
        "tau0": params.tau0,
        "t_high": params.t_high,
        "window": params.window,
        "source": params.source,
        **extra,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(d, indent=2) + "\n")
