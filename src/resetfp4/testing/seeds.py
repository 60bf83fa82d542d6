"""Fresh but reproducible seeds for tests that build their own generators.

The test suite's autouse fixture (``tests/conftest.py``) seeds torch's global generator from
each test's printed seed (``RESETFP4_TEST_SEED`` reproduces it). A test that makes its own
``torch.Generator`` (e.g. on the GPU, per parametrized case) takes its seed from
:func:`fresh_seed`, so its inputs change every run and still replay under that variable.
"""

from __future__ import annotations

import torch


def fresh_seed(case: int = 0) -> int:
    """A seed for one case: a draw from torch's global CPU generator, offset by ``case`` (so
    that the cases of one test differ), in ``[0, 2^62)``."""
    return (int(torch.randint(0, 2**31, ())) + int(case)) % (2**62)
