"""Proof on exact models: the sampler's output covariance equals its closed form, and the
composition modes rank as the method predicts on a matrix-normal target."""

import pytest
import torch

from backend.models.base import Cond
from backend.sampling.compose import VRS, sample_matrix
from backend.sampling.exact import MatrixNormalProblem, monte_carlo_error, relative_error
from backend.sampling.schedules import constant_weight, karras_sigmas, logistic_weight

SAMPLES = 4000
SIGMAS = karras_sigmas(25, 0.002, 80.0)


@pytest.fixture(scope="module")
def problem():
    return MatrixNormalProblem(V=4, F=5, rho_views=0.7, rho_frames=0.7, pixels=SAMPLES)


def run(problem, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(problem.V, problem.F, problem.C, 1, SAMPLES, generator=g, dtype=torch.float64) * SIGMAS[0]
    return sample_matrix(problem.rows, problem.cols, x_T, SIGMAS, video_conds=[Cond()] * problem.V,
                         multiview_conds=[Cond()] * problem.F, generator=g, **kw)


CASES = {
    "constant": (dict(weight=constant_weight(0.5)), dict(weight=constant_weight(0.5))),
    "constant+vrs": (dict(weight=constant_weight(0.5), vrs=VRS(10, 2)), dict(weight=constant_weight(0.5), vrs_steps=10, vrs_repeats=2)),
    "logistic": (dict(weight=logistic_weight()), dict(weight=logistic_weight())),
    "logistic+vrs": (dict(weight=logistic_weight(), vrs=VRS(10, 2)), dict(weight=logistic_weight(), vrs_steps=10, vrs_repeats=2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_empirical_covariance_matches_closed_form(problem, case):
    sampler_kw, closed_kw = CASES[case]
    emp = problem.empirical(run(problem, seed=11, **sampler_kw))
    closed = problem.covariance(SIGMAS, **closed_kw)
    err = float(torch.linalg.norm(emp - closed))
    expected = monte_carlo_error(closed, SAMPLES)
    assert err < 1.5 * expected, f"{case}: |emp - closed| = {err:.4f}, Monte-Carlo error ≈ {expected:.4f}"
    # The check has teeth: a different mode's closed form is far outside the Monte-Carlo error.
    wrong = problem.covariance(SIGMAS, weight=constant_weight(0.0))
    assert float(torch.linalg.norm(emp - wrong)) > 5 * expected


def test_theorem_mode_matches_closed_form(problem):
    emp = problem.empirical(run(problem, seed=5, weight=0.5, combine="theorem", element=problem.element))
    closed = problem.covariance(SIGMAS, element_model=problem.element)
    assert float(torch.linalg.norm(emp - closed)) < 1.5 * monte_carlo_error(closed, SAMPLES)


def test_vrs_noise_is_injected_as_the_closed_form_says():
    # Started from a low noise level, re-noised repeats change the output covariance by several
    # Monte-Carlo errors; the samples follow the VRS closed form, not the plain one.
    p = MatrixNormalProblem(V=3, F=3, pixels=SAMPLES)
    sig = karras_sigmas(6, 0.01, 2.0)
    g = torch.Generator().manual_seed(3)
    x_T = torch.randn(3, 3, p.C, 1, SAMPLES, generator=g, dtype=torch.float64) * sig[0]
    out = sample_matrix(p.rows, p.cols, x_T, sig, video_conds=[Cond()] * 3, multiview_conds=[Cond()] * 3,
                        weight=0.5, vrs=VRS(6, 3), generator=g)
    emp = p.empirical(out)
    with_vrs = p.covariance(sig, weight=0.5, vrs_steps=6, vrs_repeats=3)
    plain = p.covariance(sig, weight=0.5)
    mc = monte_carlo_error(with_vrs, SAMPLES)
    assert float(torch.linalg.norm(emp - with_vrs)) < 1.5 * mc
    assert float(torch.linalg.norm(emp - plain)) > 3 * mc


def test_composition_modes_rank_as_the_method_predicts(problem):
    err = {name: relative_error(problem.covariance(SIGMAS, **mode), problem.target) for name, mode in {
        "rows": dict(weight=0.0), "cols": dict(weight=1.0), "convex": dict(weight=0.5),
        "logistic": dict(weight=logistic_weight()), "theorem": dict(element_model=problem.element),
        "joint": dict(joint_model=problem.joint)}.items()}
    assert err["convex"] < min(err["rows"], err["cols"])
    assert err["logistic"] < min(err["rows"], err["cols"])
    assert err["theorem"] < 1.5 * err["joint"]
    assert err["joint"] < err["theorem"] < err["convex"]
