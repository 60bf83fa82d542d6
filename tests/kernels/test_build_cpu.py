"""The JIT build's name, architectures and lock handling (no compiler run)."""

from __future__ import annotations

import os
import time

import pytest

from resetfp4.kernels import build


def test_name_changes_with_sources_arch_and_flags(tmp_path, monkeypatch):
    # one fixed name let every checkout / version share one cached .so: a process could import
    # an extension built from other sources
    srcs = []
    for n in ("a.cu", "b.cpp"):
        (tmp_path / n).write_text(f"// {n}\n")
        srcs.append(tmp_path / n)
    (tmp_path / "h.cuh").write_text("// h\n")
    monkeypatch.setattr(build, "SOURCES", tuple(srcs))
    monkeypatch.setattr(build, "HEADERS", (tmp_path / "h.cuh",))
    first = build.ext_name("8.0;9.0")
    assert first.startswith(build.EXT_NAME + "_") and first == build.ext_name("8.0;9.0")
    assert build.ext_name("9.0") != first
    (tmp_path / "h.cuh").write_text("// h, changed\n")
    second = build.ext_name("8.0;9.0")
    assert second != first
    monkeypatch.setattr(build, "CUDA_CFLAGS", [*build.CUDA_CFLAGS, "-DX=1"])
    assert build.ext_name("8.0;9.0") != second


def test_the_package_name_hashes_the_real_sources():
    name = build.ext_name("8.0;9.0")
    assert len(name) == len(build.EXT_NAME) + 13 and all(f.exists() for f in build.SOURCES)


@pytest.mark.parametrize("user, cap, want", [
    (None, (9, 0), "8.0;9.0"),
    ("8.0+PTX", (9, 0), "8.0+PTX;9.0"),  # a list without the GPU's arch used to run sm_80 PTX
    ("7.5 8.0", (8, 6), "7.5;8.0;8.6"),
    ("9.0a", (9, 0), "9.0a"),
    ("8.0;9.0+PTX", (9, 0), "8.0;9.0+PTX"),
])
def test_arch_list_always_holds_the_current_gpu(monkeypatch, user, cap, want):
    if user is None:
        monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    else:
        monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", user)
    monkeypatch.setattr(build.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(build.torch.cuda, "get_device_capability", lambda *a: cap)
    assert build._arch_list() == want


def test_build_directory_follows_torch_extensions_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    d = build.build_directory("resetfp4_nvfp4_gemv_abc")
    assert d == tmp_path / "ext" / "resetfp4" / "resetfp4_nvfp4_gemv_abc" and d.is_dir()


def test_a_stale_lock_is_an_error_naming_the_file(tmp_path):
    build.check_lock(tmp_path)  # no lock: fine
    lock = tmp_path / "lock"
    lock.write_text("")
    build.check_lock(tmp_path)  # a fresh lock: another build runs, torch waits for it
    old = time.time() - build.STALE_LOCK_S - 60
    os.utime(lock, (old, old))
    with pytest.raises(RuntimeError, match=f"build lock {lock} is 16 minutes old.*delete that file"):
        build.check_lock(tmp_path)


def test_no_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(build.torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="need a CUDA GPU"):
        build.load_extension.__wrapped__()  # past the cache: a GPU process keeps its module
