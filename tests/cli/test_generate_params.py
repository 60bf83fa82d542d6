"""`resetfp4 generate --params`: a calibrate params file feeds the ReSET sampler."""

from __future__ import annotations

import argparse

import pytest

from resetfp4.cli.generate import register, sampler_config
from resetfp4.engine import sampling_glue
from resetfp4.eval.params import write_params
from resetfp4.sampling.config import ReSETParams


class _Engine:
    """Just the part of the engine that `sampler_config` uses (its known params)."""

    def __init__(self, params: ReSETParams | None) -> None:
        self.reset_params = params

    def default_sampling(self, **overrides):
        return sampling_glue.reset_config(self.reset_params, **overrides)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["generate", "--prompt", "x", *argv])


def test_params_file_sets_reset_parameters(tmp_path):
    f = tmp_path / "params.json"
    write_params(f, ReSETParams(t_low=0.3, tau0=0.499, t_high=0.9, window=16, source="test"))
    cfg = sampler_config(_args("--params", str(f)), _Engine(ReSETParams(0.1, 0.55)))
    assert (cfg.mode, cfg.t_low, cfg.tau0, cfg.t_high, cfg.window) == ("reset", 0.3, 0.499, 0.9, 16)


def test_flags_override_params_file(tmp_path):
    f = tmp_path / "params.json"
    write_params(f, ReSETParams(t_low=0.3, tau0=0.499))
    cfg = sampler_config(_args("--params", str(f), "--tau0", "0.7"), _Engine(None))
    assert (cfg.t_low, cfg.tau0) == (0.3, 0.7)


def test_missing_params_file_is_an_error(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError)):
        sampler_config(_args("--params", str(tmp_path / "none.json")), _Engine(None))


def test_params_from_another_precision_get_a_note(tmp_path, capsys):
    f = tmp_path / "params.json"
    write_params(f, ReSETParams(t_low=0.3, tau0=0.499), precision="nvfp4-w4a4")
    eng = _Engine(None)
    eng.precision = "fp32"
    cfg = sampler_config(_args("--params", str(f)), eng)
    assert (cfg.t_low, cfg.tau0) == (0.3, 0.499)  # still used, as asked
    err = capsys.readouterr().err
    assert "calibrated at precision nvfp4-w4a4, this run uses fp32" in err
    assert "resetfp4 calibrate --precision fp32" in err
    eng.precision = "nvfp4-w4a4"
    sampler_config(_args("--params", str(f)), eng)
    assert capsys.readouterr().err == ""
