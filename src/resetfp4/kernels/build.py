"""JIT build of the CUDA kernels (``csrc/nvfp4_gemv.cu``, ``csrc/nvfp4_aux.cu``,
``csrc/decode_attention.cu``, ``csrc/binding.cpp``).

Built on first use with :func:`torch.utils.cpp_extension.load` into
``$TORCH_EXTENSIONS_DIR/resetfp4/<name>`` (default ``~/.cache/torch_extensions``), so later
imports only load the shared object. The name carries a hash of the sources, headers, build
flags, target architectures and the torch / CUDA / Python versions: another checkout or
version of the package, or a changed source, builds its own copy instead of loading a stale
one. Targets sm_80, sm_90 and the current GPU's architecture; a user's
``TORCH_CUDA_ARCH_LIST`` replaces the first two, but the current GPU's architecture is always
added (a list without it would run PTX of an older arch, where the sm_90 cluster code
compiles to nothing). Three small .cu + one .cpp keep a fresh build under a minute. Never
built with ``-use_fast_math``: the activation quantizer needs true division.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

CSRC = Path(__file__).parent / "csrc"
SOURCES = (CSRC / "nvfp4_gemv.cu", CSRC / "nvfp4_aux.cu", CSRC / "decode_attention.cu",
           CSRC / "binding.cpp")
HEADERS = (CSRC / "nvfp4_common.cuh",)
EXT_NAME = "resetfp4_nvfp4_gemv"
CFLAGS = ["-O3", "-std=c++17"]
# --threads: nvcc compiles the sm_80 and sm_90 images in parallel (build time)
CUDA_CFLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", "--threads=4"]
# A build lock older than this is taken to be left behind by a killed build.
STALE_LOCK_S = 15 * 60


def _arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST for the build: the user's list (default sm_80 and sm_90) plus the
    current device's arch."""
    user = os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(";", " ").split()
    archs = user or ["8.0", "9.0"]
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        cur = f"{major}.{minor}"
        if not any(a.split("+")[0] in (cur, cur + "a") for a in archs):
            archs.append(cur)
    return ";".join(archs)


def ext_name(arch_list: str) -> str:
    """``EXT_NAME`` plus a hash of everything the shared object depends on."""
    h = hashlib.sha256()
    for f in (*SOURCES, *HEADERS):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    meta = [arch_list, *CFLAGS, *CUDA_CFLAGS, torch.__version__, str(torch.version.cuda),
            sys.version.split()[0]]
    h.update("\0".join(meta).encode())
    return f"{EXT_NAME}_{h.hexdigest()[:12]}"


def build_directory(name: str) -> Path:
    """Where the extension ``name`` is built (created if missing)."""
    base = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    d = Path(base).expanduser() / "resetfp4" / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def check_lock(build_dir: Path) -> None:
    """Refuse to wait on a build lock that a killed build left behind (torch waits forever)."""
    lock = build_dir / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age > STALE_LOCK_S:
        raise RuntimeError(
            f"the kernel build lock {lock} is {age / 60:.0f} minutes old: a build was probably "
            "killed. If no other process is building the resetfp4 kernels, delete that file "
            "and retry."
        )


@functools.cache
def load_extension(verbose: bool = False) -> ModuleType:
    """Compile (once per source version) and import the extension module.

    Raises:
        RuntimeError: no CUDA device / toolkit, with what to do instead; a stale build lock.
    """
    if not torch.cuda.is_available():
        raise RuntimeError(
            "the NVFP4 CUDA kernels need a CUDA GPU (torch.cuda.is_available() is False); "
            "use resetfp4.kernels.reference.nvfp4_linear_ref or pass allow_fallback=True"
        )
    from torch.utils.cpp_extension import load

    archs = _arch_list()
    name = ext_name(archs)
    build_dir = build_directory(name)
    check_lock(build_dir)
    old = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    try:
        return load(
            name=name,
            sources=[str(s) for s in SOURCES],
            extra_cflags=CFLAGS,
            extra_cuda_cflags=CUDA_CFLAGS,
            extra_include_paths=[str(CSRC)],
            build_directory=str(build_dir),
            verbose=verbose,
        )
    finally:
        if old is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = old
