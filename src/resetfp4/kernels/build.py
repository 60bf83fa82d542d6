"""JIT build of the CUDA kernels (``csrc/nvfp4_gemv.cu``, ``csrc/nvfp4_aux.cu``,
``csrc/decode_attention.cu``, ``csrc/binding.cpp``).

Built on first use with :func:`torch.utils.cpp_extension.load` and cached by torch in
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), so later imports only
load the shared object. Targets the current GPU's architecture plus sm_80 and sm_90
(``TORCH_CUDA_ARCH_LIST`` overrides). Three small .cu + one .cpp keep a fresh build under a
minute. Never built with ``-use_fast_math``: the activation quantizer needs true division.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).parent / "csrc"
SOURCES = (CSRC / "nvfp4_gemv.cu", CSRC / "nvfp4_aux.cu", CSRC / "decode_attention.cu",
           CSRC / "binding.cpp")
HEADERS = (CSRC / "nvfp4_common.cuh",)
EXT_NAME = "resetfp4_nvfp4_gemv"


def _arch_list() -> str:
    """sm_80, sm_90 and the current device's arch, as TORCH_CUDA_ARCH_LIST wants them."""
    archs = {"8.0", "9.0"}
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        archs.add(f"{major}.{minor}")
    return ";".join(sorted(archs))


@functools.cache
def load_extension(verbose: bool = False) -> ModuleType:
    """Compile (once) and import the extension module.

    Raises:
        RuntimeError: no CUDA device / toolkit, with what to do instead.
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            "the NVFP4 CUDA kernels need a CUDA GPU (torch.cuda.is_available() is False); "
            "use resetfp4.kernels.reference.nvfp4_linear_ref or pass allow_fallback=True"
        )
    from torch.utils.cpp_extension import load

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", _arch_list())
    return load(
        name=EXT_NAME,
        sources=[str(s) for s in SOURCES],
        extra_cflags=["-O3", "-std=c++17"],
        # --threads: nvcc compiles the sm_80 and sm_90 images in parallel (build time)
        extra_cuda_cflags=["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo",
                           "--threads=4"],
        extra_include_paths=[str(CSRC)],
        verbose=verbose,
    )
