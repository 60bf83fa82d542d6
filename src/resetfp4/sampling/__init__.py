"""resetfp4.sampling: the ReSET step-aware temperature policy and a batched GPU sampler.

- :func:`reset_temperatures`: offline replay of the policy (the oracle).
- :class:`BatchSampler`: per-slot ReSET / fixed / greedy sampling, zero host syncs,
  CUDA-graph capturable.
- :class:`BoundaryTables`: step-boundary lookup tables built once per tokenizer.
- :mod:`resetfp4.sampling.pipeline`: the pure pipeline functions on fp32 logits.
- entropy dumps and :func:`calibrate_tau0`.
"""

from resetfp4.sampling.batch import GREEDY_EPS, BatchSampler, triton_available
from resetfp4.sampling.boundary import BoundaryTables, vocab_fingerprint
from resetfp4.sampling.config import PAPER_PARAMS, ReSETParams, SamplerConfig
from resetfp4.sampling.dumps import (
    EntropyRecord,
    calibrate_tau0,
    iter_entropy_dump,
    read_entropy_dump,
    write_entropy_dump,
)
from resetfp4.sampling.pipeline import (
    apply_temperature,
    entropy,
    filter_logits,
    greedy,
    min_p,
    row_keys,
    sample,
    top_k,
    top_p,
    validate_logits,
)
from resetfp4.sampling.policy import ENTROPY_QUANTUM, ReSETState, reset_temperatures, snap_entropy

__all__ = [
    "BatchSampler", "BoundaryTables", "ENTROPY_QUANTUM", "EntropyRecord", "GREEDY_EPS",
    "PAPER_PARAMS", "ReSETParams", "ReSETState", "SamplerConfig", "apply_temperature",
    "calibrate_tau0", "entropy", "filter_logits", "greedy", "iter_entropy_dump", "min_p",
    "read_entropy_dump", "reset_temperatures", "row_keys", "sample", "snap_entropy", "top_k",
    "top_p", "triton_available", "validate_logits", "vocab_fingerprint", "write_entropy_dump",
]

