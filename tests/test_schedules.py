import math

import pytest
import torch

from backend.errors import InvalidInput
from backend.sampling.schedules import (angular_view_profile, constant_weight, cosine_weight, karras_sigmas,
                                        linear_weight, logistic_weight, schedule_from_options, weights_per_view)


def test_karras_sigmas_endpoints_and_shape():
    s = karras_sigmas(25, 0.002, 80.0)
    assert s.shape == (26,)
    assert s[-1] == 0
    assert math.isclose(float(s[0]), 80.0, rel_tol=1e-12)
    assert math.isclose(float(s[-2]), 0.002, rel_tol=1e-9)
    assert (s[1:] < s[:-1]).all()


def test_karras_sigmas_follow_rho_formula():
    s = karras_sigmas(5, 0.1, 10.0, rho=3.0)
    i = torch.arange(5, dtype=torch.float64) / 4
    expected = (10.0 ** (1 / 3) + i * (0.1 ** (1 / 3) - 10.0 ** (1 / 3))) ** 3
    torch.testing.assert_close(s[:-1], expected)


@pytest.mark.parametrize("args,field", [((0, 0.1, 1.0), "n"), ((5, 1.0, 0.5), "sigma_min"), ((5, 0.1, 1.0, -1.0), "rho")])
def test_karras_sigmas_refuses_bad_arguments(args, field):
    with pytest.raises(InvalidInput) as e:
        karras_sigmas(*args)
    assert e.value.field == field


def test_logistic_weight_matches_issue_formula():
    sched = logistic_weight(s0=0.3, k=12.0, w_min=0.1, w_max=0.9)
    N = 17
    for step in range(N):
        p = step / (N - 1)
        expected = 0.1 + 0.8 * (1 - 1 / (1 + math.exp(-12.0 * (p - 0.3))))
        assert math.isclose(sched(step, N, 0), expected, rel_tol=1e-12, abs_tol=1e-15)


def test_logistic_default_leans_on_multiview_early_and_video_late():
    sched = logistic_weight()
    assert sched(0, 25, 0) > 0.99
    assert sched(24, 25, 0) < 0.01
    assert math.isclose(sched(12, 25, 0), 0.5)


def test_logistic_is_stable_for_large_k():
    sched = logistic_weight(k=5000.0)
    assert sched(0, 10, 0) == 1.0 and sched(9, 10, 0) == 0.0


def test_constant_linear_cosine():
    assert constant_weight(0.3)(5, 10, 2) == 0.3
    lin = linear_weight(1.0, 0.0)
    assert lin(0, 5, 0) == 1.0 and lin(4, 5, 0) == 0.0 and math.isclose(lin(2, 5, 0), 0.5)
    cos = cosine_weight(1.0, 0.2)
    assert math.isclose(cos(0, 9, 0), 1.0) and math.isclose(cos(8, 9, 0), 0.2) and math.isclose(cos(4, 9, 0), 0.6)


def test_view_profile_multiplies_weight():
    prof = angular_view_profile(8, reference_view=0, floor=0.25)
    sched = constant_weight(0.8, profile=prof)
    assert math.isclose(sched(0, 10, 0), 0.8 * 0.25)  # reference view leans on video
    assert math.isclose(sched(0, 10, 4), 0.8)  # opposite view leans on multi-view
    assert sched(0, 10, 2) == pytest.approx(sched(0, 10, 6))  # symmetric around the orbit
    seq = linear_weight(1.0, 1.0, profile=[0.0, 0.5, 1.0])
    assert [seq(0, 2, v) for v in range(3)] == [0.0, 0.5, 1.0]


def test_weights_per_view_refuses_out_of_range():
    with pytest.raises(InvalidInput) as e:
        weights_per_view(lambda s, n, v: 1.5 if v == 1 else 0.5, 0, 10, 3)
    assert e.value.field == "weight"
    with pytest.raises(InvalidInput):
        constant_weight(-0.1)
    with pytest.raises(InvalidInput):
        logistic_weight(w_min=0.8, w_max=0.2)


def test_schedule_from_options():
    s = schedule_from_options("logistic", s0=0.5, k=20.0)
    assert s(0, 10, 0) > 0.99
    with pytest.raises(InvalidInput) as e:
        schedule_from_options("sawtooth")
    assert e.value.field == "schedule"
    with pytest.raises(InvalidInput) as e:
        schedule_from_options("constant", q=1)
    assert e.value.field == "schedule_params"
