"""SamplerConfig refuses values the sampler would use silently wrong (T_low > T_high, a negative
tau0, infinite temperatures, a seed the int64 sampler state cannot hold)."""

from __future__ import annotations

import math

import pytest

from resetfp4.sampling.config import SamplerConfig


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"t_low": 2.0, "t_high": 0.5}, "t_low must be <= t_high"),
        ({"t_low": 1.5}, "got t_low 1.5 > t_high 1.0"),  # the default T_high
        ({"tau0": -0.1}, "tau0 must be a finite entropy >= 0"),
        ({"tau0": math.inf}, "tau0 must be a finite entropy >= 0"),
        ({"tau0": math.nan}, "tau0 must be a finite entropy >= 0"),
        ({"t_high": math.inf}, "t_high must be a finite temperature > 0"),
        ({"t_low": math.nan}, "t_low must be a finite temperature > 0"),
        ({"seed": 2**63}, "seed must fit a signed 64-bit integer"),
        ({"seed": -(2**63) - 1}, "seed must fit a signed 64-bit integer"),
    ],
)
def test_reset_config_errors(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SamplerConfig(mode="reset", **kwargs)


@pytest.mark.parametrize("t", [math.inf, math.nan, 0.0, -1.0])
def test_fixed_temperature_must_be_finite_and_positive(t):
    with pytest.raises(ValueError, match="temperature must be a finite T > 0"):
        SamplerConfig(mode="fixed", temperature=t)


def test_edge_values_that_are_meaningful_are_kept():
    # T_low == T_high: one temperature everywhere; tau0 = 0: T_high wherever H_step <= H_bar.
    SamplerConfig(mode="reset", t_low=0.7, t_high=0.7, tau0=0.0)
    SamplerConfig(mode="reset", seed=2**63 - 1)
    SamplerConfig(mode="fixed", seed=-(2**63))
    SamplerConfig(mode="greedy")


@pytest.mark.parametrize("t_low,t_high,tau0,msg", [(2.0, 0.5, 0.5, "t_low must be <= t_high"),
                                                   (0.3, 1.0, -0.1, "tau0 must be a finite entropy >= 0")])
def test_policy_oracle_checks_the_same(t_low, t_high, tau0, msg):
    """The host oracle (used by the HF and vLLM processors) refuses what SamplerConfig does."""
    from resetfp4.sampling.policy import check_reset_params

    with pytest.raises(ValueError, match=msg):
        check_reset_params(t_low, t_high, tau0, 32)
    check_reset_params(0.7, 0.7, 0.0, 32)  # equal temperatures and tau0 = 0 are meaningful
