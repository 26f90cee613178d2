import math

import pytest
import torch

from backend.models.base import EDMScaling, edm_training_sigmas


@pytest.mark.parametrize("sigma", [0.002, 0.5, 1.0, 7.3, 700.0])
def test_v_scaling_with_edm_c_noise_formulas(sigma):
    c_skip, c_out, c_in, c_noise = EDMScaling("v")(torch.tensor([sigma]))
    assert math.isclose(float(c_skip), 1 / (sigma**2 + 1), rel_tol=1e-5)
    assert math.isclose(float(c_out), -sigma / math.sqrt(sigma**2 + 1), rel_tol=1e-5)
    assert math.isclose(float(c_in), 1 / math.sqrt(sigma**2 + 1), rel_tol=1e-5)
    assert math.isclose(float(c_noise), 0.25 * math.log(sigma), rel_tol=1e-5, abs_tol=1e-6)


def test_edm_scaling_formulas_with_sigma_data():
    sd, sigma = 0.5, 2.0
    c_skip, c_out, c_in, _ = EDMScaling("edm", sd)(torch.tensor([sigma]))
    assert math.isclose(float(c_skip), sd**2 / (sigma**2 + sd**2), rel_tol=1e-6)
    assert math.isclose(float(c_out), sigma * sd / math.sqrt(sigma**2 + sd**2), rel_tol=1e-6)
    assert math.isclose(float(c_in), 1 / math.sqrt(sigma**2 + sd**2), rel_tol=1e-6)


def test_v_prediction_of_true_v_recovers_x0():
    # With v = (alpha-weighted) target, x0 = c_skip x + c_out v must recover the clean signal exactly.
    torch.manual_seed(0)
    x0 = torch.randn(3, 4, 2, 5, 5)
    sigma = torch.tensor([0.3, 2.0, 40.0])
    noise = torch.randn_like(x0)
    x = x0 + sigma.view(-1, 1, 1, 1, 1) * noise
    sc = EDMScaling("v")
    c_skip, c_out, c_in, _ = sc(sigma)
    # Solve F from x0 = c_skip x + c_out F  (the ideal network output)
    F = (x0 - c_skip.view(-1, 1, 1, 1, 1) * x) / c_out.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(sc.x0(x, sigma, F, c_skip, c_out), x0, rtol=1e-4, atol=1e-4)


def test_training_sigmas_are_lognormal():
    g = torch.Generator().manual_seed(0)
    s = edm_training_sigmas(20000, 0.7, 1.6, generator=g)
    assert abs(float(s.log().mean()) - 0.7) < 0.05
    assert abs(float(s.log().std()) - 1.6) < 0.05
