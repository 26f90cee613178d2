#!/usr/bin/env python
"""Print the sampler's proof figures on exact Gaussian models (issue: foundation).

1. Empirical covariance of N samples of ``sample_matrix`` vs its closed form, for constant and
   logistic weights, with and without VRS, and theorem mode.
2. Relative covariance error (Frobenius) against a matrix-normal target for row-only, column-only,
   convex (w = 0.5 and logistic), theorem mode and the exact joint sampler, plus a sweep.

    .venv/bin/python scripts/prove_exact.py [--samples 4000] [--steps 25]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backend.models.base import Cond  # noqa: E402
from backend.sampling.compose import VRS, sample_matrix  # noqa: E402
from backend.sampling.exact import MatrixNormalProblem, monte_carlo_error, relative_error  # noqa: E402
from backend.sampling.schedules import constant_weight, karras_sigmas, logistic_weight  # noqa: E402


def mode_errors(problem: MatrixNormalProblem, sigmas) -> dict[str, float]:
    modes = {
        "row-only (w=0)": dict(weight=0.0),
        "column-only (w=1)": dict(weight=1.0),
        "convex w=0.5": dict(weight=0.5),
        "convex logistic (default)": dict(weight=logistic_weight()),
        "theorem": dict(element_model=problem.element),
        "exact joint": dict(joint_model=problem.joint),
    }
    return {name: relative_error(problem.covariance(sigmas, **m), problem.target) for name, m in modes.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sigmas = karras_sigmas(args.steps, 0.002, 80.0)
    p = MatrixNormalProblem(V=4, F=5, rho_views=0.7, rho_frames=0.7, pixels=args.samples)
    print(f"V=4 views (circular corr 0.7) x F=5 frames (AR(1) 0.7) x C=2 channels; {args.steps} Euler steps "
          f"(Karras 0.002..80); {args.samples} samples\n")
    print("1. empirical vs closed-form covariance")
    print(f"   {'case':<22}{'|emp-closed|_F':>16}{'MC error':>11}{'ratio':>8}")
    cases = {
        "constant 0.5": (dict(weight=constant_weight(0.5)), dict(weight=constant_weight(0.5))),
        "constant 0.5 + VRS": (dict(weight=constant_weight(0.5), vrs=VRS()), dict(weight=constant_weight(0.5), vrs_steps=10, vrs_repeats=2)),
        "logistic": (dict(weight=logistic_weight()), dict(weight=logistic_weight())),
        "logistic + VRS": (dict(weight=logistic_weight(), vrs=VRS()), dict(weight=logistic_weight(), vrs_steps=10, vrs_repeats=2)),
        "theorem": (dict(weight=0.0, combine="theorem", element=p.element), dict(element_model=p.element)),
    }
    g = torch.Generator().manual_seed(args.seed)
    for name, (skw, ckw) in cases.items():
        x_T = torch.randn(p.V, p.F, p.C, 1, args.samples, generator=g, dtype=torch.float64) * sigmas[0]
        out = sample_matrix(p.rows, p.cols, x_T, sigmas, video_conds=[Cond()] * p.V, multiview_conds=[Cond()] * p.F,
                            generator=g, **skw)
        closed = p.covariance(sigmas, **ckw)
        err, mc = float(torch.linalg.norm(p.empirical(out) - closed)), monte_carlo_error(closed, args.samples)
        print(f"   {name:<22}{err:>16.4f}{mc:>11.4f}{err / mc:>8.2f}")

    print("\n2. relative covariance error vs the matrix-normal target (closed form)")
    errs = mode_errors(p, sigmas)
    for name, e in errs.items():
        print(f"   {name:<28}{e:>8.4f}")
    print(f"   convex beats row-only and column-only: {errs['convex w=0.5'] < min(errs['row-only (w=0)'], errs['column-only (w=1)'])}"
          f" (logistic: {errs['convex logistic (default)'] < min(errs['row-only (w=0)'], errs['column-only (w=1)'])})")
    print(f"   theorem / exact joint = {errs['theorem'] / errs['exact joint']:.3f} (target <= 1.5)")

    print("\n3. sweep (correlations, steps): rows / cols / convex 0.5 / logistic / theorem / joint")
    for rv, rf in ((0.5, 0.5), (0.5, 0.7), (0.7, 0.7), (0.8, 0.8), (0.9, 0.5)):
        for n in (10, 25, 50):
            e = mode_errors(MatrixNormalProblem(V=4, F=5, rho_views=rv, rho_frames=rf), karras_sigmas(n, 0.002, 80.0))
            vals = " ".join(f"{v:6.3f}" for v in e.values())
            print(f"   rho_v={rv} rho_f={rf} steps={n:<3} {vals}   theorem/joint={e['theorem'] / e['exact joint']:.2f}")


if __name__ == "__main__":
    main()
