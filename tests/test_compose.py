"""The composed sampler against plain per-sequence sampling, and its contracts."""

import threading

import pytest
import torch

from backend.errors import Cancelled, IncompatibleModels, InvalidInput
from backend.models.base import Cond
from backend.models.gaussian import GaussianDenoiser, random_covariance
from backend.sampling.compose import VRS, Known, compose_x0, sample_matrix
from backend.sampling.schedules import constant_weight, karras_sigmas, logistic_weight
from backend.sampling.sequence import sample_sequences

V, F, C, P = 3, 4, 2, 5  # views, frames, channels, independent pixels
LATENT = (C, 1, P)


def make_models(seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = GaussianDenoiser(torch.stack([random_covariance(F * C, g) for _ in range(V)]), F, LATENT)
    cols = GaussianDenoiser(torch.stack([random_covariance(V * C, g) for _ in range(F)]), V, LATENT)
    single = GaussianDenoiser(torch.stack([random_covariance(C, g) for _ in range(V)]), 1, LATENT)
    vconds = [Cond(extra={"index": v}) for v in range(V)]
    mconds = [Cond(extra={"index": f}) for f in range(F)]
    return rows, cols, single, vconds, mconds


def euler_reference(model, x, sigmas, cond):
    """Plain Euler loop for one sequence x [T, C, h, w], written independently of the sampler."""
    x = x.clone()
    for i in range(len(sigmas) - 1):
        s, sn = float(sigmas[i]), float(sigmas[i + 1])
        d = (x - model.denoise(x[None], torch.tensor([s], dtype=x.dtype), [cond])[0]) / s
        x = x + (sn - s) * d
    return x


@pytest.fixture
def setup():
    rows, cols, single, vconds, mconds = make_models()
    sigmas = karras_sigmas(12, 0.01, 20.0)
    x_T = torch.randn(V, F, *LATENT, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * sigmas[0]
    return rows, cols, single, vconds, mconds, sigmas, x_T


def test_w0_equals_independent_row_sampling(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    out = sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.0)
    for v in range(V):
        torch.testing.assert_close(out[v], euler_reference(rows, x_T[v], sigmas, vconds[v]), rtol=1e-9, atol=1e-9)
    assert cols.calls == 0  # w = 0 never needs the multi-view model


def test_w1_equals_independent_column_sampling(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    out = sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=constant_weight(1.0))
    for f in range(F):
        torch.testing.assert_close(out[:, f], euler_reference(cols, x_T[:, f], sigmas, mconds[f]), rtol=1e-9, atol=1e-9)
    assert rows.calls == 0


def test_sample_sequences_equals_reference(setup):
    rows, _, _, vconds, _, sigmas, x_T = setup
    out = sample_sequences(rows, x_T, sigmas, conds=vconds)
    for v in range(V):
        torch.testing.assert_close(out[v], euler_reference(rows, x_T[v], sigmas, vconds[v]), rtol=1e-9, atol=1e-9)


def test_convex_blend_is_between_rows_and_columns(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    r = sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.0)
    c = sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=1.0)
    m = sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.5)
    assert (m - r).abs().max() > 1e-3 and (m - c).abs().max() > 1e-3


def test_compose_x0_formulas():
    a, b, s = torch.randn(2, 3, 1, 1, 1), torch.randn(2, 3, 1, 1, 1), torch.randn(2, 3, 1, 1, 1)
    w = torch.tensor([0.25, 1.0])
    out = compose_x0(a, b, w)
    torch.testing.assert_close(out[0], 0.25 * b[0] + 0.75 * a[0])
    torch.testing.assert_close(out[1], b[1])
    torch.testing.assert_close(compose_x0(a, b, None, s), a + b - s)


@pytest.mark.parametrize("combine", ["convex", "theorem"])
def test_max_batch_does_not_change_result_and_seed_reproduces(setup, combine):
    rows, cols, single, vconds, mconds, sigmas, x_T = setup
    kw = dict(video_conds=vconds, multiview_conds=mconds, weight=logistic_weight(), combine=combine,
              element=single, vrs=VRS(steps=4, repeats=3))
    runs = [sample_matrix(rows, cols, x_T, sigmas, max_batch=mb, generator=torch.Generator().manual_seed(7), **kw)
            for mb in (None, 1, 2, 5)]
    for out in runs[1:]:
        torch.testing.assert_close(out, runs[0], rtol=1e-10, atol=1e-10)
    other = sample_matrix(rows, cols, x_T, sigmas, generator=torch.Generator().manual_seed(8), **kw)
    assert (other - runs[0]).abs().max() > 1e-4  # VRS noise really comes from the generator


def test_max_batch_bounds_sequences_per_call(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    seen = []
    orig = rows.denoise

    def spy(x, sigma, conds):
        seen.append(x.shape[0])
        return orig(x, sigma, conds)

    rows.denoise = spy
    sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.5, max_batch=2)
    assert max(seen) == 2 and sum(seen) == V * (len(sigmas) - 1)


def test_vrs_repeats_early_steps(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.0,
                  vrs=VRS(steps=3, repeats=2), generator=torch.Generator().manual_seed(0))
    assert rows.calls == (len(sigmas) - 1) + 3


def test_known_entries_come_out_exactly_and_steer_the_rest(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    mask = torch.zeros(V, F, dtype=torch.bool)
    mask[0, :] = True  # turntable row
    mask[:, 0] = True  # reference clip column
    values = torch.randn(V, F, *LATENT, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    kw = dict(video_conds=vconds, multiview_conds=mconds, weight=logistic_weight(), vrs=VRS(2, 2),
              generator=torch.Generator().manual_seed(0))
    x_T_before = x_T.clone()
    previews = []
    out = sample_matrix(rows, cols, x_T, sigmas, known=Known(mask, values), on_step=lambda i, n, x0: previews.append(x0),
                        **kw)
    assert torch.equal(out[mask], values[mask])
    assert torch.equal(x_T, x_T_before)  # the sampler works in place on its own copy, never on the caller's noise
    assert len(previews) == len(sigmas) - 1 and len({p.data_ptr() for p in previews}) == len(previews)  # kept, not reused
    for x0 in previews:  # every preview shows the given entries as given
        assert torch.equal(x0[mask], values[mask])
    assert (previews[0][~mask] - out[~mask]).abs().max() > 1e-3  # previews are the step's estimate, not the result
    free = sample_matrix(rows, cols, x_T, sigmas, **{**kw, "generator": torch.Generator().manual_seed(0)})
    assert (out[~mask] - free[~mask]).abs().max() > 1e-3  # the given entries inform the others


def test_on_step_and_cancel(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    steps, event = [], threading.Event()

    def on_step(i, n, x0):
        steps.append(i)
        assert x0.shape == x_T.shape and n == len(sigmas) - 1
        if i == 2:
            event.set()

    with pytest.raises(Cancelled):
        sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.5,
                      on_step=on_step, cancel=event)
    assert steps == [0, 1, 2]
    assert rows.calls == 3  # stopped before the fourth step's network call


def test_refuses_models_from_different_latent_spaces(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    cols.latent_space = "another-vae"
    with pytest.raises(IncompatibleModels, match="latent space"):
        sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.5)


def _bad(setup, **override):
    rows, cols, single, vconds, mconds, sigmas, x_T = setup
    kw = dict(video_conds=vconds, multiview_conds=mconds, weight=0.5)
    args = dict(x_T=x_T, sigmas=sigmas)
    for k in ("x_T", "sigmas"):
        if k in override:
            args[k] = override.pop(k)
    kw.update(override)
    with pytest.raises(InvalidInput) as e:
        sample_matrix(rows, cols, args["x_T"], args["sigmas"], **kw)
    assert rows.calls == 0 and cols.calls == 0, "refused input must not reach the network"
    return e.value


def test_bad_inputs_are_refused_before_any_network_call(setup):
    _, _, _, vconds, mconds, sigmas, x_T = setup
    nan = x_T.clone()
    nan[1, 2, 0, 0, 0] = float("nan")
    cases = [
        (dict(x_T=x_T[0]), "x_T", "[V, F, C, h, w]"),
        (dict(x_T=torch.randn(V, F, 3, 1, P)), "x_T", "latent shape"),
        (dict(x_T=nan), "x_T", "NaN"),
        (dict(video_conds=vconds[:-1]), "video_conds", f"expected {V}"),
        (dict(multiview_conds=mconds + [Cond()]), "multiview_conds", f"expected {F}"),
        (dict(sigmas=sigmas.flip(0)), "sigmas", "decreasing"),
        (dict(sigmas=torch.tensor([1.0, 1.0, 0.0])), "sigmas", "decreasing"),
        (dict(weight=1.2), "weight", "[0, 1]"),
        (dict(weight=lambda s, n, v: -0.5 if s == 3 else 0.5), "weight", "[0, 1]"),
        (dict(combine="average"), "combine", "convex"),
        (dict(combine="theorem"), "element", "element="),
        (dict(max_batch=0), "max_batch", "positive"),
        (dict(vrs=VRS(steps=2, repeats=0)), "vrs", "repeats"),
        (dict(known=Known(torch.zeros(V, F + 1, dtype=torch.bool), x_T)), "known.mask", "bool"),
        (dict(video_conds=[Cond(latent=torch.tensor([float("nan")]))] * V), "video_conds[0].latent", "NaN"),
    ]
    for override, field, words in cases:
        err = _bad(setup, **override)
        assert err.field == field, (override, err)
        assert words in str(err), (words, str(err))


def test_model_check_sequence_runs_before_network(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup

    def check(length, conds):
        raise InvalidInput("frames", f"model expects 8 frames, got {length}")

    rows.check_sequence = check
    with pytest.raises(InvalidInput, match="expects 8 frames, got 4"):
        sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.5)
    assert rows.calls == 0 and cols.calls == 0


def test_non_finite_model_output_is_reported(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    rows.denoise = lambda x, s, c: torch.full_like(x, float("nan"))
    with pytest.raises(FloatingPointError, match="video model"):
        sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.5)


def test_non_finite_multiview_output_is_named(setup):
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    cols.denoise = lambda x, s, c: torch.full_like(x, float("inf"))
    with pytest.raises(FloatingPointError, match="multi-view model"):
        sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.5)


def test_sample_sequences_holds_known_entries_like_the_matrix_sampler(setup):
    """Plain sampling with given entries: exact where given, previews show them, and at w = 0 it is the
    composed sampler's row sampling with the same given entries (same noise, same VRS draws)."""
    rows, cols, _, vconds, mconds, sigmas, x_T = setup
    mask = torch.zeros(V, F, dtype=torch.bool)
    mask[:, 0] = True
    mask[1, 2] = True
    values = torch.randn(V, F, *LATENT, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x_T_before, previews = x_T.clone(), []
    out = sample_sequences(rows, x_T, sigmas, conds=vconds, known_mask=mask, known_values=values, vrs=VRS(2, 2),
                           generator=torch.Generator().manual_seed(0), on_step=lambda i, n, x0: previews.append(x0))
    assert torch.equal(out[mask], values[mask]) and torch.equal(x_T, x_T_before)
    assert len(previews) == len(sigmas) - 1 and all(torch.equal(p[mask], values[mask]) for p in previews)
    composed = sample_matrix(rows, cols, x_T, sigmas, video_conds=vconds, multiview_conds=mconds, weight=0.0,
                             known=Known(mask, values), vrs=VRS(2, 2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, composed, rtol=1e-9, atol=1e-9)
