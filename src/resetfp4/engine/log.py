"""One-time notices of the engine on stderr (fallbacks the user should know about)."""

from __future__ import annotations

import sys

_WARNED: set[str] = set()


def warn_once(msg: str) -> None:
    """Print ``resetfp4: msg`` on stderr the first time ``msg`` is seen in this process."""
    if msg not in _WARNED:
        _WARNED.add(msg)
        print(f"resetfp4: {msg}", file=sys.stderr)
